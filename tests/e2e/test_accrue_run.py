"""`accrue run` (what `make run` calls) with the real services: up, usable, Ctrl-C, data kept."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from accrue.cli.runner import NATS_MONITOR_PORT_VAR, NATS_PORT_VAR
from accrue.embedded import free_port
from accrue.embedded.stack import GATEWAY, SERVICES

pytestmark = pytest.mark.e2e


class Run:
    """`python -m accrue.cli run` in its own process group, its output collected."""

    def __init__(self, env: dict[str, str]) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "accrue.cli", "run"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            assert self.proc.poll() is None, "\n".join(self.lines[-60:])
            assert time.monotonic() < deadline, "\n".join(self.lines[-60:])
            time.sleep(0.1)

    def ctrl_c(self, timeout: float = 60) -> int:
        os.killpg(self.proc.pid, signal.SIGINT)
        return self.proc.wait(timeout)


@pytest.fixture
def run_env() -> Iterator[dict[str, str]]:
    data_dir = Path(tempfile.mkdtemp(prefix="accrue-run-"))  # short: PostgreSQL's socket lives here
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCRUE_")}
    env.update(
        {
            GATEWAY.port_var: str(free_port()),
            NATS_PORT_VAR: str(free_port()),
            NATS_MONITOR_PORT_VAR: str(free_port()),
            "ACCRUE_DATA_DIR": str(data_dir),
        }
    )
    for spec in SERVICES:
        env[spec.grpc_port_var] = str(free_port())
        env[spec.metrics_port_var] = str(free_port())
    yield env
    shutil.rmtree(data_dir, ignore_errors=True)


def accrue_token(env: dict[str, str], gateway: str) -> str:
    """`accrue token` as the banner says, against the running stack's local issuer."""
    done = subprocess.run(
        [sys.executable, "-m", "accrue.cli", "token", "--url", gateway],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_one_command_runs_everything_and_the_data_survives_a_restart(run_env: dict[str, str]) -> None:
    gateway = f"http://127.0.0.1:{run_env[GATEWAY.port_var]}"
    first = Run(run_env)
    try:
        first.wait_for("Press Ctrl-C to stop.")
        assert any(f"REST gateway   {gateway}" in line for line in first.lines)
        assert any("export TOKEN=$(accrue token" in line for line in first.lines)
        anonymous = httpx.get(f"{gateway}/v1/legal-entities", timeout=30)
        assert anonymous.status_code == 401, anonymous.text
        headers = {"Authorization": f"Bearer {accrue_token(run_env, gateway)}"}
        created = httpx.post(
            f"{gateway}/v1/legal-entities",
            json={"code": "KEEP", "name": "Kept", "baseCurrency": "EUR"},
            headers=headers,
            timeout=30,
        )
        assert created.status_code == 200, created.text
        assert first.ctrl_c() == 0
    finally:
        if first.proc.poll() is None:
            first.proc.kill()
    assert any("stopping PostgreSQL" in line for line in first.lines)

    second = Run(run_env)
    try:
        second.wait_for("Press Ctrl-C to stop.")
        # The issuer's keys survived too: a token minted before the restart still works.
        found = httpx.get(f"{gateway}/v1/legal-entities/{created.json()['id']}", headers=headers, timeout=30)
        assert found.status_code == 200, found.text
        assert found.json()["code"] == "KEEP"
        assert second.ctrl_c() == 0
    finally:
        if second.proc.poll() is None:
            second.proc.kill()
