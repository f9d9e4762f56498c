"""Timekeeping's resource rules on the real service, with explicit principals (policy.toml):
own-time, routed-approver (segregation of duties included), routed-approver-or-scope,
own-delegation(-or-scope) and legal-entity scope. Another legal entity's record is NOT_FOUND
exactly as a missing one, and nothing changes (checked with a re-read as an administrator)."""

import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import grpc
import pytest
import sqlalchemy as sa
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from accrue.db import create_engine
from accrue.masterdata.v1 import masterdata_service_pb2 as mda
from accrue.masterdata.v1 import masterdata_service_pb2_grpc as mdg
from accrue.masterdata.v1 import resources_pb2 as md
from accrue.mdprojection import MasterDataReader
from accrue.runtime import audit
from accrue.runtime.clock import StartedClock
from accrue.runtime.identity import Principal, bound_principal
from accrue.runtime.server import RunningService
from accrue.services.timekeeping.adapters.tables import md_projection
from accrue.services.timekeeping.adapters.unit_of_work import TimekeepingUnitOfWork
from accrue.services.timekeeping.domain.model import Status, Submission
from accrue.services.timekeeping.service_layer.handlers import Timekeeping
from accrue.testing import identity
from accrue.timekeeping.v1 import resources_pb2 as tk
from accrue.timekeeping.v1 import timekeeping_service_pb2 as tka
from accrue.timekeeping.v1 import timekeeping_service_pb2_grpc as tkg

pytestmark = pytest.mark.integration

PENDING, APPROVED = tk.TIME_ENTRY_STATUS_PENDING_APPROVAL, tk.TIME_ENTRY_STATUS_APPROVED
REJECTED = tk.TIME_ENTRY_STATUS_REJECTED
DAY = "2026-11-02"


@dataclass
class Firm:
    """Two legal entities, each with a manager (approver of its project) and a consultant on it."""

    tk_address: str
    md_address: str
    signer: Any
    ids: dict[str, str] = field(default_factory=dict)
    channels: list[grpc.aio.Channel] = field(default_factory=list)

    def tk(self, principal: Principal | None = None) -> tkg.TimekeepingServiceStub:
        """Timekeeping as principal (default: a local administrator)."""
        channel = identity.channel(self.tk_address, self.signer, principal or identity.admin())
        self.channels.append(channel)
        return tkg.TimekeepingServiceStub(channel)

    def le(self, name: str) -> list[str]:
        return [self.ids[name]]


@pytest.fixture
async def firm(
    start_service: Any,
    channel_to: Callable[[RunningService], grpc.aio.Channel],
    internal_signer: Any,
    build_firm: Any,
) -> AsyncIterator[Firm]:
    masterdata = await start_service("masterdata")
    timekeeping = await start_service("timekeeping", masterdata_address=f"127.0.0.1:{masterdata.grpc_port}")
    stub = mdg.MasterDataServiceStub(channel_to(masterdata))
    f = await build_firm(stub)
    ids = {"uk": f["le"].id, "boss": f["boss"].id, "dev": f["dev"].id, "p1": f["project"].id}

    async def consultant(code: str, le: str, manager: str = "") -> str:
        c = md.Consultant(
            code=code,
            name=code,
            legal_entity_id=le,
            labor_category_id=f["lc"].id,
            manager_id=manager,
            active_from="2020-01-01",
        )
        return (await stub.CreateConsultant(mda.CreateConsultantRequest(consultant=c))).consultant.id

    async def staff(project: str, who: str) -> None:
        a = md.Assignment(
            project_id=project,
            consultant_id=who,
            labor_category_id=f["lc"].id,
            start_date="2026-01-01",
            allocation_percent="50",
        )
        await stub.CreateAssignment(mda.CreateAssignmentRequest(assignment=a))

    ids["deputy"] = await consultant("DEP", ids["uk"])
    await staff(ids["p1"], ids["dev"])
    await staff(ids["p1"], ids["deputy"])
    fr = md.LegalEntity(code="FR", name="Acme FR", base_currency="GBP")
    ids["fr"] = (await stub.CreateLegalEntity(mda.CreateLegalEntityRequest(legal_entity=fr))).legal_entity.id
    cu = md.Customer(code="INITECH", name="Initech", legal_entity_id=ids["fr"], currency="GBP")
    customer = (await stub.CreateCustomer(mda.CreateCustomerRequest(customer=cu))).customer.id
    ids["chef"] = await consultant("CHEF", ids["fr"])
    ids["ouvrier"] = await consultant("OUV", ids["fr"], ids["chef"])
    project = md.Project(
        code="P3",
        name="Paris",
        customer_id=customer,
        legal_entity_id=ids["fr"],
        manager_id=ids["chef"],
        status=md.PROJECT_STATUS_ACTIVE,
        start_date="2026-01-01",
    )
    ids["p3"] = (await stub.CreateProject(mda.CreateProjectRequest(project=project))).project.id
    line = md.ContractLine(
        project_id=ids["p3"], billing_model=md.BILLING_MODEL_TIME_AND_MATERIALS, rate_card_id=f["card"].id
    )
    await stub.CreateContract(
        mda.CreateContractRequest(
            contract=md.Contract(code="K3", customer_id=customer, currency="GBP", lines=[line])
        )
    )
    await staff(ids["p3"], ids["ouvrier"])
    world = Firm(
        f"127.0.0.1:{timekeeping.grpc_port}", f"127.0.0.1:{masterdata.grpc_port}", internal_signer, ids
    )
    yield world
    for channel in world.channels:
        await channel.close()


def time(f: Firm, who: str, project: str, day: str = DAY, hours: str = "8") -> tk.TimeEntry:
    return tk.TimeEntry(consultant_id=f.ids[who], project_id=f.ids[project], work_date=day, hours=hours)


async def submitted(f: Firm, who: str, project: str, day: str = DAY) -> tk.TimeEntry:
    """An entry recorded by an administrator (an integration of every entity)."""
    reply = await f.tk().SubmitTimeEntry(tka.SubmitTimeEntryRequest(time_entry=time(f, who, project, day)))
    assert reply.time_entry.status == PENDING, reply.time_entry.violations
    return reply.time_entry


async def approved(f: Firm, who: str, project: str, approver: str, day: str = DAY) -> tk.TimeEntry:
    e = await submitted(f, who, project, day)
    as_approver = f.tk(identity.person(f.ids[approver], "approver"))
    return (await as_approver.ApproveTimeEntry(tka.ApproveTimeEntryRequest(id=e.id))).time_entry


async def failure(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


def reason(error: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info.reason
    return ""


def bad_request(error: grpc.aio.AioRpcError) -> list[tuple[str, str, str]]:
    """(field, reason, description) of every BadRequest violation in a status."""
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    found = []
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            found += [(v.field, v.reason, v.description) for v in bad.field_violations]
    return found


def refused(error: grpc.aio.AioRpcError, code: grpc.StatusCode, why: str) -> None:
    assert (error.code(), reason(error)) == (code, why), error.details()


def missing(error: grpc.aio.AioRpcError, what: str, record_id: str) -> None:
    """NOT_FOUND in the very words a missing id gets."""
    refused(error, grpc.StatusCode.NOT_FOUND, "NOT_FOUND")
    assert error.details() == f"no {what} with id {record_id!r}"


async def reread(f: Firm, entry_id: str) -> tk.TimeEntry:
    return (await f.tk().GetTimeEntry(tka.GetTimeEntryRequest(id=entry_id))).time_entry


# -- own-time --------------------------------------------------------------------------------------


async def test_own_time_a_consultant_submits_and_reads_only_their_own_entries(firm: Firm) -> None:
    f = firm
    dev = f.tk(identity.person(f.ids["dev"], "consultant", legal_entities=f.le("uk")))
    mine = (await dev.SubmitTimeEntry(tka.SubmitTimeEntryRequest(time_entry=time(f, "dev", "p1")))).time_entry
    assert mine.status == PENDING
    # Someone else's time, alone or in a batch: refused whole, nothing stored.
    other = await failure(dev.SubmitTimeEntry(tka.SubmitTimeEntryRequest(time_entry=time(f, "deputy", "p1"))))
    refused(other, grpc.StatusCode.PERMISSION_DENIED, "NOT_OWN_TIME")
    batch = [time(f, "dev", "p1", "2026-11-03"), time(f, "boss", "p1", "2026-11-03")]
    mixed = await failure(dev.BatchSubmitTimeEntries(tka.BatchSubmitTimeEntriesRequest(time_entries=batch)))
    refused(mixed, grpc.StatusCode.PERMISSION_DENIED, "NOT_OWN_TIME")
    everything = (await f.tk().ListTimeEntries(tka.ListTimeEntriesRequest())).time_entries
    assert [e.id for e in everything] == [mine.id]

    # Reads: their own entries only, whatever the filter asks for.
    theirs = await submitted(f, "ouvrier", "p3")
    assert (await dev.GetTimeEntry(tka.GetTimeEntryRequest(id=mine.id))).time_entry.id == mine.id
    missing(await failure(dev.GetTimeEntry(tka.GetTimeEntryRequest(id=theirs.id))), "time entry", theirs.id)
    listed = await dev.ListTimeEntries(tka.ListTimeEntriesRequest())
    assert [e.id for e in listed.time_entries] == [mine.id]
    asked = await dev.ListTimeEntries(tka.ListTimeEntriesRequest(consultant_id=f.ids["ouvrier"]))
    assert list(asked.time_entries) == []
    # A role that is not on the operation at all: the policy refuses it before any rule.
    viewer = f.tk(identity.person(f.ids["dev"], "viewer"))
    refused(
        await failure(viewer.SubmitTimeEntry(tka.SubmitTimeEntryRequest(time_entry=time(f, "dev", "p1")))),
        grpc.StatusCode.PERMISSION_DENIED,
        reason(await failure(viewer.GetTimeEntry(tka.GetTimeEntryRequest(id=mine.id)))),
    )


async def test_own_time_an_integration_client_submits_for_consultants_of_its_legal_entities_only(
    firm: Firm,
) -> None:
    f = firm
    harvest = f.tk(identity.system_client("harvest", legal_entities=f.le("uk")))
    ours = time(f, "dev", "p1")
    theirs = time(f, "ouvrier", "p3")
    unknown = tk.TimeEntry(
        consultant_id="no-such-consultant", project_id=f.ids["p3"], work_date=DAY, hours="8"
    )
    reply = await harvest.BatchSubmitTimeEntries(
        tka.BatchSubmitTimeEntriesRequest(time_entries=[ours, theirs, unknown])
    )
    got = [r.time_entry for r in reply.results]
    assert got[0].status == PENDING

    # Another entity's consultant is answered exactly as an unknown one: nothing tells them apart.
    def shape(e: tk.TimeEntry) -> list[tuple[str, str, str]]:
        return [(v.field, v.code, v.message.replace(e.consultant_id, "<id>")) for v in e.violations]

    assert (got[1].status, got[2].status) == (REJECTED, REJECTED)
    assert ("consultant_id", "CONSULTANT_NOT_FOUND", "no consultant with id '<id>'") in shape(got[1])
    assert shape(got[1]) == shape(got[2])


# -- routed-approver -------------------------------------------------------------------------------


async def test_routed_approver_only_the_approver_of_record_or_their_delegate_decides(firm: Firm) -> None:
    f = firm
    e = await submitted(f, "dev", "p1")
    deputy = f.tk(identity.person(f.ids["deputy"], "approver", legal_entities=f.le("uk")))
    not_routed = await failure(deputy.ApproveTimeEntry(tka.ApproveTimeEntryRequest(id=e.id)))
    refused(not_routed, grpc.StatusCode.PERMISSION_DENIED, "NOT_APPROVER")
    # A body naming someone else as the approver is refused, naming the field.
    boss = f.tk(identity.person(f.ids["boss"], "approver", legal_entities=f.le("uk")))
    posing = await failure(
        boss.ApproveTimeEntry(tka.ApproveTimeEntryRequest(id=e.id, approver_id=f.ids["deputy"]))
    )
    refused(posing, grpc.StatusCode.PERMISSION_DENIED, "ACTOR_MISMATCH")
    assert "approver_id" in (posing.details() or "")
    # A consultant holds no approving role: the policy refuses it.
    dev = f.tk(identity.person(f.ids["dev"], "consultant"))
    refused(
        await failure(dev.ApproveTimeEntry(tka.ApproveTimeEntryRequest(id=e.id))),
        grpc.StatusCode.PERMISSION_DENIED,
        reason(await failure(dev.DeclineTimeEntry(tka.DeclineTimeEntryRequest(id=e.id, reason="x")))),
    )
    assert (await reread(f, e.id)).status == PENDING

    done = (await boss.ApproveTimeEntry(tka.ApproveTimeEntryRequest(id=e.id))).time_entry
    # The decider stored is the caller from the token.
    assert (done.status, done.decided_by_id) == (APPROVED, f.ids["boss"])


async def test_routed_approver_nobody_approves_their_own_time_not_even_as_a_delegate(
    firm: Firm, instant: dt.datetime
) -> None:
    f = firm
    today = instant.date()
    boss = f.tk(identity.person(f.ids["boss"], "approver"))
    await boss.CreateApprovalDelegation(
        tka.CreateApprovalDelegationRequest(
            approval_delegation=tk.ApprovalDelegation(
                delegate_id=f.ids["dev"],
                start_date=(today - dt.timedelta(days=1)).isoformat(),
                end_date=(today + dt.timedelta(days=7)).isoformat(),
            )
        )
    )
    own = await submitted(f, "dev", "p1")
    dev = f.tk(identity.person(f.ids["dev"], "approver", "consultant"))
    for call in (
        dev.ApproveTimeEntry(tka.ApproveTimeEntryRequest(id=own.id)),
        dev.DeclineTimeEntry(tka.DeclineTimeEntryRequest(id=own.id, reason="no")),
    ):
        refused(await failure(call), grpc.StatusCode.PERMISSION_DENIED, "SELF_APPROVAL")
    batch = await dev.BatchApproveTimeEntries(tka.BatchApproveTimeEntriesRequest(ids=[own.id]))
    assert [(r.error.code, r.error.reason) for r in batch.results] == [("PERMISSION_DENIED", "SELF_APPROVAL")]
    assert (await reread(f, own.id)).status == PENDING
    # Someone else's time routed to the delegator: the delegate may decide it.
    deputy_time = await submitted(f, "deputy", "p1")
    assert deputy_time.approver_id == f.ids["boss"]
    decided = (await dev.ApproveTimeEntry(tka.ApproveTimeEntryRequest(id=deputy_time.id))).time_entry
    assert (decided.status, decided.decided_by_id) == (APPROVED, f.ids["dev"])


# -- legal-entity scope ----------------------------------------------------------------------------


async def test_legal_entity_scope_another_entitys_entry_is_not_found_and_unchanged(firm: Firm) -> None:
    f = firm
    paris = await submitted(f, "ouvrier", "p3")
    assert paris.approver_id == f.ids["chef"]
    # The approver of record, but limited to the UK: the French entry does not exist for them.
    chef_in_uk = f.tk(identity.person(f.ids["chef"], "approver", legal_entities=f.le("uk")))
    for call in (
        chef_in_uk.ApproveTimeEntry(tka.ApproveTimeEntryRequest(id=paris.id)),
        chef_in_uk.DeclineTimeEntry(tka.DeclineTimeEntryRequest(id=paris.id, reason="x")),
        chef_in_uk.GetTimeEntry(tka.GetTimeEntryRequest(id=paris.id)),
    ):
        missing(await failure(call), "time entry", paris.id)
    batch = await chef_in_uk.BatchApproveTimeEntries(tka.BatchApproveTimeEntriesRequest(ids=[paris.id]))
    assert [(r.error.code, r.error.message) for r in batch.results] == [
        ("NOT_FOUND", f"no time entry with id {paris.id!r}")
    ]
    assert (await reread(f, paris.id)).status == PENDING

    # Approved time of another entity cannot be reversed by finance of the UK.
    done = (
        await f.tk(identity.person(f.ids["chef"], "approver")).ApproveTimeEntry(
            tka.ApproveTimeEntryRequest(id=paris.id)
        )
    ).time_entry
    uk_finance = f.tk(identity.person("controller", "finance", legal_entities=f.le("uk")))
    reverse = tka.ReverseTimeEntryRequest(id=paris.id, reason="wrong")
    missing(await failure(uk_finance.ReverseTimeEntry(reverse)), "time entry", paris.id)
    assert (await reread(f, paris.id)).status == done.status == APPROVED

    # Lists are filtered in the query: a UK reader sees UK entries only, page by page.
    london = await submitted(f, "dev", "p1")
    await submitted(f, "ouvrier", "p3", "2026-11-03")
    uk_auditor = f.tk(identity.person("auditor", "auditor", legal_entities=f.le("uk")))
    page = await uk_auditor.ListTimeEntries(tka.ListTimeEntriesRequest(page_size=1))
    assert ([e.id for e in page.time_entries], page.next_page_token) == ([london.id], "")
    nobody = f.tk(identity.person("auditor", "auditor", legal_entities=[]))
    assert list((await nobody.ListTimeEntries(tka.ListTimeEntriesRequest())).time_entries) == []


async def test_legal_entity_scope_finance_reverses_any_approved_entry_of_its_entities(firm: Firm) -> None:
    f = firm
    e = await approved(f, "dev", "p1", "boss")
    # A project manager who did not approve it may not; finance of the entity may.
    pm = f.tk(identity.person(f.ids["deputy"], "project_manager", legal_entities=f.le("uk")))
    refused(
        await failure(pm.ReverseTimeEntry(tka.ReverseTimeEntryRequest(id=e.id, reason="x"))),
        grpc.StatusCode.PERMISSION_DENIED,
        "NOT_APPROVER",
    )
    finance = f.tk(identity.person("controller", "finance", legal_entities=f.le("uk")))
    done = await finance.ReverseTimeEntry(tka.ReverseTimeEntryRequest(id=e.id, reason="booked twice"))
    assert (done.original.status, done.reversal.decided_by_id) == (
        tk.TIME_ENTRY_STATUS_REVERSED,
        "controller",
    )
    # Never one's own time, finance or not.
    own = await approved(f, "deputy", "p1", "boss")
    deputy_finance = f.tk(identity.person(f.ids["deputy"], "finance"))
    refused(
        await failure(deputy_finance.ReverseTimeEntry(tka.ReverseTimeEntryRequest(id=own.id, reason="x"))),
        grpc.StatusCode.PERMISSION_DENIED,
        "SELF_APPROVAL",
    )


async def test_routed_approver_or_scope_approvers_list_their_queue_finance_its_entities(firm: Firm) -> None:
    f = firm
    london = await submitted(f, "dev", "p1")
    paris = await submitted(f, "ouvrier", "p3")
    boss = f.tk(identity.person(f.ids["boss"], "approver"))
    assert [e.id for e in (await boss.ListApprovals(tka.ListApprovalsRequest())).time_entries] == [london.id]
    peeking = await failure(boss.ListApprovals(tka.ListApprovalsRequest(approver_id=f.ids["chef"])))
    refused(peeking, grpc.StatusCode.PERMISSION_DENIED, "ACTOR_MISMATCH")
    everywhere = f.tk(identity.person("controller", "finance"))
    listed = await everywhere.ListApprovals(tka.ListApprovalsRequest())
    assert sorted(e.id for e in listed.time_entries) == sorted([london.id, paris.id])
    uk_finance = f.tk(identity.person("controller", "finance", legal_entities=f.le("uk")))
    assert [e.id for e in (await uk_finance.ListApprovals(tka.ListApprovalsRequest())).time_entries] == [
        london.id
    ]
    chefs = await uk_finance.ListApprovals(tka.ListApprovalsRequest(approver_id=f.ids["chef"]))
    assert list(chefs.time_entries) == []


async def test_own_delegation_the_caller_delegates_and_revokes_only_their_own(
    firm: Firm, instant: dt.datetime, database_url: str
) -> None:
    f = firm
    today = instant.date()
    window = {
        "start_date": (today - dt.timedelta(days=1)).isoformat(),
        "end_date": (today + dt.timedelta(days=7)).isoformat(),
    }
    boss = f.tk(identity.person(f.ids["boss"], "approver", legal_entities=f.le("uk")))
    posing = await failure(
        boss.CreateApprovalDelegation(
            tka.CreateApprovalDelegationRequest(
                approval_delegation=tk.ApprovalDelegation(
                    delegator_id=f.ids["chef"], delegate_id=f.ids["deputy"], **window
                )
            )
        )
    )
    refused(posing, grpc.StatusCode.PERMISSION_DENIED, "ACTOR_MISMATCH")
    # A delegate of another legal entity is as unknown as a missing consultant.
    abroad = await failure(
        boss.CreateApprovalDelegation(
            tka.CreateApprovalDelegationRequest(
                approval_delegation=tk.ApprovalDelegation(delegate_id=f.ids["chef"], **window)
            )
        )
    )
    assert bad_request(abroad) == [
        (
            "approval_delegation.delegate_id",
            "CONSULTANT_NOT_FOUND",
            f"no consultant with id {f.ids['chef']!r}",
        )
    ]
    made = (
        await boss.CreateApprovalDelegation(
            tka.CreateApprovalDelegationRequest(
                approval_delegation=tk.ApprovalDelegation(delegate_id=f.ids["deputy"], **window)
            )
        )
    ).approval_delegation
    assert made.delegator_id == f.ids["boss"]

    # Parties read it; an approver who is no party, or finance of another entity, does not.
    deputy = f.tk(identity.person(f.ids["deputy"], "approver"))
    assert (
        await deputy.GetApprovalDelegation(tka.GetApprovalDelegationRequest(id=made.id))
    ).approval_delegation.id
    stranger = f.tk(identity.person(f.ids["dev"], "approver"))
    fr_finance = f.tk(identity.person("controller", "finance", legal_entities=f.le("fr")))
    for reader in (stranger, fr_finance):
        missing(
            await failure(reader.GetApprovalDelegation(tka.GetApprovalDelegationRequest(id=made.id))),
            "approval delegation",
            made.id,
        )
        listed = await reader.ListApprovalDelegations(tka.ListApprovalDelegationsRequest())
        assert list(listed.approval_delegations) == []
    uk_finance = f.tk(identity.person("controller", "finance", legal_entities=f.le("uk")))
    listed = await uk_finance.ListApprovalDelegations(tka.ListApprovalDelegationsRequest())
    assert [d.id for d in listed.approval_delegations] == [made.id]

    # Revoking: no party is NOT_FOUND, the delegate is refused, the delegator revokes.
    missing(
        await failure(stranger.RevokeApprovalDelegation(tka.RevokeApprovalDelegationRequest(id=made.id))),
        "approval delegation",
        made.id,
    )
    refused(
        await failure(deputy.RevokeApprovalDelegation(tka.RevokeApprovalDelegationRequest(id=made.id))),
        grpc.StatusCode.PERMISSION_DENIED,
        "NOT_DELEGATOR",
    )
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.text(
                        "SELECT revoke_time, legal_entity_id FROM timekeeping.approval_delegations "
                        "WHERE id = :id"
                    ),
                    {"id": made.id},
                )
            ).one()
    finally:
        await engine.dispose()
    assert (row.revoke_time, row.legal_entity_id) == (None, f.ids["uk"])
    revoked = await boss.RevokeApprovalDelegation(tka.RevokeApprovalDelegationRequest(id=made.id))
    assert revoked.approval_delegation.revoked_by_id == f.ids["boss"]


async def test_legal_entity_scope_period_locks_of_another_entity_are_unknown(firm: Firm) -> None:
    f = firm
    uk_finance = f.tk(identity.person("controller", "finance", legal_entities=f.le("uk")))

    def lock(le: str, **extra: str) -> tka.CreatePeriodLockRequest:
        return tka.CreatePeriodLockRequest(
            period_lock=tk.PeriodLock(
                legal_entity_id=le, locked_through="2026-10-31", reason="closed", **extra
            )
        )

    abroad = await failure(uk_finance.CreatePeriodLock(lock(f.ids["fr"])))
    unknown = await failure(uk_finance.CreatePeriodLock(lock("no-such-entity")))
    assert (
        (abroad.code(), reason(abroad))
        == (unknown.code(), reason(unknown))
        == (
            grpc.StatusCode.NOT_FOUND,
            "LEGAL_ENTITY_NOT_FOUND",
        )
    )
    posing = await failure(uk_finance.CreatePeriodLock(lock(f.ids["uk"], locked_by_id="cfo")))
    refused(posing, grpc.StatusCode.PERMISSION_DENIED, "ACTOR_MISMATCH")
    mine = (await uk_finance.CreatePeriodLock(lock(f.ids["uk"]))).period_lock
    assert mine.locked_by_id == "controller"
    everywhere = f.tk(identity.person("cfo", "finance"))
    paris = (await everywhere.CreatePeriodLock(lock(f.ids["fr"]))).period_lock

    fr_finance = f.tk(identity.person("controller", "finance", legal_entities=f.le("fr")))
    missing(
        await failure(fr_finance.GetPeriodLock(tka.GetPeriodLockRequest(id=mine.id))), "period lock", mine.id
    )
    reopen = tka.ReopenPeriodLockRequest(id=mine.id, reason="late time")
    missing(await failure(fr_finance.ReopenPeriodLock(reopen)), "period lock", mine.id)
    assert (await everywhere.GetPeriodLock(tka.GetPeriodLockRequest(id=mine.id))).period_lock.active
    assert [x.id for x in (await fr_finance.ListPeriodLocks(tka.ListPeriodLocksRequest())).period_locks] == [
        paris.id
    ]
    reopened = (await uk_finance.ReopenPeriodLock(reopen)).period_lock
    assert (reopened.active, reopened.reopened_by_id) == (False, "controller")


async def test_legal_entity_scope_summaries_hold_only_the_callers_entities(firm: Firm) -> None:
    f = firm
    london = await approved(f, "dev", "p1", "boss")
    await approved(f, "ouvrier", "p3", "chef")
    period = {"period_start": "2026-11-01", "period_end": "2026-11-30"}
    uk_viewer = f.tk(identity.person("analyst", "viewer", legal_entities=f.le("uk")))
    summary = await uk_viewer.SummarizeApprovedTime(tka.SummarizeApprovedTimeRequest(**period))
    assert [(p.project_id, [e.time_entry_id for e in p.entries]) for p in summary.projects] == [
        (f.ids["p1"], [london.id])
    ]
    named = await uk_viewer.SummarizeApprovedTime(
        tka.SummarizeApprovedTimeRequest(legal_entity_id=f.ids["fr"], **period)
    )
    assert list(named.projects) == []
    every_viewer = f.tk(identity.person("analyst", "viewer"))
    assert (
        len((await every_viewer.SummarizeApprovedTime(tka.SummarizeApprovedTimeRequest(**period))).projects)
        == 2
    )


# -- audit notes -----------------------------------------------------------------------------------


async def test_every_change_tells_the_audit_trail_what_it_changed(
    firm: Firm, database_url: str, instant: dt.datetime
) -> None:
    f = firm
    engine = create_engine(database_url)
    channel = identity.channel(f.md_address, identity.run_signer())
    app = Timekeeping(
        lambda: TimekeepingUnitOfWork(
            engine, MasterDataReader(mdg.MasterDataServiceStub(channel), md_projection)
        ),
        clock=StartedClock(instant),
    )
    sub = Submission(f.ids["dev"], f.ids["p1"], dt.date(2026, 11, 2), Decimal("7.5"), None, None, "", None)
    try:
        with bound_principal(identity.person(f.ids["dev"], "consultant")), audit.collecting() as changes:
            (result,) = await app.submit([sub])
        (created,) = changes
        assert (created.resource_type, created.resource_id, created.legal_entity_id, created.before) == (
            "time_entry",
            result.entry.id,
            f.ids["uk"],
            None,
        )
        assert created.after is not None
        assert (created.after["status"], str(created.after["hours"])) == ("PENDING_APPROVAL", "7.5")

        with bound_principal(identity.person(f.ids["boss"], "approver")), audit.collecting() as changes:
            await app.approve(result.entry.id)
            await app.approve(result.entry.id)  # a repeat changes nothing and notes nothing
        (decided,) = changes
        assert decided.before is not None
        assert decided.after is not None
        assert (decided.before["status"], decided.after["status"], decided.after["decided_by_id"]) == (
            "PENDING_APPROVAL",
            str(Status.APPROVED),
            f.ids["boss"],
        )

        with bound_principal(identity.person("cfo", "finance")), audit.collecting() as changes:
            lock = await app.lock_period(f.ids["uk"], dt.date(2026, 10, 31), "closed")
            await app.reopen_lock(lock.id, "late time")
        assert [(c.resource_type, c.resource_id, c.legal_entity_id) for c in changes] == [
            ("period_lock", lock.id, f.ids["uk"])
        ] * 2
        assert changes[0].before is None
        assert changes[1].before is not None
        assert changes[1].after is not None
        assert (changes[1].before["reopened_by_id"], changes[1].after["reopened_by_id"]) == ("", "cfo")
    finally:
        await channel.close()
        await engine.dispose()
