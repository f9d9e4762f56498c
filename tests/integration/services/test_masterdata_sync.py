"""Sync from systems of record on a real database and broker: batch upsert by external_ref.

Rows name each other by external_ref, come back created/updated/unchanged/rejected with reasons,
commit whole or not at all, and publish their full state on JetStream exactly once per change.
"""

import asyncio
from collections.abc import Callable
from typing import Any

import grpc
import nats
import pytest
import sqlalchemy as sa

from accrue.db import create_engine
from accrue.events.v1 import masterdata_events_pb2 as ev
from accrue.masterdata.v1 import masterdata_service_pb2 as api
from accrue.masterdata.v1 import masterdata_service_pb2_grpc as api_grpc
from accrue.masterdata.v1 import resources_pb2 as md
from accrue.runtime.server import RunningService
from accrue.type.v1 import types_pb2

pytestmark = pytest.mark.integration

CREATED, UPDATED = api.UPSERT_OUTCOME_CREATED, api.UPSERT_OUTCOME_UPDATED
UNCHANGED, REJECTED = api.UPSERT_OUTCOME_UNCHANGED, api.UPSERT_OUTCOME_REJECTED


def ref(system: str, ext_id: str) -> types_pb2.ExternalRef:
    return types_pb2.ExternalRef(system=system, id=ext_id)


@pytest.fixture
async def stub(
    start_service: Any, channel_to: Callable[[RunningService], grpc.aio.Channel]
) -> api_grpc.MasterDataServiceStub:
    service = await start_service("masterdata")
    return api_grpc.MasterDataServiceStub(channel_to(service))


async def scalar(database_url: str, sql: str) -> int:
    engine = create_engine(database_url)
    async with engine.connect() as conn:
        value = await conn.scalar(sa.text(sql))
    await engine.dispose()
    return int(value or 0)


async def published(database_url: str, nats_url: str) -> list[tuple[str, str, Any]]:
    """Every md.* message on JetStream once the relay has caught up: (subject, type, body)."""
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
        last = (await js.stream_info("MD")).state.last_seq
        found = []
        for seq in range(1, last + 1):
            msg = await js.get_msg("MD", seq)
            headers = msg.headers or {}
            event_type = headers["Accrue-Event-Type"]
            schema = headers["Accrue-Schema"].rsplit(".", 1)[-1]
            found.append((msg.subject, event_type, getattr(ev, schema).FromString(msg.data)))
        return found
    finally:
        await nc.close()


async def reference_firm(stub: api_grpc.MasterDataServiceStub) -> None:
    """The records other rows name by external_ref: ERP legal entities, HR roles, a CRM customer."""
    les = await stub.BatchUpsertLegalEntities(
        api.BatchUpsertLegalEntitiesRequest(
            legal_entities=[
                md.LegalEntity(
                    code="UK", name="Acme UK", base_currency="GBP", external_ref=ref("erp", "LE-UK")
                ),
                md.LegalEntity(
                    code="DE", name="Acme DE", base_currency="EUR", external_ref=ref("erp", "LE-DE")
                ),
            ]
        )
    )
    lcs = await stub.BatchUpsertLaborCategories(
        api.BatchUpsertLaborCategoriesRequest(
            labor_categories=[md.LaborCategory(code="SC", name="Senior", external_ref=ref("hr", "SC"))]
        )
    )
    customers = await stub.BatchUpsertCustomers(
        api.BatchUpsertCustomersRequest(
            customers=[
                md.Customer(
                    code="GLOBEX",
                    name="Globex",
                    legal_entity_ref=ref("erp", "LE-UK"),
                    currency="GBP",
                    external_ref=ref("crm", "0015000001"),
                )
            ]
        )
    )
    outcomes = [r.outcome for r in [*les.results, *lcs.results, *customers.results]]
    assert outcomes == [CREATED] * 4


def consultant(code: str, manager: str = "", **fields: Any) -> md.Consultant:
    return md.Consultant(
        code=code,
        name=f"Person {code}",
        legal_entity_ref=ref("erp", "LE-UK"),
        labor_category_ref=ref("hr", "SC"),
        manager_ref=ref("hr", manager) if manager else None,
        active_from="2020-01-01",
        external_ref=ref("hr", code),
        **fields,
    )


async def test_rows_name_their_references_by_the_source_systems_ids(
    stub: api_grpc.MasterDataServiceStub,
) -> None:
    await reference_firm(stub)
    people = await stub.BatchUpsertConsultants(
        api.BatchUpsertConsultantsRequest(
            # Reports come before their managers: the batch resolves the order itself.
            consultants=[consultant("E3", manager="E2"), consultant("E2", manager="E1"), consultant("E1")]
        )
    )
    assert [r.outcome for r in people.results] == [CREATED] * 3
    e3, e2, e1 = (r.consultant for r in people.results)
    assert (e3.manager_id, e2.manager_id, e1.manager_id) == (e2.id, e1.id, "")
    # The refs are input only: resolved into ids, never stored or returned.
    assert not e3.HasField("manager_ref")
    assert not e3.HasField("legal_entity_ref")
    got = (await stub.GetConsultant(api.GetConsultantRequest(id=e3.id))).consultant
    assert got.manager_id == e2.id
    assert not got.HasField("manager_ref")

    customer = (await stub.ListCustomers(api.ListCustomersRequest(external_ref_system="crm"))).customers[0]
    projects = await stub.BatchUpsertProjects(
        api.BatchUpsertProjectsRequest(
            projects=[
                md.Project(
                    code="P1",
                    name="Platform",
                    customer_ref=ref("crm", "0015000001"),  # the CRM's id for the customer
                    legal_entity_ref=ref("erp", "LE-UK"),
                    manager_ref=ref("hr", "E1"),
                    status=md.PROJECT_STATUS_ACTIVE,
                    start_date="2026-01-01",
                    external_ref=ref("psa", "P1"),
                )
            ]
        )
    )
    assert projects.results[0].outcome == CREATED, projects.results[0].reasons
    assert projects.results[0].project.customer_id == customer.id
    assert projects.results[0].project.manager_id == e1.id


async def test_each_row_is_reported_and_a_rejected_row_writes_nothing(
    stub: api_grpc.MasterDataServiceStub, database_url: str
) -> None:
    await reference_firm(stub)
    rows = [
        consultant("E1"),
        # Every problem of a row comes back, with the field it is about.
        md.Consultant(
            code="E2",
            legal_entity_ref=ref("erp", "LE-NOPE"),
            labor_category_id="00000000-0000-0000-0000-000000000000",
            active_from="2026-02-01",
            active_to="2026-01-31",
            weekly_capacity_hours="forty",
            external_ref=ref("hr", "E2"),
        ),
        consultant("E3", manager="E2"),  # its manager is rejected above, so it is too
        consultant("E4", manager="E5"),  # a management cycle within the batch
        consultant("E5", manager="E4"),
        consultant("E7"),  # (its external_ref is cleared below: without one a row cannot be upserted)
        consultant("E6", manager="E404"),
    ]
    rows[5].ClearField("external_ref")
    results = (await stub.BatchUpsertConsultants(api.BatchUpsertConsultantsRequest(consultants=rows))).results
    assert [r.outcome for r in results] == [CREATED] + [REJECTED] * 6
    reasons = [sorted((v.field, v.code) for v in r.reasons) for r in results]
    assert reasons[1] == [
        ("active_to", "INVALID_RANGE"),
        ("labor_category_id", "REFERENCE_NOT_FOUND"),
        ("legal_entity_ref", "REFERENCE_NOT_FOUND"),
        ("name", "REQUIRED"),
        ("weekly_capacity_hours", "INVALID_DECIMAL"),
    ]
    assert reasons[2] == [("manager_id", "REFERENCE_REJECTED")]
    assert reasons[3] == reasons[4] == [("manager_id", "MANAGER_CYCLE")]
    assert reasons[5] == [("external_ref", "REQUIRED")]
    assert reasons[6] == [("manager_ref", "REFERENCE_NOT_FOUND")]
    assert all(r.reasons[0].message for r in results[1:])
    assert not results[1].HasField("consultant")
    # Only the valid row was written: its record, its history entry and its event.
    assert await scalar(database_url, "SELECT count(*) FROM masterdata.consultants") == 1
    assert (
        await scalar(
            database_url, "SELECT count(*) FROM masterdata.changes WHERE resource_type = 'consultant'"
        )
        == 1
    )
    assert (
        await scalar(
            database_url, "SELECT count(*) FROM masterdata.outbox WHERE event_type LIKE 'md.consultant%'"
        )
        == 1
    )


async def test_resending_a_batch_changes_nothing_and_publishes_nothing(
    stub: api_grpc.MasterDataServiceStub, database_url: str, nats_url: str
) -> None:
    await reference_firm(stub)
    rows = [consultant("E1", email="e1@acme.test"), consultant("E2", manager="E1")]
    first = await stub.BatchUpsertConsultants(api.BatchUpsertConsultantsRequest(consultants=rows))
    again = await stub.BatchUpsertConsultants(api.BatchUpsertConsultantsRequest(consultants=rows))
    assert [r.outcome for r in again.results] == [UNCHANGED, UNCHANGED]
    assert [r.consultant for r in again.results] == [r.consultant for r in first.results]

    rows[1].email = "e2@acme.test"
    changed = await stub.BatchUpsertConsultants(api.BatchUpsertConsultantsRequest(consultants=rows))
    assert [r.outcome for r in changed.results] == [UNCHANGED, UPDATED]
    assert changed.results[1].consultant.etag == "2"
    assert changed.results[1].consultant.create_time == first.results[1].consultant.create_time

    events = [(e[0], e[1]) for e in await published(database_url, nats_url)]
    consultant_events = [e for e in events if e[1] == "md.consultant.upserted"]
    ids = [r.consultant.id for r in first.results]
    # One event per change: two creations and one update, none for the unchanged re-sends.
    assert consultant_events == [
        (f"md.consultant.upserted.{ids[0]}", "md.consultant.upserted"),
        (f"md.consultant.upserted.{ids[1]}", "md.consultant.upserted"),
        (f"md.consultant.upserted.{ids[1]}", "md.consultant.upserted"),
    ]


async def test_events_carry_the_full_new_state(
    stub: api_grpc.MasterDataServiceStub, database_url: str, nats_url: str
) -> None:
    await reference_firm(stub)
    card = await stub.BatchUpsertRateCards(
        api.BatchUpsertRateCardsRequest(
            rate_cards=[
                md.RateCard(
                    code="RC",
                    currency="GBP",
                    external_ref=ref("psa", "RC"),
                    rates=[
                        md.RateCardEntry(
                            labor_category_ref=ref("hr", "SC"),
                            rate="150.00",
                            effective_from="2026-01-01",
                            effective_to="2026-06-30",
                        ),
                        md.RateCardEntry(
                            labor_category_ref=ref("hr", "SC"), rate="165.00", effective_from="2026-07-01"
                        ),
                    ],
                )
            ]
        )
    )
    stored = card.results[0].rate_card
    events = await published(database_url, nats_url)
    subject, _, body = next(e for e in events if e[1] == "md.rate_card.upserted")
    assert subject == f"md.rate_card.upserted.{stored.id}"
    assert body.rate_card == stored  # ids of the entries, etag and timestamps included
    assert [e.rate for e in body.rate_card.rates] == ["150.00", "165.00"]


async def test_codes_and_natural_keys_are_unique_within_a_batch_and_against_the_store(
    stub: api_grpc.MasterDataServiceStub, database_url: str
) -> None:
    first = await stub.BatchUpsertFxRates(
        api.BatchUpsertFxRatesRequest(
            fx_rates=[
                md.FxRate(
                    base="EUR",
                    quote="GBP",
                    rate="0.86",
                    effective_date="2026-01-01",
                    external_ref=ref("ecb", "1"),
                ),
                md.FxRate(
                    base="EUR",
                    quote="GBP",
                    rate="0.87",
                    effective_date="2026-01-01",
                    external_ref=ref("ecb", "2"),
                ),
            ]
        )
    )
    assert [r.outcome for r in first.results] == [CREATED, REJECTED]
    assert [(v.field, v.code) for v in first.results[1].reasons] == [("effective_date", "DUPLICATE_IN_BATCH")]
    later = await stub.BatchUpsertFxRates(
        api.BatchUpsertFxRatesRequest(
            fx_rates=[
                md.FxRate(
                    base="EUR",
                    quote="GBP",
                    rate="0.9",
                    effective_date="2026-01-01",
                    external_ref=ref("ecb", "3"),
                )
            ]
        )
    )
    assert [(v.field, v.code) for v in later.results[0].reasons] == [("effective_date", "RATE_EXISTS")]
    categories = await stub.BatchUpsertLaborCategories(
        api.BatchUpsertLaborCategoriesRequest(
            labor_categories=[
                md.LaborCategory(code="SC", name="A", external_ref=ref("hr", "1")),
                md.LaborCategory(code="SC", name="B", external_ref=ref("hr", "2")),
                md.LaborCategory(code="JC", name="C", external_ref=ref("hr", "1")),
            ]
        )
    )
    assert [r.outcome for r in categories.results] == [CREATED, REJECTED, REJECTED]
    assert [v.code for v in categories.results[1].reasons] == ["DUPLICATE_IN_BATCH"]
    assert [v.code for v in categories.results[2].reasons] == ["DUPLICATE_IN_BATCH"]
    assert await scalar(database_url, "SELECT count(*) FROM masterdata.fx_rates") == 1


async def test_contracts_milestones_and_assignments_by_external_ref(
    stub: api_grpc.MasterDataServiceStub, database_url: str
) -> None:
    await reference_firm(stub)
    await stub.BatchUpsertConsultants(api.BatchUpsertConsultantsRequest(consultants=[consultant("E1")]))
    projects = await stub.BatchUpsertProjects(
        api.BatchUpsertProjectsRequest(
            projects=[
                md.Project(
                    code=code,
                    name=code,
                    customer_ref=ref("crm", "0015000001"),
                    legal_entity_ref=ref("erp", "LE-UK"),
                    manager_ref=ref("hr", "E1"),
                    status=md.PROJECT_STATUS_ACTIVE,
                    start_date="2026-01-01",
                    external_ref=ref("psa", code),
                )
                for code in ("TM", "FF")
            ]
        )
    )
    assert [r.outcome for r in projects.results] == [CREATED, CREATED]
    await stub.BatchUpsertRateCards(
        api.BatchUpsertRateCardsRequest(
            rate_cards=[
                md.RateCard(
                    code="RC",
                    currency="GBP",
                    external_ref=ref("psa", "RC"),
                    rates=[
                        md.RateCardEntry(
                            labor_category_ref=ref("hr", "SC"), rate="150", effective_from="2026-01-01"
                        )
                    ],
                )
            ]
        )
    )
    lines = [
        md.ContractLine(
            project_ref=ref("psa", "TM"),
            billing_model=md.BILLING_MODEL_TIME_AND_MATERIALS,
            rate_card_ref=ref("psa", "RC"),
        ),
        md.ContractLine(
            project_ref=ref("psa", "FF"), billing_model=md.BILLING_MODEL_FIXED_FEE, fee_amount="20000"
        ),
    ]
    contract_row = md.Contract(
        code="K1",
        customer_ref=ref("crm", "0015000001"),
        currency="GBP",
        rounding_mode=md.ROUNDING_MODE_HALF_UP,
        rounding_scope=md.ROUNDING_SCOPE_PER_ENTRY,
        external_ref=ref("crm", "K1"),
        lines=lines,
    )
    contract = (
        await stub.BatchUpsertContracts(api.BatchUpsertContractsRequest(contracts=[contract_row]))
    ).results[0]
    assert contract.outcome == CREATED, contract.reasons
    assert [line.project_id for line in contract.contract.lines] == [r.project.id for r in projects.results]
    assert (contract.contract.rounding_mode, contract.contract.rounding_scope) == (
        md.ROUNDING_MODE_HALF_UP,
        md.ROUNDING_SCOPE_PER_ENTRY,
    )

    milestones = await stub.BatchUpsertMilestones(
        api.BatchUpsertMilestonesRequest(
            milestones=[
                # A milestone names its line by the project the line bills.
                md.Milestone(
                    name="Design",
                    amount="8000",
                    due_date="2026-03-31",
                    project_ref=ref("psa", "FF"),
                    external_ref=ref("psa", "M1"),
                ),
                md.Milestone(
                    name="Wrong line",
                    amount="1",
                    due_date="2026-03-31",
                    project_ref=ref("psa", "TM"),
                    external_ref=ref("psa", "M2"),
                ),
                # Only the server sets the status: a row cannot complete a milestone.
                md.Milestone(
                    name="Build",
                    amount="12000",
                    due_date="2026-06-30",
                    project_ref=ref("psa", "FF"),
                    status=md.MILESTONE_STATUS_INVOICED,
                    external_ref=ref("psa", "M3"),
                ),
            ]
        )
    )
    assert [r.outcome for r in milestones.results] == [CREATED, REJECTED, CREATED]
    assert milestones.results[0].milestone.contract_line_id == contract.contract.lines[1].id
    assert [(v.field, v.code) for v in milestones.results[1].reasons] == [
        ("contract_line_id", "NOT_FIXED_FEE")
    ]
    assert milestones.results[2].milestone.status == md.MILESTONE_STATUS_PENDING

    # Re-sending the contract keeps its line ids; dropping the line with milestones is refused.
    resent = (
        await stub.BatchUpsertContracts(api.BatchUpsertContractsRequest(contracts=[contract_row]))
    ).results[0]
    assert resent.outcome == UNCHANGED
    assert [line.id for line in resent.contract.lines] == [line.id for line in contract.contract.lines]
    del contract_row.lines[1]
    dropped = (
        await stub.BatchUpsertContracts(api.BatchUpsertContractsRequest(contracts=[contract_row]))
    ).results[0]
    assert (dropped.outcome, [(v.field, v.code) for v in dropped.reasons]) == (
        REJECTED,
        [("lines", "LINE_HAS_MILESTONES")],
    )

    assignments = await stub.BatchUpsertAssignments(
        api.BatchUpsertAssignmentsRequest(
            assignments=[
                md.Assignment(
                    project_ref=ref("psa", "TM"),
                    consultant_ref=ref("hr", "E1"),
                    labor_category_ref=ref("hr", "SC"),
                    start_date="2026-01-01",
                    allocation_percent=pct,
                    external_ref=ref("psa", f"A{i}"),
                )
                for i, pct in enumerate(["50", "100.5", "-1"])
            ]
        )
    )
    assert [r.outcome for r in assignments.results] == [CREATED, REJECTED, REJECTED]
    assert assignments.results[0].assignment.billable is True  # defaults to billable
    assert [(v.field, v.code) for v in assignments.results[1].reasons] == [
        ("allocation_percent", "OUT_OF_RANGE")
    ]
    assert await scalar(database_url, "SELECT count(*) FROM masterdata.contract_lines") == 2


async def test_a_batch_of_more_than_1000_rows_is_refused_whole(stub: api_grpc.MasterDataServiceStub) -> None:
    rows = [md.LaborCategory(code=f"C{i}", name="x", external_ref=ref("hr", str(i))) for i in range(1001)]
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.BatchUpsertLaborCategories(api.BatchUpsertLaborCategoriesRequest(labor_categories=rows))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_two_writers_cannot_close_a_management_cycle_between_them(
    stub: api_grpc.MasterDataServiceStub,
) -> None:
    """Each batch alone is fine; at once they would make A and B each other's manager."""
    await reference_firm(stub)
    for n in range(5):
        a, b = f"CY{n}A", f"CY{n}B"
        seeded = await stub.BatchUpsertConsultants(
            api.BatchUpsertConsultantsRequest(consultants=[consultant(a), consultant(b)])
        )
        assert [r.outcome for r in seeded.results] == [CREATED, CREATED]
        first, second = await asyncio.gather(
            stub.BatchUpsertConsultants(
                api.BatchUpsertConsultantsRequest(consultants=[consultant(a, manager=b)])
            ),
            stub.BatchUpsertConsultants(
                api.BatchUpsertConsultantsRequest(consultants=[consultant(b, manager=a)])
            ),
        )
        outcomes = sorted([first.results[0].outcome, second.results[0].outcome])
        assert outcomes == sorted([UPDATED, REJECTED]), (first, second)
        rejected = next(r for r in (first.results[0], second.results[0]) if r.outcome == REJECTED)
        assert [(v.field, v.code) for v in rejected.reasons] == [("manager_id", "MANAGER_CYCLE")]
