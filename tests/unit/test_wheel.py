"""The wheel a Dom0 installs holds the product and nothing of the rehearsal lab.

The wheel is built offline from the checkout's tracked files (pip, setuptools and wheel,
no build isolation, no index), then its file list and metadata are read, and it is
installed into a directory of its own and imported with the docker SDK made unimportable.
"""

from __future__ import annotations

import email.parser
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

import toolkit

ROOT = Path(__file__).resolve().parents[2]
DEBIAN_12 = {"lxml": "4.9", "paramiko": "2.12", "rich": "13", "prometheus-client": "0.16"}


def _tracked_files() -> list[str]:
    proc = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                          cwd=ROOT, capture_output=True, check=False)
    if proc.returncode == 0:
        return [p for p in proc.stdout.decode().split("\0") if p and (ROOT / p).is_file()]
    return [str(p.relative_to(ROOT)) for p in ROOT.rglob("*")  # a checkout without git
            if p.is_file() and ".git" not in p.parts and "__pycache__" not in p.parts]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for rel in _tracked_files():
        dest = src / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes((ROOT / rel).read_bytes())
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-index",
                           "--no-build-isolation", "--disable-pip-version-check", "-q",
                           "-w", str(out), str(src)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    (built,) = out.glob("*.whl")
    return built


def _metadata(wheel: Path):
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        return email.parser.Parser().parsestr(zf.read(name).decode())


def test_the_wheel_holds_the_product_package_only(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    code = [n for n in names if ".dist-info/" not in n]
    assert code and all(n.startswith("toolkit/") for n in code), code
    assert not [n for n in code if n.startswith("toolkit/lab/")]
    for product in ("toolkit/cli.py", "toolkit/commands.py", "toolkit/app.py",
                    "toolkit/facts/lvm.py", "toolkit/sample.py"):
        assert product in code
    # every product module of the checkout, and nothing else
    checkout = {str(p.relative_to(ROOT)) for p in (ROOT / "toolkit").rglob("*.py")
                if "lab" not in p.relative_to(ROOT / "toolkit").parts}
    assert set(code) == checkout


def test_the_wheel_declares_the_products_dependencies_only(wheel):
    meta = _metadata(wheel)
    required = [r for r in meta.get_all("Requires-Dist") if "extra ==" not in r]
    assert sorted(required) == sorted(f"{n}>={v}" for n, v in DEBIAN_12.items())
    lab = [r for r in meta.get_all("Requires-Dist") if "extra == \"lab\"" in r]
    assert lab == ['docker>=5.0; extra == "lab"', 'invoke>=1.7; extra == "lab"']


def test_the_version_is_written_once(wheel):
    meta = _metadata(wheel)
    assert meta["Version"] == toolkit.__version__
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "version" not in project and project["dynamic"] == ["version"]


def test_the_metadata_is_complete(wheel):
    meta = _metadata(wheel)
    assert meta["Name"] == "domu-backup" and meta["Summary"]
    assert meta["License"] == "MIT"
    assert meta["Requires-Python"] == ">=3.11"
    classifiers = meta.get_all("Classifier")
    assert "License :: OSI Approved :: MIT License" in classifiers
    assert "Intended Audience :: System Administrators" in classifiers
    with zipfile.ZipFile(wheel) as zf:
        entry = next(n for n in zf.namelist() if n.endswith("entry_points.txt"))
        points = zf.read(entry).decode()
        assert any(n.endswith("/LICENSE") for n in zf.namelist())
    assert "domu-backup = toolkit.cli:main" in points
    assert points.count("=") == 1  # the one console script, nothing of the lab's


def test_the_installed_wheel_works_without_the_lab_or_the_docker_sdk(wheel, tmp_path):
    target = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index",
                           "--disable-pip-version-check", "-q", "--target", str(target),
                           str(wheel)], capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    # -S: no site, so no .pth file runs (the checkout's editable install would add the
    # lab back); the wheel comes first, then the directories holding its dependencies.
    libs = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    probe = """
import sys
sys.path[:0] = sys.argv[1:2] + sys.argv[3].split(":")
import importlib, pkgutil
sys.modules["docker"] = None  # the SDK is not there on a Dom0
import toolkit
assert toolkit.__file__.startswith(sys.argv[1]), toolkit.__file__
for mod in pkgutil.walk_packages(toolkit.__path__, "toolkit."):
    importlib.import_module(mod.name)
try:
    import toolkit.lab
except ImportError:
    pass
else:
    raise SystemExit("toolkit.lab is importable")
from toolkit.errors import UsageError
from toolkit.hosts import runner_for
try:
    runner_for("docker://dom0-a")
except UsageError as exc:
    print("refused:", exc)
from toolkit import cli
sys.exit(cli.run(sys.argv[2:3]))
"""
    proc = subprocess.run([sys.executable, "-S", "-c", probe, str(target), "--help",
                           ":".join(libs)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120,
                          env={"PATH": "/usr/bin:/bin"}, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "refused: docker://dom0-a: docker:// hosts are the rehearsal lab's" in proc.stdout
    assert "commands:" in proc.stdout and "rehearse" not in proc.stdout
