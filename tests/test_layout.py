"""The layout says what each file is: module file names are unique in the package, the
stores beside a Dagster instance have a package of their own, and tests/ holds test
modules only (driver scripts and helpers live in tests/support)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "src" / "agents_pipelines"


def test_no_two_modules_share_a_file_name() -> None:
    where: defaultdict[str, list[str]] = defaultdict(list)
    for path in PACKAGE.rglob("*.py"):
        if path.name != "__init__.py":
            where[path.name].append(str(path.relative_to(PACKAGE)))
    assert {name: paths for name, paths in where.items() if len(paths) > 1} == {}


def test_the_stores_beside_an_instance_are_a_package_of_their_own() -> None:
    orchestration = PACKAGE / "orchestration"
    stores = {path.name for path in (orchestration / "stores").glob("*.py")}
    assert {"checkpoints.py", "spend_journal.py", "databases.py"} <= stores
    assert stores & {path.name for path in orchestration.glob("*.py")} == {"__init__.py"}


def test_tests_holds_test_modules_only() -> None:
    tests = Path(__file__).parent
    others = [
        path.name
        for path in tests.glob("*.py")
        if not path.name.startswith("test_") and path.name != "conftest.py"
    ]
    assert others == [], "move driver scripts and helpers to tests/support"
