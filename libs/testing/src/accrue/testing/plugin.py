"""pytest fixtures for a real PostgreSQL, a real NATS JetStream and the whole stack.

Registered as a pytest11 entry point, so every test in the repo can ask for them:

- postgres_server (session): PostgresServerHandle (kind, admin_url, create_database(), ...).
- database_url (function): URL of a fresh, empty database, dropped after the test.
- module_database_url (module): the same, shared by one test module.
- nats_server (session): NatsServerHandle (kind, url of a shared server, isolated()).
- nats_url (function): URL of a NATS whose JetStream is empty (see accrue.testing.servers).
- module_nats_url (module): the same, shared by one test module.
- stack (module): accrue.testing.stack.Stack, up and ready on its own database and NATS.

Servers and temp dirs are gone after the session, whatever the tests did.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING

import pytest

from accrue.testing.servers import NatsServerHandle, PostgresServerHandle, open_nats, open_postgres

if TYPE_CHECKING:
    from accrue.testing.stack import Stack

STACK_REPORT_SECTION = "accrue stack logs"


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
def module_nats_url(nats_server: NatsServerHandle) -> Iterator[str]:
    """A NATS URL with an empty JetStream, shared by the tests of one module."""
    with nats_server.isolated() as url:
        yield url


@pytest.fixture(scope="module")
def stack(
    module_database_url: str, module_nats_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """Every service (migrated) and the gateway, ready, on free ports; stopped after the module.

    Module-scoped because starting six Python processes costs seconds; tests in one module share
    it (and its database and NATS), and a test that kills a process should start it again.
    """
    from accrue.testing.stack import Stack

    log_dir = tmp_path_factory.mktemp("stack")
    with Stack.from_catalogue(
        database_url=module_database_url, nats_url=module_nats_url, log_dir=log_dir
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
