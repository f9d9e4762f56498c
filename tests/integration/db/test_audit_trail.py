"""The audit trail on a real PostgreSQL: appended without a lock, sealed into one unbroken chain per
legal entity by the sealer, append-only, and every kind of tampering named by verify."""

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
from sqlalchemy.exc import DBAPIError, IntegrityError, ProgrammingError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from accrue.db import UnitOfWork, create_engine
from accrue.db.audit import (
    CANONICAL_FIELDS,
    CHAIN_TABLE_NAME,
    GENESIS,
    TABLE_NAME,
    AuditLog,
    AuditRecord,
    AuditSealer,
    Outcome,
    audit_table,
    canonical,
    chain_hash,
    chain_table_of,
    create_append_only_triggers,
    create_audit_table,
    downgrade_from_sealed_chain,
    grant_append_only,
    upgrade_to_sealed_chain,
    verify,
)
from accrue.runtime.clock import FixedClock

pytestmark = pytest.mark.integration

SCHEMA = "audit_test"
metadata = sa.MetaData(schema=SCHEMA)
audit = audit_table(metadata)
links = chain_table_of(audit)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url, pool_size=24)
    async with engine.begin() as conn:
        await conn.execute(sa.text(f"CREATE SCHEMA {SCHEMA}"))
        await conn.run_sync(metadata.create_all)
        # As a migration does: the DDL helper given alembic's `op`, for both tables.
        for table in (TABLE_NAME, CHAIN_TABLE_NAME):
            await conn.run_sync(
                lambda sync, t=table: create_append_only_triggers(  # type: ignore[misc]
                    Operations(MigrationContext.configure(sync)), SCHEMA, t
                )
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


async def seal(engine: AsyncEngine, **options: Any) -> int:
    return await AuditSealer(engine, audit, **options).seal()


async def chain(conn: AsyncConnection, legal_entity_id: str) -> Sequence[Any]:
    """A legal entity's links in chain order."""
    result = await conn.execute(
        sa.select(links.c.position, links.c.event_seq, links.c.prev_hash, links.c.hash)
        .where(links.c.legal_entity_id == legal_entity_id)
        .order_by(links.c.position)
    )
    return result.all()


def assert_unbroken(rows: Sequence[Any]) -> None:
    prev = GENESIS
    for n, row in enumerate(rows, start=1):
        assert row.position == n, f"gap before link {row.position}"
        assert bytes(row.prev_hash) == prev, f"fork or gap at link {row.position}"
        prev = bytes(row.hash)


async def test_a_rolled_back_append_leaves_nothing_to_seal(engine: AsyncEngine, clock: FixedClock) -> None:
    async with engine.connect() as conn:
        async with conn.begin() as tx:
            await AuditLog(conn, audit).append(record(clock))
            await tx.rollback()
        assert await conn.scalar(sa.select(sa.func.count()).select_from(audit)) == 0
        await conn.rollback()  # end the read's own (autobegun) transaction
    assert await seal(engine) == 0
    async with engine.begin() as conn:
        seq = await AuditLog(conn, audit).append(record(clock))
    assert await seal(engine) == 1
    async with engine.connect() as conn:
        [link] = await chain(conn, "le-uk")
    assert (link.event_seq, bytes(link.prev_hash)) == (seq, GENESIS)  # the chain starts at genesis
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
    assert await seal(engine) == 2
    result = await verify(engine, audit)
    assert result.ok
    assert {entity: head.length for entity, head in result.heads.items()} == {"le-uk": 1, "": 1}
    assert result.unsealed == {}


async def test_appends_take_no_lock_open_transactions_of_one_entity_all_append_at_once(
    engine: AsyncEngine, clock: FixedClock
) -> None:
    # The regression this design removes: with the chain lock on the request path, the second of
    # these transactions would wait for the first to commit, and none would reach the barrier.
    barrier = asyncio.Barrier(20)

    async def appender(n: int) -> int:
        async with engine.connect() as conn, conn.begin():
            seq = await AuditLog(conn, audit).append(record(clock, n))
            await barrier.wait()  # every transaction has appended and is still open
            return seq

    seqs = await asyncio.wait_for(asyncio.gather(*(appender(n) for n in range(20))), timeout=10)
    assert len(set(seqs)) == 20
    assert await seal(engine) == 20
    assert (await verify(engine, audit)).ok


@pytest.mark.parametrize("table", [TABLE_NAME, CHAIN_TABLE_NAME])
@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE {table} SET legal_entity_id = 'le-xx'",
        "DELETE FROM {table}",
        "TRUNCATE {table}",
        "DELETE FROM {table} WHERE false",
    ],
    ids=["update", "delete", "truncate", "delete-nothing"],
)
async def test_update_delete_and_truncate_are_refused(
    engine: AsyncEngine, clock: FixedClock, statement: str, table: str
) -> None:
    async with engine.begin() as conn:
        await AuditLog(conn, audit).append(record(clock))
    await seal(engine)
    async with engine.begin() as conn:
        with pytest.raises(DBAPIError, match="append-only") as refused:
            await conn.execute(sa.text(statement.format(table=f"{SCHEMA}.{table}")))
        assert refused.value.orig is not None
        assert getattr(refused.value.orig, "sqlstate", None) == "42501"
    async with engine.connect() as conn:
        assert (await conn.execute(sa.select(audit.c.legal_entity_id))).scalars().all() == ["le-uk"]
        assert len(await chain(conn, "le-uk")) == 1


async def test_the_application_role_may_only_read_append_and_seal(
    database_url: str, engine: AsyncEngine, clock: FixedClock
) -> None:
    role = f"audit_app_{uuid.uuid4().hex[:8]}"  # roles are cluster-wide: one of its own per run
    async with engine.begin() as conn:
        await conn.execute(sa.text(f'CREATE ROLE "{role}" NOLOGIN'))
        await conn.execute(sa.text(f'GRANT USAGE ON SCHEMA {SCHEMA} TO "{role}"'))
        for table in (TABLE_NAME, CHAIN_TABLE_NAME):
            await conn.run_sync(lambda sync, t=table: grant_append_only(sync, SCHEMA, role, t))  # type: ignore[misc]
    as_role = create_engine(database_url, role=role)
    try:
        # INSERT alone is enough to append (the identity's sequence included) and to seal.
        async with as_role.begin() as conn:
            await AuditLog(conn, audit).append(record(clock))
        assert await seal(as_role) == 1
        for table in (TABLE_NAME, CHAIN_TABLE_NAME):
            for statement in (
                f"UPDATE {SCHEMA}.{table} SET legal_entity_id = 'le-xx'",
                f"DELETE FROM {SCHEMA}.{table}",
                f"TRUNCATE {SCHEMA}.{table}",
                f"ALTER TABLE {SCHEMA}.{table} DISABLE TRIGGER ALL",
            ):
                async with as_role.connect() as conn:
                    # Refused by the missing grant, before the trigger is even reached.
                    with pytest.raises(ProgrammingError, match=r"permission denied|must be owner"):
                        await conn.execute(sa.text(statement))
                    await conn.rollback()
    finally:
        await as_role.dispose()
        async with engine.begin() as conn:
            await conn.execute(sa.text(f'DROP OWNED BY "{role}"'))
            await conn.execute(sa.text(f'DROP ROLE "{role}"'))
    result = await verify(engine, audit)
    assert (result.ok, result.rows) == (True, 1)


async def test_concurrent_appends_and_two_sealers_make_one_unforked_chain_per_entity(
    engine: AsyncEngine, clock: FixedClock
) -> None:
    # Two replicas' sealers run while 60 appenders on 24 connections commit in any order.
    sealers = [asyncio.create_task(AuditSealer(engine, audit, interval=0.01).run()) for _ in range(2)]

    async def appender(n: int) -> int:
        async with engine.connect() as conn, conn.begin():
            seq = await AuditLog(conn, audit).append(record(clock, n, "le-uk" if n % 2 else "le-de"))
            await asyncio.sleep(0.001 * (n % 7))  # commit out of seq order now and then
            return seq

    try:
        seqs = await asyncio.gather(*(appender(n) for n in range(60)))
        for _ in range(200):
            result = await verify(engine, audit)
            if not result.unsealed:
                break
            await asyncio.sleep(0.02)
    finally:
        for task in sealers:
            task.cancel()
        await asyncio.gather(*sealers, return_exceptions=True)
    assert result.ok
    assert result.unsealed == {}
    async with engine.connect() as conn:
        uk, de = await chain(conn, "le-uk"), await chain(conn, "le-de")
    assert_unbroken(uk)
    assert_unbroken(de)
    assert (len(uk), len(de)) == (30, 30)
    assert sorted(r.event_seq for r in uk + de) == sorted(seqs)  # every event sealed exactly once
    assert result.heads["le-uk"].hash == bytes(uk[-1].hash)


async def test_a_fork_or_a_second_link_to_an_event_is_refused_by_the_database(
    engine: AsyncEngine, clock: FixedClock
) -> None:
    async with engine.begin() as conn:
        log = AuditLog(conn, audit)
        first, second = await log.append(record(clock, 1)), await log.append(record(clock, 2))
    await seal(engine)
    async with engine.connect() as conn:
        [one, two] = await chain(conn, "le-uk")
    forged = {"legal_entity_id": "le-uk", "prev_hash": GENESIS, "hash": b"x" * 32}
    for values in (
        {**forged, "position": 3, "event_seq": second + 100},  # names genesis again: a fork
        {**forged, "position": 3, "event_seq": first, "prev_hash": bytes(two.hash)},  # sealed twice
        {**forged, "position": 2, "event_seq": second + 100, "prev_hash": bytes(one.hash)},  # same place
    ):
        async with engine.begin() as conn:
            with pytest.raises(IntegrityError):
                await conn.execute(sa.insert(links).values(**values))


async def test_a_batch_is_sealed_in_seq_order_per_legal_entity(
    engine: AsyncEngine, clock: FixedClock
) -> None:
    async with engine.begin() as conn:
        log = AuditLog(conn, audit)
        await log.append(record(clock, 0, "le-de"))
        batch = [record(clock, n, "le-uk" if n % 3 else "le-de") for n in range(1, 31)]
        seqs = await log.append_many(batch)
        await log.append(record(clock, 31, "le-uk"))
    assert seqs == sorted(seqs)
    assert await seal(engine) == 32
    async with engine.connect() as conn:
        for entity in ("le-uk", "le-de"):
            rows = await chain(conn, entity)
            assert_unbroken(rows)
            ids = (
                await conn.scalars(
                    sa.select(audit.c.resource_id)
                    .join(links, links.c.event_seq == audit.c.seq)
                    .where(links.c.legal_entity_id == entity)
                    .order_by(links.c.position)
                )
            ).all()
            assert ids == [f"inv-{n}" for n in range(32) if (n % 3 != 0) == (entity == "le-uk")]
    result = await verify(engine, audit)
    assert (result.ok, result.rows) == (True, 32)


async def test_an_event_committed_late_with_a_lower_seq_is_sealed_later(
    engine: AsyncEngine, clock: FixedClock
) -> None:
    async with engine.connect() as late:
        await late.begin()
        early_seq = await AuditLog(late, audit).append(record(clock, 1))  # takes its seq first
        async with engine.begin() as conn:
            later_seq = await AuditLog(conn, audit).append(record(clock, 2))
        # A sealer whose floor has moved past the open transaction's seq (settle=0) ...
        sealer = AuditSealer(engine, audit, settle=0, sweep=3600)
        assert await sealer.seal() == 1
        await late.commit()
    assert await sealer.seal() == 0  # ... does not look below it on its ordinary rounds,
    pending = await verify(engine, audit)
    assert pending.ok  # not stale yet: merely waiting
    assert (pending.unsealed["le-uk"].count, pending.unsealed["le-uk"].oldest_seq) == (1, early_seq)
    assert await seal(engine) == 1  # ... and a sweep (every sealer starts with one) links it
    async with engine.connect() as conn:
        rows = await chain(conn, "le-uk")
    assert [r.event_seq for r in rows] == [later_seq, early_seq]  # sealing order is chain order
    result = await verify(engine, audit)
    assert (result.ok, result.rows, result.unsealed) == (True, 2, {})


async def test_sealing_resumes_after_a_sealer_dies_mid_way(engine: AsyncEngine, clock: FixedClock) -> None:
    async with engine.begin() as conn:
        await AuditLog(conn, audit).append_many([record(clock, n) for n in range(10)])
    # A sealer that links part of the chain and commits, then dies inside its next transaction.
    sealer = AuditSealer(engine, audit, batch_size=4)
    assert await sealer.seal() == 4
    async with engine.connect() as conn:
        await conn.begin()
        assert await sealer.seal_entity(conn, "le-uk") == 4
        await conn.rollback()  # the crash: its links go with its transaction
        assert len(await chain(conn, "le-uk")) == 4
    # Another sealer (a restart, or another replica) carries on from the committed head.
    restarted = AuditSealer(engine, audit, batch_size=4)
    assert [await restarted.seal() for _ in range(3)] == [4, 2, 0]
    async with engine.connect() as conn:
        rows = await chain(conn, "le-uk")
    assert_unbroken(rows)
    assert [r.event_seq for r in rows] == sorted(r.event_seq for r in rows)
    result = await verify(engine, audit)
    assert (result.ok, result.rows) == (True, 10)


async def test_an_event_left_unsealed_too_long_is_reported(engine: AsyncEngine, clock: FixedClock) -> None:
    async with engine.begin() as conn:
        await AuditLog(conn, audit).append(record(clock, 1, "le-us"))
    await seal(engine)
    # Inserted "around" the sealer: nobody seals it (no sealer runs in this test from here on).
    async with engine.begin() as conn:
        orphan = await AuditLog(conn, audit).append(record(clock, 2, "le-us"))
    soon = await verify(engine, audit, now=clock() + dt.timedelta(minutes=1))
    assert soon.ok
    assert soon.unsealed["le-us"].count == 1
    late = await verify(engine, audit, now=clock() + dt.timedelta(minutes=6))
    assert not late.ok
    problem = late.broken["le-us"]
    assert (problem.field, problem.seq) == ("unsealed", orphan)
    assert f"event seq {orphan}" in str(problem)
    assert late.heads["le-us"].length == 1  # the sealed part of the chain still checks out


async def fill(engine: AsyncEngine, clock: FixedClock) -> dict[str, list[int]]:
    """Ten sealed records for each of two legal entities, interleaved; returns each chain's seqs."""
    async with engine.begin() as conn:
        log = AuditLog(conn, audit)
        for n in range(10):
            for entity in ("le-uk", "le-us"):
                clock.advance(dt.timedelta(seconds=1))
                await log.append(record(clock, n, entity))
    assert await seal(engine) == 20
    async with engine.connect() as conn:
        return {e: [r.event_seq for r in await chain(conn, e)] for e in ("le-uk", "le-us")}


async def tamper(engine: AsyncEngine, statement: str, **params: object) -> None:
    # As a database superuser would: triggers off for this session, then the edit.
    async with engine.begin() as conn:
        await conn.execute(sa.text("SET LOCAL session_replication_role = replica"))
        await conn.execute(sa.text(statement), params)


async def test_a_changed_sealed_event_is_named_by_verify(engine: AsyncEngine, clock: FixedClock) -> None:
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
    assert (broken.seq, broken.field, broken.position) == (victim, "hash", 5)
    assert broken.expected != broken.found
    assert f"event seq {victim}" in str(broken)
    assert result.heads["le-us"].length == 10


async def test_a_deleted_sealed_event_is_named(engine: AsyncEngine, clock: FixedClock) -> None:
    seqs = await fill(engine, clock)
    victim = seqs["le-us"][6]
    await tamper(engine, f"DELETE FROM {SCHEMA}.audit_events WHERE seq = :seq", seq=victim)
    result = await verify(engine, audit)
    assert list(result.broken) == ["le-us"]
    assert (result.broken["le-us"].seq, result.broken["le-us"].field) == (victim, "event")


async def test_a_deleted_link_is_found_at_the_next(engine: AsyncEngine, clock: FixedClock) -> None:
    seqs = await fill(engine, clock)
    await tamper(engine, f"DELETE FROM {SCHEMA}.audit_chain WHERE event_seq = :seq", seq=seqs["le-uk"][3])
    result = await verify(engine, audit)
    assert list(result.broken) == ["le-uk"]
    assert (result.broken["le-uk"].seq, result.broken["le-uk"].field) == (seqs["le-uk"][4], "position")


async def test_a_duplicated_link_is_named(engine: AsyncEngine, clock: FixedClock) -> None:
    seqs = await fill(engine, clock)
    async with engine.connect() as conn:
        head = (await chain(conn, "le-uk"))[-1]
    # A superuser who drops the one-link-per-event index and seals an event a second time, with a
    # hash that is right for it: only the duplicate check can tell.
    victim = seqs["le-uk"][2]
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                sa.select(*(audit.c[n] for n in CANONICAL_FIELDS)).where(audit.c.seq == victim)
            )
        ).one()
    await tamper(engine, f"DROP INDEX {SCHEMA}.audit_chain_event")
    await tamper(
        engine,
        f"""INSERT INTO {SCHEMA}.audit_chain (legal_entity_id, position, event_seq, prev_hash, hash)
            VALUES ('le-uk', 11, :seq, :prev, :hash)""",
        seq=victim,
        prev=bytes(head.hash),
        hash=chain_hash(bytes(head.hash), canonical(row._asdict())),
    )
    result = await verify(engine, audit)
    broken = result.broken["le-uk"]
    assert (broken.seq, broken.field, broken.position) == (victim, "duplicate", 11)


async def test_a_rewritten_and_rehashed_event_is_found_at_the_next_link(
    engine: AsyncEngine, clock: FixedClock
) -> None:
    # A tamperer who also recomputes the event's own link still breaks the next link's pointer.
    seqs = await fill(engine, clock)
    victim = seqs["le-uk"][2]
    columns = [audit.c[name] for name in CANONICAL_FIELDS]
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                sa.select(links.c.prev_hash, *columns)
                .join(links, links.c.event_seq == audit.c.seq)
                .where(audit.c.seq == victim)
            )
        ).one()
    forged = {**row._mapping, "outcome": "DENIED"}
    await tamper(engine, f"UPDATE {SCHEMA}.audit_events SET outcome = 'DENIED' WHERE seq = :seq", seq=victim)
    await tamper(
        engine,
        f"UPDATE {SCHEMA}.audit_chain SET hash = :hash WHERE event_seq = :seq",
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
    # Moving an event to the other legal entity breaks the chain that sealed it, there.
    await tamper(
        engine,
        f"UPDATE {SCHEMA}.audit_events SET legal_entity_id = 'le-us' WHERE seq = :seq",
        seq=seqs["le-uk"][-1],
    )
    result = await verify(engine, audit)
    assert list(result.broken) == ["le-uk"]
    assert (result.broken["le-uk"].seq, result.broken["le-uk"].field) == (seqs["le-uk"][-1], "event")
    assert (await verify(engine, audit, legal_entity_id="le-us")).ok


async def test_the_migration_moves_existing_chains_into_audit_chain(
    database_url: str, clock: FixedClock
) -> None:
    # A schema as the first audit migration left it (each event its own link), with records.
    schema = "audit_v1"
    role = f"audit_app_{uuid.uuid4().hex[:8]}"  # roles are cluster-wide: one of its own per run
    engine = create_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text(f'CREATE ROLE "{role}" NOLOGIN'))
            await conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
            await conn.run_sync(
                lambda sync: create_audit_table(Operations(MigrationContext.configure(sync)), schema)
            )
            v1 = await conn.run_sync(
                lambda sync: sa.Table(TABLE_NAME, sa.MetaData(schema=schema), autoload_with=sync)
            )
            heads: dict[str, bytes] = {}
            for n in range(6):
                rec = record(clock, n, "le-uk" if n % 2 else "")
                prev = heads.get(rec.legal_entity_id, GENESIS)
                heads[rec.legal_entity_id] = chain_hash(prev, rec.canonical())
                await conn.execute(
                    sa.insert(v1).values(**rec.row(), prev_hash=prev, hash=heads[rec.legal_entity_id])
                )
        async with engine.begin() as conn:
            await conn.run_sync(
                lambda sync: upgrade_to_sealed_chain(
                    Operations(MigrationContext.configure(sync)), schema, role
                )
            )
        now = audit_table(sa.MetaData(schema=schema))
        result = await verify(engine, now)
        assert (result.ok, result.rows, result.unsealed) == (True, 6, {})
        assert {e: (h.length, h.hash) for e, h in result.heads.items()} == {
            "le-uk": (3, heads["le-uk"]),
            "": (3, heads[""]),
        }
        # From here on the events are plain inserts, sealed after the chains carried over.
        async with engine.begin() as conn:
            await AuditLog(conn, now).append(record(clock, 6, "le-uk"))
        assert await AuditSealer(engine, now).seal() == 1
        after = await verify(engine, now)
        assert (after.ok, after.heads["le-uk"].length) == (True, 4)
        async with engine.begin() as conn:
            with pytest.raises(DBAPIError, match="append-only"):
                await conn.execute(sa.text(f"DELETE FROM {schema}.audit_chain"))
        # And back: the links return into the events' own columns, a version-1 chain in seq order.
        async with engine.begin() as conn:
            await conn.run_sync(
                lambda sync: downgrade_from_sealed_chain(Operations(MigrationContext.configure(sync)), schema)
            )
        async with engine.connect() as conn:
            rows = (await conn.execute(sa.text(f"SELECT * FROM {schema}.audit_events ORDER BY seq"))).all()
            back = {}
            for row in rows:
                assert bytes(row.prev_hash) == back.get(row.legal_entity_id, GENESIS)
                assert bytes(row.hash) == chain_hash(bytes(row.prev_hash), canonical(row._asdict()))
                back[row.legal_entity_id] = bytes(row.hash)
            assert len(rows) == 7
            assert await conn.scalar(sa.text(f"SELECT to_regclass('{schema}.audit_chain')")) is None
        async with engine.begin() as conn:
            await conn.run_sync(
                lambda sync: upgrade_to_sealed_chain(
                    Operations(MigrationContext.configure(sync)), schema, role
                )
            )
        async with engine.connect() as conn:
            granted = await conn.scalars(
                sa.text(
                    "SELECT privilege_type FROM information_schema.role_table_grants "
                    "WHERE grantee = :role AND table_schema = :schema AND table_name = 'audit_chain'"
                ),
                {"role": role, "schema": schema},
            )
            assert sorted(granted) == ["INSERT", "SELECT"]
    finally:
        async with engine.begin() as conn:
            await conn.execute(sa.text(f'DROP OWNED BY "{role}"'))
            await conn.execute(sa.text(f'DROP ROLE "{role}"'))
        await engine.dispose()
