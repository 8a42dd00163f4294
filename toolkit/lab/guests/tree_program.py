"""The guest tree program: stages, mutates and fills guest trees on the host behind a runner.

Shipped as its own text (``python3 -c TEXT SPEC_JSON``) by ``ship.remote_program``, so a
build runs the same locally and inside a lab container: stdlib only, no imports of the
toolkit, one JSON object in (argv[1]) and one out (stdout).
"""

import json
import os
import random
import shutil
import stat
import struct
import sys
import time


def _r_main(spec):
    # Directories made on the way (os.makedirs parents) get 0755; every leaf gets its mode
    # set explicitly.
    os.umask(0o022)
    if spec["op"] == "stage":
        return _r_stage(spec)
    if spec["op"] == "mutate":
        return _r_mutate(spec)
    if spec["op"] == "fill":
        return _r_fill(spec)
    if spec["op"] == "write":
        return _r_write(spec)
    if spec["op"] == "fat":
        return _r_fat(spec)
    raise SystemExit(f"unknown op {spec['op']!r}")


def _r_bytes(seed, rel, size):
    return random.Random(f"{seed}:{rel}").randbytes(size)


def _r_owner(path, uid, gid):
    # Staged as a user (DOMUBK_STAGE_AS_USER=1, the unit tests' only): owners stay the
    # user's, who can still read and write everything, and no device node is made; an
    # image is always built as root.
    if os.environ.get("DOMUBK_STAGE_AS_USER") != "1":
        os.lchown(path, uid, gid)


def _r_mode(path, mode, user_bits):
    if os.environ.get("DOMUBK_STAGE_AS_USER") == "1":
        mode |= user_bits
    os.chmod(path, mode)


def _r_put(root, rel, data, mode=0o644, uid=0, gid=0):
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    # chown before chmod: chown clears setuid and setgid bits.
    _r_owner(path, uid, gid)
    _r_mode(path, mode, 0o600)
    return path


def _r_dir(root, rel, mode=0o755, uid=0, gid=0):
    path = os.path.join(root, rel)
    os.makedirs(path, mode=0o755, exist_ok=True)
    _r_owner(path, uid, gid)
    _r_mode(path, mode, 0o700)
    return path


def _r_acl(entries):
    # The kernel's POSIX ACL xattr format: a version word, then (tag, perm, id) entries
    # sorted by tag. Tags: 1 user_obj, 2 user, 4 group_obj, 8 group, 16 mask, 32 other.
    data = struct.pack("<I", 2)
    for tag, perm, ident in entries:
        data += struct.pack("<HHI", tag, perm, 0xFFFFFFFF if ident is None else ident)
    return data


def _r_stage(spec):
    root, seed, scale = spec["root"], spec["seed"], spec["scale"]
    os.makedirs(root, mode=0o755)
    os.chmod(root, 0o755)
    try:
        os.setxattr(root, "user.domubk.probe", b"1")
        os.removexattr(root, "user.domubk.probe")
    except OSError as exc:
        raise SystemExit(f"{root}: cannot hold user xattrs ({exc.strerror}); stage on ext4, "
                         "xfs or overlayfs, not tmpfs") from None
    caps = []
    if spec["content"] == "rich":
        caps = _r_rich(root, seed, scale)
    elif spec["content"] == "minimal":
        _r_put(root, "README.txt", b"minimal fixture filesystem\n")
        _r_put(root, "data/hello.txt", _r_bytes(seed, "data/hello.txt", 100))
    if spec["etc"]:
        _r_dir(root, "etc")
        for name, text in sorted(spec["etc"].items()):
            _r_put(root, "etc/" + name, text.encode())
    for rel in spec["mountpoints"]:
        # A mount point is an empty directory: what the tree put there would be hidden.
        path = os.path.join(root, rel)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.unlink(path)
        _r_dir(root, rel)
    summary = _r_finish(root, spec["epoch"], spec["debugfs_cmds"])
    return {"summary": summary, "capabilities": caps}


def _r_rich(root, seed, scale):
    rng = random.Random(f"tree:{seed}")
    mib = 1024 * 1024
    for name, size in (("empty.bin", 0), ("one.bin", 1), ("page.bin", 4096),
                       ("page-plus-one.bin", 4097), ("mebi.bin", mib)):
        _r_put(root, "data/sizes/" + name, _r_bytes(seed, name, size))
    # scale 1: 500 small files and 3 of one to three MiB (every e2e copy and audit reads
    # them under emulation, so they are kept small); scale 40: 20000 small, about 250 MiB.
    for i in range(1 + 2 * scale):
        rel = f"data/big/big-{i:04d}.bin"
        _r_put(root, rel, _r_bytes(seed, rel, rng.randint(1, 3) * mib + rng.randint(0, 4095)))
    small_sizes = (0, 1, 17, 100, 511, 512, 1000, 4095, 4096, 4097, 8192, 12000)
    for i in range(500 * scale):
        rel = f"data/small/d{i // 50:04d}/f{i:06d}.dat"
        size = rng.choice(small_sizes) if i % 3 else rng.randint(0, 16384)
        _r_put(root, rel, _r_bytes(seed, rel, size), mode=rng.choice((0o644, 0o644, 0o600)))
    deep = "data/deep/" + "/".join(f"l{i:02d}" for i in range(1, 13))
    _r_put(root, deep + "/leaf.txt", b"at the bottom\n")
    os.setxattr(os.path.join(root, "data/deep"), "user.domubk.dir", b"nested")
    for name in ("with space.txt", "\u00fcn\u00efc\u00f6d\u00e9-\u0444\u0430\u0439\u043b.txt",
                 "-leading-dash", "trailing.dot.", "MixedCase", "semi;colon$(x)"):
        _r_put(root, "data/names/" + name, name.encode() + b"\n")
    _r_dir(root, "data/empty-dir")
    _r_dir(root, "empty/nested/deeper")
    # A sparse file: 4 MiB apparent, three 4 KiB extents of data with holes between. (rsync
    # sends a hole's zeroes over the wire, so this is kept small: every e2e copy pays for it.)
    sparse = _r_put(root, "data/sparse.img", b"")
    with open(sparse, "r+b") as f:
        f.truncate(4 * mib)
        for off in (0, 2 * mib, 4 * mib - 4096):
            os.pwrite(f.fileno(), _r_bytes(seed, f"sparse@{off}", 4096), off)
    xattr = _r_put(root, "data/xattr.txt", b"has a user xattr\n")
    os.setxattr(xattr, "user.domubk", f"fixture-{seed}".encode())
    acl = _r_put(root, "data/acl.txt", b"readable by uid 1234 through an ACL\n", mode=0o640)
    os.setxattr(acl, "system.posix_acl_access",
                _r_acl([(1, 6, None), (2, 4, 1234), (4, 4, None), (16, 4, None), (32, 0, None)]))
    acl_dir = _r_dir(root, "data/acl-dir", mode=0o2775, gid=4242)
    os.setxattr(acl_dir, "system.posix_acl_default",
                _r_acl([(1, 7, None), (4, 5, None), (8, 7, 4242), (16, 7, None), (32, 5, None)]))
    # Three names for one inode, across two directories.
    hard = _r_put(root, "links/hard-1", b"one inode, three names\n", mode=0o640,
                  uid=1234, gid=5678)
    os.link(hard, os.path.join(root, "links/hard-2"))
    os.link(hard, os.path.join(root, "data/hard-3"))
    for rel, target in (("links/abs-hostname", "/etc/hostname"),
                        ("links/rel-page", "../data/sizes/page.bin"),
                        ("links/dir-link", "../data/deep"),
                        ("links/dangling", "../data/no-such-file"),
                        ("links/long-target", "../data/" + "long-name-" * 12 + "missing")):
        os.symlink(target, os.path.join(root, rel))
    _r_owner(os.path.join(root, "links/rel-page"), 4242, 4242)
    _r_put(root, "modes/private", b"0600\n", mode=0o600, uid=4242, gid=4242)
    _r_put(root, "modes/public", b"0644\n", mode=0o644)
    _r_put(root, "modes/group-write", b"0664\n", mode=0o664, gid=5678)
    _r_put(root, "modes/script.sh", b"#!/bin/sh\necho fixture\n", mode=0o755)
    _r_put(root, "modes/no-perms", b"0000\n", mode=0o000)
    _r_dir(root, "modes/setgid-dir", mode=0o2775, gid=4242)
    _r_dir(root, "tmp", mode=0o1777)
    _r_put(root, "tmp/.keep", b"")
    _r_put(root, "usr/bin/suid-tool", _r_bytes(seed, "suid-tool", 3000), mode=0o4755)
    _r_put(root, "usr/bin/sgid-tool", _r_bytes(seed, "sgid-tool", 2000), mode=0o2755, gid=42)
    _r_put(root, "usr/bin/netprobe", _r_bytes(seed, "netprobe", 5000), mode=0o755)
    _r_dir(root, "home/alice", mode=0o750, uid=1234, gid=5678)
    _r_put(root, "home/alice/.profile", b"export PATH\n", uid=1234, gid=5678)
    _r_put(root, "home/alice/notes.txt", b"private\n", mode=0o600, uid=1234, gid=5678)
    _r_dir(root, "srv/www", uid=4242, gid=4242)
    _r_put(root, "srv/www/index.html", b"<p>web</p>\n", uid=4242, gid=4242)
    _r_dir(root, "special")
    os.mkfifo(os.path.join(root, "special/fifo"))
    os.chmod(os.path.join(root, "special/fifo"), 0o644)
    if os.environ.get("DOMUBK_STAGE_AS_USER") != "1":
        os.mknod(os.path.join(root, "special/null"), 0o600 | stat.S_IFCHR, os.makedev(1, 3))
        os.chmod(os.path.join(root, "special/null"), 0o666)
    return [("usr/bin/netprobe", "cap_net_raw+ep")]


def _r_finish(root, epoch, debugfs_cmds):
    """Pin every mtime/atime to ``epoch``, bottom-up, and count what the tree holds."""
    counts = {"entries": 0, "files": 0, "dirs": 0, "symlinks": 0, "specials": 0,
              "apparent_bytes": 0, "allocated_bytes": 0}
    seen = set()
    paths = []
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in sorted(filenames + dirnames):
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            os.utime(path, (epoch, epoch), follow_symlinks=False)
            paths.append(path)
            if stat.S_ISDIR(st.st_mode):
                counts["dirs"] += 1
            elif stat.S_ISREG(st.st_mode):
                counts["files"] += 1
            elif stat.S_ISLNK(st.st_mode):
                counts["symlinks"] += 1
            else:
                counts["specials"] += 1
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                counts["entries"] += 1
                counts["apparent_bytes"] += st.st_size
                counts["allocated_bytes"] += st.st_blocks * 512
    os.utime(root, (epoch, epoch))
    if debugfs_cmds:
        with open(debugfs_cmds, "w", encoding="utf-8", errors="surrogateescape") as f:
            f.write(f'sif "/" ctime @{epoch}\n')
            for path in sorted(paths):
                rel = "/" + os.path.relpath(path, root)
                if '"' in rel or "\n" in rel:
                    raise SystemExit(f"cannot name {rel!r} to debugfs")
                f.write(f'sif "{rel}" ctime @{epoch}\n')
    return counts


def _r_mutate(spec):
    root, seed = spec["root"], spec["seed"]
    rng = random.Random(f"mutate:{seed}")
    when = spec["epoch"] + 86400 * (1 + seed % 1000)
    dev = os.lstat(root).st_dev
    files, dirs, linked, xattr_files = [], [], [], []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        keep = []
        for name in sorted(dirnames):
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            # Stay on this filesystem; leave /etc (the guest's fstab) and lost+found alone.
            if (not stat.S_ISDIR(st.st_mode) or st.st_dev != dev or os.path.ismount(path)
                    or (rel_dir == "." and name in ("etc", "lost+found"))):
                continue
            keep.append(name)
            if rel_dir != ".":
                dirs.append(os.path.join(rel_dir, name))
        dirnames[:] = keep
        for name in sorted(filenames):
            rel = os.path.normpath(os.path.join(rel_dir, name))
            st = os.lstat(os.path.join(root, rel))
            if not stat.S_ISREG(st.st_mode):
                continue
            if st.st_nlink > 1:
                linked.append(rel)
            else:
                files.append(rel)
            if "user.domubk" in os.listxattr(os.path.join(root, rel), follow_symlinks=False):
                xattr_files.append(rel)
    counts = {"added": 0, "modified": 0, "deleted": 0, "renamed_dirs": 0, "mode_changes": 0,
              "owner_changes": 0, "links_added": 0, "links_removed": 0, "xattrs_changed": 0}
    picked = rng.sample(files, min(len(files), 31))
    to_modify, to_delete = picked[:10], picked[10:20]
    to_chmod, to_chown, to_link = picked[20:25], picked[25:30], picked[30:31]
    for rel in to_modify:
        path = os.path.join(root, rel)
        size = os.path.getsize(path) + 1 + rng.randint(0, 5000)
        with open(path, "r+b") as f:
            f.truncate(0)
            f.write(_r_bytes(f"mutate:{seed}", rel, size))
        os.utime(path, (when, when))
        counts["modified"] += 1
    for rel in to_delete:
        os.unlink(os.path.join(root, rel))
        counts["deleted"] += 1
    for rel in to_chmod:
        path = os.path.join(root, rel)
        old = stat.S_IMODE(os.lstat(path).st_mode)
        os.chmod(path, next(m for m in (0o640, 0o755, 0o600) if m != old))
        counts["mode_changes"] += 1
    for rel in to_chown:
        path = os.path.join(root, rel)
        st = os.lstat(path)
        uid, gid = next(o for o in ((4242, 4242), (1234, 5678), (0, 0))
                        if o != (st.st_uid, st.st_gid))
        _r_owner(path, uid, gid)
        counts["owner_changes"] += 1
    new_dir = os.path.join(root, f"mutated-{seed}")
    os.makedirs(new_dir, mode=0o755, exist_ok=True)
    for i in range(20):
        rel = f"mutated-{seed}/new-{i:03d}.dat"
        path = _r_put(root, rel, _r_bytes(f"mutate:{seed}", rel, rng.randint(0, 70000)))
        os.utime(path, (when, when))
        counts["added"] += 1
    for rel in to_link:
        os.link(os.path.join(root, rel), os.path.join(new_dir, "new-hard-link"))
        counts["links_added"] += 1
    if linked:
        os.unlink(os.path.join(root, linked[-1]))
        counts["links_removed"] += 1
    existing = [r for r in xattr_files + files if os.path.exists(os.path.join(root, r))]
    if existing:
        target = existing[0]
        os.setxattr(os.path.join(root, target), "user.domubk", f"mutated-{seed}".encode(),
                    follow_symlinks=False)
        counts["xattrs_changed"] += 1
    renamable = [d for d in dirs if os.path.isdir(os.path.join(root, d))]
    if renamable:
        rel = rng.choice(renamable)
        os.rename(os.path.join(root, rel), os.path.join(root, f"{rel}-renamed-{seed}"))
        counts["renamed_dirs"] += 1
    return counts


def _r_fill(spec):
    """Write ``size`` seeded bytes at ``offset`` of an existing file (or a new one)."""
    path, left = spec["path"], spec["size"]
    rng = random.Random(spec["key"])
    if not spec["create"] and not os.path.isfile(path):
        raise SystemExit(f"{path}: no such file to fill")
    fd = os.open(path, os.O_WRONLY | (os.O_CREAT if spec["create"] else 0), 0o600)
    try:
        offset = spec["offset"]
        while left:
            chunk = rng.randbytes(min(left, 1 << 20))
            os.pwrite(fd, chunk, offset)
            offset += len(chunk)
            left -= len(chunk)
    finally:
        os.close(fd)
    return {"written": spec["size"]}


def _r_write(spec):
    fd = os.open(spec["path"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(spec["text"])
    return {"written": len(spec["text"])}


def _r_fat(spec):
    """Put seeded files into a fresh FAT32 filesystem image, without mounting it.

    Clusters are taken in order from the first free one; every FAT copy and the FSInfo
    free count (which fsck.fat checks) are updated. Names must be 8.3 and upper case.
    """
    t = time.gmtime(spec["epoch"])
    dos_date = ((t.tm_year - 1980) << 9) | (t.tm_mon << 5) | t.tm_mday
    dos_time = (t.tm_hour << 11) | (t.tm_min << 5) | (t.tm_sec // 2)
    path = spec["path"]
    with open(path, "r+b") as f:
        boot = f.read(512)
        bps, spc, reserved, nfats = struct.unpack_from("<HBHB", boot, 11)
        fatsz16 = struct.unpack_from("<H", boot, 22)[0]
        total, fatsz, _flags, _ver, root, fsinfo, backup = struct.unpack_from("<IIHHIHH", boot,
                                                                              32)
        if boot[510:512] != b"\x55\xaa" or fatsz16 or not fatsz or boot[82:90] != b"FAT32   ":
            raise SystemExit(f"{path}: not a FAT32 filesystem")
        data_start = reserved + nfats * fatsz
        last = (total - data_start) // spc + 1
        csize = bps * spc
        f.seek(reserved * bps)
        fat = bytearray(f.read(fatsz * bps))
        state = {"next": 2, "taken": 0}

        def get(n):
            return struct.unpack_from("<I", fat, 4 * n)[0] & 0x0FFFFFFF

        def alloc(count):
            out = []
            n = state["next"]
            while len(out) < count:
                if n > last:
                    raise SystemExit(f"{path}: no free cluster left")
                if get(n) == 0:
                    out.append(n)
                n += 1
            state["next"] = n
            state["taken"] += count
            for a, b in zip(out, out[1:] + [0x0FFFFFFF], strict=True):
                struct.pack_into("<I", fat, 4 * a, b)
            return out

        def where(cluster):
            return (data_start + (cluster - 2) * spc) * bps

        def short_name(name):
            base, _, ext = name.partition(".")
            allowed = set("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-~!#$%&'()@^{}")
            if not (0 < len(base) <= 8 and len(ext) <= 3 and set(base + ext) <= allowed):
                raise SystemExit(f"{name!r} is not an upper-case 8.3 name")
            return (base.ljust(8) + ext.ljust(3)).encode("ascii")

        def entry(name, attr, cluster, size):
            return struct.pack("<11sBBBHHHHHHHI", name, attr, 0, 0, dos_time, dos_date, dos_date,
                               cluster >> 16, dos_time, dos_date, cluster & 0xFFFF, size)

        def add(directory, raw):
            cluster = directory
            while cluster < 0x0FFFFFF8:
                f.seek(where(cluster))
                block = f.read(csize)
                for i in range(0, csize, 32):
                    if block[i] in (0, 0xE5):
                        f.seek(where(cluster) + i)
                        f.write(raw)
                        return
                cluster = get(cluster)
            raise SystemExit(f"{path}: directory at cluster {directory} is full")

        dirs = {"": root}
        for rel, size in spec["files"]:
            names = rel.split("/")
            parent, walked = root, ""
            for name in names[:-1]:
                walked += "/" + name
                if walked not in dirs:
                    (cluster,) = alloc(1)
                    f.seek(where(cluster))
                    f.write(entry(b".          ", 0x10, cluster, 0)
                            + entry(b"..         ", 0x10, 0 if parent == root else parent, 0)
                            + bytes(csize - 64))
                    add(parent, entry(short_name(name), 0x10, cluster, 0))
                    dirs[walked] = cluster
                parent = dirs[walked]
            data = _r_bytes(spec["seed"], rel, size)
            chain = alloc(-(-size // csize)) if size else []
            for i, cluster in enumerate(chain):
                f.seek(where(cluster))
                f.write(data[i * csize:(i + 1) * csize])
            add(parent, entry(short_name(names[-1]), 0x20, chain[0] if chain else 0, size))
        for i in range(nfats):
            f.seek((reserved + i * fatsz) * bps)
            f.write(fat)
        for sector in (fsinfo, backup + fsinfo) if backup else (fsinfo,):
            f.seek(sector * bps)
            info = f.read(512)
            if info[:4] != b"RRaA" or info[484:488] != b"rrAa":
                raise SystemExit(f"{path}: no FSInfo sector at {sector}")
            free = struct.unpack_from("<I", info, 488)[0]
            f.seek(sector * bps + 488)
            f.write(struct.pack("<II", free - state["taken"], state["next"]))
    return {"clusters": state["taken"]}




if __name__ == "__main__":
    print(json.dumps(_r_main(json.loads(sys.argv[1]))))
