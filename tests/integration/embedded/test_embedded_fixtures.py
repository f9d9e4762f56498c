"""The test fixtures: real servers, a clean database and JetStream per test, honest fallbacks."""

from __future__ import annotations

import asyncio
import socket
import time
from urllib.parse import urlsplit

import asyncpg
import nats
import pytest
from nats.js.api import StreamConfig

from accrue.embedded import EmbeddedNats, EmbeddedPostgres
from accrue.testing import servers
from accrue.testing.servers import NatsServerHandle, PostgresServerHandle, database_of

pytestmark = pytest.mark.integration

_seen_databases: list[str] = []
_seen_nats: list[str] = []


@pytest.mark.parametrize("round_", [1, 2])
async def test_each_test_gets_an_empty_database_of_its_own(
    database_url: str, postgres_server: PostgresServerHandle, round_: int
) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        name = await conn.fetchval("SELECT current_database()")
        tables = await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
        # Both rounds create the same table: the second would fail on a shared database.
        await conn.execute("CREATE TABLE marker (round int)")
        await conn.execute("INSERT INTO marker VALUES ($1)", round_)
    finally:
        await conn.close()
    assert name == database_of(database_url)
    assert tables == 0
    assert name not in _seen_databases
    _seen_databases.append(name)


async def test_databases_of_finished_tests_are_dropped(postgres_server: PostgresServerHandle) -> None:
    assert len(_seen_databases) == 2, "runs after the two rounds above"
    conn = await asyncpg.connect(postgres_server.admin_url)
    try:
        existing = {r["datname"] for r in await conn.fetch("SELECT datname FROM pg_database")}
    finally:
        await conn.close()
    assert existing.isdisjoint(_seen_databases)


@pytest.mark.parametrize("round_", [1, 2])
async def test_each_test_gets_an_empty_jetstream(nats_url: str, round_: int) -> None:
    nc = await asyncio.wait_for(nats.connect(nats_url, connect_timeout=2), timeout=5)
    try:
        js = nc.jetstream()
        assert await js.streams_info() == []
        await js.add_stream(StreamConfig(name="LEFTOVER", subjects=["leftover.>"]))
        await js.publish("leftover.x", f"round {round_}".encode())
    finally:
        await nc.close()
    _seen_nats.append(nats_url)


def test_embedded_servers_are_the_fallback_here(
    postgres_server: PostgresServerHandle, nats_server: NatsServerHandle
) -> None:
    # On a machine without ACCRUE_* URLs and without Docker the wheels serve; elsewhere the
    # handles say where the servers came from instead.
    expected = servers.choose(servers.DATABASE_URL_VAR)
    assert postgres_server.kind == expected
    assert nats_server.kind == servers.choose(servers.NATS_URL_VAR)
    if postgres_server.kind == "embedded":
        assert postgres_server.embedded is not None
        assert postgres_server.embedded.running
    if nats_server.kind == "embedded":
        assert nats_server.embedded is not None
        assert nats_server.embedded.running


def test_the_docker_check_decides_within_three_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    for host in ("unix:///nonexistent/docker.sock", "tcp://10.255.255.1:2375"):
        monkeypatch.setenv("DOCKER_HOST", host)
        started = time.monotonic()
        assert servers.docker_available() is False
        assert time.monotonic() - started < 3.0
    monkeypatch.delenv("DOCKER_HOST")
    started = time.monotonic()
    servers.choose(servers.DATABASE_URL_VAR, {})
    assert time.monotonic() - started < 3.0


def test_testcontainers_can_be_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    assert servers.choose(servers.DATABASE_URL_VAR, {servers.TESTCONTAINERS_VAR: "never"}) == "embedded"
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(RuntimeError, match="no Docker engine answers"):
        servers.choose(servers.NATS_URL_VAR, {servers.TESTCONTAINERS_VAR: "always"})


def _forbid_new_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    def _refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a server was started although the environment named one")

    monkeypatch.setattr(EmbeddedPostgres, "start", _refuse)
    monkeypatch.setattr(EmbeddedNats, "start", _refuse)
    monkeypatch.setattr(servers, "docker_available", _refuse)


async def test_a_database_url_from_the_environment_is_used_not_a_new_server(
    monkeypatch: pytest.MonkeyPatch, postgres_server: PostgresServerHandle, database_url: str
) -> None:
    # The "external" server is this session's one, named by a driver-qualified URL.
    monkeypatch.setenv(
        "ACCRUE_DATABASE_URL", database_url.replace("postgresql://", "postgresql+asyncpg://", 1)
    )
    _forbid_new_servers(monkeypatch)
    with servers.open_postgres() as handle:
        assert handle.kind == "env"
        assert handle.embedded is None
        assert handle.admin_url == database_url
        with handle.fresh_database("from env") as url:
            assert url.startswith("postgresql://")
            conn = await asyncpg.connect(postgres_server.admin_url)
            try:
                found = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database_of(url))
            finally:
                await conn.close()
            assert found == 1, "the test database was made on the server the environment named"


async def test_a_nats_url_from_the_environment_is_used_and_wiped_before_each_test(
    monkeypatch: pytest.MonkeyPatch, nats_url: str
) -> None:
    nc = await asyncio.wait_for(nats.connect(nats_url, connect_timeout=2), timeout=5)
    try:
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name="OLD", subjects=["old.>"]))
        kv = await js.create_key_value(bucket="settings")
        await kv.put("k", b"v")
        monkeypatch.setenv("ACCRUE_NATS_URL", nats_url)
        _forbid_new_servers(monkeypatch)
        with servers.open_nats() as handle:
            assert handle.kind == "env"
            assert handle.embedded is None
            assert handle.url == nats_url
            with handle.isolated() as url:
                assert url == nats_url
                assert await js.streams_info() == [], "streams, KV buckets included, are deleted"
    finally:
        await nc.close()


def test_embedded_nats_isolation_is_a_fresh_server_per_test(nats_server: NatsServerHandle) -> None:
    if nats_server.kind != "embedded":
        pytest.skip("only embedded NATS gives each test a server of its own")
    assert nats_server.store_root is not None
    started = time.monotonic()
    with nats_server.isolated() as first, nats_server.isolated() as second:
        assert len({first, second, nats_server.url}) == 3
        elapsed = time.monotonic() - started
    assert elapsed < 1.0
    leftovers = [p.name for p in nats_server.store_root.iterdir() if p.name.startswith("nats-")]
    assert leftovers == [], "each per-test server's store is deleted with it"
    host, port = urlsplit(first).hostname, urlsplit(first).port
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((host, port), timeout=1).close()
