"""Master data's resource rules on the real service, with explicit principals (policy.toml):
legal-entity-scope (lists, gets, history, references, writes, batches), firm-wide kinds,
system-of-record for batch upserts, and what a consultant alone may read. Also the audit notes
each change leaves for the audit trail."""

import datetime as dt
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
import sqlalchemy as sa
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from accrue.db import create_engine
from accrue.masterdata.v1 import masterdata_service_pb2 as api
from accrue.masterdata.v1 import masterdata_service_pb2_grpc as api_grpc
from accrue.masterdata.v1 import resources_pb2 as md
from accrue.runtime import audit
from accrue.runtime.clock import FixedClock
from accrue.runtime.identity import Principal, bound_principal
from accrue.runtime.server import RunningService
from accrue.testing import identity
from accrue.type.v1 import types_pb2

pytestmark = pytest.mark.integration

MISSING = "00000000-0000-4000-8000-000000000000"


def ref(system: str, ext_id: str) -> types_pb2.ExternalRef:
    return types_pb2.ExternalRef(system=system, id=ext_id)


def reason(error: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(error)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    for detail in status.details:
        if detail.Unpack(info):
            return info.reason
    return ""


def violations(error: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    status = rpc_status.from_call(error)
    assert status is not None
    bad = error_details_pb2.BadRequest()
    for detail in status.details:
        if detail.Unpack(bad):
            return [(v.field, v.reason) for v in bad.field_violations]
    return []


async def refused(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


async def _entity(stub: api_grpc.MasterDataServiceStub, code: str, lc: md.LaborCategory) -> dict[str, Any]:
    """A legal entity with a customer, a consultant, an active project on a fixed-fee contract
    with a milestone, and an assignment: one record of every entity-owned kind."""
    le = (
        await stub.CreateLegalEntity(
            api.CreateLegalEntityRequest(
                legal_entity=md.LegalEntity(code=code, name=f"Acme {code}", base_currency="EUR")
            )
        )
    ).legal_entity
    cu = (
        await stub.CreateCustomer(
            api.CreateCustomerRequest(
                customer=md.Customer(
                    code=f"{code}-CU",
                    name="Customer",
                    legal_entity_id=le.id,
                    currency="EUR",
                    external_ref=ref("crm", f"{code}-CU"),
                )
            )
        )
    ).customer
    person = (
        await stub.CreateConsultant(
            api.CreateConsultantRequest(
                consultant=md.Consultant(
                    code=f"{code}-E1",
                    name="Pat",
                    legal_entity_id=le.id,
                    labor_category_id=lc.id,
                    active_from="2020-01-01",
                )
            )
        )
    ).consultant
    project = (
        await stub.CreateProject(
            api.CreateProjectRequest(
                project=md.Project(
                    code=f"{code}-P",
                    name="Project",
                    customer_id=cu.id,
                    legal_entity_id=le.id,
                    manager_id=person.id,
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
                    code=f"{code}-K",
                    customer_id=cu.id,
                    currency="EUR",
                    lines=[
                        md.ContractLine(
                            project_id=project.id,
                            billing_model=md.BILLING_MODEL_FIXED_FEE,
                            fee_amount="1000",
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
                    amount="1000",
                    due_date="2026-12-31",
                )
            )
        )
    ).milestone
    assignment = (
        await stub.CreateAssignment(
            api.CreateAssignmentRequest(
                assignment=md.Assignment(
                    project_id=project.id,
                    consultant_id=person.id,
                    labor_category_id=lc.id,
                    start_date="2026-01-01",
                    allocation_percent="50",
                )
            )
        )
    ).assignment
    return {
        "le": le,
        "cu": cu,
        "person": person,
        "project": project,
        "contract": contract,
        "milestone": milestone,
        "assignment": assignment,
    }


@pytest.fixture
async def firm(
    start_service: Any, channel_to: Callable[[RunningService], grpc.aio.Channel], internal_signer: Any
) -> AsyncIterator[dict[str, Any]]:
    """Two legal entities (UK and DE) with one record of every kind each; `as_` gives a stub
    acting as a principal."""
    service = await start_service("masterdata")
    admin = api_grpc.MasterDataServiceStub(channel_to(service))
    lc = (
        await admin.CreateLaborCategory(
            api.CreateLaborCategoryRequest(labor_category=md.LaborCategory(code="SC", name="Senior"))
        )
    ).labor_category
    uk, de = await _entity(admin, "UK", lc), await _entity(admin, "DE", lc)
    channels: list[grpc.aio.Channel] = []

    def as_(principal: Principal) -> api_grpc.MasterDataServiceStub:
        channels.append(identity.channel(f"127.0.0.1:{service.grpc_port}", internal_signer, principal))
        return api_grpc.MasterDataServiceStub(channels[-1])

    yield {"admin": admin, "lc": lc, "uk": uk, "de": de, "as_": as_}
    for channel in channels:
        await channel.close()


def uk_person(firm: dict[str, Any], *roles: str) -> Principal:
    return identity.person("u1", *roles, legal_entities=[firm["uk"]["le"].id])


async def test_legal_entity_scope_lists_show_only_the_callers_entities(firm: dict[str, Any]) -> None:
    uk, de = firm["uk"], firm["de"]
    reader = firm["as_"](uk_person(firm, "finance"))
    listed = {
        "legal_entities": await reader.ListLegalEntities(api.ListLegalEntitiesRequest()),
        "customers": await reader.ListCustomers(api.ListCustomersRequest()),
        "consultants": await reader.ListConsultants(api.ListConsultantsRequest()),
        "projects": await reader.ListProjects(api.ListProjectsRequest()),
        "contracts": await reader.ListContracts(api.ListContractsRequest()),
        "milestones": await reader.ListMilestones(api.ListMilestonesRequest()),
        "assignments": await reader.ListAssignments(api.ListAssignmentsRequest()),
    }
    singular = {
        "legal_entities": "le",
        "customers": "cu",
        "consultants": "person",
        "projects": "project",
        "contracts": "contract",
        "milestones": "milestone",
        "assignments": "assignment",
    }
    for plural, reply in listed.items():
        assert [r.id for r in getattr(reply, plural)] == [uk[singular[plural]].id], plural
    # A filter naming the other entity finds nothing rather than its records.
    other = await reader.ListCustomers(api.ListCustomersRequest(legal_entity_id=de["le"].id))
    assert list(other.customers) == []
    # Firm-wide kinds are everyone's.
    categories = await reader.ListLaborCategories(api.ListLaborCategoriesRequest())
    assert [c.id for c in categories.labor_categories] == [firm["lc"].id]
    # The administrator of every entity sees both.
    everything = await firm["admin"].ListCustomers(api.ListCustomersRequest())
    assert {c.id for c in everything.customers} == {uk["cu"].id, de["cu"].id}


async def test_legal_entity_scope_filters_in_sql_before_paging(firm: dict[str, Any]) -> None:
    """Other entities' records that sort first do not eat the caller's pages."""
    de = firm["de"]
    for n in range(3):
        await firm["admin"].CreateCustomer(
            api.CreateCustomerRequest(
                customer=md.Customer(code=f"A{n}", name="Early", legal_entity_id=de["le"].id, currency="EUR")
            )
        )
    reader = firm["as_"](uk_person(firm, "finance"))
    first = await reader.ListCustomers(api.ListCustomersRequest(page_size=1))
    assert [c.id for c in first.customers] == [firm["uk"]["cu"].id]
    assert first.next_page_token == ""


async def test_legal_entity_scope_another_entitys_record_by_id_is_not_found_like_a_missing_one(
    firm: dict[str, Any],
) -> None:
    de = firm["de"]
    reader = firm["as_"](uk_person(firm, "finance", "project_manager"))
    gets = {
        "legal entity": (reader.GetLegalEntity, api.GetLegalEntityRequest, de["le"].id),
        "customer": (reader.GetCustomer, api.GetCustomerRequest, de["cu"].id),
        "consultant": (reader.GetConsultant, api.GetConsultantRequest, de["person"].id),
        "project": (reader.GetProject, api.GetProjectRequest, de["project"].id),
        "contract": (reader.GetContract, api.GetContractRequest, de["contract"].id),
        "milestone": (reader.GetMilestone, api.GetMilestoneRequest, de["milestone"].id),
        "assignment": (reader.GetAssignment, api.GetAssignmentRequest, de["assignment"].id),
        "customer history": (reader.ListCustomerChanges, api.ListCustomerChangesRequest, de["cu"].id),
        "milestone history": (
            reader.ListMilestoneChanges,
            api.ListMilestoneChangesRequest,
            de["milestone"].id,
        ),
    }
    for what, (method, request, record_id) in gets.items():
        hidden = await refused(method(request(id=record_id)))
        missing = await refused(method(request(id=MISSING)))
        assert hidden.code() == missing.code() == grpc.StatusCode.NOT_FOUND, what
        assert hidden.details() == missing.details().replace(MISSING, record_id), what
        assert reason(hidden) == reason(missing), what
    rate = await refused(
        reader.ResolveRate(
            api.ResolveRateRequest(
                project_id=de["project"].id,
                consultant_id=de["person"].id,
                labor_category_id=firm["lc"].id,
                date="2026-06-01",
            )
        )
    )
    assert (rate.code(), reason(rate)) == (grpc.StatusCode.NOT_FOUND, "PROJECT_NOT_FOUND")
    # The same reads of the caller's own entity work.
    own = await reader.GetMilestone(api.GetMilestoneRequest(id=firm["uk"]["milestone"].id))
    assert own.milestone.name == "Go-live"


async def test_legal_entity_scope_writes_to_another_entity_are_refused_and_change_nothing(
    firm: dict[str, Any], database_url: str
) -> None:
    uk, de = firm["uk"], firm["de"]
    writer = firm["as_"](uk_person(firm, "masterdata_admin", "project_manager"))
    mask = field_mask_pb2.FieldMask(paths=["name"])
    for call in (
        writer.UpdateCustomer(
            api.UpdateCustomerRequest(id=de["cu"].id, customer=md.Customer(name="Taken"), update_mask=mask)
        ),
        writer.DeactivateCustomer(api.DeactivateCustomerRequest(id=de["cu"].id)),
        writer.UpdateLegalEntity(
            api.UpdateLegalEntityRequest(
                id=de["le"].id, legal_entity=md.LegalEntity(name="Taken"), update_mask=mask
            )
        ),
        writer.DeactivateContract(api.DeactivateContractRequest(id=de["contract"].id)),
        writer.CompleteMilestone(api.CompleteMilestoneRequest(id=de["milestone"].id)),
    ):
        error = await refused(call)
        assert (error.code(), reason(error)) == (grpc.StatusCode.NOT_FOUND, "NOT_FOUND")
    # Naming another entity's record as a reference is naming a missing one.
    moved = await refused(
        writer.UpdateCustomer(
            api.UpdateCustomerRequest(
                id=uk["cu"].id,
                customer=md.Customer(legal_entity_id=de["le"].id),
                update_mask=field_mask_pb2.FieldMask(paths=["legal_entity_id"]),
            )
        )
    )
    assert moved.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(moved) == [("customer.legal_entity_id", "REFERENCE_NOT_FOUND")]
    project = await refused(
        writer.CreateProject(
            api.CreateProjectRequest(
                project=md.Project(
                    code="UK-P2",
                    name="Sneaky",
                    customer_id=de["cu"].id,
                    legal_entity_id=uk["le"].id,
                    manager_id=uk["person"].id,
                    status=md.PROJECT_STATUS_ACTIVE,
                    start_date="2026-01-01",
                )
            )
        )
    )
    assert violations(project) == [("project.customer_id", "REFERENCE_NOT_FOUND")]
    # ...also by external ref, without telling the record's id.
    by_ref = await refused(
        writer.CreateContract(
            api.CreateContractRequest(
                contract=md.Contract(code="UK-K2", customer_ref=ref("crm", "DE-CU"), currency="EUR")
            )
        )
    )
    assert violations(by_ref) == [("contract.customer_ref", "REFERENCE_NOT_FOUND")]
    assert de["cu"].id not in by_ref.details()
    # A batch row keyed by another entity's record is rejected, and the others go through.
    batch = await writer.BatchUpsertCustomers(
        api.BatchUpsertCustomersRequest(
            customers=[
                md.Customer(
                    code="DE-CU",
                    name="Renamed",
                    legal_entity_id=uk["le"].id,
                    currency="EUR",
                    external_ref=ref("crm", "DE-CU"),
                ),
                md.Customer(
                    code="UK-CU",
                    name="Renamed",
                    legal_entity_id=uk["le"].id,
                    currency="EUR",
                    external_ref=ref("crm", "UK-CU"),
                ),
            ]
        )
    )
    assert [r.outcome for r in batch.results] == [api.UPSERT_OUTCOME_REJECTED, api.UPSERT_OUTCOME_UPDATED]
    assert ("external_ref", "NOT_FOUND") in [(v.field, v.code) for v in batch.results[0].reasons]
    assert de["cu"].id not in str(batch.results[0])
    # Nothing of DE changed: every record is still at its first version, nothing deactivated.
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            for table in ("legal_entities", "customers", "contracts", "milestones"):
                rows = (
                    await conn.execute(
                        sa.text(
                            f"SELECT version, deactivate_time, body->>'name' AS name, "
                            f"body->>'status' AS status FROM masterdata.{table} WHERE id = :id"
                        ),
                        {"id": de[{"legal_entities": "le", "customers": "cu"}.get(table, table[:-1])].id},
                    )
                ).one()
                assert (rows.version, rows.deactivate_time) == (1, None), table
                assert rows.name != "Taken", table
                assert rows.status != "MILESTONE_STATUS_COMPLETED", table
    finally:
        await engine.dispose()


async def test_legal_entity_scope_firm_wide_kinds_are_read_by_all_and_changed_by_all_entity_principals(
    firm: dict[str, Any],
) -> None:
    writer = firm["as_"](uk_person(firm, "masterdata_admin"))
    for call in (
        writer.CreateLaborCategory(
            api.CreateLaborCategoryRequest(labor_category=md.LaborCategory(code="JC", name="Junior"))
        ),
        writer.DeactivateLaborCategory(api.DeactivateLaborCategoryRequest(id=firm["lc"].id)),
        writer.CreateFxRate(
            api.CreateFxRateRequest(
                fx_rate=md.FxRate(base="EUR", quote="GBP", rate="0.85", effective_date="2026-01-01")
            )
        ),
    ):
        error = await refused(call)
        assert (error.code(), reason(error)) == (grpc.StatusCode.PERMISSION_DENIED, "FIRM_WIDE")
    new_entity = await refused(
        writer.CreateLegalEntity(
            api.CreateLegalEntityRequest(
                legal_entity=md.LegalEntity(code="FR", name="FR", base_currency="EUR")
            )
        )
    )
    assert (new_entity.code(), reason(new_entity)) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "LEGAL_ENTITY_SCOPE",
    )
    rows = await writer.BatchUpsertLegalEntities(
        api.BatchUpsertLegalEntitiesRequest(
            legal_entities=[
                md.LegalEntity(code="FR", name="FR", base_currency="EUR", external_ref=ref("erp", "FR"))
            ]
        )
    )
    assert [v.code for v in rows.results[0].reasons] == ["LEGAL_ENTITY_SCOPE"]
    # Its own legal entity it may change.
    renamed = await writer.UpdateLegalEntity(
        api.UpdateLegalEntityRequest(
            id=firm["uk"]["le"].id,
            legal_entity=md.LegalEntity(name="Acme UK Ltd"),
            update_mask=field_mask_pb2.FieldMask(paths=["name"]),
        )
    )
    assert renamed.legal_entity.name == "Acme UK Ltd"
    categories = await writer.ListLaborCategories(api.ListLaborCategoriesRequest())
    assert [c.code for c in categories.labor_categories] == ["SC"]


async def test_system_of_record_a_batch_row_cannot_claim_an_owned_kind(
    start_service: Any, internal_signer: Any, database_url: str
) -> None:
    service = await start_service("masterdata", owners={"customer": "salesforce"})
    address = f"127.0.0.1:{service.grpc_port}"
    channels = {
        name: identity.channel(address, internal_signer, principal)
        for name, principal in {
            "admin": identity.person("ada", "masterdata_admin"),
            "workday": identity.system_client("workday"),
            "salesforce": identity.system_client("salesforce"),
        }.items()
    }
    stubs = {name: api_grpc.MasterDataServiceStub(ch) for name, ch in channels.items()}
    try:
        le = (
            await stubs["admin"].CreateLegalEntity(
                api.CreateLegalEntityRequest(
                    legal_entity=md.LegalEntity(code="UK", name="UK", base_currency="GBP")
                )
            )
        ).legal_entity
        row = md.Customer(
            code="C1",
            name="Globex",
            legal_entity_id=le.id,
            currency="GBP",
            external_ref=ref("salesforce", "1"),
        )
        request = api.BatchUpsertCustomersRequest(customers=[row])
        for claimant in ("admin", "workday"):
            reply = await stubs[claimant].BatchUpsertCustomers(request)
            assert reply.results[0].outcome == api.UPSERT_OUTCOME_REJECTED, claimant
            assert [v.code for v in reply.results[0].reasons] == ["NOT_SYSTEM_OF_RECORD"], claimant
        # Naming the owner as the request's source is refused outright: it is not the caller.
        forged = await refused(
            stubs["workday"].BatchUpsertCustomers(
                api.BatchUpsertCustomersRequest(customers=[row], source="salesforce")
            )
        )
        assert (forged.code(), reason(forged)) == (grpc.StatusCode.PERMISSION_DENIED, "SOURCE_MISMATCH")
        engine = create_engine(database_url)
        async with engine.connect() as conn:
            assert await conn.scalar(sa.text("SELECT count(*) FROM masterdata.customers")) == 0
        owner = await stubs["salesforce"].BatchUpsertCustomers(request)
        assert owner.results[0].outcome == api.UPSERT_OUTCOME_CREATED
        async with engine.connect() as conn:
            history = (
                await conn.execute(
                    sa.text("SELECT actor, source FROM masterdata.changes WHERE resource_type = 'customer'")
                )
            ).all()
        await engine.dispose()
        assert [tuple(h) for h in history] == [("client:salesforce", "salesforce")]
    finally:
        for ch in channels.values():
            await ch.close()


async def test_consultant_role_reads_only_what_the_policy_grants(firm: dict[str, Any]) -> None:
    uk, de = firm["uk"], firm["de"]
    consultant = firm["as_"](uk_person(firm, "consultant"))
    # What recording time needs, within the consultant's legal entity.
    projects = await consultant.ListProjects(api.ListProjectsRequest())
    assert [p.id for p in projects.projects] == [uk["project"].id]
    assignments = await consultant.ListAssignments(api.ListAssignmentsRequest())
    assert [a.id for a in assignments.assignments] == [uk["assignment"].id]
    hidden = await refused(consultant.GetProject(api.GetProjectRequest(id=de["project"].id)))
    assert hidden.code() == grpc.StatusCode.NOT_FOUND
    # Nothing about money, history or writes.
    for call in (
        consultant.ListContracts(api.ListContractsRequest()),
        consultant.GetContract(api.GetContractRequest(id=uk["contract"].id)),
        consultant.ListRateCards(api.ListRateCardsRequest()),
        consultant.ListFxRates(api.ListFxRatesRequest()),
        consultant.ListTaxRates(api.ListTaxRatesRequest()),
        consultant.ListOpportunities(api.ListOpportunitiesRequest()),
        consultant.ListConsultantChanges(api.ListConsultantChangesRequest(id=uk["person"].id)),
        consultant.ResolveRate(
            api.ResolveRateRequest(
                project_id=uk["project"].id,
                consultant_id=uk["person"].id,
                labor_category_id=firm["lc"].id,
                date="2026-06-01",
            )
        ),
        consultant.UpdateConsultant(
            api.UpdateConsultantRequest(
                id=uk["person"].id,
                consultant=md.Consultant(name="Me"),
                update_mask=field_mask_pb2.FieldMask(paths=["name"]),
            )
        ),
        consultant.CompleteMilestone(api.CompleteMilestoneRequest(id=uk["milestone"].id)),
    ):
        error = await refused(call)
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_every_master_data_change_is_noted_for_the_audit_trail(database_url: str) -> None:
    """Creates, updates, batch rows, deactivations and completions each note the record, its
    legal entity (followed through references for contracts and milestones; "" firm-wide) and
    its fields before and after."""
    from accrue.db.migrations import upgrade
    from accrue.services.masterdata.bootstrap import MIGRATIONS, build_app
    from accrue.services.masterdata.domain.kinds import KINDS

    await upgrade(database_url, "masterdata", MIGRATIONS)
    engine = create_engine(database_url)
    app = build_app(engine, FixedClock(dt.datetime(2026, 11, 2, 9, tzinfo=dt.UTC)))
    try:
        with bound_principal(identity.admin()), audit.collecting() as notes:
            le = await app.create(
                KINDS["legal_entity"], md.LegalEntity(code="UK", name="UK", base_currency="GBP")
            )
            lc = await app.create(KINDS["labor_category"], md.LaborCategory(code="SC", name="Senior"))
            cu = await app.create(
                KINDS["customer"], md.Customer(code="C", name="C", legal_entity_id=le.id, currency="GBP")
            )
            boss = await app.create(
                KINDS["consultant"],
                md.Consultant(
                    code="E1",
                    name="A",
                    legal_entity_id=le.id,
                    labor_category_id=lc.id,
                    active_from="2020-01-01",
                ),
            )
            project = await app.create(
                KINDS["project"],
                md.Project(
                    code="P",
                    name="P",
                    customer_id=cu.id,
                    legal_entity_id=le.id,
                    manager_id=boss.id,
                    status=md.PROJECT_STATUS_ACTIVE,
                    start_date="2026-01-01",
                ),
            )
            [contract] = await app.batch_upsert(
                KINDS["contract"],
                [
                    md.Contract(
                        code="K",
                        customer_id=cu.id,
                        currency="GBP",
                        external_ref=ref("erp", "K"),
                        lines=[
                            md.ContractLine(
                                project_id=project.id,
                                billing_model=md.BILLING_MODEL_FIXED_FEE,
                                fee_amount="10",
                            )
                        ],
                    )
                ],
            )
            assert contract.record is not None
            milestone = await app.create(
                KINDS["milestone"],
                md.Milestone(
                    contract_line_id=contract.record.lines[0].id,  # type: ignore[attr-defined]
                    name="M",
                    amount="10",
                    due_date="2026-12-01",
                ),
            )
            await app.update(KINDS["customer"], cu.id, md.Customer(name="Globex"), ["name"])
            await app.complete_milestone(milestone.id, "")
            await app.deactivate(KINDS["labor_category"], lc.id, "")
        seen = [(n.resource_type, n.resource_id, n.legal_entity_id) for n in notes]
        assert seen == [
            ("legal_entity", le.id, le.id),
            ("labor_category", lc.id, ""),
            ("customer", cu.id, le.id),
            ("consultant", boss.id, le.id),
            ("project", project.id, le.id),
            ("contract", contract.record.id, le.id),  # type: ignore[attr-defined]
            ("milestone", milestone.id, le.id),
            ("customer", cu.id, le.id),
            ("milestone", milestone.id, le.id),
            ("labor_category", lc.id, ""),
        ]
        created, renamed = notes[2], notes[7]
        assert created.before is None
        assert created.after is not None
        assert renamed.before is not None
        assert renamed.after is not None
        assert (renamed.before["name"], renamed.after["name"]) == ("C", "Globex")
        completed = notes[8]
        assert completed.before is not None
        assert completed.after is not None
        assert completed.before.get("status", "MILESTONE_STATUS_PENDING") == "MILESTONE_STATUS_PENDING"
        assert completed.after["status"] == "MILESTONE_STATUS_COMPLETED"
        deactivated = notes[9]
        assert deactivated.before is not None
        assert deactivated.after is not None
        assert "deactivate_time" not in deactivated.before
        assert "deactivate_time" in deactivated.after
    finally:
        await engine.dispose()
