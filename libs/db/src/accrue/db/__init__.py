"""PostgreSQL access: async engine, unit of work, idempotency keys and per-schema migrations."""

from accrue.db.engine import asyncpg_dsn, create_engine, fill_pool, normalize_url
from accrue.db.unit_of_work import UnitOfWork

__all__ = ["UnitOfWork", "asyncpg_dsn", "create_engine", "fill_pool", "normalize_url"]
