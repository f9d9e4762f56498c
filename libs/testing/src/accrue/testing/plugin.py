"""pytest fixtures for a real PostgreSQL, a real NATS JetStream and the whole stack.

Registered as a pytest11 entry point, so every test in the repo can ask for them:

- postgres_server (session): PostgresServerHandle (kind, admin_url, create_database(), ...).
- database_url (function): URL of a fresh, empty database, dropped after the test.
- module_database_url (module): the same, shared by one test module.
- nats_server (session): NatsServerHandle (kind, url of a shared server, isolated()).
- nats_url (function): URL of a NATS whose JetStream is empty (see accrue.testing.servers); open
  to anyone.
- module_nats (module): SecuredNats, an empty NATS shared by one test module with one user per
  service (embedded: anonymous clients refused); module_nats_url: its URL as the admin user.
- stack (module): accrue.testing.stack.Stack, up and ready on its own database and module_nats,
  each service logged in as its own NATS user, its processes' clocks started at the run's
  pinned instant.
- instant (session): the run's pinned instant (accrue.testing.instants). The plugin also sets
  ACCRUE_CLOCK_START to it, so every service a test bootstraps from settings runs on a clock
  started at that instant; tests that build a use case themselves pass FixedClock(instant) or
  StartedClock(instant). Nothing a test computes depends on the real date (the architecture test
  keeps wall-clock reads out of tests).

Servers and temp dirs are gone after the session, whatever the tests did.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import tempfile
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from accrue.testing.instants import CLOCK_START_ENV, pinned_instant
from accrue.testing.instants import ENV as INSTANT_ENV
from accrue.testing.servers import (
    NatsServerHandle,
    PostgresServerHandle,
    SecuredNats,
    open_nats,
    open_postgres,
)

if TYPE_CHECKING:
    from accrue.testing.stack import Stack

STACK_REPORT_SECTION = "accrue stack logs"
_INSTANT = pytest.StashKey[tuple[str, dt.datetime]]()
_SAVED_CLOCK_START = pytest.StashKey[str | None]()
# A posting job claimed by a billing process that a test then kills stays leased until the lease
# ends (300 s in production): short enough here that a test sees it taken over and posted once.
TEST_STACK_ENV = {
    "ACCRUE_BILLING_ERP_CALL_TIMEOUT_SECONDS": "5",
    "ACCRUE_BILLING_POSTING_LEASE_SECONDS": "10",
    # The integration clients the tests act as (accrue.testing.identity.system_client).
    "ACCRUE_GATEWAY_CLIENT_SYSTEMS": json.dumps({s: s for s in ("crm", "erp", "hr", "seed", "workday")}),
}
_SAVED_KEYS_DIR = pytest.StashKey[str | None]()


def pytest_configure(config: pytest.Config) -> None:
    """Pin the run's clock: services bootstrapped from settings start their clocks at the instant.

    Not by patching the wall clock (time-machine): gRPC computes call deadlines from time.time()
    and compares them with its core's own clock, so a patched time.time() puts every deadline a
    year away and a timeout never fires.
    """
    config.addinivalue_line("markers", "dates: reads the clock or judges business dates (make test-dates)")
    name, instant = pinned_instant()
    config.stash[_INSTANT] = (name, instant)
    config.stash[_SAVED_CLOCK_START] = os.environ.get(CLOCK_START_ENV)
    os.environ[CLOCK_START_ENV] = instant.isoformat()
    # One keyring of internal keys for the run: in-process services verify calls with it and
    # tests sign theirs as the gateway does (accrue.testing.identity).
    from accrue.testing.identity import KEYS_ENV, make_keys

    config.stash[_SAVED_KEYS_DIR] = os.environ.get(KEYS_ENV)
    os.environ[KEYS_ENV] = str(make_keys(Path(tempfile.mkdtemp(prefix="accrue-keys-"))))


def pytest_unconfigure(config: pytest.Config) -> None:
    from accrue.testing.identity import KEYS_ENV

    keys = os.environ.pop(KEYS_ENV, None)
    if keys is not None and Path(keys).name.startswith("accrue-keys-"):
        shutil.rmtree(keys, ignore_errors=True)
    if (saved_keys := config.stash.get(_SAVED_KEYS_DIR, None)) is not None:
        os.environ[KEYS_ENV] = saved_keys
    saved = config.stash.get(_SAVED_CLOCK_START, None)
    if saved is None:
        os.environ.pop(CLOCK_START_ENV, None)
    else:
        os.environ[CLOCK_START_ENV] = saved


def _pinned_line(config: pytest.Config) -> str:
    name, instant = config.stash[_INSTANT]
    return f"accrue: clock pinned to {name} = {instant.isoformat()} (reproduce: {INSTANT_ENV}={name})"


def pytest_sessionstart(session: pytest.Session) -> None:
    # At the top even under -q, and again in the summary, so a red run says which instant it had.
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(_pinned_line(session.config))


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    terminalreporter.write_line(_pinned_line(config))


@pytest.fixture(scope="session")
def instant(pytestconfig: pytest.Config) -> dt.datetime:
    """The run's pinned instant (aware, UTC): what "now" is for the services a test starts."""
    return pytestconfig.stash[_INSTANT][1]


@pytest.fixture
def internal_signer() -> Any:
    """Signs internal tokens as the gateway does (accrue.testing.identity). Per test: its clock
    starts at the run's instant when the test does, as the clocks of the services it starts do,
    so the tokens it signs are neither from their future nor long past."""
    from accrue.testing.identity import run_signer

    return run_signer()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServerHandle]:
    """The session's PostgreSQL (environment URL, container or embedded)."""
    with open_postgres() as handle:
        yield handle


@pytest.fixture
def database_url(postgres_server: PostgresServerHandle, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh, empty database for this test (dropped afterwards)."""
    with postgres_server.fresh_database(request.node.name) as url:
        yield url


@pytest.fixture(scope="module")
def module_database_url(
    postgres_server: PostgresServerHandle, request: pytest.FixtureRequest
) -> Iterator[str]:
    """A fresh, empty database shared by the tests of one module."""
    with postgres_server.fresh_database(request.module.__name__.rsplit(".", 1)[-1]) as url:
        yield url


@pytest.fixture(scope="session")
def nats_server() -> Iterator[NatsServerHandle]:
    """The session's NATS JetStream (environment URL, container or embedded)."""
    with open_nats() as handle:
        yield handle


@pytest.fixture
def nats_url(nats_server: NatsServerHandle) -> Iterator[str]:
    """A NATS URL with an empty JetStream for this test."""
    with nats_server.isolated() as url:
        yield url


@pytest.fixture(scope="module")
def module_nats(nats_server: NatsServerHandle) -> Iterator[SecuredNats]:
    """A NATS with an empty JetStream, shared by the tests of one module, with the services' users
    (embedded: anonymous clients refused, as with `accrue run`)."""
    with nats_server.isolated_secured() as secured:
        yield secured


@pytest.fixture(scope="module")
def module_nats_url(module_nats: SecuredNats) -> str:
    """module_nats's URL, with the admin's credentials in it: a test's own client may do anything."""
    return module_nats.url


@pytest.fixture(scope="module")
def stack(
    module_database_url: str,
    module_nats: SecuredNats,
    tmp_path_factory: pytest.TempPathFactory,
    pytestconfig: pytest.Config,
) -> Iterator[Stack]:
    """Every service (migrated) and the gateway, ready, on free ports; stopped after the module.

    Module-scoped because starting six Python processes costs seconds; tests in one module share
    it (and its database and NATS), and a test that kills a process should start it again.
    """
    from accrue.testing.stack import Stack

    log_dir = tmp_path_factory.mktemp("stack")
    with Stack.from_catalogue(
        database_url=module_database_url,
        nats_url=module_nats.url,
        nats_passwords=module_nats.passwords,
        log_dir=log_dir,
        clock_start=pytestconfig.stash[_INSTANT][1],
        extra_env=TEST_STACK_ENV,
    ) as running:
        yield running


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, object, object]:
    """When a test that used the stack fails, its report carries the tail of every process's log."""
    report = yield
    if isinstance(report, pytest.TestReport) and report.failed:
        running = getattr(item, "funcargs", {}).get("stack")
        report_fn = getattr(running, "report", None)
        if callable(report_fn):
            report.sections.append((STACK_REPORT_SECTION, str(report_fn())))
    return report
