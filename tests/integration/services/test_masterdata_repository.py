"""The repository's bulk statements run inside the unit of work's transaction, whatever comes first."""

import asyncio
import datetime as dt

import pytest
import sqlalchemy as sa
from google.protobuf import json_format

from accrue.db import create_engine
from accrue.db.migrations import upgrade
from accrue.masterdata.v1 import resources_pb2 as md
from accrue.runtime.clock import FixedClock
from accrue.runtime.identity import bound_principal
from accrue.services.masterdata.adapters.repository import ChangeRow, Write, body_of
from accrue.services.masterdata.adapters.unit_of_work import MasterDataUnitOfWork
from accrue.services.masterdata.bootstrap import MIGRATIONS, build_app
from accrue.services.masterdata.domain.kinds import KINDS
from accrue.testing import identity
from accrue.type.v1 import types_pb2

pytestmark = pytest.mark.integration

RECORD_ID = "6f1c2d1e-8a9b-4c3d-9e0f-112233445566"
LEGACY_ROW = """
    INSERT INTO masterdata.labor_categories (id, code, version, body, create_time, update_time)
    VALUES (:id, 'SC', 2, CAST(:body AS jsonb), now() - interval '1 day', now())
"""


# When these rows were written does not matter to the tests, only that it is fixed.
WRITTEN = dt.datetime(2026, 11, 2, 9, 30, tzinfo=dt.UTC)


def _write() -> Write:
    now = WRITTEN
    record = md.LaborCategory(
        id=RECORD_ID, code="SC", name="Senior", external_ref=types_pb2.ExternalRef(system="hr", id="SC")
    )
    return Write(record, body_of(record), 1, now, now, None)


async def _count(engine: sa.ext.asyncio.AsyncEngine, table: str) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(sa.text(f"SELECT count(*) FROM masterdata.{table}")) or 0)


async def test_bulk_writes_roll_back_with_the_unit_of_work(database_url: str) -> None:
    await upgrade(database_url, "masterdata", MIGRATIONS)
    engine = create_engine(database_url)
    try:
        kind = KINDS["labor_category"]
        # The driver-level insert and COPY are the first statements of the transaction.
        async with MasterDataUnitOfWork(engine) as uow:
            assert await uow.records.insert(kind, [_write()]) == {RECORD_ID}
            await uow.records.add_changes(
                [ChangeRow("labor_category", RECORD_ID, 1, "CREATED", "a", "api", WRITTEN, {})]
            )
            # no commit: everything must go
        assert await _count(engine, "labor_categories") == 0
        assert await _count(engine, "changes") == 0

        async with MasterDataUnitOfWork(engine) as uow:
            locked = await uow.records.by_external_refs(kind, [("hr", "SC")], lock=True)
            assert locked == {}
            await uow.records.insert(kind, [_write()])
            await uow.commit()
        assert await _count(engine, "labor_categories") == 1
    finally:
        await engine.dispose()


async def test_records_from_before_the_history_get_a_first_history_entry(database_url: str) -> None:
    """Migration 0002 gives every existing record a history entry its API can read back."""
    await upgrade(database_url, "masterdata", MIGRATIONS, revision="0001")
    engine = create_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                sa.text(LEGACY_ROW),
                {"id": RECORD_ID, "body": '{"code": "SC", "name": "Senior"}'},
            )
        await upgrade(database_url, "masterdata", MIGRATIONS)
        async with MasterDataUnitOfWork(engine) as uow:
            (entry,) = await uow.records.changes_of("labor_category", RECORD_ID, 0, 10)
            current = await uow.records.get(KINDS["labor_category"], RECORD_ID)
        assert (entry.version, entry.kind, entry.source) == (2, "UPDATED", "before-history")
        restored = json_format.ParseDict(entry.state, md.LaborCategory())
        assert restored == current
    finally:
        await engine.dispose()


async def test_a_record_being_updated_can_still_be_referenced_by_new_rows(database_url: str) -> None:
    """A batch holds the records it updates locked; rows elsewhere that refer to them go on."""
    await upgrade(database_url, "masterdata", MIGRATIONS)
    engine = create_engine(database_url)
    app = build_app(engine, FixedClock(WRITTEN))
    # The use cases ask who is acting (legal-entity scope); the interceptor's job, done by hand.
    with bound_principal(identity.admin()):
        try:
            le = await app.create(
                KINDS["legal_entity"], md.LegalEntity(code="UK", name="UK", base_currency="GBP")
            )
            lc = await app.create(KINDS["labor_category"], md.LaborCategory(code="SC", name="Senior"))
            person = md.Consultant(
                code="E1", name="A", legal_entity_id=le.id, labor_category_id=lc.id, active_from="2020-01-01"
            )
            boss = await app.create(KINDS["consultant"], person)
            customer = await app.create(
                KINDS["customer"],
                md.Customer(code="C", name="C", legal_entity_id=le.id, currency="GBP"),
            )
            async with MasterDataUnitOfWork(engine) as holder:
                await holder.records.load_many(KINDS["consultant"], [boss.id], lock=True)
                project = md.Project(
                    code="P",
                    name="P",
                    customer_id=customer.id,
                    legal_entity_id=le.id,
                    manager_id=boss.id,
                    status=md.PROJECT_STATUS_ACTIVE,
                    start_date="2026-01-01",
                )
                created = await asyncio.wait_for(app.create(KINDS["project"], project), timeout=10)
                assert created.manager_id == boss.id
        finally:
            await engine.dispose()
