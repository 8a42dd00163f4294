"""The bench program, run inside the fake Dom0s: ``python3 PROGRAM '{"op": ...}'``.

The meter (counters before and after a command, peak RSS and snapshot devices while it
runs), the tree scan, large files, churn and many small files. Stdlib only, no imports of
this package: it is copied into the containers as its own text by ``ship.bench_program``.
"""

import json
import os
import random
import resource
import stat
import subprocess
import sys
import tempfile
import time


def _b_main(spec):
    ops = {"meter": _b_meter, "scan": _b_scan, "large": _b_large, "churn": _b_churn,
           "files": _b_many_files}
    if spec["op"] not in ops:
        raise SystemExit(f"unknown op {spec['op']!r}")
    return ops[spec["op"]](spec)


def _b_result(out):
    if out is not None:
        sys.stdout.write(json.dumps(out) + "\n")


def _b_read(path):
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def _b_counters(spec):
    cpu = None
    for path in spec.get("cgroup_cpu", ()):
        cpu = _b_read(path)
        if cpu is not None:
            break
    return {"proc_io": _b_read("/proc/self/io"), "net_dev": _b_read("/proc/net/dev"),
            "cgroup_cpu": cpu,
            "block": {d: _b_read(f"/sys/block/{d}/stat") for d in spec.get("devices", ())}}


def _b_hwm(pid):
    text = _b_read(f"/proc/{pid}/status") or ""
    for line in text.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def _b_watch(watch, seen):
    prefix, suffix = watch
    now = time.time()
    try:
        devices = os.listdir("/sys/block")
    except OSError:
        return
    for dev in devices:
        if not dev.startswith("dm-"):
            continue
        name = (_b_read(f"/sys/block/{dev}/dm/name") or "").strip()
        if name.startswith(prefix) and name.endswith(suffix):
            seen[name] = [seen.get(name, [now])[0], now]


def _b_step(argv, spec, seen):
    poll, watch = spec.get("poll", 0.25), spec.get("watch_dm")
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.monotonic()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        hwm = 0
        while True:
            if watch:
                _b_watch(watch, seen)
            hwm = max(hwm, _b_hwm(proc.pid))
            try:
                proc.wait(timeout=poll)
                break
            except subprocess.TimeoutExpired:
                continue
        wall = time.monotonic() - start
        if watch:
            _b_watch(watch, seen)
        out.seek(0)
        err.seek(0)
        stdout = out.read(spec.get("keep_stdout", 1 << 20)).decode("utf-8", "replace")
        stderr = err.read()[-8192:].decode("utf-8", "replace")
    return {"argv0": os.path.basename(argv[0]), "exit_code": proc.returncode, "wall": wall,
            "hwm_kib": hwm, "stdout": stdout, "stderr": stderr}


def _b_meter(spec):
    """Run the steps one after another; counters before and after, samples while they run."""
    seen = {}
    before = _b_counters(spec)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    steps, code = [], 0
    for argv in spec["steps"]:
        steps.append(_b_step(argv, spec, seen))
        code = steps[-1]["exit_code"]
        if code != 0:
            break
    wall = time.monotonic() - start
    done = resource.getrusage(resource.RUSAGE_CHILDREN)
    after = _b_counters(spec)
    return {"exit_code": code, "wall": wall, "steps": steps,
            "user": done.ru_utime - usage.ru_utime, "system": done.ru_stime - usage.ru_stime,
            "maxrss_kib": done.ru_maxrss, "dm_seen": seen, "before": before, "after": after}


def _b_files(root, skip_top=("etc", "lost+found")):
    """Regular files of one filesystem: (relative path, bytes of data, links), sorted."""
    dev = os.lstat(root).st_dev
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        dirnames[:] = sorted(
            d for d in dirnames
            if not (rel_dir == "." and d in skip_top)
            and os.lstat(os.path.join(dirpath, d)).st_dev == dev)
        for name in sorted(filenames):
            rel = os.path.normpath(os.path.join(rel_dir, name))
            st = os.lstat(os.path.join(root, rel))
            if stat.S_ISREG(st.st_mode):
                # Data present: a sparse file counts for what it holds, not its length.
                out.append((rel, min(st.st_size, st.st_blocks * 512), st.st_nlink))
    return out


def _b_scan(spec):
    files = bytes_ = 0
    for root in spec["roots"]:
        for _rel, size, _links in _b_files(root, skip_top=()):
            files += 1
            bytes_ += size
    return {"files": files, "bytes": bytes_}


def _b_fill(path, key, size, offset=0):
    rng = random.Random(key)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        left = size
        while left:
            chunk = rng.randbytes(min(left, 1 << 20))
            os.pwrite(fd, chunk, offset)
            offset += len(chunk)
            left -= len(chunk)
    finally:
        os.close(fd)


def _b_large(spec):
    """Write the large files (seeded bytes) under one filesystem's root."""
    written = 0
    for rel, size in spec["files"]:
        path = os.path.join(spec["root"], rel)
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        if os.path.lexists(path):
            os.unlink(path)
        _b_fill(path, f"{spec['seed']}:{rel}", size)
        os.utime(path, (spec["epoch"], spec["epoch"]))
        written += size
    return {"written": written}


def _b_churn(spec):
    """Change about ``percent`` % of one filesystem's data, deterministically for a seed.

    A quarter of it is appended to the largest file, 40% rewrites smaller files in full
    (same size, new bytes), a quarter goes to new files, and files holding a tenth of it
    are deleted. /etc and lost+found are left alone.
    """
    root, seed = spec["root"], spec["seed"]
    rng = random.Random(f"churn:{seed}")
    when = spec["epoch"]
    files = _b_files(root)
    total = sum(size for _rel, size, _links in files)
    budget = int(total * spec["percent"] / 100)
    counts = {"data_bytes": total, "budget": budget, "appended_file": None, "appended": 0,
              "modified": 0, "modified_bytes": 0, "added": 0, "added_bytes": 0, "deleted": 0,
              "deleted_bytes": 0}
    single = [(rel, size) for rel, size, links in files if links == 1]
    if not single or budget <= 0:
        return counts
    largest = max(single, key=lambda f: (f[1], f[0]))
    path = os.path.join(root, largest[0])
    size = os.path.getsize(path)
    _b_fill(path, f"churn:{seed}:append", budget // 4, offset=size)
    os.utime(path, (when, when))
    counts["appended_file"], counts["appended"] = largest[0], budget // 4
    rest = [f for f in single if f != largest]
    rng.shuffle(rest)
    small = max(64 * 1024, budget // 20)
    victims = []
    for rel, size in rest:
        if counts["modified_bytes"] >= budget * 4 // 10:
            victims.append((rel, size))
            continue
        if size > small:
            continue
        _b_fill(os.path.join(root, rel), f"churn:{seed}:{rel}", size)
        os.utime(os.path.join(root, rel), (when, when))
        counts["modified"] += 1
        counts["modified_bytes"] += size
    for rel, size in victims:
        if counts["deleted_bytes"] >= budget // 10:
            break
        os.unlink(os.path.join(root, rel))
        counts["deleted"] += 1
        counts["deleted_bytes"] += size
    new_dir = f"bench-churn-{seed}"
    os.makedirs(os.path.join(root, new_dir), mode=0o755, exist_ok=True)
    while counts["added_bytes"] < budget // 4:
        size = rng.randint(1, 64 * 1024)
        rel = f"{new_dir}/new-{counts['added']:05d}.dat"
        _b_fill(os.path.join(root, rel), f"churn:{seed}:{rel}", size)
        os.utime(os.path.join(root, rel), (when, when))
        counts["added"] += 1
        counts["added_bytes"] += size
    return counts


def _b_many_files(spec):
    """Add small files under ``dir`` of one filesystem's root until it holds ``count``.

    File ``i`` is ``dir/dNNNNN/fNNNNNNN.dat``, ``per_dir`` to a subdirectory, of seeded bytes
    (its size between ``sizes``, both from the seed and ``i`` alone), its time ``epoch``:
    the same count gives the same tree, and a larger one adds to it. Files already there
    are left alone. How many files and bytes were written, and how many files ``dir``'s
    subdirectories hold.
    """
    top = os.path.join(spec["root"], spec["dir"])
    count, per_dir, seed, when = spec["count"], spec["per_dir"], spec["seed"], spec["epoch"]
    low, high = spec["sizes"]
    written = written_bytes = 0
    for first in range(0, count, per_dir):
        sub = os.path.join(top, f"d{first // per_dir:05d}")
        os.makedirs(sub, mode=0o755, exist_ok=True)
        present = set(os.listdir(sub))
        for i in range(first, min(first + per_dir, count)):
            name = f"f{i:07d}.dat"
            if name in present:
                continue
            rng = random.Random(f"files:{seed}:{i}")
            data = rng.randbytes(rng.randint(low, high))
            path = os.path.join(sub, name)
            with open(path, "xb") as f:
                f.write(data)
            os.utime(path, (when, when))
            written += 1
            written_bytes += len(data)
    held = 0
    if os.path.isdir(top):
        for entry in os.scandir(top):
            if entry.is_dir(follow_symlinks=False):
                held += sum(1 for e in os.scandir(entry.path) if e.is_file(follow_symlinks=False))
    return {"written": written, "bytes": written_bytes, "files": held}


if __name__ == "__main__":
    _b_result(_b_main(json.loads(sys.argv[1])))
