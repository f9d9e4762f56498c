"""The audit trail as the services write it, on a real PostgreSQL: master data started in-process.

Every state-changing call appends its record in the same transaction as its change; a failed
call changes nothing and leaves a FAILED record; a refused call (401/403) is recorded without
its token; reads record nothing; the role the service runs as cannot change or remove records;
and a row a superuser rewrites is exactly the one verification names, once the service's sealer
has linked its records into their chains (in the background, moments after they commit).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from accrue.audit.v1 import audit_service_pb2 as audit_api
from accrue.audit.v1 import audit_service_pb2_grpc as audit_grpc
from accrue.db import create_engine
from accrue.db.audit import _lock_key
from accrue.db.roles import APP_ROLE
from accrue.masterdata.v1 import masterdata_service_pb2 as api
from accrue.masterdata.v1 import masterdata_service_pb2_grpc as api_grpc
from accrue.masterdata.v1 import resources_pb2 as md
from accrue.runtime.server import RunningService
from accrue.services.masterdata.adapters import tables
from accrue.testing import identity

pytestmark = pytest.mark.integration

TRAIL = "masterdata.audit_events"
CHAIN = "masterdata.audit_chain"
ADMIN = identity.person("alice@firm", "masterdata_admin")
AUDITOR = identity.person("carol@firm", "auditor")


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)  # the superuser the tests and migrations log in as
    yield engine
    await engine.dispose()


@pytest.fixture
async def masterdata(start_service: Any) -> RunningService:
    service: RunningService = await start_service("masterdata")
    return service


@pytest.fixture
async def as_person(masterdata: RunningService, internal_signer: Any) -> AsyncIterator[Any]:
    channels: list[grpc.aio.Channel] = []

    def _open(principal: Any) -> grpc.aio.Channel:
        channels.append(identity.channel(f"127.0.0.1:{masterdata.grpc_port}", internal_signer, principal))
        return channels[-1]

    yield _open
    for channel in channels:
        await channel.close()


async def _rows(db: AsyncEngine, where: str = "true") -> list[Any]:
    async with db.connect() as conn:
        return list((await conn.execute(sa.text(f"SELECT * FROM {TRAIL} WHERE {where} ORDER BY seq"))).all())


async def _sealed(trail: audit_grpc.AuditTrailServiceStub) -> audit_api.VerifyAuditTrailResponse:
    """Verification once the service's sealer has linked every record (it wakes on each commit)."""
    for _ in range(100):
        result = await trail.VerifyAuditTrail(audit_api.VerifyAuditTrailRequest())
        if result.unsealed == 0:
            return result
        await asyncio.sleep(0.05)
    raise AssertionError(f"the sealer left {result.unsealed} records unsealed for 5 s")


def _legal_entity(code: str) -> api.CreateLegalEntityRequest:
    return api.CreateLegalEntityRequest(
        legal_entity=md.LegalEntity(code=code, name=f"Acme {code}", base_currency="GBP")
    )


async def test_a_change_and_its_record_commit_together(db: AsyncEngine, as_person: Any) -> None:
    stub = api_grpc.MasterDataServiceStub(as_person(ADMIN))
    metadata = (("x-request-id", "req-42"), ("idempotency-key", "key-42"))
    created = (await stub.CreateLegalEntity(_legal_entity("UK"), metadata=metadata)).legal_entity

    rows = await _rows(db)
    assert len(rows) == 1
    row = rows[0]
    assert row.operation == "accrue.masterdata.v1.MasterDataService/CreateLegalEntity"
    assert (row.principal_subject, list(row.principal_roles)) == ("alice@firm", ["masterdata_admin"])
    assert (row.request_id, row.idempotency_key, row.outcome) == ("req-42", "key-42", "OK")
    assert row.resource_id == created.id
    assert row.changes["code"] == {"before": None, "after": "UK"}

    # Reads record nothing; a replayed key changes nothing and records nothing.
    await stub.GetLegalEntity(api.GetLegalEntityRequest(id=created.id))
    again = (await stub.CreateLegalEntity(_legal_entity("UK"), metadata=metadata)).legal_entity
    assert again.id == created.id
    assert len(await _rows(db)) == 1


async def test_a_change_whose_record_cannot_be_written_is_not_made(db: AsyncEngine, as_person: Any) -> None:
    # As a superuser: a constraint that refuses this one record (the trigger refuses only
    # UPDATE/DELETE/TRUNCATE, so adding a constraint is the way to make the append fail).
    async with db.begin() as conn:
        await conn.execute(
            sa.text(
                f"ALTER TABLE {TRAIL} ADD CONSTRAINT refuse_customers CHECK (resource_type <> 'customer')"
            )
        )
    stub = api_grpc.MasterDataServiceStub(as_person(ADMIN))
    le = (await stub.CreateLegalEntity(_legal_entity("UK"))).legal_entity
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.CreateCustomer(
            api.CreateCustomerRequest(
                customer=md.Customer(code="GLOBEX", name="Globex", legal_entity_id=le.id, currency="GBP")
            )
        )
    assert refused.value.code() == grpc.StatusCode.INTERNAL
    async with db.connect() as conn:
        customers = await conn.scalar(sa.text("SELECT count(*) FROM masterdata.customers"))
    assert customers == 0  # the change rolled back with the record that could not be appended


async def test_a_failed_call_changes_nothing_and_leaves_a_failed_record(
    db: AsyncEngine, as_person: Any
) -> None:
    stub = api_grpc.MasterDataServiceStub(as_person(ADMIN))
    await stub.CreateLegalEntity(_legal_entity("UK"))
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await stub.CreateLegalEntity(_legal_entity("UK"), metadata=(("x-request-id", "dup"),))
    assert failed.value.code() == grpc.StatusCode.ALREADY_EXISTS

    rows = await _rows(db)
    assert [r.outcome for r in rows] == ["OK", "FAILED"]
    failure = rows[1]
    assert failure.request_id == "dup"
    assert failure.principal_subject == "alice@firm"
    assert failure.changes["error"]["code"] == "ALREADY_EXISTS"
    async with db.connect() as conn:
        assert await conn.scalar(sa.text("SELECT count(*) FROM masterdata.legal_entities")) == 1


async def test_refused_calls_are_recorded_without_the_token(
    db: AsyncEngine, masterdata: RunningService, as_person: Any
) -> None:
    viewer = api_grpc.MasterDataServiceStub(as_person(identity.person("vic@firm", "viewer")))
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await viewer.CreateLegalEntity(_legal_entity("UK"))
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED

    async with grpc.aio.insecure_channel(f"127.0.0.1:{masterdata.grpc_port}") as anonymous:
        with pytest.raises(grpc.aio.AioRpcError) as unauthenticated:
            await api_grpc.MasterDataServiceStub(anonymous).CreateLegalEntity(
                _legal_entity("FR"), metadata=(("authorization", "Bearer not-a-token"),)
            )
    assert unauthenticated.value.code() == grpc.StatusCode.UNAUTHENTICATED

    rows = await _rows(db)
    assert [(r.outcome, r.principal_subject) for r in rows] == [
        ("DENIED", "vic@firm"),
        ("UNAUTHENTICATED", "anonymous"),
    ]
    assert all(r.operation.endswith("/CreateLegalEntity") for r in rows)
    assert rows[0].changes["error"]["reason"] == "MISSING_ROLE"
    assert "not-a-token" not in repr([tuple(r) for r in rows])
    async with db.connect() as conn:
        assert await conn.scalar(sa.text("SELECT count(*) FROM masterdata.legal_entities")) == 0


async def test_the_service_role_may_read_and_append_but_not_change_records(
    database_url: str, db: AsyncEngine, as_person: Any
) -> None:
    await api_grpc.MasterDataServiceStub(as_person(ADMIN)).CreateLegalEntity(_legal_entity("UK"))
    service_engine = create_engine(database_url, role=APP_ROLE)  # as the bootstrap makes it
    try:
        async with service_engine.connect() as conn:
            assert await conn.scalar(sa.text("SELECT current_user")) == APP_ROLE
            assert await conn.scalar(sa.text(f"SELECT count(*) FROM {TRAIL}")) == 1
            await conn.rollback()
        for statement in (
            f"UPDATE {TRAIL} SET outcome = 'FORGED'",
            f"DELETE FROM {TRAIL}",
            f"TRUNCATE {TRAIL}",
            f"ALTER TABLE {TRAIL} DISABLE TRIGGER audit_events_append_only",
            f"UPDATE {CHAIN} SET hash = hash",
            f"DELETE FROM {CHAIN}",
            f"TRUNCATE {CHAIN}",
            f"ALTER TABLE {CHAIN} DISABLE TRIGGER audit_chain_append_only",
        ):
            async with service_engine.connect() as conn:
                with pytest.raises(DBAPIError) as refused:
                    await conn.execute(sa.text(statement))
                assert "permission denied" in str(refused.value) or "must be owner" in str(refused.value)
                await conn.rollback()
        # The rest of its schema is its to change.
        async with service_engine.begin() as conn:
            await conn.execute(sa.text("UPDATE masterdata.legal_entities SET id = id"))
    finally:
        await service_engine.dispose()
    rows = await _rows(db)
    assert [r.outcome for r in rows] == ["OK"]


async def test_verify_names_exactly_the_row_a_superuser_rewrote(db: AsyncEngine, as_person: Any) -> None:
    stub = api_grpc.MasterDataServiceStub(as_person(ADMIN))
    for code in ("UK", "FR", "DE"):
        await stub.CreateLegalEntity(_legal_entity(code))
    trail = audit_grpc.AuditTrailServiceStub(as_person(AUDITOR))
    clean = await _sealed(trail)
    assert clean.ok
    assert clean.events == 3
    listed = await trail.ListAuditEvents(audit_api.ListAuditEventsRequest())
    assert all(len(e.hash) == 64 and len(e.prev_hash) == 64 for e in listed.events)

    rows = await _rows(db)
    victim = rows[1].seq
    async with db.begin() as conn:
        await conn.execute(sa.text("SET LOCAL session_replication_role = replica"))  # triggers off
        await conn.execute(
            sa.text(f"UPDATE {TRAIL} SET principal_subject = 'mallory' WHERE seq = :seq"), {"seq": victim}
        )

    tampered = await trail.VerifyAuditTrail(audit_api.VerifyAuditTrailRequest())
    assert not tampered.ok
    [chain] = [c for c in tampered.chains if c.HasField("broken")]
    assert (chain.broken.seq, chain.broken.field, chain.broken.position) == (victim, "hash", 1)
    assert chain.service == "masterdata"


async def test_a_record_not_sealed_yet_is_listed_without_hashes_and_counted(
    db: AsyncEngine, as_person: Any
) -> None:
    stub = api_grpc.MasterDataServiceStub(as_person(ADMIN))
    await stub.CreateLegalEntity(_legal_entity("UK"))
    trail = audit_grpc.AuditTrailServiceStub(as_person(AUDITOR))
    await _sealed(trail)
    async with db.connect() as holder:
        # Hold the firm-wide chain's lock, as another replica's sealer would: this service's
        # sealer waits for it, so a record appended meanwhile stays unsealed while we look.
        await holder.begin()
        classid, objid = _lock_key(tables.audit_events, "")
        await holder.execute(sa.select(sa.func.pg_advisory_xact_lock(classid, objid)))
        refused = api_grpc.MasterDataServiceStub(as_person(identity.person("vic@firm", "viewer")))
        with pytest.raises(grpc.aio.AioRpcError):  # a refusal: recorded on the firm-wide chain
            await refused.CreateLegalEntity(_legal_entity("FR"))
        [event] = (await trail.ListAuditEvents(audit_api.ListAuditEventsRequest(outcome="DENIED"))).events
        assert (event.hash, event.prev_hash) == ("", "")
        result = await trail.VerifyAuditTrail(audit_api.VerifyAuditTrailRequest())
        assert result.ok  # just appended, by the service's clock: waiting, not yet a problem
        assert result.unsealed == 1
        [firm_wide] = [c for c in result.chains if c.legal_entity_id == ""]
        assert (firm_wide.unsealed, firm_wide.oldest_unsealed_seq, firm_wide.length) == (1, event.seq, 0)
        await holder.rollback()
    sealed = await _sealed(trail)  # the lock released, the sealer carries on
    assert (sealed.ok, sealed.events, sealed.unsealed) == (True, 2, 0)


async def test_the_trail_lists_filtered_paged_and_within_the_callers_legal_entities(
    db: AsyncEngine, as_person: Any
) -> None:
    stub = api_grpc.MasterDataServiceStub(as_person(ADMIN))
    uk = (await stub.CreateLegalEntity(_legal_entity("UK"))).legal_entity
    fr = (await stub.CreateLegalEntity(_legal_entity("FR"))).legal_entity
    for code, le in (("C1", uk), ("C2", uk), ("C3", fr)):
        await stub.CreateCustomer(
            api.CreateCustomerRequest(
                customer=md.Customer(code=code, name=code, legal_entity_id=le.id, currency="GBP")
            )
        )
    everyone = audit_grpc.AuditTrailServiceStub(as_person(AUDITOR))
    customers = await everyone.ListAuditEvents(audit_api.ListAuditEventsRequest(resource_type="customer"))
    assert len(customers.events) == 3
    assert [e.seq for e in customers.events] == sorted((e.seq for e in customers.events), reverse=True)
    assert {e.principal_subject for e in customers.events} == {"alice@firm"}

    first = await everyone.ListAuditEvents(audit_api.ListAuditEventsRequest(page_size=2))
    rest = await everyone.ListAuditEvents(
        audit_api.ListAuditEventsRequest(page_size=2, page_token=first.next_page_token)
    )
    last = await everyone.ListAuditEvents(
        audit_api.ListAuditEventsRequest(page_size=2, page_token=rest.next_page_token)
    )
    seqs = [e.seq for page in (first, rest, last) for e in page.events]
    assert sorted(set(seqs), reverse=True) == seqs
    assert len(seqs) == 5
    assert not last.next_page_token

    uk_only = audit_grpc.AuditTrailServiceStub(
        as_person(identity.person("una@firm", "auditor", legal_entities=[uk.id]))
    )
    mine = await uk_only.ListAuditEvents(audit_api.ListAuditEventsRequest())
    assert len(mine.events) == 3  # UK and its two customers
    assert {e.legal_entity_id for e in mine.events} == {uk.id}
    asked_for_fr = await uk_only.ListAuditEvents(audit_api.ListAuditEventsRequest(legal_entity_ids=[fr.id]))
    assert list(asked_for_fr.events) == []
