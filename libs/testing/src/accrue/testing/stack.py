"""The whole stack as subprocesses, for end-to-end and fault tests.

Every service is migrated, then every service and the gateway start on free ports against the
given database and NATS; `up()` returns once each answers its readiness probe. A test may then
kill -9, stop (SIGTERM) and restart single processes; each restart keeps its ports and env.
Output goes to one log file per process (restarts append), so a failure can show it.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import datetime as dt
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from accrue.embedded.readiness import NotReadyError, wait_until_ready
from accrue.embedded.stack import (
    GATEWAY,
    MigrationError,
    PortAssignment,
    StackProcess,
    child_environ,
    internal_keys_dir,
    local_issuer_dir,
    module_command,
    run_migrations,
    stack_processes,
)
from accrue.identity.local_issuer import LOCAL_ISSUER_PATH, LocalIssuer
from accrue.runtime.clock import Clock
from accrue.testing.identity import LocalTokens, make_keys
from accrue.testing.instants import CLOCK_START_ENV as CLOCK_START


class StackError(RuntimeError):
    """The stack (or one of its processes) did not do what was asked; the message has its log."""


def _tail(path: Path, lines: int) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no output)"
    return "\n".join(text.splitlines()[-lines:]) or "(no output)"


class Stack:
    """Processes of the stack, each with its log file; see the module docstring."""

    def __init__(
        self,
        processes: Sequence[StackProcess],
        log_dir: Path,
        *,
        ports: PortAssignment | None = None,
        database_url: str | None = None,
        nats_url: str | None = None,
        ready_timeout: float = 90.0,
        stop_timeout: float = 10.0,
        identity_dir: Path | None = None,
    ) -> None:
        self.identity_dir = identity_dir
        self.processes = {p.name: p for p in processes}
        self.log_dir = Path(log_dir)
        self.ports = ports
        self.database_url = database_url
        self.nats_url = nats_url
        self.ready_timeout = ready_timeout
        self.stop_timeout = stop_timeout
        self._popen: dict[str, subprocess.Popen[bytes]] = {}
        self._starts: dict[str, int] = dict.fromkeys(self.processes, 0)
        # (the processes' clock start, when the first process started): every (re)start gets the
        # same timeline, so a restarted process's clock does not jump back to the start instant.
        self._timeline: tuple[dt.datetime, float] | None = None

    @classmethod
    def from_catalogue(
        cls,
        *,
        database_url: str,
        nats_url: str,
        log_dir: Path,
        ports: PortAssignment | None = None,
        command: Callable[[str], Sequence[str]] = module_command,
        log_level: str = "INFO",
        ready_timeout: float = 90.0,
        stop_timeout: float = 10.0,
        clock_start: dt.datetime | None = None,
        extra_env: Mapping[str, str] | None = None,
        identity_dir: Path | None = None,
        nats_passwords: Mapping[str, str] | None = None,
    ) -> Stack:
        """Every service and the gateway from accrue.embedded.stack, on free ports by default;
        clock_start starts every process's clock at that instant; extra_env is added to every
        process's environment; nats_passwords (SecuredNats.passwords) logs each service in to
        NATS as its own user."""
        ports = ports or PortAssignment.free()
        identity_dir = identity_dir or Path(log_dir) / "identity"
        make_keys(internal_keys_dir(identity_dir))
        processes = stack_processes(
            identity_dir=identity_dir,
            nats_passwords=nats_passwords,
            clock_start=clock_start,
            database_url=database_url,
            nats_url=nats_url,
            ports=ports,
            log_format="console",
            log_level=log_level,
            command=command,
        )
        if extra_env:
            processes = [dataclasses.replace(p, env={**p.env, **extra_env}) for p in processes]
        return cls(
            processes,
            log_dir,
            identity_dir=identity_dir,
            ports=ports,
            database_url=database_url,
            nats_url=nats_url,
            ready_timeout=ready_timeout,
            stop_timeout=stop_timeout,
        )

    # -- where things are ------------------------------------------------------------------------

    def issuer(self, clock: Clock) -> LocalIssuer:
        """The gateway's local issuer (its keys), to mint tokens as `accrue token` does."""
        assert self.identity_dir is not None
        return LocalIssuer(local_issuer_dir(self.identity_dir), self.gateway_url + LOCAL_ISSUER_PATH, clock)

    def tokens(self, clock: Clock) -> LocalTokens:
        return LocalTokens(self.issuer(clock))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.processes)

    @property
    def gateway_url(self) -> str:
        return self.processes[GATEWAY.name].urls["rest"]

    def grpc_address(self, name: str) -> str:
        return self.processes[name].urls["grpc"]

    def grpc_port(self, name: str) -> int:
        return int(self.grpc_address(name).rsplit(":", 1)[1])

    def metrics_url(self, name: str) -> str:
        return self.processes[name].urls["metrics"]

    def log_path(self, name: str) -> Path:
        self._spec(name)
        return self.log_dir / f"{name}.log"

    def log(self, name: str) -> str:
        """Everything the process printed so far (all its runs, and its migration)."""
        try:
            return self.log_path(name).read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, name: str, lines: int = 40) -> str:
        return _tail(self.log_path(name), lines)

    def pid(self, name: str) -> int | None:
        proc = self._popen.get(name)
        return proc.pid if proc is not None and proc.poll() is None else None

    def running(self, name: str) -> bool:
        return self.pid(name) is not None

    def returncode(self, name: str) -> int | None:
        """The exit code of the process's last run, or None while it runs (or never ran)."""
        proc = self._popen.get(name)
        return proc.poll() if proc is not None else None

    def _spec(self, name: str) -> StackProcess:
        try:
            return self.processes[name]
        except KeyError:
            raise KeyError(f"no process {name!r} in the stack; it has {', '.join(self.processes)}") from None

    # -- the whole stack -------------------------------------------------------------------------

    def up(self) -> Self:
        """Migrate, start everything, wait until all are ready; on failure stop all and raise."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        atexit.register(self.down)
        try:
            self.migrate()
            for name in self.processes:
                self._spawn(name)
            self._wait_ready(list(self.processes))
        except BaseException:
            self.down()
            raise
        return self

    def migrate(self) -> None:
        """Run every migration (concurrently); the output goes to the process's log."""
        wanted = [p for p in self.processes.values() if p.migrate_argv is not None]
        try:
            outputs = run_migrations(wanted, isolate=True)
        except MigrationError as exc:
            self._append(exc.name, f"=== migrate (exit {exc.returncode}) ===\n{exc.output}\n")
            raise StackError(f"{exc}\n(log: {self.log_path(exc.name)})") from None
        for name, output in outputs.items():
            self._append(name, f"=== migrate ===\n{output}\n")

    def down(self) -> None:
        """SIGTERM everything still running, wait, then SIGKILL what is left. Safe to call twice."""
        atexit.unregister(self.down)
        running = {name: p for name, p in self._popen.items() if p.poll() is None}
        for proc in running.values():
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        for name, proc in running.items():
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait()
                self._append(name, f"=== did not exit within {self.stop_timeout:g}s of SIGTERM; killed ===\n")

    def __enter__(self) -> Self:
        return self.up()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.down()

    # -- single processes ------------------------------------------------------------------------

    def start(self, name: str) -> None:
        """(Re)start one process with its ports and env, and wait until it is ready."""
        if self.running(name):
            raise StackError(f"{name} is already running (pid {self.pid(name)})")
        self._spawn(name)
        self._wait_ready([name])

    def stop(self, name: str, timeout: float | None = None) -> int:
        """SIGTERM and wait for a graceful exit; returns the exit code (killed and raises if too slow)."""
        proc = self._running_popen(name)
        timeout = self.stop_timeout if timeout is None else timeout
        _signal_group(proc, signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait()
            raise StackError(
                f"{name} did not exit within {timeout:g}s of SIGTERM and was killed; "
                f"log {self.log_path(name)}:\n{self.tail(name)}"
            ) from None

    def kill(self, name: str) -> int:
        """SIGKILL (kill -9), as a crash; returns once the process is gone."""
        proc = self._running_popen(name)
        _signal_group(proc, signal.SIGKILL)
        return proc.wait()

    def _running_popen(self, name: str) -> subprocess.Popen[bytes]:
        self._spec(name)
        proc = self._popen.get(name)
        if proc is None or proc.poll() is not None:
            raise StackError(f"{name} is not running")
        return proc

    def _append(self, name: str, text: str) -> None:
        with open(self.log_path(name), "a", encoding="utf-8") as log:
            log.write(text)

    def _env(self, spec: StackProcess) -> dict[str, str]:
        env = dict(spec.env)
        start = env.get(CLOCK_START)
        if start is not None:
            if self._timeline is None:
                self._timeline = (dt.datetime.fromisoformat(start), time.monotonic())
            origin, at = self._timeline
            env[CLOCK_START] = (origin + dt.timedelta(seconds=time.monotonic() - at)).isoformat()
        return env

    def _spawn(self, name: str) -> None:
        spec = self._spec(name)
        self._starts[name] += 1
        self._append(name, f"=== start #{self._starts[name]}: {' '.join(spec.argv)} ===\n")
        log: IO[bytes]
        with open(self.log_path(name), "ab") as log:
            # A session of its own: signals go to the process group, and a Ctrl-C meant for
            # pytest does not reach the services before the fixture stops them in order.
            self._popen[name] = subprocess.Popen(
                list(spec.argv),
                env=child_environ(self._env(spec), isolate=True),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _wait_ready(self, names: list[str]) -> None:
        try:
            wait_until_ready(
                {name: self.processes[name].readiness for name in names},
                timeout=self.ready_timeout,
                exit_code=self.returncode,
            )
        except NotReadyError as exc:
            culprits = list(exc.exited) or exc.pending
            logs = "\n".join(
                f"--- {name}: waited for {self.processes[name].readiness}; log {self.log_path(name)} ---\n"
                f"{self.tail(name)}"
                for name in culprits
            )
            raise StackError(f"{exc}\n{logs}\n(all logs in {self.log_dir})") from None

    def report(self, lines: int = 60) -> str:
        """The tail of every process's log, for a failed test's report."""
        parts = [f"logs in {self.log_dir}"]
        for name in self.processes:
            state = f"pid {self.pid(name)}" if self.running(name) else f"exited {self.returncode(name)}"
            parts.append(f"--- {name} ({state}) ---\n{self.tail(name, lines)}")
        return "\n".join(parts)


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    # Each process leads its own session (start_new_session), so its group id is its pid.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)
