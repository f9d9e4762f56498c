"""The house rules that code review would otherwise have to remember.

* Services never import each other: a service may import contracts, libs and itself only.
* Libs never import services.
* Domain modules stay pure: no database, broker or gRPC imports.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = sorted(p.name for p in (ROOT / "services").iterdir() if (p / "pyproject.toml").exists())
IMPURE = ("sqlalchemy", "asyncpg", "nats", "grpc", "accrue.db", "accrue.eventbus")


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def python_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "migrations/versions" not in str(p))


@pytest.mark.parametrize("service", SERVICES)
def test_services_never_import_each_other(service: str) -> None:
    own = f"accrue.services.{service}"
    offenders = [
        f"{path.relative_to(ROOT)}: {name}"
        for path in python_files(ROOT / "services" / service)
        for name in imports(path)
        if name.startswith("accrue.services") and not (name == own or name.startswith(own + "."))
    ]
    assert offenders == []


def test_libs_never_import_services() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}: {name}"
        for path in python_files(ROOT / "libs")
        for name in imports(path)
        if name.startswith("accrue.services")
    ]
    assert offenders == []


@pytest.mark.parametrize("service", SERVICES)
def test_domain_modules_are_pure(service: str) -> None:
    domain = ROOT / "services" / service / "src" / "accrue" / "services" / service / "domain"
    offenders = [
        f"{path.relative_to(ROOT)}: {name}"
        for path in python_files(domain)
        for name in imports(path)
        if any(name == p or name.startswith(p + ".") for p in IMPURE)
    ]
    assert offenders == []


# "Now" comes from accrue.runtime.clock, injected by each bootstrap; these calls read the wall
# clock behind its back, so a pinned clock would not pin them.
WALL_CLOCK_CALLS = {("datetime", "now"), ("datetime", "utcnow"), ("datetime", "today"), ("date", "today")}
WALL_CLOCK_FUNCTIONS = {("time", "time"), ("time", "time_ns"), ("time", "localtime"), ("time", "gmtime")}
CLOCK_MODULE = ROOT / "libs" / "runtime" / "src" / "accrue" / "runtime" / "clock.py"
PRODUCT_CODE = [ROOT / "services", ROOT / "libs", ROOT / "tools" / "cli"]
# libs/testing and libs/embedded run tests and servers, not the product.
NOT_PRODUCT = [ROOT / "libs" / "testing", ROOT / "libs" / "embedded", ROOT / "libs" / "contracts"]


def wall_clock_reads(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        owner = node.func.value
        owner_name = (
            owner.id
            if isinstance(owner, ast.Name)
            else owner.attr
            if isinstance(owner, ast.Attribute)
            else ""
        )
        pair = (owner_name, node.func.attr)
        if pair in WALL_CLOCK_CALLS or pair in WALL_CLOCK_FUNCTIONS:
            found.append(f"{shown}:{node.lineno}: {owner_name}.{node.func.attr}()")
    return found


def test_product_code_reads_now_only_through_the_clock() -> None:
    files = [
        path
        for folder in PRODUCT_CODE
        for path in python_files(folder)
        if path != CLOCK_MODULE and not any(path.is_relative_to(n) for n in NOT_PRODUCT)
    ]
    assert len(files) > 100  # the walk really saw the code
    offenders = [hit for path in files for hit in wall_clock_reads(path)]
    assert offenders == []


def test_tests_never_read_the_wall_clock() -> None:
    """A test fixes its own now (the `instant` fixture, FixedClock, StartedClock): one that read
    the wall clock would compute its expectations from the day it happens to run."""
    files = [*python_files(ROOT / "tests"), *python_files(ROOT / "libs" / "testing")]
    assert len(files) > 50
    offenders = [hit for path in files for hit in wall_clock_reads(path)]
    assert offenders == []


def test_the_wall_clock_check_finds_each_spelling(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import datetime as dt, time\nfrom datetime import date, datetime\n"
        "a = dt.datetime.now(dt.UTC)\nb = date.today()\nc = time.time()\nd = datetime.utcnow()\n"
        "e = dt.date.fromisoformat('2027-01-01')\n"
    )
    assert [hit.rsplit(": ", 1)[1] for hit in wall_clock_reads(sample)] == [
        "datetime.now()",
        "date.today()",
        "time.time()",
        "datetime.utcnow()",
    ]
