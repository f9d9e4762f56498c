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
