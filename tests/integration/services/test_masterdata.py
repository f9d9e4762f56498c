"""Master data on a real database and broker: create, list, upsert by external_ref, rates, idempotency."""

import asyncio
from collections.abc import Callable
from typing import Any

import grpc
import pytest
import sqlalchemy as sa
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from accrue.db import create_engine
from accrue.masterdata.v1 import masterdata_service_pb2 as api
from accrue.masterdata.v1 import masterdata_service_pb2_grpc as api_grpc
from accrue.masterdata.v1 import resources_pb2 as md
from accrue.runtime.server import RunningService
from accrue.type.v1 import types_pb2

pytestmark = pytest.mark.integration


@pytest.fixture
async def stub(
    start_service: Any, channel_to: Callable[[RunningService], grpc.aio.Channel]
) -> api_grpc.MasterDataServiceStub:
    service = await start_service("masterdata")
    return api_grpc.MasterDataServiceStub(channel_to(service))


async def count(database_url: str, table: str) -> int:
    engine = create_engine(database_url)
    async with engine.connect() as conn:
        n = await conn.scalar(sa.text(f"SELECT count(*) FROM masterdata.{table}"))
    await engine.dispose()
    return int(n or 0)


def field_violations(error: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    status = rpc_status.from_call(error)
    assert status is not None
    bad = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad)
    return [(v.field, v.reason) for v in bad.field_violations]


async def test_created_records_get_ids_etags_and_can_be_read_back(
    stub: api_grpc.MasterDataServiceStub, build_firm: Any
) -> None:
    f = await build_firm(stub)
    got = (await stub.GetProject(api.GetProjectRequest(id=f["project"].id))).project
    assert got.code == "P1"
    assert got.etag == "1"
    assert got.HasField("create_time")
    assert [line.project_id for line in f["contract"].lines] == [f["project"].id]
    assert f["contract"].lines[0].id
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await stub.GetProject(api.GetProjectRequest(id="not-an-id"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


async def test_invalid_input_reports_every_violation_and_writes_nothing(
    stub: api_grpc.MasterDataServiceStub, database_url: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.CreateConsultant(
            api.CreateConsultantRequest(
                consultant=md.Consultant(
                    code="E9",
                    legal_entity_id="00000000-0000-0000-0000-000000000000",
                    labor_category_id="nope",
                    active_from="2026-13-01",
                    cost_rate="12,50",
                )
            )
        )
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(error.value) == [
        ("consultant.name", "REQUIRED"),
        ("consultant.cost_rate", "INVALID_DECIMAL"),
        ("consultant.active_from", "INVALID_DATE"),
        ("consultant.legal_entity_id", "REFERENCE_NOT_FOUND"),
        ("consultant.labor_category_id", "REFERENCE_NOT_FOUND"),
    ]
    with pytest.raises(grpc.aio.AioRpcError) as refs:
        await stub.CreateCustomer(
            api.CreateCustomerRequest(
                customer=md.Customer(
                    code="C", name="C", legal_entity_id="00000000-0000-0000-0000-000000000000", currency="EUR"
                )
            )
        )
    assert field_violations(refs.value) == [("customer.legal_entity_id", "REFERENCE_NOT_FOUND")]
    assert await count(database_url, "consultants") == 0
    assert await count(database_url, "outbox") == 0


async def test_a_taken_code_is_a_conflict(stub: api_grpc.MasterDataServiceStub) -> None:
    await stub.CreateLaborCategory(
        api.CreateLaborCategoryRequest(labor_category=md.LaborCategory(code="SC", name="A"))
    )
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.CreateLaborCategory(
            api.CreateLaborCategoryRequest(labor_category=md.LaborCategory(code="SC", name="B"))
        )
    assert error.value.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_batch_upsert_is_idempotent_and_reports_each_row(
    stub: api_grpc.MasterDataServiceStub, database_url: str
) -> None:
    rows = [
        md.LaborCategory(code="SC", name="Senior", external_ref=types_pb2.ExternalRef(system="hr", id="1")),
        md.LaborCategory(code="JC", name="Junior", external_ref=types_pb2.ExternalRef(system="hr", id="2")),
        md.LaborCategory(code="", name="No code", external_ref=types_pb2.ExternalRef(system="hr", id="3")),
        md.LaborCategory(code="XX", name="No ref"),
    ]
    first = await stub.BatchUpsertLaborCategories(
        api.BatchUpsertLaborCategoriesRequest(labor_categories=rows)
    )
    assert [r.outcome for r in first.results] == [
        api.UPSERT_OUTCOME_CREATED,
        api.UPSERT_OUTCOME_CREATED,
        api.UPSERT_OUTCOME_REJECTED,
        api.UPSERT_OUTCOME_REJECTED,
    ]
    assert [(v.field, v.code) for v in first.results[2].reasons] == [("code", "REQUIRED")]
    assert [(v.field, v.code) for v in first.results[3].reasons] == [("external_ref", "REQUIRED")]
    events_after_first = await count(database_url, "outbox")
    assert events_after_first == 2

    again = await stub.BatchUpsertLaborCategories(
        api.BatchUpsertLaborCategoriesRequest(labor_categories=rows[:2])
    )
    assert [r.outcome for r in again.results] == [api.UPSERT_OUTCOME_UNCHANGED] * 2
    assert [r.labor_category.id for r in again.results] == [r.labor_category.id for r in first.results[:2]]
    assert await count(database_url, "outbox") == events_after_first

    rows[1].name = "Junior Consultant"
    changed = await stub.BatchUpsertLaborCategories(
        api.BatchUpsertLaborCategoriesRequest(labor_categories=rows[:2])
    )
    assert [r.outcome for r in changed.results] == [api.UPSERT_OUTCOME_UNCHANGED, api.UPSERT_OUTCOME_UPDATED]
    assert changed.results[1].labor_category.etag == "2"
    assert await count(database_url, "outbox") == events_after_first + 1


async def test_lists_filter_and_page(stub: api_grpc.MasterDataServiceStub) -> None:
    for code in ("A", "B", "C", "D", "E"):
        await stub.CreateLaborCategory(
            api.CreateLaborCategoryRequest(labor_category=md.LaborCategory(code=code, name=code))
        )
    seen, token = [], ""
    while True:
        page = await stub.ListLaborCategories(api.ListLaborCategoriesRequest(page_size=2, page_token=token))
        seen += [c.code for c in page.labor_categories]
        token = page.next_page_token
        if not token:
            break
    assert seen == ["A", "B", "C", "D", "E"]
    only = await stub.ListLaborCategories(api.ListLaborCategoriesRequest(code="C"))
    assert [c.code for c in only.labor_categories] == ["C"]


async def test_rates_resolve_by_override_then_latest_effective(
    stub: api_grpc.MasterDataServiceStub, build_firm: Any
) -> None:
    f = await build_firm(stub)

    async def rate(consultant: str, date: str) -> api.ResolveRateResponse:
        return await stub.ResolveRate(
            api.ResolveRateRequest(
                project_id=f["project"].id, consultant_id=consultant, labor_category_id=f["lc"].id, date=date
            )
        )

    assert (await rate(f["dev"].id, "2026-11-14")).rate == "150.00"
    after = await rate(f["dev"].id, "2026-11-15")
    assert (after.rate, after.currency, after.contract_id) == ("160.00", "GBP", f["contract"].id)
    override = await rate(f["boss"].id, "2026-11-15")
    assert (override.rate, override.consultant_override) == ("200.00", True)
    with pytest.raises(grpc.aio.AioRpcError) as none:
        await rate(f["dev"].id, "2025-06-01")
    assert none.value.code() == grpc.StatusCode.NOT_FOUND
    assert "no rate" in (none.value.details() or "")


async def test_an_idempotency_key_gives_the_same_result_once(
    stub: api_grpc.MasterDataServiceStub, database_url: str
) -> None:
    request = api.CreateLaborCategoryRequest(labor_category=md.LaborCategory(code="SC", name="Senior"))
    key = (("idempotency-key", "key-1"),)
    first, second = await asyncio.gather(
        stub.CreateLaborCategory(request, metadata=key), stub.CreateLaborCategory(request, metadata=key)
    )
    third = await stub.CreateLaborCategory(request, metadata=key)
    assert first.labor_category.id == second.labor_category.id == third.labor_category.id
    assert await count(database_url, "labor_categories") == 1
    assert await count(database_url, "outbox") == 1
    other = api.CreateLaborCategoryRequest(labor_category=md.LaborCategory(code="JC", name="Junior"))
    with pytest.raises(grpc.aio.AioRpcError) as reused:
        await stub.CreateLaborCategory(other, metadata=key)
    assert reused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert await count(database_url, "labor_categories") == 1
