"""`accrue run` starts a Prometheus scraping every process of the stack, when it is installed."""

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from accrue.cli.runner import Backends, RunConfig
from accrue.embedded import find_prometheus, free_port
from accrue.embedded.stack import PROCESS_NAMES, PortAssignment

pytestmark = pytest.mark.integration


def config(tmp_path: Path, *, prometheus: bool = True, port: int | None = None) -> RunConfig:
    return RunConfig(
        data_dir=tmp_path,
        database_url="postgresql://unused",
        nats_url="nats://unused",
        ports=PortAssignment.free(),
        prometheus=prometheus,
        prometheus_port=port or free_port(),
    )


@pytest.mark.skipif(
    find_prometheus() is None,
    reason="prometheus not installed: `apt-get install prometheus` (CI installs it via .ci/run)",
)
def test_prometheus_scrapes_every_process_with_the_alert_rules(tmp_path: Path) -> None:
    said: list[str] = []
    backends = Backends(config(tmp_path))
    backends.start_prometheus(said.append)
    try:
        assert backends.prometheus is not None, said
        url = backends.prometheus.url
        assert ("Prometheus", url) in backends.describe()
        deadline = time.monotonic() + 15
        targets: list[dict[str, Any]] = []
        while not targets and time.monotonic() < deadline:  # target discovery takes a moment
            targets = httpx.get(f"{url}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
            time.sleep(0.2)
        assert sorted(t["labels"]["job"] for t in targets) == sorted(PROCESS_NAMES)
        groups = httpx.get(f"{url}/api/v1/rules", timeout=10).json()["data"]["groups"]
        assert "accrue-business-slas" in {g["name"] for g in groups}
    finally:
        backends.stop(said.append)
    assert "stopping Prometheus" in said
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/-/ready", timeout=2)


def test_prometheus_can_be_left_out(tmp_path: Path) -> None:
    off = RunConfig.from_environ({"ACCRUE_PROMETHEUS": "off"}, cwd=tmp_path)
    assert off.prometheus is False
    said: list[str] = []
    backends = Backends(config(tmp_path, prometheus=False))
    backends.start_prometheus(said.append)
    assert backends.prometheus is None
    assert said == []
    assert ("Prometheus", "off") in backends.describe()


def test_a_taken_port_is_said_and_the_run_goes_on(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        said: list[str] = []
        backends = Backends(config(tmp_path, port=port))
        backends.start_prometheus(said.append)
    if find_prometheus() is None:
        assert said == ["Prometheus not installed (apt-get install prometheus); running without it"]
    else:
        assert said == [f"Prometheus not started: port {port} is taken (set ACCRUE_EMBEDDED_PROMETHEUS_PORT)"]
    assert backends.prometheus is None
