"""Per-service Alembic migrations, each service in its own PostgreSQL schema.

A service keeps `adapters/migrations/` with a three-line env.py that calls `run_env(metadata)`
and its hand-reviewed revisions under versions/. `upgrade()` runs them programmatically on an
async engine; a transaction-scoped advisory lock per schema lets replicas start together.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import sqlalchemy as sa
from alembic import command, context
from alembic.config import Config
from sqlalchemy.engine import Connection

from accrue.db.engine import create_engine


def _config(script_location: Path, schema: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(script_location))
    cfg.attributes["schema"] = schema
    return cfg


async def upgrade(database_url: str, schema: str, script_location: Path, revision: str = "head") -> None:
    """Bring the service's schema to revision (default: the newest)."""
    engine = create_engine(database_url, pool_size=1, application_name=f"accrue-migrate-{schema}")
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_upgrade_sync, _config(script_location, schema), revision)
    finally:
        await engine.dispose()


def _upgrade_sync(connection: Connection, cfg: Config, revision: str) -> None:
    cfg.attributes["connection"] = connection
    command.upgrade(cfg, revision)


def run_env(metadata: sa.MetaData) -> None:
    """The body of every service's alembic env.py."""
    cfg = context.config
    schema = cfg.attributes.get("schema") or metadata.schema
    if schema is None:
        raise RuntimeError("the service's MetaData must name its schema")
    connection: Connection | None = cfg.attributes.get("connection")
    if connection is None:
        # Run from the alembic CLI (e.g. autogenerate): connect from the environment.
        import asyncio

        url = os.environ.get("ACCRUE_DATABASE_URL")
        if not url:
            raise RuntimeError("set ACCRUE_DATABASE_URL to run alembic from the command line")
        engine = create_engine(url, pool_size=1)

        async def _run() -> None:
            async with engine.begin() as conn:
                await conn.run_sync(_configure_and_run, metadata, schema)
            await engine.dispose()

        asyncio.run(_run())
        return
    _configure_and_run(connection, metadata, schema)


def _configure_and_run(connection: Connection, metadata: sa.MetaData, schema: str) -> None:
    connection.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": zlib.crc32(schema.encode())})
    connection.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table_schema=schema,
        include_schemas=True,
        include_name=lambda name, type_, _parent: type_ != "schema" or name == schema,
        transaction_per_migration=False,
    )
    with context.begin_transaction():
        context.run_migrations()


async def autogenerate(database_url: str, schema: str, script_location: Path, message: str) -> None:
    """Write a new revision from the difference between the tables and the migrated database.

    A developer tool: review and edit what it writes before committing it.
    """
    await upgrade(database_url, schema, script_location)
    engine = create_engine(database_url, pool_size=1)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_revision_sync, _config(script_location, schema), message)
    finally:
        await engine.dispose()


def _revision_sync(connection: Connection, cfg: Config, message: str) -> None:
    cfg.attributes["connection"] = connection
    command.revision(cfg, message=message, autogenerate=True)
