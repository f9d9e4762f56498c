"""`accrue run`: configuration, port conflicts, env building, and a whole run with stand-ins.

The real services are driven by the lead's full `accrue run` test; here the stand-in from the
conftest plays them, against the real embedded NATS and PostgreSQL the runner starts.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import pytest

from accrue.cli.runner import (
    CLIENT_SYSTEMS_VAR,
    DEFAULT_NATS_MONITOR_PORT,
    DEFAULT_NATS_PORT,
    NATS_MONITOR_PORT_VAR,
    NATS_PORT_VAR,
    RunConfig,
    RunError,
    find_repo_root,
    migrate_only,
    token_hint,
    with_client_systems,
)
from accrue.embedded import EmbeddedPostgres, PortInUseError, free_port
from accrue.embedded.stack import (
    GATEWAY,
    SERVICES,
    MigrationError,
    PortAssignment,
    process_env,
    stack_processes,
)

pytestmark = pytest.mark.integration

StandIn = Callable[..., Callable[[str], list[str]]]
REPO = Path(__file__).resolve().parents[3]


def _free_port_env() -> dict[str, str]:
    env = {GATEWAY.port_var: str(free_port()), NATS_PORT_VAR: str(free_port())}
    env[NATS_MONITOR_PORT_VAR] = str(free_port())
    for spec in SERVICES:
        env[spec.grpc_port_var] = str(free_port())
        env[spec.metrics_port_var] = str(free_port())
    return env


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # Short: the embedded PostgreSQL's socket lives in <data dir>/postgres.
    path = Path(tempfile.mkdtemp(prefix="accrue-run-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


# -- configuration -------------------------------------------------------------------------------


def test_defaults_are_the_documented_ports_and_the_repos_data_dir() -> None:
    config = RunConfig.from_environ({}, cwd=REPO / "libs")
    assert config.data_dir == REPO / ".accrue"
    assert config.database_url is None
    assert config.nats_url is None
    assert config.ports.gateway_url == "http://127.0.0.1:8080"
    assert {name: (p.grpc, p.metrics) for name, p in config.ports.services.items()} == {
        "masterdata": (50051, 9101),
        "timekeeping": (50052, 9102),
        "billing": (50053, 9103),
        "forecasting": (50054, 9104),
        "observability": (50055, 9105),
    }
    assert (config.nats_port, config.nats_monitor_port) == (DEFAULT_NATS_PORT, DEFAULT_NATS_MONITOR_PORT)
    assert find_repo_root(REPO / "tests" / "integration") == REPO


def test_environment_overrides_data_dir_urls_and_ports(tmp_path: Path) -> None:
    config = RunConfig.from_environ(
        {
            "ACCRUE_DATA_DIR": "state",
            "ACCRUE_DATABASE_URL": "postgresql://u@db.example/accrue",
            "ACCRUE_BILLING_GRPC_PORT": "6003",
            "ACCRUE_GATEWAY_PORT": "9000",
        },
        cwd=tmp_path,
    )
    assert config.data_dir == tmp_path / "state"
    assert config.database_url == "postgresql://u@db.example/accrue"
    assert config.nats_url is None, "each server is chosen independently"
    assert config.ports.services["billing"].grpc == 6003
    assert config.ports.services["masterdata"].grpc == 50051
    assert config.ports.gateway == 9000


@pytest.mark.parametrize(("var", "value"), [("ACCRUE_BILLING_GRPC_PORT", "http"), (NATS_PORT_VAR, "70000")])
def test_a_bad_port_setting_names_its_variable(var: str, value: str) -> None:
    with pytest.raises(RunError, match=var):
        RunConfig.from_environ({var: value})


def test_the_seed_client_is_mapped_to_its_system_beside_the_environments_clients() -> None:
    assert dict(RunConfig.from_environ({}).client_systems) == {"seed": "seed"}
    config = RunConfig.from_environ({CLIENT_SYSTEMS_VAR: '{"hr-sync": "workday"}'})
    assert dict(config.client_systems) == {"seed": "seed", "hr-sync": "workday"}
    processes = with_client_systems(
        config,
        stack_processes(
            database_url="postgresql://db/a", nats_url="nats://n", ports=PortAssignment.defaults()
        ),
    )
    gateway = next(p for p in processes if p.name == GATEWAY.name)
    assert json.loads(gateway.env[CLIENT_SYSTEMS_VAR]) == {"hr-sync": "workday", "seed": "seed"}
    assert not any(CLIENT_SYSTEMS_VAR in p.env for p in processes if p.name != GATEWAY.name)


@pytest.mark.parametrize("value", ["{not json", '["seed"]', '{"seed": 1}'])
def test_a_bad_client_systems_setting_names_its_variable(value: str) -> None:
    with pytest.raises(RunError, match=CLIENT_SYSTEMS_VAR):
        RunConfig.from_environ({CLIENT_SYSTEMS_VAR: value})


def test_the_token_hint_names_the_command_or_the_external_provider(tmp_path: Path) -> None:
    local = RunConfig.from_environ({"ACCRUE_DATA_DIR": str(tmp_path)})
    hint = "\n".join(token_hint(local, "http://127.0.0.1:9000"))
    assert f"export TOKEN=$(accrue token --url http://127.0.0.1:9000 --data-dir {tmp_path})" in hint
    assert 'curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:9000/v1/legal-entities' in hint
    external = RunConfig.from_environ({"ACCRUE_GATEWAY_OIDC_ISSUER": "https://kc.example/realms/acme"})
    assert token_hint(external, "http://127.0.0.1:8080") == [
        "  tokens         from https://kc.example/realms/acme (the local issuer is off)"
    ]


def test_embedded_nats_ports_are_checked_only_when_nats_is_embedded() -> None:
    embedded = RunConfig.from_environ({})
    external = RunConfig.from_environ({"ACCRUE_NATS_URL": "nats://elsewhere:4222"})
    assert {b.env_var for b in embedded.bindings()} - {b.env_var for b in external.bindings()} == {
        NATS_PORT_VAR,
        NATS_MONITOR_PORT_VAR,
    }
    assert len(external.bindings()) == 2 * len(SERVICES) + 1


def test_a_taken_port_fails_fast_naming_the_port_and_its_variable() -> None:
    env = _free_port_env()
    config = RunConfig.from_environ(env)
    config.check_ports()  # all free: no error
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        config = RunConfig.from_environ({**env, "ACCRUE_FORECASTING_METRICS_PORT": str(taken)})
        with pytest.raises(PortInUseError) as raised:
            config.check_ports()
    message = str(raised.value)
    assert f"port {taken} (forecasting metrics)" in message
    assert "set ACCRUE_FORECASTING_METRICS_PORT to use another port" in message
    assert [b.port for b in raised.value.taken] == [taken]


def test_the_command_refuses_a_taken_port_before_starting_anything(data_dir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCRUE_")}
    env.update(_free_port_env(), ACCRUE_DATA_DIR=str(data_dir / "state"))
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", int(env[GATEWAY.port_var])))
        squatter.listen()
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, "-m", "accrue.cli", "run"], env=env, capture_output=True, text=True, timeout=60
        )
    assert done.returncode == 1
    assert f"port {env[GATEWAY.port_var]} (gateway HTTP)" in done.stderr
    assert "set ACCRUE_GATEWAY_PORT" in done.stderr
    assert time.monotonic() - started < 10
    assert not (data_dir / "state").exists(), "nothing was started"


# -- the environment each process gets -------------------------------------------------------


def test_service_env_follows_the_process_contract() -> None:
    ports = PortAssignment.defaults()
    env = process_env(
        "billing",
        database_url="postgresql://db/accrue",
        nats_url="nats://n:4222",
        ports=ports,
        log_format="console",
    )
    assert env == {
        "ACCRUE_DATABASE_URL": "postgresql://db/accrue",
        "ACCRUE_NATS_URL": "nats://n:4222",
        "ACCRUE_LOG_FORMAT": "console",
        "ACCRUE_LOG_LEVEL": "INFO",
        "ACCRUE_MASTERDATA_ADDRESS": "127.0.0.1:50051",
        "ACCRUE_TIMEKEEPING_ADDRESS": "127.0.0.1:50052",
        "ACCRUE_BILLING_ADDRESS": "127.0.0.1:50053",
        "ACCRUE_FORECASTING_ADDRESS": "127.0.0.1:50054",
        "ACCRUE_BILLING_GRPC_PORT": "50053",
        "ACCRUE_BILLING_METRICS_PORT": "9103",
    }


def test_gateway_env_names_every_backend_by_its_full_grpc_service_name() -> None:
    ports = PortAssignment.defaults()
    env = process_env("gateway", database_url="postgresql://db/accrue", nats_url="nats://n:4222", ports=ports)
    assert env["ACCRUE_GATEWAY_HOST"] == "127.0.0.1"
    assert env["ACCRUE_GATEWAY_PORT"] == "8080"
    assert json.loads(env["ACCRUE_GATEWAY_BACKENDS"]) == {
        "accrue.masterdata.v1.MasterDataService": "127.0.0.1:50051",
        "accrue.timekeeping.v1.TimekeepingService": "127.0.0.1:50052",
        "accrue.billing.v1.BillingService": "127.0.0.1:50053",
        "accrue.forecasting.v1.ForecastingService": "127.0.0.1:50054",
        "accrue.observability.v1.ObservabilityService": "127.0.0.1:50055",
    }
    assert not any(
        k.startswith("ACCRUE_GATEWAY_") and k.endswith("_PORT") and k != GATEWAY.port_var for k in env
    )


def test_processes_run_as_modules_migrate_first_and_the_gateway_has_no_migration() -> None:
    processes = stack_processes(
        database_url="postgresql://db/a", nats_url="nats://n", ports=PortAssignment.defaults()
    )
    assert [p.name for p in processes] == [*(s.name for s in SERVICES), "gateway"]
    billing = processes[2]
    assert billing.argv == (sys.executable, "-m", "accrue.services.billing")
    assert billing.migrate_argv == (sys.executable, "-m", "accrue.services.billing", "migrate")
    assert processes[-1].migrate_argv is None
    assert str(processes[-1].readiness) == "GET http://127.0.0.1:8080/readyz"
    assert str(billing.readiness) == "gRPC health at 127.0.0.1:50053"


# -- a whole run, with stand-ins -----------------------------------------------------------------

RUN_WITH_STAND_IN = """
import sys
from accrue.cli.runner import RunConfig, run_stack
script, flags = sys.argv[1], dict(a.split("=", 1) for a in sys.argv[2:])
command = lambda name: [sys.executable, script, name, *([flags[name]] if name in flags else [])]
sys.exit(run_stack(RunConfig.from_environ(), ready_timeout=60, command=command))
"""


class _Run:
    """A runner subprocess whose output is collected line by line."""

    def __init__(self, script: str, env: dict[str, str], *flags: str) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-c", RUN_WITH_STAND_IN, script, *flags],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group, like a job in a terminal
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output:
            assert self.proc.poll() is None, f"runner exited {self.proc.returncode}:\n{self.output}"
            assert time.monotonic() < deadline, f"no {text!r} within {timeout}s:\n{self.output}"
            time.sleep(0.05)

    def ctrl_c(self) -> None:
        """What a terminal does on Ctrl-C: SIGINT to the whole foreground process group."""
        os.killpg(self.proc.pid, signal.SIGINT)

    def finish(self, timeout: float = 30) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(5)
        return code


def _script_of(command: Callable[[str], list[str]]) -> str:
    return command("masterdata")[1]


def _run_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCRUE_")}
    env.update(_free_port_env(), ACCRUE_DATA_DIR=str(data_dir))
    return env


async def test_run_starts_everything_prints_urls_and_stops_cleanly_on_ctrl_c(
    stand_in: StandIn, data_dir: Path
) -> None:
    env = _run_env(data_dir)
    run = _Run(_script_of(stand_in()), env)
    try:
        run.wait_for("Press Ctrl-C to stop.")
        gateway_url = f"http://127.0.0.1:{env[GATEWAY.port_var]}"
        for expected in (
            f"REST gateway   {gateway_url}",
            f"API docs       {gateway_url}/docs",
            f"OpenAPI        {gateway_url}/openapi.json",
            f"{gateway_url}/metrics",
            f"http://127.0.0.1:{env['ACCRUE_BILLING_METRICS_PORT']}/metrics",
            f"nats://127.0.0.1:{env[NATS_PORT_VAR]}",
            f"postgresql://postgres@/accrue?host={data_dir / 'postgres'}",
            f"data dir       {data_dir}",
        ):
            assert expected in run.output
        assert "billing       | [billing] migrated" in run.output, "migration output is prefixed too"
        assert "masterdata    | [masterdata] env " in run.output, "service output is prefixed by honcho"
        # Identity: every process signs with a key pair made once in the data dir; how to get a token.
        keys = data_dir / "identity" / "internal"
        assert f'"ACCRUE_INTERNAL_KEYS_DIR": "{keys}"' in run.output
        assert {f"{name}.key.pem" for name in (*(s.name for s in SERVICES), "gateway")} <= {
            p.name for p in keys.iterdir()
        }
        assert oct((keys / "gateway.key.pem").stat().st_mode & 0o777) == "0o600"
        assert f"export TOKEN=$(accrue token --url {gateway_url} --data-dir {data_dir})" in run.output
        run.ctrl_c()
        assert run.finish() == 0
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
    out = run.output
    assert out.index("stopped gracefully") < out.index("stopping NATS") < out.index("stopping PostgreSQL")
    assert not (data_dir / "postgres" / "postmaster.pid").exists(), "PostgreSQL was shut down"
    nats_pid = int((data_dir / "nats" / "nats-server.pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(nats_pid, 0)
    # The data stays: the stand-ins' migrations are in the embedded PostgreSQL's data dir.
    with EmbeddedPostgres(data_dir / "postgres") as pg:
        conn = await asyncpg.connect(pg.url)
        try:
            schemas = {r[0] for r in await conn.fetch("SELECT schema_name FROM information_schema.schemata")}
        finally:
            await conn.close()
    assert {s.name for s in SERVICES} <= schemas


async def test_run_uses_servers_from_the_environment_and_stops_on_sigterm(
    stand_in: StandIn, data_dir: Path, database_url: str, nats_url: str
) -> None:
    env = _run_env(data_dir)
    env.update(ACCRUE_DATABASE_URL=database_url, ACCRUE_NATS_URL=nats_url)
    run = _Run(_script_of(stand_in()), env)
    try:
        run.wait_for("Press Ctrl-C to stop.")
        assert f"{nats_url}  (from ACCRUE_NATS_URL)" in run.output
        assert f"{database_url}  (from ACCRUE_DATABASE_URL)" in run.output
        assert "[masterdata] env " in run.output
        run.proc.send_signal(signal.SIGTERM)
        assert run.finish() == 0
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
    assert "starting PostgreSQL" not in run.output
    assert "starting NATS" not in run.output
    assert not (data_dir / "postgres").exists()
    assert not (data_dir / "nats").exists()
    conn = await asyncpg.connect(database_url)
    try:
        schemas = {r[0] for r in await conn.fetch("SELECT schema_name FROM information_schema.schemata")}
    finally:
        await conn.close()
    assert {s.name for s in SERVICES} <= schemas, "migrated on the database the environment named"


def test_run_stops_everything_and_fails_when_a_service_dies(
    stand_in: StandIn, data_dir: Path, database_url: str
) -> None:
    # External PostgreSQL, embedded NATS: each server is chosen on its own.
    env = {**_run_env(data_dir), "ACCRUE_DATABASE_URL": database_url}
    run = _Run(_script_of(stand_in()), env, "billing=--crash")
    try:
        assert run.finish(60) == 1
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
    out = run.output
    assert "starting NATS JetStream" in out
    assert "starting PostgreSQL" not in out
    assert "boom: cannot start" in out
    assert "a process exited on its own" in out
    assert out.index("a process exited on its own") < out.index("stopping NATS")
    assert "Accrue is ready." not in out
    nats_pid = int((data_dir / "nats" / "nats-server.pid").read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(nats_pid, 0)


async def test_migrate_migrates_every_service_on_the_embedded_database_and_stops_it(
    stand_in: StandIn, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("ACCRUE_DATABASE_URL", "ACCRUE_NATS_URL"):
        monkeypatch.delenv(var, raising=False)
    out = io.StringIO()
    config = RunConfig.from_environ({"ACCRUE_DATA_DIR": str(data_dir)})
    assert migrate_only(config, out=out, command=stand_in()) == 0
    text = out.getvalue()
    assert "observability | [observability] migrated" in text
    assert "stopping PostgreSQL" in text
    assert not (data_dir / "nats").exists(), "migrating needs no NATS"
    assert not (data_dir / "postgres" / "postmaster.pid").exists()
    with EmbeddedPostgres(data_dir / "postgres") as pg:
        conn = await asyncpg.connect(pg.url)
        try:
            schemas = {r[0] for r in await conn.fetch("SELECT schema_name FROM information_schema.schemata")}
        finally:
            await conn.close()
    assert {s.name for s in SERVICES} <= schemas


def test_migrate_reports_the_failing_service_with_its_output(
    stand_in: StandIn, data_dir: Path, database_url: str
) -> None:
    config = RunConfig.from_environ({"ACCRUE_DATA_DIR": str(data_dir), "ACCRUE_DATABASE_URL": database_url})
    out = io.StringIO()
    with pytest.raises(MigrationError, match="migrating billing failed with exit code 4") as raised:
        migrate_only(config, out=out, command=stand_in(billing="--bad-migration"))
    assert "relation does not exist" in str(raised.value)
    assert "starting PostgreSQL" not in out.getvalue()
    assert not (data_dir / "postgres").exists(), "the database came from the environment"
