"""The service catalogue and the process contract, shared by `accrue run` and the test `stack`.

Every service is run as `python -m accrue.services.<name>` (until SIGTERM/SIGINT) and migrated
as `python -m accrue.services.<name> migrate` (exits 0); the gateway is run the same way and has
no migrations. Configuration is environment only:

- ACCRUE_DATABASE_URL, ACCRUE_NATS_URL: shared by every process;
- ACCRUE_<NAME>_GRPC_PORT, ACCRUE_<NAME>_METRICS_PORT: per gRPC service;
- ACCRUE_MASTERDATA_ADDRESS: where master data answers (read by timekeeping and billing);
- ACCRUE_TIMEKEEPING_ADDRESS, ACCRUE_BILLING_ADDRESS: where they answer (read by observability);
- ACCRUE_GATEWAY_HOST, ACCRUE_GATEWAY_PORT, ACCRUE_GATEWAY_BACKENDS (JSON: full gRPC service
  name -> "host:port");
- ACCRUE_LOG_FORMAT (json|console), ACCRUE_LOG_LEVEL;
- ACCRUE_<NAME>_NATS_USER, ACCRUE_<NAME>_NATS_PASSWORD: each service's own NATS user, when the
  NATS server has users (accrue.eventbus.permissions; the embedded one always does);
- ACCRUE_INTERNAL_KEYS_DIR: every process's internal keys (identity_dir/internal), and for the
  gateway ACCRUE_GATEWAY_LOCAL_ISSUER_DIR (identity_dir/issuer); the caller makes the keys.

A service is ready when grpc.health.v1.Health/Check (service "") answers SERVING; the gateway
when GET /readyz answers 200, which it does once every backend serves. The runner (fixed ports)
and the tests (free ports) build their processes from the same functions here.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from accrue.embedded.ports import PortBinding, free_port
from accrue.embedded.readiness import GrpcHealth, HttpReady, Readiness

LOCALHOST = "127.0.0.1"


@dataclass(frozen=True)
class ServiceSpec:
    """A gRPC service of the stack."""

    name: str
    grpc_service: str
    default_grpc_port: int
    default_metrics_port: int

    @property
    def module(self) -> str:
        return f"accrue.services.{self.name}"

    @property
    def grpc_port_var(self) -> str:
        return f"ACCRUE_{self.name.upper()}_GRPC_PORT"

    @property
    def metrics_port_var(self) -> str:
        return f"ACCRUE_{self.name.upper()}_METRICS_PORT"


@dataclass(frozen=True)
class GatewaySpec:
    """The REST gateway: HTTP, with /metrics on the same port."""

    name: str = "gateway"
    default_port: int = 8080

    @property
    def module(self) -> str:
        return f"accrue.services.{self.name}"

    port_var = "ACCRUE_GATEWAY_PORT"
    host_var = "ACCRUE_GATEWAY_HOST"


SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("masterdata", "accrue.masterdata.v1.MasterDataService", 50051, 9101),
    ServiceSpec("timekeeping", "accrue.timekeeping.v1.TimekeepingService", 50052, 9102),
    ServiceSpec("billing", "accrue.billing.v1.BillingService", 50053, 9103),
    ServiceSpec("forecasting", "accrue.forecasting.v1.ForecastingService", 50054, 9104),
    ServiceSpec("observability", "accrue.observability.v1.ObservabilityService", 50055, 9105),
)
GATEWAY = GatewaySpec()
SERVICE_NAMES: tuple[str, ...] = tuple(s.name for s in SERVICES)
PROCESS_NAMES: tuple[str, ...] = (*SERVICE_NAMES, GATEWAY.name)


def service(name: str) -> ServiceSpec:
    """The catalogue entry of a gRPC service."""
    for spec in SERVICES:
        if spec.name == name:
            return spec
    raise KeyError(f"no service named {name!r}; the services are {', '.join(SERVICE_NAMES)}")


@dataclass(frozen=True)
class ServicePorts:
    grpc: int
    metrics: int


@dataclass(frozen=True)
class PortAssignment:
    """Where every process of the stack listens."""

    services: Mapping[str, ServicePorts]
    gateway: int
    host: str = LOCALHOST

    @classmethod
    def defaults(cls) -> PortAssignment:
        """The documented fixed ports (gateway 8080, gRPC 50051.., metrics 9101..)."""
        return cls(
            {s.name: ServicePorts(s.default_grpc_port, s.default_metrics_port) for s in SERVICES},
            GATEWAY.default_port,
        )

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> PortAssignment:
        """The defaults, each overridable by its ACCRUE_<NAME>_*_PORT / ACCRUE_GATEWAY_PORT variable."""
        env = os.environ if environ is None else environ

        def _port(var: str, default: int) -> int:
            raw = env.get(var, "").strip()
            if not raw:
                return default
            try:
                port = int(raw)
            except ValueError:
                raise ValueError(f"{var}={raw!r} is not a port number") from None
            if not 0 < port < 65536:
                raise ValueError(f"{var}={port} is not a port number (1-65535)")
            return port

        return cls(
            {
                s.name: ServicePorts(
                    _port(s.grpc_port_var, s.default_grpc_port),
                    _port(s.metrics_port_var, s.default_metrics_port),
                )
                for s in SERVICES
            },
            _port(GATEWAY.port_var, GATEWAY.default_port),
        )

    @classmethod
    def free(cls) -> PortAssignment:
        """Free ports for everything (tests)."""
        return cls({s.name: ServicePorts(free_port(), free_port()) for s in SERVICES}, free_port())

    def grpc_address(self, name: str) -> str:
        return f"{self.host}:{self.services[name].grpc}"

    def metrics_url(self, name: str) -> str:
        port = self.gateway if name == GATEWAY.name else self.services[name].metrics
        return f"http://{self.host}:{port}/metrics"

    @property
    def gateway_url(self) -> str:
        return f"http://{self.host}:{self.gateway}"

    def backends(self) -> dict[str, str]:
        """ACCRUE_GATEWAY_BACKENDS: full gRPC service name -> host:port."""
        return {s.grpc_service: self.grpc_address(s.name) for s in SERVICES}

    def bindings(self) -> list[PortBinding]:
        """Every port, who listens there and the variable that moves it (for conflict messages)."""
        result: list[PortBinding] = []
        for s in SERVICES:
            ports = self.services[s.name]
            result.append(PortBinding(ports.grpc, f"{s.name} gRPC", s.grpc_port_var))
            result.append(PortBinding(ports.metrics, f"{s.name} metrics", s.metrics_port_var))
        result.append(PortBinding(self.gateway, "gateway HTTP", GATEWAY.port_var))
        return result


def common_env(
    *,
    database_url: str,
    nats_url: str,
    ports: PortAssignment,
    log_format: str = "console",
    log_level: str = "INFO",
) -> dict[str, str]:
    """What every process of the stack gets."""
    return {
        "ACCRUE_DATABASE_URL": database_url,
        "ACCRUE_NATS_URL": nats_url,
        "ACCRUE_LOG_FORMAT": log_format,
        "ACCRUE_LOG_LEVEL": log_level,
        "ACCRUE_MASTERDATA_ADDRESS": ports.grpc_address("masterdata"),
        # Observability's reconciliation reads timekeeping's and billing's summaries.
        "ACCRUE_TIMEKEEPING_ADDRESS": ports.grpc_address("timekeeping"),
        "ACCRUE_BILLING_ADDRESS": ports.grpc_address("billing"),
        # Observability's audit trail API reads every service's trail.
        "ACCRUE_FORECASTING_ADDRESS": ports.grpc_address("forecasting"),
    }


def process_env(
    name: str,
    *,
    database_url: str,
    nats_url: str,
    ports: PortAssignment,
    log_format: str = "console",
    log_level: str = "INFO",
    clock_start: dt.datetime | None = None,
    identity_dir: Path | None = None,
    nats_passwords: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The ACCRUE_* environment of one process of the stack (a service or the gateway).

    clock_start starts every process's clock at that instant (accrue.runtime.clock);
    identity_dir holds the internal keys and the local issuer's (see internal_keys_dir);
    nats_passwords (service -> password) makes each service connect to NATS as its own user.
    """
    if nats_passwords is not None:
        # Each service logs in as itself; a user:password in the URL would win over that.
        nats_url = without_credentials(nats_url)
    env = common_env(
        database_url=database_url, nats_url=nats_url, ports=ports, log_format=log_format, log_level=log_level
    )
    if identity_dir is not None:
        env["ACCRUE_INTERNAL_KEYS_DIR"] = str(internal_keys_dir(identity_dir))
        if name == GATEWAY.name:
            env["ACCRUE_GATEWAY_LOCAL_ISSUER_DIR"] = str(local_issuer_dir(identity_dir))
    if clock_start is not None:
        env["ACCRUE_CLOCK_START"] = clock_start.isoformat()
    if name == GATEWAY.name:
        env[GATEWAY.host_var] = ports.host
        env[GATEWAY.port_var] = str(ports.gateway)
        env["ACCRUE_GATEWAY_BACKENDS"] = json.dumps(ports.backends(), sort_keys=True)
    else:
        spec = service(name)
        env[spec.grpc_port_var] = str(ports.services[name].grpc)
        env[spec.metrics_port_var] = str(ports.services[name].metrics)
        if nats_passwords is not None:
            env[f"ACCRUE_{name.upper()}_NATS_USER"] = name
            env[f"ACCRUE_{name.upper()}_NATS_PASSWORD"] = nats_passwords[name]
    return env


def without_credentials(url: str) -> str:
    """The URL without a user:password part."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def generate_nats_passwords() -> dict[str, str]:
    """A fresh random password per service, for an embedded NATS and the processes using it."""
    return {name: secrets.token_urlsafe(24) for name in SERVICE_NAMES}


def internal_keys_dir(identity_dir: Path) -> Path:
    """Where the stack's internal keys live under its identity directory."""
    return identity_dir / "internal"


def local_issuer_dir(identity_dir: Path) -> Path:
    """Where the local issuer's signing keys live under the identity directory."""
    return identity_dir / "issuer"


def child_environ(
    accrue_env: Mapping[str, str], *, base: Mapping[str, str] | None = None, isolate: bool = False
) -> dict[str, str]:
    """The full environment for a child: base (default os.environ) plus the stack's variables.

    isolate=True drops every inherited ACCRUE_* variable first, so a developer's shell settings
    (say ACCRUE_BILLING_DATABASE_URL, which a service prefers over the shared one) cannot point a
    test's processes somewhere else.
    """
    env = dict(os.environ if base is None else base)
    if isolate:
        env = {k: v for k, v in env.items() if not k.startswith("ACCRUE_")}
    env.update(accrue_env)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def module_command(name: str) -> list[str]:
    """The argv that runs a process of the stack: this interpreter, `-m accrue.services.<name>`."""
    return [sys.executable, "-m", f"accrue.services.{name}"]


@dataclass(frozen=True)
class StackProcess:
    """One process of the stack: how to run it, migrate it, configure it and tell it is ready."""

    name: str
    argv: tuple[str, ...]
    migrate_argv: tuple[str, ...] | None
    env: Mapping[str, str]
    readiness: Readiness
    urls: Mapping[str, str] = field(default_factory=dict)


def stack_processes(
    *,
    database_url: str,
    nats_url: str,
    ports: PortAssignment,
    log_format: str = "console",
    log_level: str = "INFO",
    command: Callable[[str], Sequence[str]] = module_command,
    clock_start: dt.datetime | None = None,
    identity_dir: Path | None = None,
    nats_passwords: Mapping[str, str] | None = None,
) -> list[StackProcess]:
    """Every service, then the gateway; command(name) gives the argv (tests may substitute one)."""
    result: list[StackProcess] = []
    for name in PROCESS_NAMES:
        argv = tuple(command(name))
        env = process_env(
            name,
            database_url=database_url,
            nats_url=nats_url,
            ports=ports,
            log_format=log_format,
            log_level=log_level,
            clock_start=clock_start,
            identity_dir=identity_dir,
            nats_passwords=nats_passwords,
        )
        readiness: Readiness
        if name == GATEWAY.name:
            readiness = HttpReady(f"{ports.gateway_url}/readyz")
            urls = {
                "rest": ports.gateway_url,
                "docs": f"{ports.gateway_url}/docs",
                "openapi": f"{ports.gateway_url}/openapi.json",
                "metrics": ports.metrics_url(name),
            }
            migrate = None
        else:
            readiness = GrpcHealth(ports.grpc_address(name))
            urls = {"grpc": ports.grpc_address(name), "metrics": ports.metrics_url(name)}
            migrate = (*argv, "migrate")
        result.append(StackProcess(name, argv, migrate, env, readiness, urls))
    return result


class MigrationError(RuntimeError):
    """A service's migration failed; carries its output."""

    def __init__(self, name: str, returncode: int, output: str) -> None:
        self.name = name
        self.returncode = returncode
        self.output = output
        tail = "\n".join(output.splitlines()[-40:])
        super().__init__(f"migrating {name} failed with exit code {returncode}:\n{tail}")


def run_migrations(
    processes: Sequence[StackProcess],
    *,
    base_env: Mapping[str, str] | None = None,
    isolate: bool = False,
    timeout: float = 300.0,
) -> dict[str, str]:
    """Migrate every process that has migrations, concurrently (each owns its own schema).

    Returns each one's output; raises MigrationError for the first that failed.
    """
    outputs: dict[str, str] = {}
    failures: list[MigrationError] = []
    lock = threading.Lock()

    def _migrate(proc: StackProcess) -> None:
        assert proc.migrate_argv is not None
        try:
            done = subprocess.run(
                proc.migrate_argv,
                env=child_environ(proc.env, base=base_env, isolate=isolate),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            out = exc.output.decode(errors="replace") if isinstance(exc.output, bytes) else ""
            with lock:
                failures.append(MigrationError(proc.name, -1, out + f"\n(timed out after {timeout:.0f}s)"))
            return
        out = done.stdout.decode(errors="replace")
        with lock:
            outputs[proc.name] = out
            if done.returncode != 0:
                failures.append(MigrationError(proc.name, done.returncode, out))

    threads = [
        threading.Thread(target=_migrate, args=(p,), name=f"migrate-{p.name}")
        for p in processes
        if p.migrate_argv is not None
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    return outputs
