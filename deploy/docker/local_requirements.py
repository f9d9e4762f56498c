"""Which of the monorepo's own distributions a service needs, and what else they pull in.

The image build, the Tiltfile and the deploy tests all ask this one script, so "which libs does
billing need" has a single answer: the `accrue-*` dependencies in services/<name>/pyproject.toml,
followed transitively through libs/*/pyproject.toml.

    local_requirements.py --local SERVICE        absolute paths, dependencies first, the service last
    local_requirements.py --third-party SERVICE  every other requirement of that closure, verbatim
    local_requirements.py --libs SERVICE         the lib folder names (libs/<name>) in the closure

An `accrue-*` name that is not a folder of this repo is an error rather than something pip may go
and find on a public index: a name squatted there would otherwise end up in the image.

Standard library only (Python 3.11+ for tomllib): it runs in the bare build stage and on a
developer's machine before any venv exists.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

LOCAL_PREFIX = "accrue-"
_NAME = re.compile(r"^\s*([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)")


def canonical(name: str) -> str:
    """PEP 503 normalisation, so accrue_db, Accrue.DB and accrue-db are one name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    """The distribution name at the start of a PEP 508 requirement string."""
    match = _NAME.match(requirement)
    if match is None:
        raise ValueError(f"cannot read a distribution name from {requirement!r}")
    return canonical(match.group(1))


@dataclass(frozen=True)
class Distribution:
    """One pyproject.toml of the monorepo."""

    name: str
    path: Path
    requires: tuple[str, ...]


def read_distribution(folder: Path) -> Distribution:
    project = tomllib.loads((folder / "pyproject.toml").read_text())["project"]
    return Distribution(canonical(project["name"]), folder, tuple(project.get("dependencies", ())))


@dataclass(frozen=True)
class Plan:
    """A service's install plan: its local distributions in install order and the rest."""

    local: tuple[Distribution, ...]
    third_party: tuple[str, ...]

    @property
    def lib_names(self) -> tuple[str, ...]:
        return tuple(d.path.name for d in self.local if d.path.parent.name == "libs")


def plan(root: Path, service: str) -> Plan:
    """Walk the service's accrue-* dependencies depth first; each lib comes after what it needs."""
    service_dir = root / "services" / service
    if not (service_dir / "pyproject.toml").is_file():
        known = sorted(p.parent.name for p in (root / "services").glob("*/pyproject.toml"))
        raise SystemExit(f"no service {service!r} under {root / 'services'}; the services are {known}")
    libs = {
        d.name: d
        for d in map(read_distribution, sorted(p.parent for p in root.glob("libs/*/pyproject.toml")))
    }

    ordered: list[Distribution] = []
    third_party: set[str] = set()
    visiting: list[str] = []

    def visit(dist: Distribution) -> None:
        if dist in ordered:
            return
        if dist.name in visiting:
            raise SystemExit(f"dependency cycle: {' -> '.join([*visiting, dist.name])}")
        visiting.append(dist.name)
        for requirement in dist.requires:
            name = requirement_name(requirement)
            if name in libs:
                visit(libs[name])
            elif name.startswith(LOCAL_PREFIX):
                raise SystemExit(
                    f"{dist.name} requires {name!r}, which is not a folder under libs/; "
                    "refusing to let pip look for it on a public index"
                )
            else:
                third_party.add(requirement.strip())
        visiting.pop()
        ordered.append(dist)

    visit(read_distribution(service_dir))
    return Plan(tuple(ordered), tuple(sorted(third_party)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("service", help="a folder name under services/, e.g. billing")
    parser.add_argument(
        "--root", type=Path, default=Path(__file__).resolve().parents[2], help="the repository root"
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--local", action="store_true", help="local distribution paths, install order")
    what.add_argument("--third-party", action="store_true", help="all other requirements")
    what.add_argument("--libs", action="store_true", help="lib folder names")
    args = parser.parse_args(argv)

    result = plan(args.root.resolve(), args.service)
    if args.local:
        lines = [str(d.path) for d in result.local]
    elif args.third_party:
        lines = list(result.third_party)
    else:
        lines = list(result.lib_names)
    sys.stdout.write("".join(f"{line}\n" for line in lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
