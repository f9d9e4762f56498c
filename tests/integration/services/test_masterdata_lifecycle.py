"""A record's life on a real database and broker: update, concurrency, deactivation, history,
ownership, milestone completion, calendars, and FX/tax/rate resolution."""

import asyncio
from collections.abc import Callable
from typing import Any

import grpc
import nats
import pytest
import sqlalchemy as sa
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from accrue.db import create_engine
from accrue.events.v1 import masterdata_events_pb2 as ev
from accrue.masterdata.v1 import masterdata_service_pb2 as api
from accrue.masterdata.v1 import masterdata_service_pb2_grpc as api_grpc
from accrue.masterdata.v1 import resources_pb2 as md
from accrue.runtime.server import RunningService
from accrue.testing import identity
from accrue.type.v1 import types_pb2

pytestmark = pytest.mark.integration


@pytest.fixture
async def stub(
    start_service: Any, channel_to: Callable[[RunningService], grpc.aio.Channel]
) -> api_grpc.MasterDataServiceStub:
    service = await start_service("masterdata")
    return api_grpc.MasterDataServiceStub(channel_to(service))


def mask(*paths: str) -> field_mask_pb2.FieldMask:
    return field_mask_pb2.FieldMask(paths=list(paths))


def violations(error: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    status = rpc_status.from_call(error)
    assert status is not None
    bad = error_details_pb2.BadRequest()
    for detail in status.details:
        if detail.Unpack(bad):
            return [(v.field, v.reason) for v in bad.field_violations]
    return []


def reason(error: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(error)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    for detail in status.details:
        if detail.Unpack(info):
            return info.reason
    return ""


async def scalar(database_url: str, sql: str) -> int:
    engine = create_engine(database_url)
    async with engine.connect() as conn:
        value = await conn.scalar(sa.text(sql))
    await engine.dispose()
    return int(value or 0)


async def published(database_url: str, nats_url: str) -> list[tuple[str, Any]]:
    """(subject, body) of every md.* message on JetStream once the relay has caught up."""
    async with asyncio.timeout(20):
        while True:
            if not await scalar(
                database_url, "SELECT count(*) FROM masterdata.outbox WHERE published_at IS NULL"
            ):
                break
            await asyncio.sleep(0.05)
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        found = []
        for seq in range(1, (await js.stream_info("MD")).state.last_seq + 1):
            msg = await js.get_msg("MD", seq)
            schema = (msg.headers or {})["Accrue-Schema"].rsplit(".", 1)[-1]
            found.append((msg.subject, getattr(ev, schema).FromString(msg.data)))
        return found
    finally:
        await nc.close()


# -- update ------------------------------------------------------------------------------------


async def test_an_update_changes_only_the_fields_its_mask_names(
    stub: api_grpc.MasterDataServiceStub, build_firm: Any
) -> None:
    f = await build_firm(stub)
    dev = f["dev"]
    patch = md.Consultant(name="Dana Dev", email="dana@acme.test", cost_rate="99", etag=dev.etag)
    updated = (
        await stub.UpdateConsultant(
            api.UpdateConsultantRequest(id=dev.id, consultant=patch, update_mask=mask("name", "email"))
        )
    ).consultant
    assert (updated.name, updated.email, updated.cost_rate) == ("Dana Dev", "dana@acme.test", "")
    assert (updated.etag, updated.manager_id, updated.code) == ("2", dev.manager_id, dev.code)
    assert updated.create_time == dev.create_time
    assert updated.update_time.ToDatetime() > dev.update_time.ToDatetime()

    # Without a mask every field the patch sets changes, and nothing else.
    no_mask = (
        await stub.UpdateConsultant(
            api.UpdateConsultantRequest(id=dev.id, consultant=md.Consultant(weekly_capacity_hours="32"))
        )
    ).consultant
    assert (no_mask.weekly_capacity_hours, no_mask.name, no_mask.etag) == ("32", "Dana Dev", "3")

    # A field named in the mask but unset in the patch is cleared; a *_ref stands for its id.
    cleared = (
        await stub.UpdateConsultant(
            api.UpdateConsultantRequest(
                id=dev.id, consultant=md.Consultant(), update_mask=mask("email", "weekly_capacity_hours")
            )
        )
    ).consultant
    assert (cleared.email, cleared.weekly_capacity_hours) == ("", "")

    # An update that changes nothing keeps the etag and publishes nothing.
    same = (
        await stub.UpdateConsultant(
            api.UpdateConsultantRequest(
                id=dev.id, consultant=md.Consultant(name="Dana Dev"), update_mask=mask("name")
            )
        )
    ).consultant
    assert same.etag == cleared.etag


async def test_a_stale_etag_is_aborted_and_a_bad_update_writes_nothing(
    stub: api_grpc.MasterDataServiceStub, build_firm: Any, database_url: str
) -> None:
    f = await build_firm(stub)
    project = f["project"]
    await stub.UpdateProject(
        api.UpdateProjectRequest(
            id=project.id, project=md.Project(name="Platform v2", etag="1"), update_mask=mask("name")
        )
    )
    with pytest.raises(grpc.aio.AioRpcError) as stale:
        await stub.UpdateProject(
            api.UpdateProjectRequest(
                id=project.id, project=md.Project(name="Platform v3", etag="1"), update_mask=mask("name")
            )
        )
    assert stale.value.code() == grpc.StatusCode.ABORTED
    assert reason(stale.value) == "STALE_ETAG"

    # Two writers that read the same version: exactly one wins, the other is told to re-read.
    requests = [
        api.UpdateProjectRequest(
            id=project.id, project=md.Project(budget_hours=hours, etag="2"), update_mask=mask("budget_hours")
        )
        for hours in ("100", "200")
    ]
    outcomes = await asyncio.gather(*(stub.UpdateProject(r) for r in requests), return_exceptions=True)
    aborted = [o for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert len(aborted) == 1
    assert aborted[0].code() == grpc.StatusCode.ABORTED

    before = await scalar(database_url, "SELECT count(*) FROM masterdata.changes")
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await stub.UpdateProject(
            api.UpdateProjectRequest(
                id=project.id,
                project=md.Project(end_date="2025-01-01", customer_id="00000000-0000-0000-0000-000000000000"),
                update_mask=mask("end_date", "customer_id", "etag"),
            )
        )
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(bad.value) == [("update_mask", "INVALID_FIELD_MASK")]
    with pytest.raises(grpc.aio.AioRpcError) as invalid:
        await stub.UpdateProject(
            api.UpdateProjectRequest(
                id=project.id,
                project=md.Project(end_date="2025-01-01", customer_id="00000000-0000-0000-0000-000000000000"),
                update_mask=mask("end_date", "customer_id"),
            )
        )
    assert violations(invalid.value) == [
        ("project.end_date", "INVALID_RANGE"),
        ("project.customer_id", "REFERENCE_NOT_FOUND"),
    ]
    assert await scalar(database_url, "SELECT count(*) FROM masterdata.changes") == before
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await stub.UpdateProject(
            api.UpdateProjectRequest(id="00000000-0000-0000-0000-000000000000", project=md.Project(name="x"))
        )
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND

    # Another project's external_ref or code is a conflict (409), not a crash.
    other = (
        await stub.CreateProject(
            api.CreateProjectRequest(
                project=md.Project(
                    code="P2",
                    name="Other",
                    customer_id=f["cu"].id,
                    legal_entity_id=f["le"].id,
                    manager_id=f["boss"].id,
                    status=md.PROJECT_STATUS_ACTIVE,
                    start_date="2026-01-01",
                    external_ref=types_pb2.ExternalRef(system="psa", id="P-2"),
                )
            )
        )
    ).project
    for patch, code in (
        (md.Project(external_ref=other.external_ref), "EXTERNAL_REF_TAKEN"),
        (md.Project(code=other.code), "CODE_TAKEN"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as taken:
            await stub.UpdateProject(api.UpdateProjectRequest(id=project.id, project=patch))
        assert (taken.value.code(), reason(taken.value)) == (grpc.StatusCode.ALREADY_EXISTS, code)


# -- deactivation and history ---------------------------------------------------------------------


async def test_deactivation_publishes_keeps_the_record_readable_and_stops_new_references(
    stub: api_grpc.MasterDataServiceStub, build_firm: Any, database_url: str, nats_url: str
) -> None:
    f = await build_firm(stub)
    customer = f["cu"]
    gone = (
        await stub.DeactivateCustomer(
            api.DeactivateCustomerRequest(id=customer.id, etag=customer.etag, reason="merged into Initech")
        )
    ).customer
    assert gone.HasField("deactivate_time")
    assert gone.etag == "2"
    again = (await stub.DeactivateCustomer(api.DeactivateCustomerRequest(id=customer.id))).customer
    assert again == gone  # deactivating twice changes nothing

    assert (await stub.GetCustomer(api.GetCustomerRequest(id=customer.id))).customer == gone
    assert not (await stub.ListCustomers(api.ListCustomersRequest())).customers
    shown = await stub.ListCustomers(api.ListCustomersRequest(show_deactivated=True))
    assert [c.id for c in shown.customers] == [customer.id]

    # Existing references stay valid (the project still syncs); a new one is refused.
    unchanged = await stub.UpdateProject(
        api.UpdateProjectRequest(
            id=f["project"].id, project=md.Project(name="Renamed"), update_mask=mask("name")
        )
    )
    assert unchanged.project.customer_id == customer.id
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.CreateProject(
            api.CreateProjectRequest(
                project=md.Project(
                    code="P2",
                    name="New work",
                    customer_id=customer.id,
                    legal_entity_id=f["le"].id,
                    manager_id=f["boss"].id,
                    status=md.PROJECT_STATUS_PLANNED,
                    start_date="2027-01-01",
                )
            )
        )
    assert violations(refused.value) == [("project.customer_id", "REFERENCE_DEACTIVATED")]

    events = await published(database_url, nats_url)
    deactivations = [(s, e) for s, e in events if s.startswith("md.customer.deactivated.")]
    assert len(deactivations) == 1
    subject, body = deactivations[0]
    assert subject == f"md.customer.deactivated.{customer.id}"
    assert body.customer == gone  # the full state, deactivate_time set


async def test_every_change_is_kept_with_who_when_source_and_before_after(
    stub: api_grpc.MasterDataServiceStub,
) -> None:
    le = (
        await stub.CreateLegalEntity(
            api.CreateLegalEntityRequest(
                legal_entity=md.LegalEntity(code="UK", name="Acme UK", base_currency="GBP"), actor="alice"
            )
        )
    ).legal_entity
    # A rejected write (the code is taken by the record above) leaves no trace in its history.
    taken = await stub.BatchUpsertLegalEntities(
        api.BatchUpsertLegalEntitiesRequest(
            legal_entities=[
                md.LegalEntity(
                    code="UK",
                    name="Acme UK Ltd",
                    base_currency="GBP",
                    external_ref=types_pb2.ExternalRef(system="erp", id="LE-UK"),
                )
            ],
        )
    )
    assert [v.code for v in taken.results[0].reasons] == ["CODE_TAKEN"]
    await stub.UpdateLegalEntity(
        api.UpdateLegalEntityRequest(
            id=le.id,
            legal_entity=md.LegalEntity(name="Acme UK Ltd", country="GB"),
            source="erp",
            actor="sync-bot",
        )
    )
    await stub.DeactivateLegalEntity(api.DeactivateLegalEntityRequest(id=le.id, reason="closed", actor="bob"))
    page = await stub.ListLegalEntityChanges(api.ListLegalEntityChangesRequest(id=le.id, page_size=2))
    rest = await stub.ListLegalEntityChanges(
        api.ListLegalEntityChangesRequest(id=le.id, page_size=2, page_token=page.next_page_token)
    )
    assert not rest.next_page_token
    changes = [*page.changes, *rest.changes]
    assert [(c.kind, c.etag, c.actor, c.source) for c in changes] == [
        (api.CHANGE_KIND_CREATED, "1", "alice", "api"),
        (api.CHANGE_KIND_UPDATED, "2", "sync-bot", "erp"),
        (api.CHANGE_KIND_DEACTIVATED, "3", "bob", "api"),
    ]
    created, updated, deactivated = changes
    assert not created.HasField("before")
    assert created.after.legal_entity.name == "Acme UK"
    assert (updated.before.legal_entity.name, updated.after.legal_entity.name) == ("Acme UK", "Acme UK Ltd")
    assert updated.changed_fields == ["country", "name"]
    assert deactivated.changed_fields == ["deactivate_time"]
    assert deactivated.reason == "closed"
    assert deactivated.after.legal_entity.HasField("deactivate_time")
    assert updated.change_time.ToDatetime() <= deactivated.change_time.ToDatetime()
    current = (await stub.GetLegalEntity(api.GetLegalEntityRequest(id=le.id))).legal_entity
    assert deactivated.after.legal_entity == current

    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await stub.ListLegalEntityChanges(
            api.ListLegalEntityChangesRequest(id="00000000-0000-0000-0000-000000000000")
        )
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


# -- ownership --------------------------------------------------------------------------------


async def test_only_the_system_of_record_may_write_what_it_owns(
    start_service: Any,
    channel_to: Callable[[RunningService], grpc.aio.Channel],
    database_url: str,
    internal_signer: Any,
) -> None:
    service = await start_service("masterdata", owners={"labor_category": "workday"})
    stub = api_grpc.MasterDataServiceStub(channel_to(service))
    address = f"127.0.0.1:{service.grpc_port}"
    as_workday = api_grpc.MasterDataServiceStub(
        identity.channel(address, internal_signer, identity.system_client("workday"))
    )
    as_crm = api_grpc.MasterDataServiceStub(
        identity.channel(address, internal_signer, identity.system_client("crm"))
    )
    rows = [
        md.LaborCategory(
            code="SC", name="Senior", external_ref=types_pb2.ExternalRef(system="workday", id="1")
        ),
        md.LaborCategory(code="JC", name="Junior", external_ref=types_pb2.ExternalRef(system="crm", id="2")),
    ]
    # A person (here an administrator) writes as "api": a row's external_ref.system claims nothing.
    as_person = (
        await stub.BatchUpsertLaborCategories(api.BatchUpsertLaborCategoriesRequest(labor_categories=rows))
    ).results
    assert [r.outcome for r in as_person] == [api.UPSERT_OUTCOME_REJECTED] * 2
    assert [(v.field, v.code) for v in as_person[0].reasons] == [("source", "NOT_SYSTEM_OF_RECORD")]
    assert "owned by workday" in as_person[0].reasons[0].message
    # Another system's client is refused whatever its rows say.
    rows[1].external_ref.system = "workday"
    crm = await as_crm.BatchUpsertLaborCategories(
        api.BatchUpsertLaborCategoriesRequest(labor_categories=rows)
    )
    assert [r.outcome for r in crm.results] == [api.UPSERT_OUTCOME_REJECTED] * 2
    assert await scalar(database_url, "SELECT count(*) FROM masterdata.labor_categories") == 0
    # The owner's client writes every row, whichever system keys it.
    rows[1].external_ref.system = "crm"
    results = (
        await as_workday.BatchUpsertLaborCategories(
            api.BatchUpsertLaborCategoriesRequest(labor_categories=rows)
        )
    ).results
    assert [r.outcome for r in results] == [api.UPSERT_OUTCOME_CREATED] * 2
    sc = results[0].labor_category
    for call in (
        stub.CreateLaborCategory(
            api.CreateLaborCategoryRequest(labor_category=md.LaborCategory(code="X", name="X"))
        ),
        stub.UpdateLaborCategory(
            api.UpdateLaborCategoryRequest(id=sc.id, labor_category=md.LaborCategory(name="Renamed"))
        ),
        stub.DeactivateLaborCategory(api.DeactivateLaborCategoryRequest(id=sc.id, source="crm")),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await call
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert reason(denied.value) == "NOT_SYSTEM_OF_RECORD"
    owned = await stub.UpdateLaborCategory(
        api.UpdateLaborCategoryRequest(
            id=sc.id, labor_category=md.LaborCategory(name="Senior+"), source="workday"
        )
    )
    assert owned.labor_category.name == "Senior+"
    # Kinds without an owner still take writes from anyone.
    await stub.CreateLegalEntity(
        api.CreateLegalEntityRequest(legal_entity=md.LegalEntity(code="UK", name="UK", base_currency="GBP"))
    )
    assert await scalar(database_url, "SELECT count(*) FROM masterdata.labor_categories") == 2


# -- milestones -----------------------------------------------------------------------------------


async def test_completing_a_milestone_makes_it_billable_once(
    stub: api_grpc.MasterDataServiceStub, build_firm: Any, database_url: str, nats_url: str
) -> None:
    f = await build_firm(stub)
    fixed = (
        await stub.CreateProject(
            api.CreateProjectRequest(
                project=md.Project(
                    code="FF",
                    name="Fixed",
                    customer_id=f["cu"].id,
                    legal_entity_id=f["le"].id,
                    manager_id=f["boss"].id,
                    status=md.PROJECT_STATUS_ACTIVE,
                    start_date="2026-01-01",
                )
            )
        )
    ).project
    contract = (
        await stub.CreateContract(
            api.CreateContractRequest(
                contract=md.Contract(
                    code="K2",
                    customer_id=f["cu"].id,
                    currency="GBP",
                    lines=[
                        md.ContractLine(
                            project_id=fixed.id, billing_model=md.BILLING_MODEL_FIXED_FEE, fee_amount="10000"
                        )
                    ],
                )
            )
        )
    ).contract
    milestone = (
        await stub.CreateMilestone(
            api.CreateMilestoneRequest(
                milestone=md.Milestone(
                    contract_line_id=contract.lines[0].id,
                    name="Go-live",
                    amount="10000",
                    due_date="2026-06-30",
                )
            )
        )
    ).milestone
    assert milestone.status == md.MILESTONE_STATUS_PENDING
    with pytest.raises(grpc.aio.AioRpcError) as stale:
        await stub.CompleteMilestone(api.CompleteMilestoneRequest(id=milestone.id, etag="7"))
    assert stale.value.code() == grpc.StatusCode.ABORTED

    done = (await stub.CompleteMilestone(api.CompleteMilestoneRequest(id=milestone.id, etag="1"))).milestone
    assert done.status == md.MILESTONE_STATUS_COMPLETED
    assert done.HasField("complete_time")
    again = (await stub.CompleteMilestone(api.CompleteMilestoneRequest(id=milestone.id))).milestone
    assert again == done
    # An update cannot undo what only the server sets.
    renamed = (
        await stub.UpdateMilestone(
            api.UpdateMilestoneRequest(
                id=milestone.id,
                milestone=md.Milestone(name="Go-live (signed off)", status=md.MILESTONE_STATUS_PENDING),
            )
        )
    ).milestone
    assert renamed.status == md.MILESTONE_STATUS_COMPLETED
    assert renamed.complete_time == done.complete_time

    events = await published(database_url, nats_url)
    completed = [(s, e) for s, e in events if s.startswith("md.milestone.completed.")]
    assert len(completed) == 1
    subject, body = completed[0]
    assert subject == f"md.milestone.completed.{milestone.id}"
    assert (body.contract_id, body.project_id) == (contract.id, fixed.id)
    assert body.milestone == done
    upserts = [e.milestone.status for s, e in events if s.startswith("md.milestone.upserted.")]
    assert upserts == [
        md.MILESTONE_STATUS_PENDING,
        md.MILESTONE_STATUS_COMPLETED,
        md.MILESTONE_STATUS_COMPLETED,
    ]

    gone = (await stub.DeactivateMilestone(api.DeactivateMilestoneRequest(id=milestone.id))).milestone
    assert gone.status == md.MILESTONE_STATUS_COMPLETED


# -- calendars ------------------------------------------------------------------------------------


async def test_calendars_hold_working_days_and_holidays_per_legal_entity(
    stub: api_grpc.MasterDataServiceStub, build_firm: Any
) -> None:
    f = await build_firm(stub)
    calendar = (
        await stub.CreateCalendar(
            api.CreateCalendarRequest(
                calendar=md.Calendar(
                    code="UK-2026",
                    name="England and Wales 2026",
                    legal_entity_id=f["le"].id,
                    working_days=[
                        md.WEEKDAY_MONDAY,
                        md.WEEKDAY_TUESDAY,
                        md.WEEKDAY_WEDNESDAY,
                        md.WEEKDAY_THURSDAY,
                    ],
                    holidays=[
                        md.Holiday(date="2026-12-25", name="Christmas Day"),
                        md.Holiday(date="2026-12-28", name="Boxing Day (substitute)"),
                    ],
                )
            )
        )
    ).calendar
    listed = await stub.ListCalendars(api.ListCalendarsRequest(legal_entity_id=f["le"].id))
    assert [c.id for c in listed.calendars] == [calendar.id]
    assert [h.name for h in listed.calendars[0].holidays] == ["Christmas Day", "Boxing Day (substitute)"]
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await stub.CreateCalendar(
            api.CreateCalendarRequest(
                calendar=md.Calendar(
                    code="UK-2027",
                    legal_entity_id=f["le"].id,
                    working_days=[md.WEEKDAY_MONDAY, md.WEEKDAY_MONDAY],
                    holidays=[
                        md.Holiday(date="2027-02-30"),
                        md.Holiday(date="2027-12-25"),
                        md.Holiday(date="2027-12-25"),
                    ],
                )
            )
        )
    assert violations(bad.value) == [
        ("calendar.working_days[1]", "DUPLICATE"),
        ("calendar.holidays[0].date", "INVALID_DATE"),
        ("calendar.holidays[2].date", "DUPLICATE"),
    ]


# -- resolution -----------------------------------------------------------------------------------


async def test_fx_conversion_uses_the_latest_rate_on_or_before_the_day(
    stub: api_grpc.MasterDataServiceStub,
) -> None:
    for day, rate in (("2026-01-01", "0.8600"), ("2026-07-01", "0.8512"), ("2026-09-01", "0.8700")):
        await stub.CreateFxRate(
            api.CreateFxRateRequest(fx_rate=md.FxRate(base="EUR", quote="GBP", rate=rate, effective_date=day))
        )
    converted = await stub.ConvertAmount(
        api.ConvertAmountRequest(amount="1000.005", from_currency="EUR", to_currency="GBP", date="2026-08-31")
    )
    # 1000.005 × 0.8512 = 851.204256 exactly, rounded once to pence.
    assert (converted.amount, converted.exact_amount, converted.rate) == ("851.20", "851.2042560", "0.8512")
    assert converted.fx_rate.effective_date == "2026-07-01"
    yen = await stub.ConvertAmount(
        api.ConvertAmountRequest(amount="12.5", from_currency="JPY", to_currency="JPY", date="2026-08-31")
    )
    assert (yen.amount, yen.rate) == ("12", "1")  # half-even to the yen's zero decimals
    for request, expected in (
        (
            api.ConvertAmountRequest(amount="1", from_currency="EUR", to_currency="GBP", date="2025-12-31"),
            "after",
        ),
        (
            api.ConvertAmountRequest(amount="1", from_currency="GBP", to_currency="EUR", date="2026-08-31"),
            "inverted",
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as none:
            await stub.ConvertAmount(request)
        assert none.value.code() == grpc.StatusCode.NOT_FOUND
        assert reason(none.value) == "NO_FX_RATE"
        assert expected in (none.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await stub.ConvertAmount(
            api.ConvertAmountRequest(amount="1e3", from_currency="EURO", to_currency="GBP", date="2026-02-30")
        )
    assert violations(bad.value) == [
        ("amount", "INVALID_DECIMAL"),
        ("from_currency", "INVALID_CURRENCY"),
        ("date", "INVALID_DATE"),
    ]


async def test_tax_resolves_to_the_rate_in_effect_and_its_source(
    stub: api_grpc.MasterDataServiceStub,
) -> None:
    old = (
        await stub.CreateTaxRate(
            api.CreateTaxRateRequest(
                tax_rate=md.TaxRate(tax_code="VAT-STD", rate="0.175", effective_from="2008-12-01")
            )
        )
    ).tax_rate
    new = (
        await stub.CreateTaxRate(
            api.CreateTaxRateRequest(
                tax_rate=md.TaxRate(tax_code="VAT-STD", rate="0.20", effective_from="2011-01-04")
            )
        )
    ).tax_rate
    then = await stub.ResolveTaxRate(api.ResolveTaxRateRequest(tax_code="VAT-STD", date="2010-06-01"))
    assert (then.rate, then.tax_rate.id, then.tax_amount) == ("0.175", old.id, "")
    now = await stub.ResolveTaxRate(
        api.ResolveTaxRateRequest(tax_code="VAT-STD", date="2026-11-30", amount="1234.56", currency="GBP")
    )
    assert (now.rate, now.tax_rate.id, now.tax_amount) == ("0.20", new.id, "246.91")
    with pytest.raises(grpc.aio.AioRpcError) as none:
        await stub.ResolveTaxRate(api.ResolveTaxRateRequest(tax_code="VAT-XX", date="2026-11-30"))
    assert (none.value.code(), reason(none.value)) == (grpc.StatusCode.NOT_FOUND, "NO_TAX_RATE")
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await stub.ResolveTaxRate(
            api.ResolveTaxRateRequest(tax_code="VAT-STD", date="2026-11-30", amount="10")
        )
    assert violations(bad.value) == [("currency", "REQUIRED")]


async def test_rate_resolution_names_the_entry_and_respects_deactivation(
    stub: api_grpc.MasterDataServiceStub, build_firm: Any
) -> None:
    f = await build_firm(stub)
    request = api.ResolveRateRequest(
        project_id=f["project"].id,
        consultant_id=f["boss"].id,
        labor_category_id=f["lc"].id,
        date="2026-12-01",
    )
    found = await stub.ResolveRate(request)
    assert (found.rate, found.consultant_override, found.entry.rate) == ("200.00", True, "200.00")
    assert found.entry.id == found.rate_card_entry_id
    await stub.DeactivateContract(api.DeactivateContractRequest(id=f["contract"].id))
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await stub.ResolveRate(request)
    assert (gone.value.code(), reason(gone.value)) == (grpc.StatusCode.NOT_FOUND, "CONTRACT_DEACTIVATED")
