"""The embedded PostgreSQL: a real server from the wheel, on a unix socket, that keeps its data."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from accrue.embedded import EmbeddedPostgres

pytestmark = pytest.mark.integration


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # The server's socket lives in its data dir, so keep the path short (pytest's tmp_path may not be).
    path = Path(tempfile.mkdtemp(prefix="accrue-t-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def test_url_is_accepted_by_asyncpg_and_sqlalchemy_asyncpg(short_dir: Path) -> None:
    with EmbeddedPostgres(short_dir / "pg", cleanup="delete") as pg:
        assert pg.url == f"postgresql://postgres@/accrue?host={short_dir / 'pg'}"
        conn = await asyncpg.connect(pg.url)
        try:
            assert await conn.fetchval("SELECT current_database()") == "accrue"
            assert int(await conn.fetchval("SHOW server_version_num")) >= 180000
        finally:
            await conn.close()
        engine = create_async_engine(pg.url.replace("postgresql://", "postgresql+asyncpg://", 1))
        try:
            async with engine.connect() as sa_conn:
                assert (await sa_conn.execute(sa.text("SELECT current_database()"))).scalar_one() == "accrue"
        finally:
            await engine.dispose()


async def test_data_survives_a_restart_on_the_same_dir(short_dir: Path) -> None:
    pg = EmbeddedPostgres(short_dir / "pg").start()
    try:
        conn = await asyncpg.connect(pg.url)
        await conn.execute("CREATE TABLE kept (id int primary key, note text)")
        await conn.execute("INSERT INTO kept VALUES (1, 'still here')")
        await conn.close()
        first_pid = pg.pid
        pg.stop()
        assert not pg.running
        pg.start()
        assert pg.pid != first_pid
        conn = await asyncpg.connect(pg.url)
        assert await conn.fetchval("SELECT note FROM kept WHERE id = 1") == "still here"
        await conn.close()
    finally:
        pg.stop()
    assert (short_dir / "pg" / "PG_VERSION").exists(), "cleanup='stop' keeps the data dir"


async def test_creates_a_named_database_once(short_dir: Path) -> None:
    with EmbeddedPostgres(short_dir / "pg", database="ledger", cleanup="delete") as pg:
        assert pg.url.startswith("postgresql://postgres@/ledger?host=")
        conn = await asyncpg.connect(pg.admin_url)
        names = {r["datname"] for r in await conn.fetch("SELECT datname FROM pg_database")}
        await conn.close()
        assert "ledger" in names
    assert not (short_dir / "pg").exists(), "cleanup='delete' removes the data dir"


async def test_a_non_durable_server_turns_fsync_off_and_a_durable_one_back_on(short_dir: Path) -> None:
    pg = EmbeddedPostgres(short_dir / "pg", durable=False).start()
    try:
        conn = await asyncpg.connect(pg.url)
        assert await conn.fetchval("SHOW fsync") == "off"
        await conn.close()
        pg.stop()
        pg = EmbeddedPostgres(short_dir / "pg", durable=True).start()
        conn = await asyncpg.connect(pg.url)
        assert await conn.fetchval("SHOW fsync") == "on"
        await conn.close()
    finally:
        pg.stop()
