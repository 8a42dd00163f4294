"""The lab's recipe hashing, package lists and QEMU command line (no VM, no root)."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolkit.lab import build_cached, cache_dir, prune, recipe_dir, tree_hash
from toolkit.lab.images import dom0_packages
from toolkit.lab.vm import VmImage, console_tail, qemu_argv, read_packages


def make_tree(root: Path) -> Path:
    (root / "rootfs" / "etc").mkdir(parents=True)
    (root / "packages.txt").write_text("systemd\ndocker.io\n")
    (root / "rootfs" / "etc" / "hostname").write_text("domu-lab\n")
    script = root / "customize"
    script.write_text("#!/bin/sh\ntrue\n")
    script.chmod(0o755)
    return root


def test_same_files_hash_the_same_wherever_they_live(tmp_path: Path) -> None:
    a = make_tree(tmp_path / "a")
    b = make_tree(tmp_path / "b")
    assert tree_hash(a) == tree_hash(b)


@pytest.mark.parametrize("change", ["content", "name", "exec_bit", "new_file", "extra"])
def test_any_change_to_a_recipe_changes_its_hash(tmp_path: Path, change: str) -> None:
    root = make_tree(tmp_path / "r")
    before = tree_hash(root, extra=("bookworm",))
    if change == "content":
        (root / "packages.txt").write_text("systemd\ndocker.io\nlvm2\n")
    elif change == "name":
        (root / "packages.txt").rename(root / "packages.list")
    elif change == "exec_bit":
        (root / "customize").chmod(0o644)
    elif change == "new_file":
        (root / "rootfs" / "etc" / "motd").write_text("")
    after = tree_hash(root, extra=("trixie",) if change == "extra" else ("bookworm",))
    assert after != before


def test_bytecode_caches_do_not_change_the_hash(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "r")
    before = tree_hash(root)
    (root / "__pycache__").mkdir()
    (root / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    assert tree_hash(root) == before


def test_moving_bytes_between_files_changes_the_hash(tmp_path: Path) -> None:
    # Length-prefixed entries: "ab"+"c" and "a"+"bc" must not collide.
    one, two = tmp_path / "one", tmp_path / "two"
    for root, (x, y) in ((one, ("ab", "c")), (two, ("a", "bc"))):
        root.mkdir()
        (root / "x").write_text(x)
        (root / "y").write_text(y)
    assert tree_hash(one) != tree_hash(two)


def test_the_repository_recipes_exist_and_hash() -> None:
    for name in ("vm", "base", "dom0"):
        assert len(tree_hash(recipe_dir(name))) == 64
    assert "docker.io" in read_packages(recipe_dir("vm") / "packages.txt")


def test_vm_package_list_keeps_lvm_and_kpartx_out() -> None:
    # The VM's udev would auto-activate and auto-map what the containers create.
    packages = set(read_packages(recipe_dir("vm") / "packages.txt"))
    assert not packages & {"lvm2", "kpartx", "dmsetup", "multipath-tools"}
    assert {"linux-image-cloud-amd64", "docker.io", "systemd", "openssh-server"} <= packages


def test_package_list_ignores_comments_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "p.txt"
    path.write_text("# heading\n\nsystemd  # init\n  docker.io\n#lvm2\n")
    assert read_packages(path) == ["systemd", "docker.io"]


def test_cache_dir_follows_xdg_cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "domu-backup" / "lab"
    assert cache_dir().is_dir()


def test_prune_keeps_only_the_current_key(tmp_path: Path) -> None:
    (tmp_path / "vm-old").mkdir()
    (tmp_path / "vm-old" / "disk.qcow2").write_text("x")
    (tmp_path / "vm-new").mkdir()
    (tmp_path / "base-old.tar").write_text("x")
    prune(tmp_path, "vm-", keep="vm-new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base-old.tar", "vm-new"]


def image(tmp_path: Path) -> VmImage:
    return VmImage("k" * 64, tmp_path / "disk.qcow2", tmp_path / "vmlinuz", tmp_path / "initrd")


def test_qemu_publishes_dockerd_on_loopback_only(tmp_path: Path) -> None:
    argv = qemu_argv(image(tmp_path), tmp_path / "run", 41234)
    netdev = argv[argv.index("-netdev") + 1]
    assert "hostfwd=tcp:127.0.0.1:41234-:2375" in netdev
    assert "0.0.0.0" not in netdev


def test_qemu_boots_the_overlay_with_apparmor_off_and_serial_to_a_file(tmp_path: Path) -> None:
    run = tmp_path / "run"
    argv = qemu_argv(image(tmp_path), run, 41234)
    assert f"file={run / 'overlay.qcow2'}" in argv[argv.index("-drive") + 1]
    assert str(tmp_path / "disk.qcow2") not in " ".join(argv)  # never the cached disk itself
    append = argv[argv.index("-append") + 1].split()
    assert "apparmor=0" in append and "root=/dev/vda" in append
    assert argv[argv.index("-serial") + 1] == f"file:{run / 'console.log'}"
    assert argv[argv.index("-smp") + 1] == "2"
    assert int(argv[argv.index("-m") + 1]) >= 8192


def test_accelerator_is_tcg_unless_overridden(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOMU_LAB_ACCEL", raising=False)
    argv = qemu_argv(image(tmp_path), tmp_path, 1)
    assert argv[argv.index("-accel") + 1] == "tcg"
    monkeypatch.setenv("DOMU_LAB_ACCEL", "kvm")
    argv = qemu_argv(image(tmp_path), tmp_path, 1)
    assert argv[argv.index("-accel") + 1] == "kvm"


def test_cpu_is_every_emulated_feature_but_avx_unless_overridden(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOMU_LAB_CPU", raising=False)
    argv = qemu_argv(image(tmp_path), tmp_path, 1)
    assert argv[argv.index("-cpu") + 1] == "max,-avx,-avx2"
    monkeypatch.setenv("DOMU_LAB_CPU", "qemu64")
    argv = qemu_argv(image(tmp_path), tmp_path, 1)
    assert argv[argv.index("-cpu") + 1] == "qemu64"


def test_dom0_recipe_builds_on_its_natively_made_root_and_disables_udev() -> None:
    dockerfile = (recipe_dir("dom0") / "Dockerfile").read_text()
    assert [ln for ln in dockerfile.splitlines() if ln.startswith("FROM ")] == [
        "FROM domubk-dom0-root"]
    # Nothing is installed under the VM's emulation: the packages come with the root.
    assert "apt-get" not in dockerfile
    assert {"lvm2", "kpartx", "openssh-server", "rsync", "python3-paramiko", "tini"} <= set(
        dom0_packages())
    assert "DM_DISABLE_UDEV=1" in dockerfile
    settings = {line.split("=")[0].strip(): line.split("=")[1].strip()
                for line in (recipe_dir("dom0") / "lvmlocal.conf").read_text().splitlines()
                if "=" in line and not line.lstrip().startswith("#")}
    assert settings == {"udev_sync": "0", "udev_rules": "0",
                        "obtain_device_list_from_udev": "0", "use_devicesfile": "1"}


def test_console_tail_is_plain_text_without_blank_lines(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    log.write_text("boot\r\n\r\n[\x1b[0;32m  OK  \x1b[0m] Started \x1b[0;1;39mdocker\x1b[0m.\r\n"
                   + "".join(f"line {i}\n" for i in range(50)))
    tail = console_tail(log, lines=3)
    assert tail == "line 47\nline 48\nline 49"
    assert console_tail(log, lines=100).splitlines()[1] == "[  OK  ] Started docker."


def test_console_tail_of_a_missing_log_says_so(tmp_path: Path) -> None:
    assert console_tail(tmp_path / "nope.log") == "(no console log)"


def test_a_build_lands_under_its_final_name_and_prunes_older_keys(tmp_path: Path) -> None:
    (tmp_path / "base-old.tar").write_text("old")

    def build(work: Path) -> Path:
        (work / "base.tar").write_text("new")
        return work / "base.tar"

    build_cached(tmp_path / "base-new.tar", "base-", build)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base-new.tar"]
    assert (tmp_path / "base-new.tar").read_text() == "new"


def test_a_failed_build_leaves_neither_artefact_nor_scratch(tmp_path: Path) -> None:
    (tmp_path / "vm-old").mkdir()

    def build(work: Path) -> Path:
        (work / "image").mkdir()
        raise RuntimeError("mirror unreachable")

    with pytest.raises(RuntimeError):
        build_cached(tmp_path / "vm-new", "vm-", build)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vm-old"]
