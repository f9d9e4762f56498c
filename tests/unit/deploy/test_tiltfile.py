"""tilt/Tiltfile, executed with stand-ins for Tilt's builtins that record every call.

The Tiltfile is written in the subset of Starlark that Python also runs, so what it declares
(images, syncs, manifests, resources, port-forwards, ordering) is checked here as data, and its
`local()` calls run for real, from the tilt/ folder as Tilt would run them.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from accrue.embedded.stack import GATEWAY, SERVICE_NAMES

ROOT = Path(__file__).resolve().parents[3]
TILT = ROOT / "tilt"
SERVICES = SERVICE_NAMES


@dataclass
class TiltCalls:
    docker_builds: dict[str, dict[str, Any]] = field(default_factory=dict)
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)
    yaml: list[Any] = field(default_factory=list)
    kustomize: list[str] = field(default_factory=list)
    watched: list[str] = field(default_factory=list)


def run_tiltfile() -> TiltCalls:
    calls = TiltCalls()

    def local(command: list[str] | str, quiet: bool = False, **_: Any) -> str:
        argv = command if isinstance(command, list) else ["sh", "-c", command]
        return subprocess.run(argv, cwd=TILT, capture_output=True, text=True, check=True).stdout

    def docker_build(ref: str, **kwargs: Any) -> None:
        assert ref not in calls.docker_builds, f"{ref} is built twice"
        calls.docker_builds[ref] = kwargs

    def k8s_resource(workload: str, **kwargs: Any) -> None:
        assert workload not in calls.resources, f"{workload} is configured twice"
        calls.resources[workload] = kwargs

    def kustomize(path: str) -> str:
        calls.kustomize.append(path)
        return f"<kustomize {path}>"

    builtins = {
        "local": local,
        "docker_build": docker_build,
        "k8s_resource": k8s_resource,
        "k8s_yaml": calls.yaml.append,
        "kustomize": kustomize,
        "watch_file": calls.watched.append,
        "sync": lambda src, dest: ("sync", src, dest),
        "fall_back_on": lambda paths: ("fall_back_on", paths),
        "link": lambda url, name: (url, name),
    }
    source = (TILT / "Tiltfile").read_text()
    exec(compile(source, str(TILT / "Tiltfile"), "exec"), builtins)
    return calls


@pytest.fixture(scope="module")
def tilt() -> TiltCalls:
    return run_tiltfile()


def from_tilt(path: str) -> Path:
    """A path as the Tiltfile writes it (relative to tilt/), resolved."""
    return (TILT / path).resolve()


def test_the_tiltfile_builds_every_service_in_the_catalogue(tilt: TiltCalls, processes) -> None:
    assert sorted(tilt.docker_builds) == sorted(f"accrue/{name}" for name in processes)


@pytest.mark.parametrize("name", [*SERVICES, GATEWAY.name])
def test_each_image_is_the_one_dockerfiles_dev_stage_for_that_service(tilt: TiltCalls, name: str) -> None:
    build = tilt.docker_builds[f"accrue/{name}"]
    assert from_tilt(build["dockerfile"]) == ROOT / "deploy" / "docker" / "Dockerfile"
    assert from_tilt(build["context"]) == ROOT
    assert build["build_args"] == {"SERVICE": name}
    assert build["target"] == "dev"
    assert re.search(
        r"^FROM \S+ AS dev$", (ROOT / "deploy" / "docker" / "Dockerfile").read_text(), re.MULTILINE
    )
    # The build context holds what the Dockerfile copies, for this service only.
    assert {"constraints.txt", "deploy/docker", f"services/{name}"} <= set(build["only"])
    assert not [p for p in build["only"] if p.startswith("services/") and p != f"services/{name}"]


def _site_packages_python(dockerfile: str) -> str:
    [version] = re.findall(r"^ARG PYTHON_IMAGE=python:(\d+\.\d+)-slim$", dockerfile, re.MULTILINE)
    return version


@pytest.mark.parametrize("name", [*SERVICES, GATEWAY.name])
def test_live_update_syncs_the_service_and_exactly_the_libs_its_image_installs(
    tilt: TiltCalls, name: str
) -> None:
    build = tilt.docker_builds[f"accrue/{name}"]
    steps = build["live_update"]
    syncs = [s for s in steps if s[0] == "sync"]
    [fall_back] = [s for s in steps if s[0] == "fall_back_on"]
    assert steps[0] == fall_back, "fall_back_on must come before the syncs"

    version = _site_packages_python((ROOT / "deploy" / "docker" / "Dockerfile").read_text())
    assert {dest for _, _, dest in syncs} == {f"/opt/venv/lib/python{version}/site-packages/accrue"}

    image_libs = subprocess.run(
        ["python3", str(ROOT / "deploy" / "docker" / "local_requirements.py"), "--local", name],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    synced = {from_tilt(src) for _, src, _ in syncs}
    assert synced == {Path(p) / "src" / "accrue" for p in image_libs}
    assert all(path.is_dir() for path in synced)
    # Every synced folder's lib is in the build context, or a change to it would fall outside.
    assert {Path(p).relative_to(ROOT).as_posix() for p in image_libs} <= set(build["only"])
    # A dependency change needs pip, so it rebuilds instead of syncing.
    assert {Path(p) / "pyproject.toml" for p in image_libs} <= {from_tilt(p) for p in fall_back[1]}


def test_the_tiltfile_deploys_the_local_overlay(tilt: TiltCalls) -> None:
    assert [from_tilt(p) for p in tilt.kustomize] == [ROOT / "deploy" / "k8s" / "overlays" / "local"]
    assert tilt.yaml == [f"<kustomize {tilt.kustomize[0]}>"]


def test_every_tilt_resource_is_a_workload_of_the_local_overlay(tilt: TiltCalls, rendered) -> None:
    r = rendered["local"]
    workloads = {o["metadata"]["name"] for o in [*r.all("Deployment"), *r.all("StatefulSet")]}
    assert set(tilt.resources) == workloads
    # Tilt swaps its builds in by image name: the overlay must still name accrue/<service>.
    for ref in tilt.docker_builds:
        name = ref.split("/")[1]
        image = r.get("Deployment", name)["spec"]["template"]["spec"]["containers"][0]["image"]
        assert image.split(":")[0] == ref


def test_port_forwards_are_the_gateway_and_each_services_metrics_port(tilt: TiltCalls, processes) -> None:
    assert tilt.resources["gateway"]["port_forwards"] == ["8080:8080"]
    for name in SERVICES:
        port = processes[name].metrics_port
        assert tilt.resources[name]["port_forwards"] == [f"{port}:{port}"]


def test_infrastructure_comes_first_and_the_gateway_last(tilt: TiltCalls) -> None:
    for name in SERVICES:
        assert set(tilt.resources[name]["resource_deps"]) == {"postgres", "nats"}
    assert set(tilt.resources["gateway"]["resource_deps"]) == set(SERVICES)
    labels = {name: tuple(spec["labels"]) for name, spec in tilt.resources.items()}
    assert labels == {
        "postgres": ("infra",),
        "nats": ("infra",),
        **dict.fromkeys(SERVICES, ("services",)),
        "gateway": ("gateway",),
    }


def test_the_tiltfile_reloads_when_a_dependency_list_changes(tilt: TiltCalls) -> None:
    watched = {from_tilt(p) for p in tilt.watched}
    assert {ROOT / "services" / name / "pyproject.toml" for name in [*SERVICES, GATEWAY.name]} <= watched
    assert ROOT / "libs" / "runtime" / "pyproject.toml" in watched
