"""deploy/docker: the one Dockerfile, its install plan and the dev entrypoint.

No Docker engine is needed: the Dockerfile is parsed into stages and instructions, the install
plan (deploy/docker/local_requirements.py) is run and compared with the services' pyproject
files read independently here, and the dev entrypoint runs against stand-in commands.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import pytest

from accrue.embedded.stack import GATEWAY, SERVICE_NAMES

ROOT = Path(__file__).resolve().parents[3]
DOCKER = ROOT / "deploy" / "docker"
DOCKERFILE = DOCKER / "Dockerfile"
SERVICES = (*SERVICE_NAMES, GATEWAY.name)
APP_UID = "10001"


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def parse_dockerfile(text: str) -> tuple[list[tuple[str, str]], list[Stage]]:
    """(instructions before the first FROM, stages), continuation lines joined, comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    preamble: list[tuple[str, str]] = []
    stages: list[Stage] = []
    for line in lines:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            match = re.fullmatch(
                r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", args.strip(), re.IGNORECASE
            )
            assert match, f"cannot read FROM {args}"
            stages.append(Stage(match.group(1), match.group(2)))
        elif stages:
            stages[-1].instructions.append((keyword, args.strip()))
        else:
            preamble.append((keyword, args.strip()))
    return preamble, stages


@pytest.fixture(scope="module")
def dockerfile() -> tuple[list[tuple[str, str]], list[Stage]]:
    return parse_dockerfile(DOCKERFILE.read_text())


def stage(stages: list[Stage], name: str) -> Stage:
    [found] = [s for s in stages if s.name == name]
    return found


@pytest.fixture(scope="module")
def installer() -> ModuleType:
    spec = importlib.util.spec_from_file_location("local_requirements", DOCKER / "local_requirements.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def test_images_build_on_python_3_11_slim(dockerfile) -> None:
    preamble, stages = dockerfile
    assert ("ARG", "PYTHON_IMAGE=python:3.11-slim") in preamble
    assert ("ARG", "SERVICE") in preamble
    for s in stages:
        # Every stage is either the Python base or one of this file's own stages.
        assert s.base == "${PYTHON_IMAGE}" or s.base in {t.name for t in stages} | {"svc-${SERVICE}"}, s.base


def test_every_service_has_a_stage_with_its_entrypoint_and_ports(dockerfile, processes) -> None:
    _, stages = dockerfile
    service_stages = {s.name.removeprefix("svc-"): s for s in stages if s.name and s.name.startswith("svc-")}
    assert sorted(service_stages) == sorted(processes)
    for name, process in processes.items():
        s = service_stages[name]
        assert s.base == "runtime"
        [entrypoint] = s.all("ENTRYPOINT")
        assert json.loads(entrypoint) == ["python", "-m", f"accrue.services.{name}"]
        ports = {int(p) for line in s.all("EXPOSE") for p in line.split()}
        expected = {process.grpc_port, process.metrics_port} - {None}
        assert ports == expected, name


def test_the_image_is_the_service_stage_the_build_arg_names(dockerfile) -> None:
    _, stages = dockerfile
    last = stages[-1]
    # The last stage is what `docker build` without --target produces.
    assert (last.base, last.name, last.instructions) == ("svc-${SERVICE}", None, [])
    assert stage(stages, "dev").base == "svc-${SERVICE}"


def test_the_runtime_runs_as_the_unprivileged_user_the_manifests_expect(dockerfile) -> None:
    _, stages = dockerfile
    runtime = stage(stages, "runtime")
    assert runtime.all("USER") == [f"{APP_UID}:{APP_UID}"]
    assert any(f"--uid {APP_UID}" in run for run in runtime.all("RUN"))
    # Only the venv crosses over from the build stage: no compilers, no sources.
    assert runtime.all("COPY") == ["--from=build /opt/venv /opt/venv"]
    dev = stage(stages, "dev")
    assert dev.all("USER")[-1] == f"{APP_UID}:{APP_UID}"
    for s in stages:
        if s.name and s.name.startswith("svc-"):
            assert s.all("USER") == [], f"{s.name} must not change the user"


def test_the_dockerfile_installs_the_plan_of_the_service_it_builds(dockerfile) -> None:
    _, stages = dockerfile
    plan = stage(stages, "plan")
    copies = plan.all("COPY")
    assert "deploy/docker/local_requirements.py /usr/local/bin/local_requirements.py" in copies
    assert "libs/ libs/" in copies
    assert "services/${SERVICE}/ services/${SERVICE}/" in copies
    [run] = [r for r in plan.all("RUN") if "local_requirements.py" in r]
    assert '--third-party "${SERVICE}" > /plan/third-party.txt' in run
    assert '--local "${SERVICE}" > /plan/local.txt' in run

    runs = stage(stages, "build").all("RUN")
    assert "pip install --no-cache-dir -c /tmp/constraints.txt -r /tmp/third-party.txt" in runs
    [local] = [r for r in runs if "/tmp/local.txt" in r]
    # --no-deps: no accrue-* name is ever resolved against a public index; pip check proves
    # the third-party half covers what the local half requires.
    assert "pip install --no-cache-dir --no-deps -r /tmp/local.txt" in local
    assert local.endswith("&& pip check")


def _declared_closure(service: str) -> set[str]:
    """The service's accrue-* dependencies, transitively, read straight from the pyproject files."""
    libs = {}
    for pyproject in ROOT.glob("libs/*/pyproject.toml"):
        project = tomllib.loads(pyproject.read_text())["project"]
        libs[project["name"]] = pyproject.parent
    todo = [ROOT / "services" / service]
    seen: set[Path] = set()
    while todo:
        folder = todo.pop()
        if folder in seen:
            continue
        seen.add(folder)
        for requirement in tomllib.loads((folder / "pyproject.toml").read_text())["project"]["dependencies"]:
            name = re.split(r"[\s;<>=!~\[]", requirement, maxsplit=1)[0]
            if name.startswith("accrue-"):
                todo.append(libs[name])
    return {str(p) for p in seen}


@pytest.mark.parametrize("service", SERVICES)
def test_the_install_plan_is_the_services_declared_local_dependencies(service: str, installer) -> None:
    plan = installer.plan(ROOT, service)
    paths = [str(d.path) for d in plan.local]
    assert set(paths) == _declared_closure(service)
    assert paths[-1] == str(ROOT / "services" / service)
    # Install order: every distribution after the local ones it requires.
    position = {d.name: i for i, d in enumerate(plan.local)}
    for dist in plan.local:
        for requirement in dist.requires:
            name = installer.requirement_name(requirement)
            if name in position:
                assert position[name] < position[dist.name], f"{dist.name} before {name}"
    # Test and local-run machinery never ships.
    assert not {"embedded", "testing"} & set(plan.lib_names)
    assert not [r for r in plan.third_party if installer.requirement_name(r).startswith("accrue-")]


def test_the_plan_is_the_same_from_the_command_line(installer) -> None:
    # The Dockerfile and the Tiltfile use the command line, not the function.
    out = subprocess.run(
        [sys.executable, str(DOCKER / "local_requirements.py"), "--root", str(ROOT), "--local", "billing"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out == [str(d.path) for d in installer.plan(ROOT, "billing").local]


def _write_project(folder: Path, name: str, dependencies: list[str]) -> None:
    folder.mkdir(parents=True)
    (folder / "pyproject.toml").write_text(f"[project]\nname = {name!r}\ndependencies = {dependencies!r}\n")


def test_the_plan_refuses_an_accrue_dependency_that_is_not_in_the_repository(
    tmp_path: Path, installer
) -> None:
    _write_project(tmp_path / "libs" / "db", "accrue-db", ["sqlalchemy>=2", "accrue-nothere"])
    _write_project(tmp_path / "services" / "x", "accrue-x", ["accrue-db"])
    with pytest.raises(SystemExit, match="accrue-nothere"):
        installer.plan(tmp_path, "x")


def test_the_plan_follows_dependencies_transitively_and_keeps_third_party_markers(
    tmp_path: Path, installer
) -> None:
    _write_project(tmp_path / "libs" / "a", "accrue-a", ["uvloop>=0.21; sys_platform != 'win32'"])
    _write_project(tmp_path / "libs" / "b", "accrue_B", ["accrue-a", "grpcio==1.85.1"])
    _write_project(tmp_path / "libs" / "unused", "accrue-unused", ["left-out"])
    _write_project(tmp_path / "services" / "x", "accrue-x", ["Accrue.B"])
    plan = installer.plan(tmp_path, "x")
    assert plan.lib_names == ("a", "b")
    assert plan.third_party == ("grpcio==1.85.1", "uvloop>=0.21; sys_platform != 'win32'")


@pytest.fixture
def fake_bin(tmp_path: Path) -> Path:
    """`python` and `watchfiles` stand-ins that print how they were called."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("python", "watchfiles"):
        script = bin_dir / tool
        if tool == "python":
            # The entrypoint asks python for site-packages; answer that, echo anything else.
            body = 'case "$2" in *sysconfig*) echo /opt/venv/site ;; *) echo "python $*" ;; esac'
        else:
            body = 'echo "watchfiles $*"'
        script.write_text(f"#!/bin/sh\n{body}\n")
        script.chmod(0o755)
    return bin_dir


def _dev_entrypoint(fake_bin: Path, *args: str) -> str:
    env = {**os.environ, "PATH": f"{fake_bin}:/usr/bin:/bin", "SERVICE_MODULE": "accrue.services.billing"}
    done = subprocess.run(
        ["sh", str(DOCKER / "dev-entrypoint.sh"), *args], env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def test_the_dev_entrypoint_migrates_once_without_a_watcher(fake_bin: Path) -> None:
    assert _dev_entrypoint(fake_bin, "migrate") == "python -m accrue.services.billing migrate"


def test_the_dev_entrypoint_serves_under_watchfiles_watching_site_packages(fake_bin: Path) -> None:
    out = _dev_entrypoint(fake_bin)
    assert out.startswith("watchfiles --target-type command")
    assert "python -m accrue.services.billing" in out
    assert out.endswith("/opt/venv/site/accrue")


def test_the_dev_stage_sets_the_module_the_entrypoint_runs(dockerfile) -> None:
    _, stages = dockerfile
    dev = stage(stages, "dev")
    assert "SERVICE_MODULE=accrue.services.${SERVICE}" in dev.all("ENV")
    assert json.loads(dev.all("ENTRYPOINT")[0]) == ["/usr/local/bin/accrue-dev"]
    assert "deploy/docker/dev-entrypoint.sh /usr/local/bin/accrue-dev" in dev.all("COPY")
