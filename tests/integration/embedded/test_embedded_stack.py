"""The `stack` machinery, driven by a stand-in for the services (real PostgreSQL and NATS).

The services are still being written, so a throwaway script plays each of them: it migrates
by creating its schema in the real database, serves the standard gRPC health check on the port
its environment names, and, as the gateway, answers /readyz from its backends' health. What is
under test is the orchestration: env contract, migrate-then-start, readiness, kill -9,
restart, graceful stop, logs, and failing loudly with the culprit's log.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from accrue.embedded.readiness import grpc_serving
from accrue.embedded.stack import PROCESS_NAMES, SERVICE_NAMES, SERVICES
from accrue.testing.stack import Stack, StackError

pytestmark = pytest.mark.integration

# The conftest's stand_in fixture: stand_in(billing="--crash") gives argv per process name.
StandIn = Callable[..., Callable[[str], list[str]]]


@pytest.fixture(scope="module")
def stack_of_stand_ins(
    stand_in: StandIn,
    module_database_url: str,
    module_nats_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    instant: dt.datetime,
) -> Iterator[Stack]:
    stack = Stack.from_catalogue(
        database_url=module_database_url,
        nats_url=module_nats_url,
        log_dir=tmp_path_factory.mktemp("logs"),
        command=stand_in(),
        ready_timeout=60,
        clock_start=instant,
    )
    with stack:
        yield stack


def _env_seen_by(stack: Stack, name: str) -> dict[str, str]:
    line = next(line for line in stack.log(name).splitlines() if line.startswith(f"[{name}] env "))
    seen: dict[str, str] = json.loads(line.split(" env ", 1)[1])
    return seen


def _gateway_ready(stack: Stack) -> int:
    return httpx.get(f"{stack.gateway_url}/readyz", timeout=5).status_code


async def test_migrates_every_service_in_the_real_database_before_starting(
    stack_of_stand_ins: Stack, module_database_url: str
) -> None:
    conn = await asyncpg.connect(module_database_url)
    try:
        schemas = {
            r["schema_name"] for r in await conn.fetch("SELECT schema_name FROM information_schema.schemata")
        }
    finally:
        await conn.close()
    assert set(SERVICE_NAMES) <= schemas
    for name in SERVICE_NAMES:
        log = stack_of_stand_ins.log(name)
        assert log.index(f"[{name}] migrated") < log.index("=== start #1")
    assert "migrate" not in stack_of_stand_ins.log("gateway")


def test_everything_is_ready_on_its_own_port(stack_of_stand_ins: Stack) -> None:
    stack = stack_of_stand_ins
    assert stack.names == PROCESS_NAMES
    ports = {stack.grpc_port(name) for name in SERVICE_NAMES}
    assert len(ports) == len(SERVICE_NAMES)
    for name in SERVICE_NAMES:
        assert grpc_serving(stack.grpc_address(name))
    assert _gateway_ready(stack) == 200


def test_processes_get_the_documented_environment(
    stack_of_stand_ins: Stack, module_database_url: str, module_nats_url: str
) -> None:
    stack = stack_of_stand_ins
    assert stack.ports is not None
    for spec in SERVICES:
        env = _env_seen_by(stack, spec.name)
        assert env["ACCRUE_DATABASE_URL"] == module_database_url
        assert env["ACCRUE_NATS_URL"] == module_nats_url
        assert env["ACCRUE_MASTERDATA_ADDRESS"] == stack.grpc_address("masterdata")
        assert env[spec.grpc_port_var] == str(stack.grpc_port(spec.name))
        assert env[spec.metrics_port_var] == str(stack.ports.services[spec.name].metrics)
        assert env["ACCRUE_LOG_FORMAT"] == "console"
        assert not any(key.startswith("ACCRUE_") and key not in stack.processes[spec.name].env for key in env)
    backends_line = next(line for line in stack.log("gateway").splitlines() if " backends " in line)
    backends = json.loads(backends_line.split(" backends ", 1)[1])
    assert backends == {spec.grpc_service: stack.grpc_address(spec.name) for spec in SERVICES}


def test_kill_9_then_start_again_on_the_same_port(stack_of_stand_ins: Stack) -> None:
    stack = stack_of_stand_ins
    pid = stack.pid("billing")
    assert stack.kill("billing") == -9
    assert not stack.running("billing")
    assert not grpc_serving(stack.grpc_address("billing"))
    assert _gateway_ready(stack) == 503, "the gateway is not ready while a backend is down"
    stack.start("billing")
    assert stack.pid("billing") not in (None, pid)
    assert grpc_serving(stack.grpc_address("billing"))
    assert _gateway_ready(stack) == 200
    assert "=== start #2" in stack.log("billing")
    assert "stopped gracefully" not in stack.log("billing"), "kill -9 gives no chance to clean up"


def test_stop_is_graceful_sigterm(stack_of_stand_ins: Stack) -> None:
    stack = stack_of_stand_ins
    assert stack.stop("timekeeping") == 0
    assert "[timekeeping] stopped gracefully" in stack.log("timekeeping")
    with pytest.raises(StackError, match="not running"):
        stack.kill("timekeeping")
    stack.start("timekeeping")
    with pytest.raises(StackError, match="already running"):
        stack.start("timekeeping")
    assert grpc_serving(stack.grpc_address("timekeeping"))


def test_report_has_every_process_log(stack_of_stand_ins: Stack) -> None:
    report = stack_of_stand_ins.report()
    assert str(stack_of_stand_ins.log_dir) in report
    for name in PROCESS_NAMES:
        assert f"--- {name} (pid " in report


def _assert_all_gone(stack: Stack, pids: list[int]) -> None:
    for name in stack.names:
        assert not stack.running(name)
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_a_process_that_dies_at_start_fails_fast_with_its_log(
    stand_in: StandIn, database_url: str, nats_url: str, tmp_path: Path
) -> None:
    stack = Stack.from_catalogue(
        database_url=database_url, nats_url=nats_url, log_dir=tmp_path, command=stand_in(billing="--crash")
    )
    with pytest.raises(StackError) as raised:
        stack.up()
    message = str(raised.value)
    assert "billing exited with code 3 before it was ready" in message
    assert "boom: cannot start" in message
    assert str(tmp_path / "billing.log") in message
    _assert_all_gone(stack, [])


def test_a_process_that_never_gets_ready_times_out_with_its_log(
    stand_in: StandIn, database_url: str, nats_url: str, tmp_path: Path
) -> None:
    stack = Stack.from_catalogue(
        database_url=database_url,
        nats_url=nats_url,
        log_dir=tmp_path,
        command=stand_in(forecasting="--hang"),
        ready_timeout=3,
    )
    with pytest.raises(StackError, match=r"forecasting(, gateway)? did not become ready within 3s") as raised:
        stack.up()
    assert "[forecasting] hanging" in str(raised.value)
    _assert_all_gone(stack, [])


def test_a_failed_migration_stops_the_start_with_its_output(
    stand_in: StandIn, database_url: str, nats_url: str, tmp_path: Path
) -> None:
    stack = Stack.from_catalogue(
        database_url=database_url,
        nats_url=nats_url,
        log_dir=tmp_path,
        command=stand_in(observability="--bad-migration"),
    )
    with pytest.raises(StackError, match="migrating observability failed with exit code 4") as raised:
        stack.up()
    assert "relation does not exist" in str(raised.value)
    assert "relation does not exist" in stack.log("observability")
    _assert_all_gone(stack, [])


def test_teardown_kills_what_ignores_sigterm(
    stand_in: StandIn, database_url: str, nats_url: str, tmp_path: Path
) -> None:
    stack = Stack.from_catalogue(
        database_url=database_url,
        nats_url=nats_url,
        log_dir=tmp_path,
        command=stand_in(masterdata="--deaf"),
        stop_timeout=0.5,
    )
    stack.up()
    pids = [pid for name in stack.names if (pid := stack.pid(name)) is not None]
    with pytest.raises(StackError, match=r"masterdata did not exit within 0.3s of SIGTERM and was killed"):
        stack.stop("masterdata", timeout=0.3)
    stack.start("masterdata")
    pids.append(stack.pid("masterdata") or 0)
    stack.down()
    assert "did not exit within 0.5s of SIGTERM; killed" in stack.log("masterdata")
    _assert_all_gone(stack, pids)


def test_a_failed_test_that_used_the_stack_reports_its_logs(tmp_path: Path) -> None:
    # A test module of its own, run by pytest in a subprocess; its `stack` is a stub, so the
    # hook of the accrue plugin (loaded by entry point) is what is under test.
    (tmp_path / "test_inner.py").write_text(
        textwrap.dedent(
            """
            import pytest

            class _Stub:
                def report(self):
                    return "masterdata said: cannot reach NATS"

            @pytest.fixture
            def stack():
                return _Stub()

            def test_fails(stack):
                assert False

            def test_passes(stack):
                pass
            """
        )
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(tmp_path),
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert "1 failed, 1 passed" in done.stdout
    assert "accrue stack logs" in done.stdout
    assert done.stdout.count("masterdata said: cannot reach NATS") == 1, "only the failed test carries it"


def test_a_restarted_process_keeps_the_stacks_clock_running(
    stack_of_stand_ins: Stack, instant: dt.datetime
) -> None:
    """Every process starts on the run's pinned instant; one restarted later starts where the
    stack's clock has got to, not back at the instant (leases and back-offs would wait for it)."""
    stack = stack_of_stand_ins

    def clock_starts() -> list[dt.datetime]:
        return [
            dt.datetime.fromisoformat(json.loads(line.split(" env ", 1)[1])["ACCRUE_CLOCK_START"])
            for line in stack.log("forecasting").splitlines()
            if line.startswith("[forecasting] env ")
        ]

    first = clock_starts()[0]
    assert instant <= first < instant + dt.timedelta(minutes=2)
    before = time.monotonic()
    stack.kill("forecasting")
    stack.start("forecasting")
    restarted = clock_starts()[-1]
    assert restarted - first >= dt.timedelta(seconds=time.monotonic() - before)
