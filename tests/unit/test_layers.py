"""The code's layers: every import of the product goes to its own layer or one below.

The README's "How the code is laid out" lists the same layers in the same order; a
module that imports a higher layer (preflight reading the plan's records, say) fails
here, naming both modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ROOT / "toolkit"

# Bottom first. A module may import its own layer and those before it.
LAYERS: list[tuple[str, set[str]]] = [
    ("base", {"toolkit", "errors", "names", "rsync_options", "sizes", "safefs", "log",
              "cmdline", "background", "signals", "failpoint", "owned", "retention"}),
    ("transports", {"runners", "runners.base", "runners.local", "runners.spec",
                    "runners.ssh"}),
    ("config", {"config", "config.fields", "config.readers", "config.parser", "config.load",
                "sample"}),
    ("facts", {"facts", "facts.blkid", "facts.findmnt", "facts.fsparams", "facts.fstab",
               "facts.guestlvm", "facts.lvm", "facts.partitions", "facts.virsh",
               "facts.records"}),
    ("records on the hosts", {"journal", "step_batch", "lock", "marker", "undo", "statedir",
                              "snapshot_hooks",
                              "report", "restore_points"}),
    ("checks", {"preflight"}),
    ("plan", {"plan", "plan_records", "plan_steps", "plan_layout", "plan_render", "plan_points",
              "rsync", "bootarea", "standby", "thin_standby", "standby_xml", "fscheck",
              "units", "rollback"}),
    ("execute", {"execute", "execute_rows", "guards", "guestpaths", "snapshots", "copying",
                 "take_point", "verify", "verify_boot", "promote", "failback", "settle"}),
    ("recover", {"recover"}),
    ("status", {"status", "status_check", "metrics", "progress"}),
    ("jobs", {"app", "hooks", "hosts", "replay"}),
    ("commands", {"command_support", "commands_standby", "commands_promote", "commands",
                  "cli"}),
]
LAB = "lab"  # the rehearsal lab and the bench: above the product, may use any of it
# The one way down into the lab: a docker:// host's transport, imported when one is used.
ALLOWED = {("hosts", "lab.docker_runner")}


def _name(path: Path) -> str:
    parts = path.relative_to(PRODUCT).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts) or "toolkit"


def _imports(path: Path) -> set[str]:
    """The toolkit modules ``path`` imports (anywhere in it, functions included)."""
    me = _name(path)
    package = me.split(".") if path.name == "__init__.py" else me.split(".")[:-1]
    if me == "toolkit":
        package = []
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.startswith("toolkit"):
                target = node.module.removeprefix("toolkit").lstrip(".")
            else:
                continue
            if node.module is None:  # from . import x: x may be a module
                found |= {f"{target}.{a.name}".lstrip(".") for a in node.names}
            else:
                found.add(target or "toolkit")
        elif isinstance(node, ast.Import):
            found |= {a.name.removeprefix("toolkit").lstrip(".") or "toolkit"
                      for a in node.names if a.name.split(".")[0] == "toolkit"}
    return found - {me}


def _layer(module: str) -> int | None:
    for n, (_title, members) in enumerate(LAYERS):
        if module in members:
            return n
    return None


def _modules() -> dict[str, Path]:
    return {_name(p): p for p in PRODUCT.rglob("*.py")}


def test_every_module_of_the_product_has_a_layer():
    lost = sorted(m for m in _modules() if m.split(".")[0] != LAB and _layer(m) is None)
    assert lost == [], "modules in no layer of LAYERS (and of the README's map)"


def test_no_layer_names_a_module_that_does_not_exist():
    known = set(_modules())
    assert sorted(m for _t, members in LAYERS for m in members if m not in known) == []


def _upward(module: str, targets: set[str], known: set[str]) -> list[str]:
    """The imports of ``module`` that reach a higher layer (or the lab)."""
    mine = _layer(module)
    assert mine is not None
    upward = []
    for target in sorted(targets):
        if (module, target) in ALLOWED:
            continue
        while target not in known and "." in target:
            target = target.rsplit(".", 1)[0]  # a name imported from a module or package
        if target not in known:
            target = "toolkit"  # from . import PREFIX: a name of the package itself
        theirs = _layer(target)
        if target.split(".")[0] == LAB or theirs is None or theirs > mine:
            upward.append(f"{module} ({LAYERS[mine][0]}) imports {target} "
                          f"({LAYERS[theirs][0] if theirs is not None else 'the lab'})")
    return upward


@pytest.mark.parametrize("module", sorted(m for m in _modules() if m.split(".")[0] != LAB))
def test_a_module_imports_only_its_layer_and_those_below(module):
    modules = _modules()
    assert _upward(module, _imports(modules[module]), set(modules)) == []


def test_an_upward_import_is_caught_and_named():
    known = set(_modules())
    assert _upward("facts.lvm", {"plan", "errors"}, known) == [
        "facts.lvm (facts) imports plan (plan)"]
    assert _upward("preflight", {"lab.sandbox"}, known) == [
        "preflight (checks) imports lab.sandbox (the lab)"]
    assert _upward("plan", {"facts.lvm", "PREFIX", "journal"}, known) == []
