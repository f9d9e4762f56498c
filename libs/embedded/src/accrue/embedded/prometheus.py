"""A real Prometheus scraping the stack: Debian's (or any) `prometheus` binary found on PATH.

Optional: `accrue run` starts it when it is installed, and the dashboard proof test needs it;
without it both say so and carry on (or skip). The scrape config is generated from the stack's
port assignment, the same way deploy/prometheus/prometheus.yml lists the default ports.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

from accrue.embedded.nats_server import EmbeddedServerError
from accrue.embedded.ports import free_port
from accrue.embedded.stack import GATEWAY, SERVICES, PortAssignment

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def find_prometheus() -> Path | None:
    """The prometheus executable on PATH (apt-get install prometheus), or None."""
    found = shutil.which("prometheus")
    return Path(found) if found else None


def scrape_config(
    ports: PortAssignment,
    rule_files: Sequence[Path] = (),
    *,
    scrape_interval: str = "15s",
    evaluation_interval: str = "15s",
) -> dict[str, Any]:
    """A Prometheus config: one job per process of the stack (job = service = its name)."""
    jobs = [
        {
            "job_name": s.name,
            "static_configs": [
                {"targets": [f"{ports.host}:{ports.services[s.name].metrics}"], "labels": {"service": s.name}}
            ],
        }
        for s in SERVICES
    ]
    jobs.append(
        {
            "job_name": GATEWAY.name,
            "static_configs": [
                {"targets": [f"{ports.host}:{ports.gateway}"], "labels": {"service": GATEWAY.name}}
            ],
        }
    )
    return {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": evaluation_interval},
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": jobs,
    }


class EmbeddedPrometheus:
    """One prometheus process scraping the stack, its TSDB in data_dir."""

    def __init__(
        self,
        data_dir: Path | str,
        ports: PortAssignment,
        *,
        rule_files: Sequence[Path] = (),
        host: str = "127.0.0.1",
        port: int = 0,
        scrape_interval: str = "15s",
        evaluation_interval: str = "15s",
        start_timeout: float = 30.0,
        binary: Path | None = None,
    ) -> None:
        found = binary or find_prometheus()
        if found is None:
            raise EmbeddedServerError("prometheus is not installed (apt-get install prometheus)")
        self.binary = found
        self.data_dir = Path(data_dir).resolve()
        self.host = host
        self.port = port or free_port(host)
        self.config = scrape_config(
            ports, rule_files, scrape_interval=scrape_interval, evaluation_interval=evaluation_interval
        )
        self.start_timeout = start_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "prometheus.log"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> Self:
        """Write the config, start prometheus and wait until /-/ready answers."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config_path = self.data_dir / "prometheus.json.yml"
        # JSON is YAML: no YAML library needed to write the config.
        config_path.write_text(json.dumps(self.config, indent=2))
        self._log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            [
                str(self.binary),
                f"--config.file={config_path}",
                f"--storage.tsdb.path={self.data_dir / 'tsdb'}",
                f"--web.listen-address={self.host}:{self.port}",
                "--web.enable-lifecycle",
                "--log.level=warn",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise EmbeddedServerError(f"prometheus exited with {self._proc.returncode}:\n{self._tail()}")
            try:
                with _NO_PROXY.open(f"{self.url}/-/ready", timeout=1) as answer:
                    if answer.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        self.stop()
        raise EmbeddedServerError(f"prometheus not ready within {self.start_timeout:.0f}s:\n{self._tail()}")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if it does not exit in time."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self._log is not None:
            self._log.close()
            self._log = None

    def _tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
