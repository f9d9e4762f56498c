"""Where the tests' PostgreSQL and NATS JetStream come from, and how each test gets a clean one.

For each server, in order: a URL from the environment (ACCRUE_DATABASE_URL / ACCRUE_NATS_URL);
else testcontainers when a Docker engine answers (postgres:16, nats:2.10 -js); else the embedded
servers from the wheels, on free ports in temp dirs. ACCRUE_TESTCONTAINERS=never skips Docker,
=always insists on it.

Isolation:
- PostgreSQL: every test gets a database of its own (CREATE DATABASE, ~10-25 ms; dropped WITH
  (FORCE) afterwards, so a leaked pool cannot keep it alive).
- NATS: with embedded servers every test gets a nats-server of its own (start ~15 ms, stop
  ~2 ms): streams, consumers, KV buckets and connections all start empty, with nothing to clean.
  A server from the environment or a container cannot be multiplied that cheaply, so every
  JetStream stream on it (KV and object stores are streams too) is deleted before each test.
  That is destructive: point ACCRUE_NATS_URL at a server you use for nothing else.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from accrue.embedded._sync import run_sync

if TYPE_CHECKING:
    from accrue.embedded import EmbeddedNats, EmbeddedPostgres

# accrue.embedded loads on first use: this module is imported by every pytest run in the repo.

Kind = Literal["env", "container", "embedded"]

DATABASE_URL_VAR = "ACCRUE_DATABASE_URL"
NATS_URL_VAR = "ACCRUE_NATS_URL"
TESTCONTAINERS_VAR = "ACCRUE_TESTCONTAINERS"
POSTGRES_IMAGE = "postgres:16"
NATS_IMAGE = "nats:2.10"
DOCKER_PROBE_TIMEOUT = 1.0


# -- choosing ------------------------------------------------------------------------------------


def _tc_host() -> str | None:
    """tc.host from ~/.testcontainers.properties, which testcontainers also honours."""
    try:
        text = (Path.home() / ".testcontainers.properties").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "tc.host" and value.strip():
            return value.strip()
    return None


@functools.lru_cache(maxsize=8)
def _docker_answers(docker_host: str | None, timeout: float) -> bool:
    if docker_host is None and not Path("/var/run/docker.sock").exists():
        # No engine configured and no default socket: nothing to ask (and no docker import).
        return False
    try:
        import docker  # type: ignore[import-untyped, unused-ignore]

        environment = dict(os.environ)
        if docker_host is not None:
            environment["DOCKER_HOST"] = docker_host
        # version="auto" makes the client ask the engine right away, bounded by timeout.
        client = docker.from_env(timeout=timeout, environment=environment, version="auto")
    except Exception:
        return False
    try:
        return bool(client.ping())
    except Exception:
        return False
    finally:
        client.close()


def docker_available(timeout: float = DOCKER_PROBE_TIMEOUT) -> bool:
    """Whether a Docker engine answers, decided within about `timeout` seconds (cached per host)."""
    return _docker_answers(os.environ.get("DOCKER_HOST") or _tc_host(), timeout)


def choose(url_var: str, environ: Mapping[str, str] | None = None) -> Kind:
    """Where a server comes from: the environment, a container, or the embedded wheel."""
    env = os.environ if environ is None else environ
    if env.get(url_var):
        return "env"
    mode = env.get(TESTCONTAINERS_VAR, "auto").strip().lower()
    if mode in ("never", "0", "false", "off", "no"):
        return "embedded"
    if docker_available():
        return "container"
    if mode in ("always", "1", "true", "on", "yes"):
        raise RuntimeError(f"{TESTCONTAINERS_VAR}={mode} but no Docker engine answers")
    return "embedded"


# -- PostgreSQL ----------------------------------------------------------------------------------


def plain_postgres_url(url: str) -> str:
    """postgresql:// without a driver suffix (asyncpg and accrue.db both take that form)."""
    parts = urlsplit(url)
    scheme = parts.scheme.split("+", 1)[0]
    if scheme not in ("postgresql", "postgres"):
        raise ValueError(f"not a PostgreSQL URL: {url!r}")
    return urlunsplit(parts._replace(scheme="postgresql"))


def with_database(url: str, database: str) -> str:
    """The same server and credentials, another database (works for host= socket URLs too)."""
    return urlunsplit(urlsplit(url)._replace(path="/" + quote(database, safe="")))


def database_of(url: str) -> str:
    return unquote(urlsplit(url).path.lstrip("/"))


def database_name(label: str) -> str:
    """A unique, recognisable database name: t_<test name>_<random>, within PostgreSQL's 63 bytes."""
    slug = re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_")[:40] or "test"
    return f"t_{slug}_{uuid.uuid4().hex[:10]}"


@dataclass
class PostgresServerHandle:
    """The session's PostgreSQL: an admin URL and fresh databases on demand."""

    kind: Kind
    admin_url: str
    embedded: EmbeddedPostgres | None = None

    def url_for(self, database: str) -> str:
        return with_database(self.admin_url, database)

    async def _admin(self, sql: str) -> None:
        import asyncpg

        conn = await asyncpg.connect(self.admin_url, timeout=10)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    def create_database(self, label: str = "test") -> str:
        """CREATE DATABASE with a unique name; returns its URL."""
        from accrue.embedded.postgres_server import quote_ident

        name = database_name(label)
        run_sync(self._admin(f"CREATE DATABASE {quote_ident(name)}"))
        return self.url_for(name)

    def drop_database(self, url: str) -> None:
        """DROP DATABASE ... WITH (FORCE): connections a test left open do not keep it alive."""
        from accrue.embedded.postgres_server import quote_ident

        run_sync(self._admin(f"DROP DATABASE IF EXISTS {quote_ident(database_of(url))} WITH (FORCE)"))

    @contextlib.contextmanager
    def fresh_database(self, label: str = "test") -> Iterator[str]:
        """A new empty database for the duration of the block."""
        url = self.create_database(label)
        try:
            yield url
        finally:
            self.drop_database(url)


@contextlib.contextmanager
def open_postgres(environ: Mapping[str, str] | None = None) -> Iterator[PostgresServerHandle]:
    """The session's PostgreSQL, from wherever `choose` says; stopped and deleted afterwards."""
    env = os.environ if environ is None else environ
    kind = choose(DATABASE_URL_VAR, env)
    if kind == "env":
        yield PostgresServerHandle("env", plain_postgres_url(env[DATABASE_URL_VAR]))
    elif kind == "container":
        try:
            from testcontainers.community.postgres import PostgresContainer
        except ImportError:  # testcontainers before the community split
            from testcontainers.postgres import PostgresContainer

        with PostgresContainer(POSTGRES_IMAGE, driver=None) as container:
            yield PostgresServerHandle("container", plain_postgres_url(container.get_connection_url()))
    else:
        from accrue.embedded import EmbeddedPostgres

        # A short path: the server's unix socket lives inside it (socket paths max out near 100).
        root = Path(tempfile.mkdtemp(prefix="accrue-pg-"))
        try:
            server = EmbeddedPostgres(root / "data", cleanup="delete", durable=False)
            with server:
                yield PostgresServerHandle("embedded", server.admin_url, embedded=server)
        finally:
            shutil.rmtree(root, ignore_errors=True)


# -- NATS ----------------------------------------------------------------------------------------


async def delete_all_streams(url: str) -> list[str]:
    """Delete every JetStream stream on the server (and so every consumer, KV and object store)."""
    import asyncio

    import nats

    nc = await asyncio.wait_for(nats.connect(url, connect_timeout=2, allow_reconnect=False), timeout=10)
    deleted: list[str] = []
    try:
        js = nc.jetstream()
        for _ in range(100):  # pages of up to 256 streams; each round deletes the page it read
            names = [info.config.name for info in await js.streams_info() if info.config.name]
            if not names:
                break
            for name in names:
                await js.delete_stream(name)
                deleted.append(name)
    finally:
        await nc.close()
    return deleted


@dataclass(frozen=True)
class SecuredNats:
    """An isolated NATS as the stack uses it: one user per service (accrue.eventbus.permissions).

    url carries the admin user's credentials, so a test connecting with it may do anything;
    passwords are the services' (None when the server is not embedded and so has no users).
    """

    url: str
    passwords: Mapping[str, str] | None = field(default=None, repr=False)


@dataclass
class NatsServerHandle:
    """The session's NATS: a shared URL, and isolated URLs for single tests."""

    kind: Kind
    url: str
    embedded: EmbeddedNats | None = None
    # Embedded only: where each test's own server keeps its store (deleted with the server).
    store_root: Path | None = field(default=None, repr=False)

    @contextlib.contextmanager
    def isolated(self) -> Iterator[str]:
        """A NATS URL whose JetStream is empty: a fresh server (embedded) or the shared one wiped."""
        if self.kind == "embedded":
            from accrue.embedded import EmbeddedNats

            root = Path(tempfile.mkdtemp(prefix="nats-", dir=self.store_root))
            try:
                with EmbeddedNats(root) as server:
                    yield server.url
            finally:
                shutil.rmtree(root, ignore_errors=True)
        else:
            run_sync(delete_all_streams(self.url))
            yield self.url

    @contextlib.contextmanager
    def isolated_secured(self) -> Iterator[SecuredNats]:
        """Like `isolated`, but an embedded server gets the services' users and refuses anonymous
        clients, as `accrue run`'s does. A server from the environment or a container is used as
        it is (its users, if any, are its operator's)."""
        if self.kind != "embedded":
            with self.isolated() as url:
                yield SecuredNats(url)
            return
        import secrets

        from accrue.embedded import EmbeddedNats
        from accrue.embedded.stack import generate_nats_passwords
        from accrue.eventbus.permissions import ADMIN_USER, render_authorization

        passwords = generate_nats_passwords()
        admin = secrets.token_urlsafe(24)
        authorization = render_authorization(passwords, admin_password=admin)
        root = Path(tempfile.mkdtemp(prefix="nats-", dir=self.store_root))
        try:
            with EmbeddedNats(root, authorization=authorization) as server:
                yield SecuredNats(f"nats://{ADMIN_USER}:{admin}@{server.host}:{server.port}", passwords)
        finally:
            shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def open_nats(environ: Mapping[str, str] | None = None) -> Iterator[NatsServerHandle]:
    """The session's NATS JetStream, from wherever `choose` says; stopped and deleted afterwards."""
    env = os.environ if environ is None else environ
    kind = choose(NATS_URL_VAR, env)
    if kind == "env":
        yield NatsServerHandle("env", env[NATS_URL_VAR])
    elif kind == "container":
        try:
            from testcontainers.community.nats import NatsContainer
        except ImportError:  # testcontainers before the community split
            from testcontainers.nats import NatsContainer

        container: Any = NatsContainer(NATS_IMAGE, jetstream=True)
        with container:
            yield NatsServerHandle("container", container.nats_uri())
    else:
        from accrue.embedded import EmbeddedNats

        root = Path(tempfile.mkdtemp(prefix="accrue-nats-"))
        try:
            with EmbeddedNats(root / "shared") as server:
                yield NatsServerHandle("embedded", server.url, embedded=server, store_root=root)
        finally:
            shutil.rmtree(root, ignore_errors=True)
