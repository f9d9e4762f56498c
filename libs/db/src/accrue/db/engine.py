"""The async engine: SQLAlchemy 2 on asyncpg."""

from __future__ import annotations

import asyncio

from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine


def _rename_query(parsed: URL, old: str, new: str) -> URL:
    if old not in parsed.query:
        return parsed
    query = dict(parsed.query)
    query.setdefault(new, query.pop(old))
    return parsed.set(query=query)


def normalize_url(url: str) -> str:
    """Accept plain postgresql:// URLs (as PostgreSQL tools print them) and use asyncpg.

    TLS may be asked for either way: libpq's `sslmode=` is what people paste, SQLAlchemy's
    asyncpg dialect wants `ssl=`; both mean the same here.
    """
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    if parsed.drivername != "postgresql+asyncpg":
        raise ValueError(f"unsupported database URL scheme {parsed.drivername!r}; use postgresql://")
    return _rename_query(parsed, "sslmode", "ssl").render_as_string(hide_password=False)


def create_engine(
    url: str, *, pool_size: int = 10, application_name: str = "accrue", role: str | None = None
) -> AsyncEngine:
    """An engine with a bounded pool; connections are checked before use after a restart.

    The pool hands out the most recently used connection (LIFO): each PostgreSQL backend plans a
    prepared statement afresh for its first executions, so spreading a hot path over every pooled
    connection (FIFO) made the database plan the same batch statements several times over (batch
    ingest 4,100-5,600 entries/s with PostgreSQL at 85-100 % of a core, against 6,300-8,300 and
    26-79 % with LIFO, once start-up filled the pool). Idle connections stay for bursts.

    role: every session acts as this database role (PostgreSQL's `role` setting, sent when the
    connection starts, so no rollback or pool reset undoes it). Services pass
    `accrue.db.roles.APP_ROLE`, which may not change or remove audit records (see roles.py).
    """
    server_settings = {"application_name": application_name}
    if role:
        server_settings["role"] = role
    return create_async_engine(
        normalize_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_use_lifo=True,
        connect_args={"server_settings": server_settings},
    )


async def fill_pool(engine: AsyncEngine, connections: int) -> None:
    """Open up to `connections` of the pool's connections now, so they wait in the pool.

    A pool starts empty and grows only when requests overlap, and each new connection is a new
    PostgreSQL backend (fork, authentication, the driver's type set-up): tens of milliseconds of
    CPU on a small machine. A cold service's first burst paid for them all at once, a stall of
    100-300 ms (`benchmarks/timekeeping_submit_latency.py --warm-up 0`); at start-up it costs
    nothing anyone waits for.
    """
    wanted = min(connections, engine.pool.size()) if hasattr(engine.pool, "size") else connections
    opened = await asyncio.gather(*(engine.connect() for _ in range(max(wanted, 0))), return_exceptions=True)
    try:
        for conn in opened:
            if isinstance(conn, BaseException):
                raise conn
            await conn.exec_driver_sql("SELECT 1")
    finally:
        for conn in opened:
            if not isinstance(conn, BaseException):
                await conn.close()  # back into the pool, open


def asyncpg_dsn(url: str) -> str:
    """The same database as a plain libpq-style URL, for direct asyncpg connections (tools, tests)."""
    parsed = make_url(normalize_url(url)).set(drivername="postgresql")
    # asyncpg's own DSN parser speaks libpq: sslmode=, not ssl= (which it would send as a setting).
    return _rename_query(parsed, "ssl", "sslmode").render_as_string(hide_password=False)
