"""The test tree itself: unique module names, and the README's promises pointing at tests
that exist."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent
PROMISE = re.compile(r"^- \*\*R(\d+)\. ", re.M)
TEST_REF = re.compile(r"`(tests/(?:unit|e2e)/[\w/]+\.py)::(\w+)")
CODE_REF = re.compile(r"\bR(\d{1,2})\b")


def _promises() -> str:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("\n## Promises\n")
    end = readme.index("\n## ", start + 1)
    return readme[start:end]


def test_test_module_basenames_are_unique_across_unit_and_e2e():
    names = Counter(p.name for p in TESTS.rglob("test_*.py"))
    assert [n for n, c in names.items() if c > 1] == []


def test_the_readme_lists_each_promise_once_in_order():
    numbers = [int(n) for n in PROMISE.findall(_promises())]
    assert numbers == list(range(1, len(numbers) + 1)) and len(numbers) >= 27


def test_every_test_a_promise_names_exists():
    refs = TEST_REF.findall(_promises())
    assert len(refs) > 50
    missing = []
    for path, name in refs:
        file = ROOT / path
        if not file.is_file() or not re.search(rf"^(?:async )?def {name}\(", file.read_text(),
                                               re.M):
            missing.append(f"{path}::{name}")
    assert missing == []


def test_every_promise_the_code_and_tests_cite_is_in_the_readme():
    known = {int(n) for n in PROMISE.findall(_promises())}
    cited: dict[int, str] = {}
    for tree in ("toolkit", "tests", "tasks.py"):
        base = ROOT / tree
        for file in [base] if base.is_file() else base.rglob("*.py"):
            for n in CODE_REF.findall(file.read_text()):
                cited.setdefault(int(n), str(file.relative_to(ROOT)))
    assert {n: f for n, f in cited.items() if n not in known} == {}


def test_the_readmes_code_map_names_every_module_of_the_product():
    """The README's "How the code is laid out" names every file of the product, and only
    files that exist: a module added or removed without the map fails here."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## How the code is laid out", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`(toolkit/[\w/]+\.py)`", section))
    product = {str(p.relative_to(ROOT)) for p in (ROOT / "toolkit").rglob("*.py")
               if "lab" not in p.parts and p.name != "__init__.py"
               and p.parent.name != "facts"}
    assert named - product == set(), "the map names files that do not exist"
    assert product - named == set(), "files the map does not name"
    facts = {p.stem for p in (ROOT / "toolkit" / "facts").glob("*.py")} - {"__init__"}
    assert "`toolkit/facts/*.py`" in section
    row = next(line for line in section.splitlines() if "`toolkit/facts/*.py`" in line)
    assert {f for f in facts if f"`{f}`" not in row} == set()
