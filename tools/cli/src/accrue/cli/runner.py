"""`accrue run` and `accrue migrate`: the whole stack on one machine.

NATS JetStream and PostgreSQL come from the environment (ACCRUE_NATS_URL, ACCRUE_DATABASE_URL,
each independently) or are started embedded in the data dir (ACCRUE_DATA_DIR, default
<repo>/.accrue), so data survives a restart. Every service is migrated, then every service and
the gateway run under honcho on fixed ports, their output interleaved line by line with a
prefix per process. Identity lives in <data dir>/identity: the internal keys every process signs
its calls with (made once) and the local issuer's keys (made by the gateway on first start; `accrue
token` mints from them), unless ACCRUE_GATEWAY_OIDC_ISSUER names an external provider. Where
Debian's `prometheus` is installed, a Prometheus scrapes them all with
the alert rules of deploy/prometheus (ACCRUE_PROMETHEUS=off leaves it out). Ctrl-C or SIGTERM
stops the services first, then Prometheus, NATS and PostgreSQL.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import honcho.manager
from honcho.manager import Manager
from honcho.printer import Message, Printer

from accrue.cli.tokens import identity_dir
from accrue.embedded import (
    EmbeddedNats,
    EmbeddedPostgres,
    EmbeddedPrometheus,
    EmbeddedServerError,
    PortBinding,
    ensure_ports_free,
    find_prometheus,
    port_is_free,
)
from accrue.embedded.readiness import NotReadyError, wait_until_ready
from accrue.embedded.stack import (
    GATEWAY,
    PROCESS_NAMES,
    SERVICE_NAMES,
    PortAssignment,
    StackProcess,
    child_environ,
    generate_nats_passwords,
    internal_keys_dir,
    module_command,
    run_migrations,
    stack_processes,
)
from accrue.eventbus.permissions import render_authorization
from accrue.identity.internal import ensure_keys
from accrue.runtime.clock import system_clock

DATA_DIR_VAR = "ACCRUE_DATA_DIR"
DATABASE_URL_VAR = "ACCRUE_DATABASE_URL"
NATS_URL_VAR = "ACCRUE_NATS_URL"
# Not 4222/8222: a NATS the developer already runs must not stop `make run`.
NATS_PORT_VAR = "ACCRUE_EMBEDDED_NATS_PORT"
NATS_MONITOR_PORT_VAR = "ACCRUE_EMBEDDED_NATS_MONITOR_PORT"
DEFAULT_NATS_PORT = 14222
DEFAULT_NATS_MONITOR_PORT = 18222
# Prometheus, when installed: on/off, and its port (not 9090, which a developer's may hold).
PROMETHEUS_VAR = "ACCRUE_PROMETHEUS"
PROMETHEUS_PORT_VAR = "ACCRUE_EMBEDDED_PROMETHEUS_PORT"
DEFAULT_PROMETHEUS_PORT = 19090
RUNNER = "accrue"
# Identity (docs/security.md): an external provider turns the local issuer off; the client ids
# of integration clients map to their systems of record.
OIDC_ISSUER_VAR = "ACCRUE_GATEWAY_OIDC_ISSUER"
CLIENT_SYSTEMS_VAR = "ACCRUE_GATEWAY_CLIENT_SYSTEMS"
# `accrue seed` writes as the integration client "seed" of the system "seed" (accrue.cli.tokens).
LOCAL_CLIENT_SYSTEMS: Mapping[str, str] = {"seed": "seed"}
# Exit codes honcho reports when it was stopped by SIGINT / SIGTERM.
_SIGNAL_EXITS = (130, 143)


class RunError(RuntimeError):
    """The stack cannot run as configured; the message says what to change."""


def find_repo_root(start: Path) -> Path | None:
    """The checkout containing start: the directory with pyproject.toml, libs/ and services/."""
    for candidate in (start, *start.parents):
        if (candidate / "pyproject.toml").is_file() and (candidate / "services").is_dir():
            return candidate
    return None


def default_data_dir(cwd: Path) -> Path:
    """<repo>/.accrue, the repo found from the working directory, else from this package."""
    root = find_repo_root(cwd) or find_repo_root(Path(__file__).resolve().parent)
    return (root or cwd) / ".accrue"


def _port_from(environ: Mapping[str, str], var: str, default: int) -> int:
    raw = environ.get(var, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise RunError(f"{var}={raw!r} is not a port number (1-65535)")
    return int(raw)


def _client_systems_from(environ: Mapping[str, str]) -> dict[str, str]:
    raw = environ.get(CLIENT_SYSTEMS_VAR, "").strip()
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise RunError(
            f'{CLIENT_SYSTEMS_VAR} is not JSON ({exc.msg}); expected {{"<client id>": "<system>"}}'
        ) from None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise RunError(f'{CLIENT_SYSTEMS_VAR} must be a JSON object {{"<client id>": "<system>"}}')
    return value


@dataclass(frozen=True)
class RunConfig:
    """Everything `accrue run` needs to know, read once from the environment."""

    data_dir: Path
    database_url: str | None
    nats_url: str | None
    ports: PortAssignment
    nats_port: int = DEFAULT_NATS_PORT
    nats_monitor_port: int = DEFAULT_NATS_MONITOR_PORT
    log_level: str = "INFO"
    prometheus: bool = True
    prometheus_port: int = DEFAULT_PROMETHEUS_PORT
    oidc_issuer: str | None = None
    # client_id -> system for the gateway: the seed's client plus whatever the environment adds.
    client_systems: Mapping[str, str] = dataclasses.field(default_factory=lambda: dict(LOCAL_CLIENT_SYSTEMS))

    @classmethod
    def from_environ(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        data_dir: Path | None = None,
        cwd: Path | None = None,
        log_level: str = "INFO",
    ) -> RunConfig:
        env = os.environ if environ is None else environ
        here = (cwd or Path.cwd()).resolve()
        if data_dir is None and env.get(DATA_DIR_VAR):
            data_dir = Path(env[DATA_DIR_VAR])
        resolved = (here / data_dir).resolve() if data_dir is not None else default_data_dir(here)
        try:
            ports = PortAssignment.from_environ(env)
        except ValueError as exc:
            raise RunError(str(exc)) from None
        return cls(
            data_dir=resolved,
            database_url=env.get(DATABASE_URL_VAR) or None,
            nats_url=env.get(NATS_URL_VAR) or None,
            ports=ports,
            nats_port=_port_from(env, NATS_PORT_VAR, DEFAULT_NATS_PORT),
            nats_monitor_port=_port_from(env, NATS_MONITOR_PORT_VAR, DEFAULT_NATS_MONITOR_PORT),
            log_level=log_level.upper(),
            prometheus=env.get(PROMETHEUS_VAR, "").strip().lower() not in ("off", "0", "false", "no"),
            prometheus_port=_port_from(env, PROMETHEUS_PORT_VAR, DEFAULT_PROMETHEUS_PORT),
            oidc_issuer=env.get(OIDC_ISSUER_VAR, "").strip() or None,
            client_systems={**LOCAL_CLIENT_SYSTEMS, **_client_systems_from(env)},
        )

    @property
    def identity_dir(self) -> Path:
        """Internal keys (internal/) and the local issuer's (issuer/): accrue.embedded.stack."""
        return identity_dir(self.data_dir)

    @property
    def embedded_nats_url(self) -> str:
        return f"nats://{self.ports.host}:{self.nats_port}"

    def bindings(self, *, with_services: bool = True) -> list[PortBinding]:
        """Every fixed port this run would listen on, with the variable that moves it."""
        result = list(self.ports.bindings()) if with_services else []
        if self.nats_url is None and with_services:
            result.append(PortBinding(self.nats_port, "embedded NATS client", NATS_PORT_VAR))
            result.append(
                PortBinding(self.nats_monitor_port, "embedded NATS monitoring", NATS_MONITOR_PORT_VAR)
            )
        return result

    def check_ports(self, *, with_services: bool = True) -> None:
        """Fail fast, before starting anything, if a fixed port is taken."""
        ensure_ports_free(self.bindings(with_services=with_services), self.ports.host)


class Backends:
    """NATS and PostgreSQL for a run: the given URLs, or embedded servers in the data dir."""

    def __init__(self, config: RunConfig, *, nats: bool = True) -> None:
        self.config = config
        self._want_nats = nats
        self.postgres: EmbeddedPostgres | None = None
        self.nats: EmbeddedNats | None = None
        self.prometheus: EmbeddedPrometheus | None = None
        self.prometheus_note = "off" if not config.prometheus else "not started"
        # The embedded NATS's users (service -> password), made afresh on every start; None
        # for a server from ACCRUE_NATS_URL, whose credentials are the operator's business.
        self.nats_passwords: dict[str, str] | None = None

    @property
    def database_url(self) -> str:
        if self.config.database_url:
            return self.config.database_url
        if self.postgres is None:
            raise RunError("PostgreSQL is not started")
        return self.postgres.url

    @property
    def nats_url(self) -> str:
        if self.config.nats_url:
            return self.config.nats_url
        return self.nats.url if self.nats is not None else self.config.embedded_nats_url

    def start(self, say: Callable[[str], None]) -> None:
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        if self.config.database_url is None:
            say(f"starting PostgreSQL in {self.config.data_dir / 'postgres'}")
            self.postgres = EmbeddedPostgres(self.config.data_dir / "postgres").start()
        if self._want_nats and self.config.nats_url is None:
            say(f"starting NATS JetStream in {self.config.data_dir / 'nats'}")
            # Each service connects as its own user, allowed only its own subjects; no one
            # connects anonymously.
            self.nats_passwords = generate_nats_passwords()
            self.nats = EmbeddedNats(
                self.config.data_dir / "nats",
                host=self.config.ports.host,
                port=self.config.nats_port,
                monitor_port=self.config.nats_monitor_port,
                authorization=render_authorization(self.nats_passwords),
            ).start()

    def start_prometheus(self, say: Callable[[str], None]) -> None:
        """Prometheus scraping the stack, when installed; optional, so a problem is said, not raised."""
        if not self.config.prometheus:
            return
        binary = find_prometheus()
        if binary is None:
            self.prometheus_note = "not installed (apt-get install prometheus)"
            say(f"Prometheus {self.prometheus_note}; running without it")
            return
        port = self.config.prometheus_port
        if not port_is_free(port, self.config.ports.host):
            self.prometheus_note = f"not started: port {port} is taken (set {PROMETHEUS_PORT_VAR})"
            say(f"Prometheus {self.prometheus_note}")
            return
        root = find_repo_root(Path.cwd()) or find_repo_root(Path(__file__).resolve().parent)
        rules = sorted((root / "deploy" / "prometheus" / "rules").glob("*.rules.yml")) if root else []
        say(f"starting Prometheus in {self.config.data_dir / 'prometheus'}")
        try:
            self.prometheus = EmbeddedPrometheus(
                self.config.data_dir / "prometheus",
                self.config.ports,
                rule_files=rules,
                host=self.config.ports.host,
                port=port,
                binary=binary,
            ).start()
        except EmbeddedServerError as exc:
            self.prometheus_note = "failed to start (see above)"
            say(f"Prometheus did not start, running without it: {exc}")

    def stop(self, say: Callable[[str], None]) -> None:
        """Prometheus, NATS, then PostgreSQL (the services are gone by now)."""
        if self.prometheus is not None:
            say("stopping Prometheus")
            self.prometheus.stop()
            self.prometheus = None
        if self.nats is not None:
            say("stopping NATS")
            self.nats.stop()
            self.nats = None
        if self.postgres is not None:
            say("stopping PostgreSQL")
            self.postgres.stop()
            self.postgres = None

    def describe(self) -> list[tuple[str, str]]:
        nats = self.nats_url
        if self.nats is not None:
            nats += f"  (embedded; monitoring {self.nats.monitor_url})"
        else:
            nats += f"  (from {NATS_URL_VAR})"
        database = self.database_url
        database += "  (embedded)" if self.postgres is not None else f"  (from {DATABASE_URL_VAR})"
        prometheus = self.prometheus.url if self.prometheus is not None else self.prometheus_note
        return [("NATS", nats), ("PostgreSQL", database), ("Prometheus", prometheus)]


class Console:
    """Lines prefixed like honcho's, for what the runner itself says."""

    def __init__(self, out: TextIO) -> None:
        self.printer = Printer(output=out, width=max(len(n) for n in (*PROCESS_NAMES, RUNNER, "system")))

    @staticmethod
    def message(text: str, name: str = RUNNER) -> Any:
        # A log line's time for the developer watching, in their own zone; not a business time.
        now = system_clock().astimezone()
        return Message(type="line", data=text + "\n", time=now, name=name, colour=None)

    def say(self, text: str, name: str = RUNNER) -> None:
        self.printer.write(self.message(text, name))


def ready_banner(config: RunConfig, backends: Backends, processes: Sequence[StackProcess]) -> list[str]:
    """What a developer needs once everything is up: where to point a browser, a client, psql."""
    gateway = next(p for p in processes if p.name == GATEWAY.name)
    lines = [
        "Accrue is ready.",
        f"  REST gateway   {gateway.urls['rest']}",
        f"  API docs       {gateway.urls['docs']}",
        f"  OpenAPI        {gateway.urls['openapi']}",
        f"  {GATEWAY.name:<14} metrics {gateway.urls['metrics']}",
    ]
    lines.extend(
        f"  {p.name:<14} gRPC {p.urls['grpc']}  metrics {p.urls['metrics']}"
        for p in processes
        if p is not gateway
    )
    lines.extend(f"  {label:<14} {value}" for label, value in backends.describe())
    lines.append(f"  {'data dir':<14} {config.data_dir}")
    lines.extend(token_hint(config, gateway.urls["rest"]))
    lines.append("Press Ctrl-C to stop.")
    return lines


def token_hint(config: RunConfig, gateway_url: str) -> list[str]:
    """How to get a bearer token for this stack (every API call but health needs one)."""
    if config.oidc_issuer is not None:
        return [f"  {'tokens':<14} from {config.oidc_issuer} (the local issuer is off)"]
    command = "accrue token"
    if gateway_url != PortAssignment.defaults().gateway_url:
        command += f" --url {gateway_url}"
    if config.data_dir != default_data_dir(Path.cwd()):
        command += f" --data-dir {shlex.quote(str(config.data_dir))}"
    return [
        f"  {'tokens':<14} export TOKEN=$({command})   (a local admin; --as <consultant code> --role ...)",
        f'  {"":<14} curl -H "Authorization: Bearer $TOKEN" {gateway_url}/v1/legal-entities',
    ]


def prepare_identity(config: RunConfig) -> Path:
    """The identity dir with every process's internal key pair (made once, kept in the data dir)."""
    ensure_keys(internal_keys_dir(config.identity_dir), PROCESS_NAMES)
    return config.identity_dir


def with_client_systems(config: RunConfig, processes: Sequence[StackProcess]) -> list[StackProcess]:
    """The gateway maps the seed's client (and the environment's) to their systems of record."""
    systems = json.dumps(dict(config.client_systems), sort_keys=True)
    return [
        dataclasses.replace(p, env={**p.env, CLIENT_SYSTEMS_VAR: systems}) if p.name == GATEWAY.name else p
        for p in processes
    ]


# honcho SIGKILLs what still runs 5 s after SIGTERM; the services' own grace period for
# in-flight RPCs is 10 s, so give them that before honcho steps in.
honcho.manager.KILL_WAIT = 15


class _Manager(Manager):  # type: ignore[misc, unused-ignore]
    """honcho's Manager, telling us once every process has been started.

    Readiness probes use gRPC, whose threads must not exist while honcho forks its workers, so
    the watcher starts only after honcho's _start() has forked them all.
    """

    def __init__(self, printer: Any, on_started: Callable[[], None]) -> None:
        super().__init__(printer=printer)
        self._on_started = on_started

    def _start(self) -> None:
        super()._start()
        self._on_started()


class _Interrupted(Exception):
    """SIGTERM before honcho took over the signals."""


@contextmanager
def _signals_interrupt() -> Iterator[None]:
    """Until honcho installs its own handlers, SIGTERM unwinds like Ctrl-C does.

    Once honcho has replaced the handler it stays: a second Ctrl-C while NATS and PostgreSQL
    stop is then absorbed instead of cutting the shutdown short.
    """

    def _raise(signum: int, frame: FrameType | None) -> None:
        raise _Interrupted(signal.Signals(signum).name)

    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        if signal.getsignal(signal.SIGTERM) is _raise:
            signal.signal(signal.SIGTERM, previous)


def _migrate(
    processes: Sequence[StackProcess], console: Console, base_env: Mapping[str, str] | None = None
) -> None:
    console.say(f"migrating {', '.join(p.name for p in processes if p.migrate_argv is not None)}")
    outputs = run_migrations(processes, base_env=base_env)
    for name, output in outputs.items():
        for line in output.splitlines():
            console.say(line, name)


def run_stack(
    config: RunConfig,
    *,
    out: TextIO = sys.stdout,
    ready_timeout: float = 120.0,
    command: Callable[[str], Sequence[str]] | None = None,
) -> int:
    """`accrue run`: returns the exit code (0 after Ctrl-C/SIGTERM, 1 if something failed)."""
    console = Console(out)
    config.check_ports()
    backends = Backends(config)
    try:
        with _signals_interrupt():
            backends.start(console.say)
            backends.start_prometheus(console.say)
            processes = stack_processes(
                database_url=backends.database_url,
                nats_url=backends.nats_url,
                nats_passwords=backends.nats_passwords,
                ports=config.ports,
                log_format="console",
                log_level=config.log_level,
                command=command or module_command,
                identity_dir=prepare_identity(config),
            )
            processes = with_client_systems(config, processes)
            _migrate(processes, console)
            return _supervise(config, backends, processes, console, ready_timeout)
    except (KeyboardInterrupt, _Interrupted):
        console.say("interrupted; stopping")
        return 0
    finally:
        backends.stop(console.say)


def _supervise(
    config: RunConfig,
    backends: Backends,
    processes: Sequence[StackProcess],
    console: Console,
    ready_timeout: float,
) -> int:
    stopping = threading.Event()
    failed = threading.Event()
    manager: Any = None

    def _watch() -> None:
        try:
            wait_until_ready(
                {p.name: p.readiness for p in processes}, timeout=ready_timeout, cancelled=stopping.is_set
            )
        except NotReadyError as exc:
            if stopping.is_set():
                return
            failed.set()
            for name in exc.pending:
                proc = next(p for p in processes if p.name == name)
                manager.events.put(console.message(f"{name} is not ready: no answer from {proc.readiness}"))
            manager.events.put(console.message(f"not ready within {ready_timeout:.0f}s; stopping"))
            manager.terminate()
            return
        for line in ready_banner(config, backends, processes):
            manager.events.put(console.message(line))

    def _on_started() -> None:
        threading.Thread(target=_watch, name="accrue-readiness", daemon=True).start()

    manager = _Manager(console.printer, _on_started)
    for proc in processes:
        manager.add_process(proc.name, "exec " + shlex.join(proc.argv), env=child_environ(proc.env))
    try:
        manager.loop()
    finally:
        stopping.set()
    if failed.is_set():
        return 1
    if manager.returncode in _SIGNAL_EXITS:
        return 0
    console.say("a process exited on its own (see above), so everything was stopped")
    return 1


def migrate_only(
    config: RunConfig, *, out: TextIO = sys.stdout, command: Callable[[str], Sequence[str]] | None = None
) -> int:
    """`accrue migrate`: migrate every service against the configured or embedded database."""
    console = Console(out)
    backends = Backends(config, nats=False)
    try:
        with _signals_interrupt():
            backends.start(console.say)
            processes = stack_processes(
                database_url=backends.database_url,
                nats_url=backends.nats_url,
                nats_passwords=backends.nats_passwords,
                ports=config.ports,
                log_format="console",
                log_level=config.log_level,
                command=command or module_command,
                identity_dir=prepare_identity(config),
            )
            _migrate(processes, console)
        console.say(f"migrated {', '.join(SERVICE_NAMES)}")
        return 0
    except (KeyboardInterrupt, _Interrupted):
        console.say("interrupted")
        return 130
    finally:
        backends.stop(console.say)
