"""The audit trail on a real PostgreSQL: append-only, one unbroken chain per legal entity, tamper found."""

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Sequence
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from sqlalchemy.exc import DBAPIError, ProgrammingError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from accrue.db import UnitOfWork, create_engine
from accrue.db.audit import (
    CANONICAL_FIELDS,
    GENESIS,
    AuditLog,
    AuditRecord,
    Outcome,
    audit_table,
    canonical,
    chain_hash,
    create_append_only_triggers,
    grant_append_only,
    verify,
)
from accrue.runtime.clock import FixedClock

pytestmark = pytest.mark.integration

SCHEMA = "audit_test"
metadata = sa.MetaData(schema=SCHEMA)
audit = audit_table(metadata)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url, pool_size=12)
    async with engine.begin() as conn:
        await conn.execute(sa.text(f"CREATE SCHEMA {SCHEMA}"))
        await conn.run_sync(metadata.create_all)
        # As a migration does: the DDL helper given alembic's `op`.
        await conn.run_sync(
            lambda sync: create_append_only_triggers(Operations(MigrationContext.configure(sync)), SCHEMA)
        )
    yield engine
    await engine.dispose()


@pytest.fixture
def clock(instant: dt.datetime) -> FixedClock:
    return FixedClock(instant)


def record(clock: FixedClock, n: int = 0, legal_entity_id: str = "le-uk", **extra: object) -> AuditRecord:
    return AuditRecord(
        operation="billing.invoices.approve",
        resource_type="invoice",
        resource_id=f"inv-{n}",
        outcome=Outcome.OK,
        occurred_at=clock(),
        principal_subject="user-7",
        principal_roles=("finance",),
        legal_entity_id=legal_entity_id,
        request_id=f"req-{n}",
        changes={"status": {"before": "DRAFT", "after": "APPROVED"}, "total": {"after": Decimal("1125.00")}},
        **extra,  # type: ignore[arg-type]
    )


async def chain(conn: AsyncConnection, legal_entity_id: str) -> Sequence[Any]:
    result = await conn.execute(
        sa.select(audit.c.seq, audit.c.prev_hash, audit.c.hash)
        .where(audit.c.legal_entity_id == legal_entity_id)
        .order_by(audit.c.seq)
    )
    return result.all()


def assert_unbroken(rows: Sequence[Any]) -> None:
    prev = GENESIS
    for row in rows:
        assert bytes(row.prev_hash) == prev, f"fork or gap at seq {row.seq}"
        prev = bytes(row.hash)


async def test_a_rolled_back_append_leaves_nothing(engine: AsyncEngine, clock: FixedClock) -> None:
    async with engine.connect() as conn:
        async with conn.begin() as tx:
            appended = await AuditLog(conn, audit).append(record(clock))
            assert appended.prev_hash == GENESIS
            await tx.rollback()
        assert await conn.scalar(sa.select(sa.func.count()).select_from(audit)) == 0
        await conn.rollback()  # end the read's own (autobegun) transaction
        # The chain still starts at genesis: nothing of the rolled-back record is left to point at.
        async with conn.begin():
            again = await AuditLog(conn, audit).append(record(clock))
        assert again.prev_hash == GENESIS
    assert (await verify(engine, audit)).ok


async def test_records_queued_on_a_unit_of_work_are_written_only_if_it_commits(
    engine: AsyncEngine, clock: FixedClock
) -> None:
    class Uow(UnitOfWork):
        def on_enter(self) -> None:
            self.audit = AuditLog(self, audit)

    uow = Uow(engine)
    async with uow:
        uow.audit.add(record(clock, 1))  # left without commit: rolled back
    async with uow:
        uow.audit.add(record(clock, 2))
        uow.audit.add(record(clock, 3, legal_entity_id=""))  # firm-wide
        await uow.commit()
    async with engine.connect() as conn:
        ids = (await conn.scalars(sa.select(audit.c.resource_id).order_by(audit.c.seq))).all()
    assert ids == ["inv-2", "inv-3"]
    result = await verify(engine, audit)
    assert result.ok
    assert {entity: head.length for entity, head in result.heads.items()} == {"le-uk": 1, "": 1}


@pytest.mark.parametrize(
    "statement",
    [
        f"UPDATE {SCHEMA}.audit_events SET outcome = 'DENIED'",
        f"DELETE FROM {SCHEMA}.audit_events",
        f"TRUNCATE {SCHEMA}.audit_events",
        f"DELETE FROM {SCHEMA}.audit_events WHERE false",
    ],
    ids=["update", "delete", "truncate", "delete-nothing"],
)
async def test_update_delete_and_truncate_are_refused(
    engine: AsyncEngine, clock: FixedClock, statement: str
) -> None:
    async with engine.begin() as conn:
        await AuditLog(conn, audit).append(record(clock))
    async with engine.begin() as conn:
        with pytest.raises(DBAPIError, match="append-only") as refused:
            await conn.execute(sa.text(statement))
        assert refused.value.orig is not None
        assert getattr(refused.value.orig, "sqlstate", None) == "42501"
    async with engine.connect() as conn:
        assert (await conn.execute(sa.select(audit.c.outcome))).scalars().all() == ["OK"]


async def test_the_application_role_may_only_read_and_append(engine: AsyncEngine, clock: FixedClock) -> None:
    role = f"audit_app_{uuid.uuid4().hex[:8]}"  # roles are cluster-wide: one of its own per run
    async with engine.begin() as conn:
        await conn.execute(sa.text(f'CREATE ROLE "{role}" NOLOGIN'))
        await conn.execute(sa.text(f'GRANT USAGE ON SCHEMA {SCHEMA} TO "{role}"'))
        await conn.run_sync(lambda sync: grant_append_only(sync, SCHEMA, role))
    try:
        async with engine.connect() as conn:
            async with conn.begin():
                await conn.execute(sa.text(f'SET LOCAL ROLE "{role}"'))
                # INSERT alone is enough, the identity column's sequence included.
                await AuditLog(conn, audit).append(record(clock))
            for statement in (
                f"UPDATE {SCHEMA}.audit_events SET outcome = 'DENIED'",
                f"DELETE FROM {SCHEMA}.audit_events",
                f"TRUNCATE {SCHEMA}.audit_events",
                f"ALTER TABLE {SCHEMA}.audit_events DISABLE TRIGGER ALL",
            ):
                async with conn.begin():
                    await conn.execute(sa.text(f'SET LOCAL ROLE "{role}"'))
                    # Refused by the missing grant, before the trigger is even reached.
                    with pytest.raises(ProgrammingError, match=r"permission denied|must be owner"):
                        await conn.execute(sa.text(statement))
    finally:
        async with engine.begin() as conn:
            await conn.execute(sa.text(f'DROP OWNED BY "{role}"'))
            await conn.execute(sa.text(f'DROP ROLE "{role}"'))
    assert (await verify(engine, audit)).rows == 1


async def test_concurrent_appenders_on_one_legal_entity_make_one_unbroken_chain(
    engine: AsyncEngine, clock: FixedClock
) -> None:
    start = asyncio.Event()

    async def appender(n: int) -> None:
        async with engine.connect() as conn, conn.begin():
            await conn.execute(sa.select(1))  # every transaction open before any appends
            await start.wait()
            await AuditLog(conn, audit).append(record(clock, n))
            await asyncio.sleep(0.01)  # hold the lock a while: the others must queue, not fork

    tasks = [asyncio.create_task(appender(n)) for n in range(20)]
    await asyncio.sleep(0.2)
    start.set()
    await asyncio.gather(*tasks)
    async with engine.connect() as conn:
        rows = await chain(conn, "le-uk")
    assert len(rows) == 20
    assert len({bytes(r.prev_hash) for r in rows}) == 20  # no two rows share a predecessor
    assert_unbroken(rows)
    result = await verify(engine, audit)
    assert result.ok
    assert result.heads["le-uk"].hash == bytes(rows[-1].hash)


async def test_a_batch_chains_in_order_per_legal_entity(engine: AsyncEngine, clock: FixedClock) -> None:
    async with engine.begin() as conn:
        log = AuditLog(conn, audit)
        await log.append(record(clock, 0, "le-de"))
        batch = [record(clock, n, "le-uk" if n % 3 else "le-de") for n in range(1, 31)]
        appended = await log.append_many(batch)
        await log.append(record(clock, 31, "le-uk"))
    assert [a.legal_entity_id for a in appended] == [r.legal_entity_id for r in batch]
    async with engine.connect() as conn:
        for entity in ("le-uk", "le-de"):
            rows = await chain(conn, entity)
            assert_unbroken(rows)
            ids = (
                await conn.scalars(
                    sa.select(audit.c.resource_id)
                    .where(audit.c.legal_entity_id == entity)
                    .order_by(audit.c.seq)
                )
            ).all()
            expected = [f"inv-{n}" for n in range(32) if (n % 3 != 0) == (entity == "le-uk")]
            assert ids == expected
    result = await verify(engine, audit)
    assert result.ok
    assert result.rows == 32


async def fill(engine: AsyncEngine, clock: FixedClock) -> dict[str, list[int]]:
    """Ten records for each of two legal entities, interleaved; returns each chain's seqs."""
    async with engine.begin() as conn:
        log = AuditLog(conn, audit)
        for n in range(10):
            for entity in ("le-uk", "le-us"):
                clock.advance(dt.timedelta(seconds=1))
                await log.append(record(clock, n, entity))
        return {e: [r.seq for r in await chain(conn, e)] for e in ("le-uk", "le-us")}


async def tamper(engine: AsyncEngine, statement: str, **params: object) -> None:
    # As a database superuser would: triggers off for this session, then the edit.
    async with engine.begin() as conn:
        await conn.execute(sa.text("SET LOCAL session_replication_role = replica"))
        await conn.execute(sa.text(statement), params)


async def test_a_changed_row_is_named_by_verify(engine: AsyncEngine, clock: FixedClock) -> None:
    seqs = await fill(engine, clock)
    assert (await verify(engine, audit)).ok
    victim = seqs["le-uk"][4]
    await tamper(
        engine,
        f"""UPDATE {SCHEMA}.audit_events
            SET changes = jsonb_set(changes, '{{total,after}}', '"1.00"') WHERE seq = :seq""",
        seq=victim,
    )
    result = await verify(engine, audit)
    assert not result.ok
    assert list(result.broken) == ["le-uk"]  # the other legal entity's chain is untouched
    broken = result.broken["le-uk"]
    assert (broken.seq, broken.field) == (victim, "hash")
    assert broken.expected != broken.found
    assert f"row seq {victim}" in str(broken)
    assert result.heads["le-us"].length == 10


async def test_a_removed_row_breaks_the_link_of_the_next(engine: AsyncEngine, clock: FixedClock) -> None:
    seqs = await fill(engine, clock)
    await tamper(engine, f"DELETE FROM {SCHEMA}.audit_events WHERE seq = :seq", seq=seqs["le-us"][6])
    result = await verify(engine, audit)
    assert list(result.broken) == ["le-us"]
    assert (result.broken["le-us"].seq, result.broken["le-us"].field) == (seqs["le-us"][7], "prev_hash")


async def test_a_rewritten_and_rehashed_row_is_found_at_the_next_link(
    engine: AsyncEngine, clock: FixedClock
) -> None:
    # A tamperer who also recomputes the row's own hash still breaks the next row's pointer.
    seqs = await fill(engine, clock)
    victim = seqs["le-uk"][2]
    columns = [audit.c[name] for name in CANONICAL_FIELDS]
    async with engine.connect() as conn:
        row = (await conn.execute(sa.select(audit.c.prev_hash, *columns).where(audit.c.seq == victim))).one()
    forged = {**row._mapping, "outcome": "DENIED"}
    await tamper(
        engine,
        f"UPDATE {SCHEMA}.audit_events SET outcome = 'DENIED', hash = :hash WHERE seq = :seq",
        hash=chain_hash(bytes(row.prev_hash), canonical(forged)),
        seq=victim,
    )
    result = await verify(engine, audit)
    assert list(result.broken) == ["le-uk"]
    assert (result.broken["le-uk"].seq, result.broken["le-uk"].field) == (seqs["le-uk"][3], "prev_hash")


async def test_chains_of_two_legal_entities_are_independent(engine: AsyncEngine, clock: FixedClock) -> None:
    seqs = await fill(engine, clock)
    async with engine.connect() as conn:
        uk, us = await chain(conn, "le-uk"), await chain(conn, "le-us")
    assert bytes(uk[0].prev_hash) == bytes(us[0].prev_hash) == GENESIS
    assert_unbroken(uk)
    assert_unbroken(us)
    # Moving a row to the other legal entity is a change to it, and breaks both chains.
    await tamper(
        engine,
        f"UPDATE {SCHEMA}.audit_events SET legal_entity_id = 'le-us' WHERE seq = :seq",
        seq=seqs["le-uk"][-1],
    )
    result = await verify(engine, audit)
    assert result.broken["le-us"].seq == seqs["le-uk"][-1]
    assert "le-uk" not in result.broken  # le-uk merely lost its last row: only a kept head shows that
    assert result.heads["le-uk"].seq == seqs["le-uk"][-2]
    assert (await verify(engine, audit, legal_entity_id="le-uk")).ok
