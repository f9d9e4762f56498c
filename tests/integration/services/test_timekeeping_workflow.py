"""Timekeeping on a real PostgreSQL and NATS JetStream: duplicates, idempotency with events,
delegation, batch decisions, escalation, reversals, period locks, the projection rebuild, and
"today" in each consultant's time zone."""

import asyncio
import datetime as dt
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
import nats
import pytest
import sqlalchemy as sa
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from accrue.db import create_engine
from accrue.db.migrations import upgrade
from accrue.events.v1 import time_events_pb2 as tev
from accrue.masterdata.v1 import masterdata_service_pb2 as mda
from accrue.masterdata.v1 import masterdata_service_pb2_grpc as mdg
from accrue.masterdata.v1 import resources_pb2 as md
from accrue.mdprojection import MasterDataReader
from accrue.runtime.clock import FixedClock, StartedClock, clock_for, local_date
from accrue.runtime.identity import bound_principal
from accrue.runtime.server import RunningService
from accrue.services.timekeeping.adapters.tables import SCHEMA, md_projection
from accrue.services.timekeeping.adapters.unit_of_work import TimekeepingUnitOfWork
from accrue.services.timekeeping.bootstrap import MIGRATIONS
from accrue.services.timekeeping.domain.model import Status, Submission, TimeEntry
from accrue.services.timekeeping.domain.working_time import DEFAULT_CALENDAR, sla_due
from accrue.services.timekeeping.service_layer.handlers import Timekeeping
from accrue.testing import identity
from accrue.timekeeping.v1 import resources_pb2 as tk
from accrue.timekeeping.v1 import timekeeping_service_pb2 as tka
from accrue.timekeeping.v1 import timekeeping_service_pb2_grpc as tkg
from accrue.type.v1 import types_pb2

pytestmark = pytest.mark.integration

PENDING, APPROVED = tk.TIME_ENTRY_STATUS_PENDING_APPROVAL, tk.TIME_ENTRY_STATUS_APPROVED
REJECTED, REVERSED = tk.TIME_ENTRY_STATUS_REJECTED, tk.TIME_ENTRY_STATUS_REVERSED


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 10.0) -> None:
    async with asyncio.timeout(within):
        while not await check():  # noqa: ASYNC110 - waiting for asynchronous work
            await asyncio.sleep(0.05)


class Events:
    """Every time.* event published so far, read from the TIME stream."""

    def __init__(self, url: str) -> None:
        self.url = url

    async def all(self) -> list[tuple[str, Any]]:
        nc = await nats.connect(self.url)
        try:
            js = nc.jetstream()
            try:
                last = (await js.stream_info("TIME")).state.last_seq
            except Exception:
                return []
            out: list[tuple[str, Any]] = []
            types = {
                "submitted": tev.TimeEntrySubmitted,
                "approved": tev.TimeEntryApproved,
                "declined": tev.TimeEntryDeclined,
                "reversed": tev.TimeEntryReversed,
                "escalated": tev.TimeEntryEscalated,
            }
            for seq in range(1, last + 1):
                msg = await js.get_msg("TIME", seq)
                kind = msg.subject.split(".")[2]
                out.append((msg.subject, types[kind].FromString(msg.data)))
            return out
        finally:
            await nc.close()

    async def of(self, kind: str) -> list[Any]:
        return [m for subject, m in await self.all() if subject.startswith(f"time.entry.{kind}.")]


class World:
    def __init__(self, mdstub: Any, tkstub: Any, timekeeping: RunningService, events: Events) -> None:
        self.md, self.tk, self.timekeeping, self.events = mdstub, tkstub, timekeeping, events
        self.f: dict[str, Any] = {}
        self.masterdata_address = ""


@pytest.fixture
async def boot(
    start_service: Any,
    channel_to: Callable[[RunningService], grpc.aio.Channel],
    nats_url: str,
    database_url: str,
    build_firm: Any,
) -> AsyncIterator[Callable[..., Awaitable[World]]]:
    """boot(**timekeeping settings) starts master data and timekeeping and builds a staffed firm:
    dev (managed by boss) on P1 (managed by boss); lead (managed by director) manages P2, dev
    is staffed there too; deputy is a spare consultant. The legal entity is in UTC; with
    round_the_clock=True its calendar makes every hour working time."""

    async def _boot(round_the_clock: bool = False, **settings: Any) -> World:
        clock_start = settings.get("clock_start")
        # Both start their clocks where timekeeping's starts: they verify each other's tokens
        # (and the test's), which would otherwise be from their past or future.
        masterdata = await start_service(
            "masterdata", **({"clock_start": clock_start} if clock_start is not None else {})
        )
        timekeeping = await start_service(
            "timekeeping", masterdata_address=f"127.0.0.1:{masterdata.grpc_port}", **settings
        )
        if clock_start is None:
            md_channel, tk_channel = channel_to(masterdata), channel_to(timekeeping)
        else:
            signer = identity.gateway_signer(Path(os.environ[identity.KEYS_ENV]), clock_for(clock_start))
            md_channel = identity.channel(f"127.0.0.1:{masterdata.grpc_port}", signer)
            tk_channel = identity.channel(f"127.0.0.1:{timekeeping.grpc_port}", signer)
            own_channels.extend([md_channel, tk_channel])
        w = World(
            mdg.MasterDataServiceStub(md_channel),
            tkg.TimekeepingServiceStub(tk_channel),
            timekeeping,
            Events(nats_url),
        )
        w.masterdata_address = f"127.0.0.1:{masterdata.grpc_port}"
        f = await build_firm(w.md)

        async def consultant(code: str, manager: str = "") -> Any:
            c = md.Consultant(
                code=code,
                name=code,
                legal_entity_id=f["le"].id,
                labor_category_id=f["lc"].id,
                manager_id=manager,
                active_from="2020-01-01",
            )
            return (await w.md.CreateConsultant(mda.CreateConsultantRequest(consultant=c))).consultant

        f["director"] = await consultant("DIR")
        f["lead"] = await consultant("LEAD", f["director"].id)
        f["deputy"] = await consultant("DEP")
        f["p2"] = (
            await w.md.CreateProject(
                mda.CreateProjectRequest(
                    project=md.Project(
                        code="P2",
                        name="Second",
                        customer_id=f["cu"].id,
                        legal_entity_id=f["le"].id,
                        manager_id=f["lead"].id,
                        status=md.PROJECT_STATUS_ACTIVE,
                        start_date="2026-01-01",
                    )
                )
            )
        ).project
        internal = md.ContractLine(project_id=f["p2"].id, billing_model=md.BILLING_MODEL_NON_BILLABLE)
        await w.md.CreateContract(
            mda.CreateContractRequest(
                contract=md.Contract(code="K2", customer_id=f["cu"].id, currency="GBP", lines=[internal])
            )
        )
        for project in (f["project"], f["p2"]):
            await w.md.CreateAssignment(
                mda.CreateAssignmentRequest(
                    assignment=md.Assignment(
                        project_id=project.id,
                        consultant_id=f["dev"].id,
                        labor_category_id=f["lc"].id,
                        start_date="2026-01-01",
                        allocation_percent="50",
                    )
                )
            )
        if round_the_clock:
            # Every hour of every day is working time, so an SLA of a second runs out a second
            # later whatever the run's instant (23:59-00:00 aside: no instant of the set is there).
            calendar = md.Calendar(
                code="UK-ALWAYS",
                legal_entity_id=f["le"].id,
                working_days=range(1, 8),
                workday_start="00:00",
                workday_end="23:59",
            )
            await w.md.CreateCalendar(mda.CreateCalendarRequest(calendar=calendar))
            # Due times are worked out at submission, from the projected calendar.
            await eventually(lambda: _settled(database_url, nats_url))
        w.f = f
        return w

    own_channels: list[grpc.aio.Channel] = []
    yield _boot
    for channel in own_channels:
        await channel.close()


def entry(w: World, day: str, hours: str, project: str = "project", **extra: Any) -> tk.TimeEntry:
    return tk.TimeEntry(
        consultant_id=w.f["dev"].id, project_id=w.f[project].id, work_date=day, hours=hours, **extra
    )


async def submit(w: World, e: tk.TimeEntry) -> tk.TimeEntry:
    return (await w.tk.SubmitTimeEntry(tka.SubmitTimeEntryRequest(time_entry=e))).time_entry


async def approve(w: World, entry_id: str, who: str = "boss") -> tk.TimeEntry:
    reply = await w.tk.ApproveTimeEntry(tka.ApproveTimeEntryRequest(id=entry_id, approver_id=w.f[who].id))
    return reply.time_entry


async def failure(call: Awaitable[Any]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


def violations(error: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    """(field, reason) of every BadRequest violation in a status."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    found = []
    for detail in status.details:
        bad = error_details_pb2.BadRequest()
        if detail.Unpack(bad):
            found += [(v.field, v.reason) for v in bad.field_violations]
    return found


async def test_identical_time_is_flagged_and_a_resubmission_by_ref_publishes_nothing(boot: Any) -> None:
    w = await boot()
    ref = types_pb2.ExternalRef(system="harvest", id="t-1")
    first = await submit(w, entry(w, "2026-11-02", "4", notes="Design review", external_ref=ref))
    again = await submit(w, entry(w, "2026-11-02", "4.00", notes="Design review", external_ref=ref))
    assert (again.id, again.likely_duplicate_of_id) == (first.id, "")
    twin = await submit(w, entry(w, "2026-11-02", "4", notes="design review "))
    assert (twin.status, twin.likely_duplicate_of_id) == (PENDING, first.id)
    batch = await w.tk.BatchSubmitTimeEntries(
        tka.BatchSubmitTimeEntriesRequest(
            time_entries=[entry(w, "2026-11-03", "2", notes="x"), entry(w, "2026-11-03", "2", notes="x")]
        )
    )
    a, b = (r.time_entry for r in batch.results)
    assert (a.likely_duplicate_of_id, b.likely_duplicate_of_id) == ("", a.id)

    async def four_submitted() -> bool:
        return len(await w.events.of("submitted")) == 4

    await eventually(four_submitted)
    # The idempotent resubmission added no event; nothing else is on its way either.
    await asyncio.sleep(0.5)
    submitted = await w.events.of("submitted")
    assert sorted(e.time_entry.id for e in submitted) == sorted([first.id, twin.id, a.id, b.id])
    subjects = [s for s, _ in await w.events.all()]
    assert all(s == f"time.entry.submitted.{w.f['project'].id}" for s in subjects)


async def test_every_batch_row_whose_ref_names_other_content_conflicts(boot: Any) -> None:
    w = await boot()
    stored_ref = types_pb2.ExternalRef(system="harvest", id="stored")
    new_ref = types_pb2.ExternalRef(system="harvest", id="new")
    stored = await submit(w, entry(w, "2026-11-02", "4", notes="a", external_ref=stored_ref))
    rows = [
        entry(w, "2026-11-02", "5", notes="b", external_ref=stored_ref),  # differs from stored
        entry(w, "2026-11-02", "5", notes="b", external_ref=stored_ref),  # the same again
        entry(w, "2026-11-02", "4", notes="a", external_ref=stored_ref),  # what is stored
        entry(w, "2026-11-03", "2", notes="c", external_ref=new_ref),  # creates the entry
        entry(w, "2026-11-03", "2.00", notes="c", external_ref=new_ref),  # identical repeat
        entry(w, "2026-11-03", "3", notes="c", external_ref=new_ref),  # differs from row 3
    ]
    reply = await w.tk.BatchSubmitTimeEntries(tka.BatchSubmitTimeEntriesRequest(time_entries=rows))
    got = [r.time_entry for r in reply.results]
    created = got[3]
    assert (created.status, created.id != "") == (PENDING, True)

    def conflict_with(result: tk.TimeEntry, holder: str) -> bool:
        (violation,) = result.violations
        return (result.id, result.status, violation.field, violation.code) == (
            "",
            REJECTED,
            "external_ref",
            "EXTERNAL_REF_CONFLICT",
        ) and holder in violation.message

    assert conflict_with(got[0], stored.id)
    assert conflict_with(got[1], stored.id)
    assert (got[2].id, got[2].status) == (stored.id, PENDING)
    assert (got[4].id, got[4].status) == (created.id, PENDING)
    assert conflict_with(got[5], created.id)
    # Nothing else was stored under either reference, and the repeats published nothing.
    listed = await w.tk.ListTimeEntries(tka.ListTimeEntriesRequest(consultant_id=w.f["dev"].id))
    assert sorted(e.id for e in listed.time_entries) == sorted([stored.id, created.id])
    kept = (await w.tk.GetTimeEntry(tka.GetTimeEntryRequest(id=stored.id))).time_entry
    assert (kept.hours, kept.notes, kept.etag) == (stored.hours, "a", stored.etag)

    async def two_submitted() -> bool:
        return len(await w.events.of("submitted")) == 2

    await eventually(two_submitted)
    await asyncio.sleep(0.5)
    assert sorted(e.time_entry.id for e in await w.events.of("submitted")) == sorted([stored.id, created.id])


async def test_racing_submissions_of_one_ref_store_one_entry_and_conflict_cleanly(boot: Any) -> None:
    w = await boot()
    ref = types_pb2.ExternalRef(system="harvest", id="race")
    results = await asyncio.gather(
        submit(w, entry(w, "2026-11-02", "1", external_ref=ref)),
        submit(w, entry(w, "2026-11-09", "2", external_ref=ref)),
        return_exceptions=True,
    )
    stored = [r for r in results if isinstance(r, tk.TimeEntry)]
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(stored) == 1
    assert [r.code() for r in refused] == [grpc.StatusCode.ALREADY_EXISTS]
    assert stored[0].id in (refused[0].details() or "")


async def test_the_project_managers_own_time_with_nobody_above_is_rejected_no_approver(boot: Any) -> None:
    w = await boot()
    f = w.f
    # boss manages P1 and has no line manager: nobody may approve boss's time there.
    await w.md.CreateAssignment(
        mda.CreateAssignmentRequest(
            assignment=md.Assignment(
                project_id=f["project"].id,
                consultant_id=f["boss"].id,
                labor_category_id=f["lc"].id,
                start_date="2026-01-01",
                allocation_percent="50",
            )
        )
    )
    own = await submit(
        w,
        tk.TimeEntry(
            consultant_id=f["boss"].id, project_id=f["project"].id, work_date="2026-11-02", hours="8"
        ),
    )
    assert (own.status, own.approver_id) == (REJECTED, "")
    assert [(v.field, v.code) for v in own.violations] == [("consultant_id", "NO_APPROVER")]
    # lead manages P2 but has a line manager: that one approves.
    await w.md.CreateAssignment(
        mda.CreateAssignmentRequest(
            assignment=md.Assignment(
                project_id=f["p2"].id,
                consultant_id=f["lead"].id,
                labor_category_id=f["lc"].id,
                start_date="2026-01-01",
                allocation_percent="50",
            )
        )
    )
    leads = await submit(
        w, tk.TimeEntry(consultant_id=f["lead"].id, project_id=f["p2"].id, work_date="2026-11-02", hours="8")
    )
    assert (leads.status, leads.approver_id) == (PENDING, f["director"].id)


@pytest.mark.dates
async def test_the_future_allowance_is_read_from_settings(boot: Any, instant: dt.datetime) -> None:
    w = await boot(future_allowance_days=5)
    today = local_date(instant, "UTC")  # the legal entity's zone
    inside = await submit(w, entry(w, (today + dt.timedelta(days=5)).isoformat(), "8"))
    assert (inside.status, list(inside.violations)) == (PENDING, [])
    beyond = await submit(w, entry(w, (today + dt.timedelta(days=6)).isoformat(), "8"))
    assert beyond.status == REJECTED
    assert [(v.field, v.code) for v in beyond.violations] == [("work_date", "DATE_IN_FUTURE")]


async def test_what_the_projection_misses_is_read_from_master_data_and_stored(
    boot: Any, database_url: str
) -> None:
    w = await boot()
    await eventually(lambda: _settled(database_url, w.events.url))
    engine = create_engine(database_url)
    try:
        async with engine.begin() as conn:  # no event will bring these back: all were applied
            await conn.execute(sa.text("DELETE FROM timekeeping.md_projection"))
        ok = await submit(w, entry(w, "2026-11-02", "8"))
        assert (ok.status, list(ok.violations), ok.approver_id) == (PENDING, [], w.f["boss"].id)
        assert (ok.labor_category_id, ok.indicative_rate.amount) == (w.f["lc"].id, "150.00")
        async with engine.connect() as conn:
            rows = (await conn.execute(sa.text("SELECT kind, id FROM timekeeping.md_projection"))).all()
    finally:
        await engine.dispose()
    ids = {(kind, record_id) for kind, record_id in rows}
    assert {
        ("project", w.f["project"].id),
        ("consultant", w.f["dev"].id),
        ("contract", w.f["contract"].id),
        ("rate_card", w.f["card"].id),
    } <= ids
    assert any(kind == "assignment" for kind, _ in ids)


@pytest.mark.dates
async def test_a_delegate_approves_for_the_approver_until_revoked(boot: Any, instant: dt.datetime) -> None:
    w = await boot()
    f = w.f
    e1 = await submit(w, entry(w, "2026-11-02", "8"))
    e2 = await submit(w, entry(w, "2026-11-03", "8"))
    stranger = await failure(approve(w, e1.id, "deputy"))
    assert stranger.code() == grpc.StatusCode.PERMISSION_DENIED
    delegation = (
        await w.tk.CreateApprovalDelegation(
            tka.CreateApprovalDelegationRequest(
                approval_delegation=tk.ApprovalDelegation(
                    delegator_id=f["boss"].id,
                    delegate_id=f["deputy"].id,
                    start_date="2026-11-01",
                    end_date=(local_date(instant, "UTC") + dt.timedelta(days=30)).isoformat(),
                    reason="annual leave",
                )
            )
        )
    ).approval_delegation
    queue = await w.tk.ListApprovals(tka.ListApprovalsRequest(approver_id=f["deputy"].id))
    assert [e.id for e in queue.time_entries] == [e1.id, e2.id]
    done = await approve(w, e1.id, "deputy")
    assert (done.status, done.approver_id, done.decided_by_id) == (APPROVED, f["boss"].id, f["deputy"].id)
    not_theirs = await failure(
        w.tk.RevokeApprovalDelegation(
            tka.RevokeApprovalDelegationRequest(id=delegation.id, actor_id=f["deputy"].id)
        )
    )
    assert not_theirs.code() == grpc.StatusCode.PERMISSION_DENIED
    revoked = (
        await w.tk.RevokeApprovalDelegation(
            tka.RevokeApprovalDelegationRequest(id=delegation.id, actor_id=f["boss"].id)
        )
    ).approval_delegation
    assert (revoked.revoked, revoked.revoked_by_id) == (True, f["boss"].id)
    assert (await failure(approve(w, e2.id, "deputy"))).code() == grpc.StatusCode.PERMISSION_DENIED
    queue = await w.tk.ListApprovals(tka.ListApprovalsRequest(approver_id=f["deputy"].id))
    assert list(queue.time_entries) == []
    listed = await w.tk.ListApprovalDelegations(tka.ListApprovalDelegationsRequest(delegator_id=f["boss"].id))
    assert [(d.id, d.revoked) for d in listed.approval_delegations] == [(delegation.id, True)]


@pytest.mark.dates
async def test_a_bad_delegation_names_every_problem_and_stores_nothing(
    boot: Any, instant: dt.datetime
) -> None:
    w = await boot()
    today = local_date(instant, "UTC")  # the delegator's legal entity's zone
    error = await failure(
        w.tk.CreateApprovalDelegation(
            tka.CreateApprovalDelegationRequest(
                approval_delegation=tk.ApprovalDelegation(
                    delegator_id=w.f["boss"].id,
                    delegate_id=w.f["boss"].id,
                    start_date="2026-12-31",
                    end_date="2026-12-01",
                )
            )
        )
    )
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(error) == [
        ("approval_delegation.delegate_id", "SELF_DELEGATION"),
        ("approval_delegation.end_date", "INVALID_RANGE"),
    ]
    unknown = await failure(
        w.tk.CreateApprovalDelegation(
            tka.CreateApprovalDelegationRequest(
                approval_delegation=tk.ApprovalDelegation(
                    delegator_id=w.f["boss"].id,
                    delegate_id="nobody",
                    start_date=today.isoformat(),
                    end_date=(today + dt.timedelta(days=1)).isoformat(),
                )
            )
        )
    )
    assert violations(unknown) == [("approval_delegation.delegate_id", "CONSULTANT_NOT_FOUND")]
    yesterday = (today - dt.timedelta(days=1)).isoformat()
    past = await failure(
        w.tk.CreateApprovalDelegation(
            tka.CreateApprovalDelegationRequest(
                approval_delegation=tk.ApprovalDelegation(
                    delegator_id=w.f["boss"].id,
                    delegate_id=w.f["deputy"].id,
                    start_date=yesterday,
                    end_date=yesterday,
                )
            )
        )
    )
    assert violations(past) == [("approval_delegation.end_date", "IN_THE_PAST")]
    listed = await w.tk.ListApprovalDelegations(tka.ListApprovalDelegationsRequest())
    assert list(listed.approval_delegations) == []


async def test_a_batch_decision_answers_each_entry_on_its_own(boot: Any) -> None:
    w = await boot()
    f = w.f
    mine = [await submit(w, entry(w, f"2026-11-0{d}", "8")) for d in (2, 3, 4)]
    leads = await submit(w, entry(w, "2026-11-05", "8", project="p2"))
    reply = await w.tk.BatchApproveTimeEntries(
        tka.BatchApproveTimeEntriesRequest(
            approver_id=f["boss"].id, ids=[mine[0].id, leads.id, "no-such-entry", mine[1].id, mine[0].id]
        )
    )
    got = [(r.id, r.time_entry.status, r.error.code, r.error.reason) for r in reply.results]
    assert got == [
        (mine[0].id, APPROVED, "", ""),
        (leads.id, tk.TIME_ENTRY_STATUS_UNSPECIFIED, "PERMISSION_DENIED", "NOT_APPROVER"),
        ("no-such-entry", tk.TIME_ENTRY_STATUS_UNSPECIFIED, "NOT_FOUND", "NOT_FOUND"),
        (mine[1].id, APPROVED, "", ""),
        (mine[0].id, APPROVED, "", ""),
    ]
    declined = await w.tk.BatchDeclineTimeEntries(
        tka.BatchDeclineTimeEntriesRequest(
            approver_id=f["boss"].id, ids=[mine[2].id, mine[0].id], reason="dup"
        )
    )
    assert [(r.time_entry.status, r.error.reason) for r in declined.results] == [
        (tk.TIME_ENTRY_STATUS_DECLINED, ""),
        (tk.TIME_ENTRY_STATUS_UNSPECIFIED, "NOT_PENDING"),
    ]
    no_reason = await failure(
        w.tk.BatchDeclineTimeEntries(
            tka.BatchDeclineTimeEntriesRequest(approver_id=f["boss"].id, ids=[leads.id])
        )
    )
    assert violations(no_reason) == [("reason", "REQUIRED")]

    async def settled() -> bool:
        return len(await w.events.of("approved")) == 2 and len(await w.events.of("declined")) == 1

    await eventually(settled)
    published = {e.time_entry.id: e.time_entry for e in await w.events.of("approved")}
    assert sorted(published) == sorted([mine[0].id, mine[1].id])
    for entry_id, as_published in published.items():
        stored = (await w.tk.GetTimeEntry(tka.GetTimeEntryRequest(id=entry_id))).time_entry
        assert (as_published.status, as_published.etag) == (APPROVED, stored.etag)
    # The subjects carry the entry's project, like submitted and reversed.
    subjects = [s for s, _ in await w.events.all() if not s.startswith("time.entry.submitted.")]
    assert sorted(subjects) == [f"time.entry.approved.{f['project'].id}"] * 2 + [
        f"time.entry.declined.{f['project'].id}"
    ]


@pytest.mark.dates
async def test_time_waiting_past_the_sla_climbs_one_level_with_an_event(boot: Any) -> None:
    # An SLA of a second of working time, all of it working time, and a sweep every 0.2 s; at
    # most one level up.
    w = await boot(
        round_the_clock=True,
        approval_sla_hours=Decimal(1) / 3600,
        escalation_interval_seconds=0.2,
        max_escalation_level=1,
    )
    f = w.f
    waiting = await submit(w, entry(w, "2026-11-02", "8", project="p2"))
    assert (waiting.approver_id, waiting.escalation_level) == (f["lead"].id, 0)

    async def escalated() -> bool:
        got = (await w.tk.GetTimeEntry(tka.GetTimeEntryRequest(id=waiting.id))).time_entry
        return got.escalation_level == 1

    await eventually(escalated)
    got = (await w.tk.GetTimeEntry(tka.GetTimeEntryRequest(id=waiting.id))).time_entry
    assert (got.status, got.approver_id) == (PENDING, f["director"].id)
    assert got.queue_time.ToDatetime() > waiting.queue_time.ToDatetime()

    async def published() -> bool:
        return len(await w.events.of("escalated")) == 1

    await eventually(published)
    (event,) = await w.events.of("escalated")
    assert (event.time_entry.id, event.previous_approver_id, event.escalation_level) == (
        waiting.id,
        f["lead"].id,
        1,
    )
    assert (event.time_entry.approver_id, event.time_entry.etag) == (f["director"].id, got.etag)
    assert [s for s, _ in await w.events.all() if ".escalated." in s] == [
        f"time.entry.escalated.{f['p2'].id}"
    ]
    # The level cap holds: it stays with the director however long it waits.
    await asyncio.sleep(1.5)
    assert len(await w.events.of("escalated")) == 1
    assert (await failure(approve(w, waiting.id, "lead"))).code() == grpc.StatusCode.PERMISSION_DENIED
    queue = await w.tk.ListApprovals(tka.ListApprovalsRequest(approver_id=f["director"].id))
    assert [e.id for e in queue.time_entries] == [waiting.id]
    assert (await approve(w, waiting.id, "director")).status == APPROVED


@pytest.mark.dates
async def test_the_top_of_the_reporting_line_keeps_its_queue(boot: Any, database_url: str) -> None:
    w = await boot(
        round_the_clock=True, approval_sla_hours=Decimal(1) / 3600, escalation_interval_seconds=0.2
    )
    # Time on P1 waits for boss, who has no line manager: there is no next level.
    e = await submit(w, entry(w, "2026-11-02", "8"))

    async def looked_at() -> bool:
        engine = create_engine(database_url)
        try:
            async with engine.connect() as conn:
                checked = await conn.scalar(
                    sa.text("SELECT escalation_checked_time FROM timekeeping.time_entries WHERE id = :id"),
                    {"id": e.id},
                )
        finally:
            await engine.dispose()
        return checked is not None

    await eventually(looked_at)
    got = (await w.tk.GetTimeEntry(tka.GetTimeEntryRequest(id=e.id))).time_entry
    assert (got.approver_id, got.escalation_level, got.queue_time) == (w.f["boss"].id, 0, e.queue_time)
    assert await w.events.of("escalated") == []


async def test_a_reversal_cancels_approved_time_and_the_summary_nets_it(boot: Any) -> None:
    w = await boot()
    f = w.f
    original = await approve(w, (await submit(w, entry(w, "2026-11-02", "16"))).id)
    refused = await failure(
        w.tk.ReverseTimeEntry(
            tka.ReverseTimeEntryRequest(id=original.id, actor_id=f["dev"].id, reason="oops")
        )
    )
    assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
    no_reason = await failure(
        w.tk.ReverseTimeEntry(tka.ReverseTimeEntryRequest(id=original.id, actor_id=f["boss"].id))
    )
    assert violations(no_reason) == [("reason", "REQUIRED")]
    done = await w.tk.ReverseTimeEntry(
        tka.ReverseTimeEntryRequest(id=original.id, actor_id=f["boss"].id, reason="wrong project")
    )
    assert (done.original.status, done.original.reversed_by_id) == (REVERSED, done.reversal.id)
    r = done.reversal
    assert (
        r.status,
        r.hours,
        r.reverses_id,
        r.work_date,
        r.project_id,
        r.consultant_id,
        r.labor_category_id,
    ) == (
        APPROVED,
        "-16.00",
        original.id,
        "2026-11-02",
        f["project"].id,
        f["dev"].id,
        f["lc"].id,
    )
    assert not done.HasField("replacement")
    again = await failure(
        w.tk.ReverseTimeEntry(tka.ReverseTimeEntryRequest(id=original.id, actor_id=f["boss"].id, reason="x"))
    )
    assert again.code() == grpc.StatusCode.FAILED_PRECONDITION
    # The day is free again: 16 reversed hours no longer count towards the 24-hour limit.
    assert (await submit(w, entry(w, "2026-11-02", "12"))).status == PENDING

    period = tka.SummarizeApprovedTimeRequest(period_start="2026-11-01", period_end="2026-11-30")
    (summary,) = (await w.tk.SummarizeApprovedTime(period)).projects
    assert (summary.entry_count, summary.hours, summary.billable_hours) == (2, "0.00", "0.00")
    assert sorted((e.time_entry_id, e.hours) for e in summary.entries) == sorted(
        [(original.id, "16.00"), (r.id, "-16.00")]
    )

    async def published() -> bool:
        return len(await w.events.of("reversed")) == 1

    await eventually(published)
    (event,) = await w.events.of("reversed")
    assert (event.original.status, event.reversal.hours, event.reversal.status) == (
        REVERSED,
        "-16.00",
        APPROVED,
    )
    assert not event.HasField("replacement")
    subjects = [s for s, _ in await w.events.all() if ".reversed." in s]
    assert subjects == [f"time.entry.reversed.{f['project'].id}"]


async def test_a_replacement_takes_over_the_reference_and_goes_through_approval_again(boot: Any) -> None:
    w = await boot()
    f = w.f
    ref = types_pb2.ExternalRef(system="harvest", id="t-9")
    original = await approve(w, (await submit(w, entry(w, "2026-11-02", "8", external_ref=ref))).id)
    fixed = entry(w, "2026-11-02", "6", external_ref=ref, notes="corrected")
    bad = entry(w, "2026-11-02", "6.1", project="p2")
    invalid = await failure(
        w.tk.ReverseTimeEntry(
            tka.ReverseTimeEntryRequest(id=original.id, actor_id=f["boss"].id, reason="fix", replacement=bad)
        )
    )
    assert invalid.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(invalid) == [("replacement.hours", "HOURS_NOT_QUARTER")]
    unchanged = (await w.tk.GetTimeEntry(tka.GetTimeEntryRequest(id=original.id))).time_entry
    assert (unchanged.status, unchanged.reversed_by_id) == (APPROVED, "")

    done = await w.tk.ReverseTimeEntry(
        tka.ReverseTimeEntryRequest(id=original.id, actor_id=f["boss"].id, reason="fix", replacement=fixed)
    )
    new = done.replacement
    assert (new.status, new.replaces_id, new.hours, new.approver_id) == (
        PENDING,
        original.id,
        "6.00",
        f["boss"].id,
    )
    # The reference now names the replacement: resending it is idempotent, resending the old
    # record conflicts with it, and the reversed original keeps its reference for the record.
    assert (await submit(w, fixed)).id == new.id
    old = await failure(submit(w, entry(w, "2026-11-02", "8", external_ref=ref)))
    assert old.code() == grpc.StatusCode.ALREADY_EXISTS
    assert new.id in (old.details() or "")
    assert done.original.external_ref.id == "t-9"

    async def published() -> bool:
        return len(await w.events.of("reversed")) == 1 and len(await w.events.of("submitted")) == 2

    await eventually(published)
    (event,) = await w.events.of("reversed")
    assert (event.replacement.id, event.replacement.replaces_id) == (new.id, original.id)
    assert (await approve(w, new.id)).status == APPROVED


async def test_a_reversed_entry_without_replacement_keeps_its_reference(boot: Any) -> None:
    w = await boot()
    ref = types_pb2.ExternalRef(system="harvest", id="t-5")
    original = await approve(w, (await submit(w, entry(w, "2026-11-02", "8", external_ref=ref))).id)
    await w.tk.ReverseTimeEntry(
        tka.ReverseTimeEntryRequest(id=original.id, actor_id=w.f["boss"].id, reason="not worked")
    )
    # Resending the old record cannot bring the reversed time back.
    resent = await submit(w, entry(w, "2026-11-02", "8", external_ref=ref))
    assert (resent.id, resent.status) == (original.id, REVERSED)


async def test_period_locks_refuse_time_and_reversals_until_reopened_with_a_reason(boot: Any) -> None:
    w = await boot()
    f = w.f
    approved = await approve(w, (await submit(w, entry(w, "2026-10-30", "8"))).id)

    async def lock(through: str) -> tk.PeriodLock:
        request = tka.CreatePeriodLockRequest(
            period_lock=tk.PeriodLock(
                legal_entity_id=f["le"].id,
                locked_through=through,
                reason="month end",
                locked_by_id="controller",
            )
        )
        return (await w.tk.CreatePeriodLock(request)).period_lock

    september = await lock("2026-09-30")
    october = await lock("2026-10-31")
    assert (await lock("2026-10-31")).id == october.id
    backwards = await failure(lock("2026-10-15"))
    assert backwards.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert [v.code for v in (await submit(w, entry(w, "2026-10-29", "8"))).violations] == ["PERIOD_LOCKED"]
    locked = await failure(
        w.tk.ReverseTimeEntry(tka.ReverseTimeEntryRequest(id=approved.id, actor_id=f["boss"].id, reason="x"))
    )
    assert locked.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "PERIOD_LOCKED" in str(locked.trailing_metadata())

    older = await failure(
        w.tk.ReopenPeriodLock(tka.ReopenPeriodLockRequest(id=september.id, actor_id="controller", reason="x"))
    )
    assert older.code() == grpc.StatusCode.FAILED_PRECONDITION
    no_reason = await failure(
        w.tk.ReopenPeriodLock(tka.ReopenPeriodLockRequest(id=october.id, actor_id="cfo"))
    )
    assert violations(no_reason) == [("reason", "REQUIRED")]
    reopened = (
        await w.tk.ReopenPeriodLock(
            tka.ReopenPeriodLockRequest(id=october.id, actor_id="cfo", reason="late timesheets")
        )
    ).period_lock
    assert (reopened.active, reopened.reopened_by_id, reopened.reopen_reason) == (
        False,
        "cfo",
        "late timesheets",
    )
    assert reopened.HasField("reopen_time")
    assert (await submit(w, entry(w, "2026-10-29", "8"))).status == PENDING
    assert [v.code for v in (await submit(w, entry(w, "2026-09-29", "8"))).violations] == ["PERIOD_LOCKED"]
    await w.tk.ReverseTimeEntry(
        tka.ReverseTimeEntryRequest(id=approved.id, actor_id=f["boss"].id, reason="x")
    )

    trail = await w.tk.ListPeriodLocks(tka.ListPeriodLocksRequest(legal_entity_id=f["le"].id))
    assert [(x.id, x.active, x.locked_by_id) for x in trail.period_locks] == [
        (october.id, False, "controller"),
        (september.id, True, "controller"),
    ]
    got = (await w.tk.GetPeriodLock(tka.GetPeriodLockRequest(id=october.id))).period_lock
    assert got == reopened


async def test_a_lock_on_a_legal_entity_master_data_does_not_know_is_refused(
    boot: Any, database_url: str
) -> None:
    w = await boot()
    typo = await failure(
        w.tk.CreatePeriodLock(
            tka.CreatePeriodLockRequest(
                period_lock=tk.PeriodLock(legal_entity_id="le-typo", locked_through="2026-10-31", reason="x")
            )
        )
    )
    assert typo.code() == grpc.StatusCode.NOT_FOUND
    assert "legal_entity_id" in (typo.details() or "")
    assert violations(typo) == [("period_lock.legal_entity_id", "LEGAL_ENTITY_NOT_FOUND")]
    assert list((await w.tk.ListPeriodLocks(tka.ListPeriodLocksRequest())).period_locks) == []
    # A lock stored before the check existed cannot be reopened under an unknown entity either.
    stray = str(uuid.uuid4())
    engine = create_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(
                sa.text(
                    "INSERT INTO timekeeping.period_locks (id, legal_entity_id, locked_through, reason,"
                    " create_time) VALUES (:id, 'le-typo', '2026-10-31', 'x', now())"
                ),
                {"id": stray},
            )
    finally:
        await engine.dispose()
    reopen = await failure(
        w.tk.ReopenPeriodLock(tka.ReopenPeriodLockRequest(id=stray, actor_id="cfo", reason="typo"))
    )
    assert reopen.code() == grpc.StatusCode.NOT_FOUND
    assert violations(reopen) == [("legal_entity_id", "LEGAL_ENTITY_NOT_FOUND")]
    assert (await w.tk.GetPeriodLock(tka.GetPeriodLockRequest(id=stray))).period_lock.active
    # The real entity is known (projected from its event, or read from master data over gRPC
    # when the event has not arrived yet), and the lock is stored.
    real = await w.tk.CreatePeriodLock(
        tka.CreatePeriodLockRequest(
            period_lock=tk.PeriodLock(legal_entity_id=w.f["le"].id, locked_through="2026-10-31", reason="x")
        )
    )
    assert real.period_lock.active


async def projected(database_url: str) -> tuple[int, int]:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            records = await conn.scalar(sa.text("SELECT count(*) FROM timekeeping.md_projection"))
            inbox = await conn.scalar(
                sa.text("SELECT count(*) FROM timekeeping.inbox WHERE consumer = 'timekeeping-md'")
            )
            return int(records or 0), int(inbox or 0)
    finally:
        await engine.dispose()


async def test_the_projection_rebuilds_from_the_stream_on_demand(boot: Any, database_url: str) -> None:
    w = await boot()
    # Wait until every md event timekeeping projects has been applied.
    await eventually(lambda: _settled(database_url, w.events.url))
    before = await projected(database_url)
    assert before[0] > 0
    engine = create_engine(database_url)
    try:
        async with engine.begin() as conn:  # a corrupted copy: the rebuild must not keep it
            await conn.execute(sa.text("UPDATE timekeeping.md_projection SET payload = ''::bytea"))
    finally:
        await engine.dispose()
    reply = await w.tk.RebuildMasterDataProjection(tka.RebuildMasterDataProjectionRequest())
    assert reply.records_cleared == before[0]
    assert reply.replay_through_sequence > 0

    async def rebuilt() -> bool:
        return await projected(database_url) == before

    await eventually(rebuilt)
    ok = await submit(w, entry(w, "2026-11-02", "8"))
    assert (ok.status, ok.approver_id) == (PENDING, w.f["boss"].id)


class CountingStub:
    """The real master-data stub, counting the calls made through it and how many overlap."""

    def __init__(self, stub: Any) -> None:
        self._stub = stub
        self.calls: list[tuple[str, str]] = []
        self.in_flight = 0
        self.peak = 0

    def __getattr__(self, method: str) -> Callable[..., Awaitable[Any]]:
        real = getattr(self._stub, method)

        async def call(request: Any, **kwargs: Any) -> Any:
            self.calls.append((method, getattr(request, "id", "")))
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            try:
                return await real(request, **kwargs)
            finally:
                self.in_flight -= 1

        return call


async def test_unknown_ids_are_asked_once_a_request_side_by_side_and_again_next_time(
    boot: Any, database_url: str, instant: dt.datetime
) -> None:
    w = await boot()
    unknown = [f"no-such-project-{i}" for i in range(10)]
    # Each unknown project named by three rows.
    batch = [
        Submission(w.f["dev"].id, pid, dt.date(2026, 11, 2), Decimal(1), None, None, str(n), None)
        for n in range(3)
        for pid in unknown
    ]
    engine = create_engine(database_url)
    channel = identity.channel(w.masterdata_address, identity.run_signer())
    stub = CountingStub(mdg.MasterDataServiceStub(channel))
    app = Timekeeping(
        lambda: TimekeepingUnitOfWork(engine, MasterDataReader(stub, md_projection)),  # type: ignore[arg-type]
        clock=StartedClock(instant),
    )
    try:
        with bound_principal(identity.admin()):
            first = await app.submit(batch)
        asked = sorted(i for method, i in stub.calls if method == "GetProject")
        assert asked == sorted(unknown)
        assert stub.peak > 1
        assert {(r.entry.status, r.entry.violations[0].code) for r in first} == {
            (Status.REJECTED, "PROJECT_NOT_FOUND")
        }
        # Not remembered across requests: master data may know them by now.
        stub.calls.clear()
        with bound_principal(identity.admin()):
            await app.submit(batch[:1])
        assert [i for method, i in stub.calls if method == "GetProject"] == [unknown[0]]
    finally:
        await channel.close()
        await engine.dispose()


async def _settled(database_url: str, nats_url: str) -> bool:
    """Master data published everything and timekeeping's consumer acknowledged all of it."""
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            unpublished = await conn.scalar(
                sa.text("SELECT count(*) FROM masterdata.outbox WHERE published_at IS NULL")
            )
    finally:
        await engine.dispose()
    nc = await nats.connect(nats_url)
    try:
        info = await nc.jetstream().consumer_info("MD", "timekeeping-md")
    except nats.js.errors.NotFoundError:
        return False  # the service has not created its consumer yet
    finally:
        await nc.close()
    return unpublished == 0 and info.num_pending == 0 and info.num_ack_pending == 0


async def test_what_goes_straight_to_the_driver_is_inside_the_unit_of_work(
    database_url: str, instant: dt.datetime
) -> None:
    """The hot path writes through asyncpg under SQLAlchemy: leaving without commit keeps nothing."""
    await upgrade(database_url, SCHEMA, MIGRATIONS)
    engine = create_engine(database_url)
    now = instant

    def entries(n: int) -> list[TimeEntry]:
        return [
            TimeEntry(
                str(uuid.uuid4()),
                Submission("c", "p", dt.date(2026, 11, 2), Decimal(1), None, None, "", None),
                Status.PENDING_APPROVAL,
                create_time=now,
                update_time=now,
            )
            for _ in range(n)
        ]

    try:
        for n in (1, 60):  # a prepared INSERT, and COPY
            async with TimekeepingUnitOfWork(engine, None) as uow:  # type: ignore[arg-type]
                await uow.entries.advisory_locks([(1, 1)])
                await uow.entries.add_all(entries(n))
                # no commit: everything rolls back, the driver's writes included
        async with engine.connect() as conn:
            assert await conn.scalar(sa.text("SELECT count(*) FROM timekeeping.time_entries")) == 0
        async with TimekeepingUnitOfWork(engine, None) as uow:  # type: ignore[arg-type]
            await uow.entries.add_all(entries(60))
            await uow.commit()
        async with engine.connect() as conn:
            assert await conn.scalar(sa.text("SELECT count(*) FROM timekeeping.time_entries")) == 60
    finally:
        await engine.dispose()


@pytest.mark.dates
async def test_replicas_sweeping_at_once_escalate_each_entry_once(
    boot: Any, database_url: str, instant: dt.datetime
) -> None:
    w = await boot()
    waiting = [await submit(w, entry(w, f"2026-11-{d:02d}", "1", project="p2")) for d in range(2, 22)]
    assert {e.approver_id for e in waiting} == {w.f["lead"].id}
    # 48 working hours (Monday to Friday, 09:00-17:00) are six working days: a month on, every
    # entry is due whatever day the run's instant is.
    later = FixedClock(instant + dt.timedelta(days=30))
    replicas = []
    channels = []
    for _ in range(2):  # two replicas: their own engine, their own master-data channel
        engine = create_engine(database_url)
        channel = identity.channel(w.masterdata_address, identity.run_signer())
        channels.append((engine, channel))
        reader = MasterDataReader(mdg.MasterDataServiceStub(channel), md_projection)
        replicas.append(
            Timekeeping(
                lambda engine=engine, reader=reader: TimekeepingUnitOfWork(engine, reader),
                approval_sla=dt.timedelta(hours=48),
                clock=later,
            )
        )
    try:
        # Small sweeps racing each other until nothing is due.
        while sum(await asyncio.gather(*(r.escalate_due(limit=3) for r in replicas))):
            pass
    finally:
        for engine, channel in channels:
            await channel.close()
            await engine.dispose()
    for e in waiting:
        got = (await w.tk.GetTimeEntry(tka.GetTimeEntryRequest(id=e.id))).time_entry
        assert (got.approver_id, got.escalation_level) == (w.f["director"].id, 1)

    async def all_published() -> bool:
        return len(await w.events.of("escalated")) >= len(waiting)

    await eventually(all_published)
    await asyncio.sleep(0.3)
    assert sorted(e.time_entry.id for e in await w.events.of("escalated")) == sorted(e.id for e in waiting)


@pytest.mark.dates
async def test_entries_queued_before_due_times_were_stored_get_one_at_the_next_sweep(
    boot: Any, database_url: str, instant: dt.datetime
) -> None:
    w = await boot()
    fresh = await submit(w, entry(w, "2026-11-02", "1", project="p2"))
    stale = await submit(w, entry(w, "2026-11-03", "1", project="p2"))
    engine = create_engine(database_url)
    channel = identity.channel(w.masterdata_address, identity.run_signer())
    try:
        async with engine.begin() as conn:  # as migration 0004 leaves them; one waiting for a month
            await conn.execute(
                sa.text(
                    "UPDATE timekeeping.time_entries SET escalation_due_time = NULL,"
                    " queue_time = queue_time - CASE WHEN id = :stale THEN interval '30 days'"
                    " ELSE interval '0' END"
                ),
                {"stale": stale.id},
            )
        reader = MasterDataReader(mdg.MasterDataServiceStub(channel), md_projection)
        app = Timekeeping(
            lambda: TimekeepingUnitOfWork(engine, reader),
            clock=FixedClock(instant + dt.timedelta(minutes=5)),
            approval_sla=dt.timedelta(hours=48),
        )
        assert await app.escalate_due() == 2
        assert await app.escalate_due() == 0  # the fresh one is not due: nothing to look at
        async with engine.connect() as conn:
            due = await conn.scalar(
                sa.text("SELECT escalation_due_time FROM timekeeping.time_entries WHERE id = :id"),
                {"id": fresh.id},
            )
    finally:
        await channel.close()
        await engine.dispose()
    moved = (await w.tk.GetTimeEntry(tka.GetTimeEntryRequest(id=stale.id))).time_entry
    assert (moved.approver_id, moved.escalation_level) == (w.f["director"].id, 1)
    kept = (await w.tk.GetTimeEntry(tka.GetTimeEntryRequest(id=fresh.id))).time_entry
    assert (kept.approver_id, kept.escalation_level, kept.etag) == (w.f["lead"].id, 0, fresh.etag)
    assert due == sla_due(
        fresh.queue_time.ToDatetime(dt.UTC), dt.timedelta(hours=48), DEFAULT_CALENDAR, "UTC"
    )


# 22:00 UTC on Sunday 28 February 2027: 08:00 on Monday 1 March in Brisbane (UTC+10), still
# 14:00 on Sunday 28 February in Los Angeles (UTC-8).
BRISBANE_MONDAY_MORNING = dt.datetime(2027, 2, 28, 22, 0, tzinfo=dt.UTC)


@pytest.mark.dates
async def test_today_is_the_consultants_own_day_in_their_time_zone(boot: Any, database_url: str) -> None:
    w = await boot(clock_start=BRISBANE_MONDAY_MORNING)
    f = w.f

    async def legal_entity(code: str, zone: str) -> Any:
        le = md.LegalEntity(code=code, name=code, base_currency="GBP", time_zone=zone)
        return (await w.md.CreateLegalEntity(mda.CreateLegalEntityRequest(legal_entity=le))).legal_entity

    async def staffed(code: str, le: Any, zone: str = "") -> Any:
        c = md.Consultant(
            code=code,
            name=code,
            legal_entity_id=le.id,
            labor_category_id=f["lc"].id,
            manager_id=f["boss"].id,
            active_from="2020-01-01",
            time_zone=zone,
        )
        consultant = (await w.md.CreateConsultant(mda.CreateConsultantRequest(consultant=c))).consultant
        a = md.Assignment(
            project_id=f["project"].id,
            consultant_id=consultant.id,
            labor_category_id=f["lc"].id,
            start_date="2026-01-01",
            allocation_percent="50",
        )
        await w.md.CreateAssignment(mda.CreateAssignmentRequest(assignment=a))
        return consultant

    brisbane = await legal_entity("AU", "Australia/Brisbane")
    los_angeles = await legal_entity("US", "America/Los_Angeles")
    in_brisbane = await staffed("BNE", brisbane)
    in_los_angeles = await staffed("LAX", los_angeles)
    # Employed in Brisbane, working from Los Angeles: their own zone decides.
    travelling = await staffed("TRV", brisbane, "America/Los_Angeles")

    async def monday(consultant: Any) -> tk.TimeEntry:
        return await submit(
            w,
            tk.TimeEntry(
                consultant_id=consultant.id, project_id=f["project"].id, work_date="2027-03-01", hours="2"
            ),
        )

    logged = await monday(in_brisbane)
    assert (logged.status, list(logged.violations)) == (PENDING, [])
    for early in (in_los_angeles, travelling):
        refused = await monday(early)
        assert refused.status == REJECTED
        assert [(v.field, v.code) for v in refused.violations] == [("work_date", "DATE_IN_FUTURE")]
        assert "2027-02-28" in refused.violations[0].message

    # The approval SLA (48 working hours) runs in the project's legal entity's working hours:
    # UK, in UTC, with no calendar, so Monday to Friday, 09:00-17:00.
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            due = await conn.scalar(
                sa.text("SELECT escalation_due_time FROM timekeeping.time_entries WHERE id = :id"),
                {"id": logged.id},
            )
    finally:
        await engine.dispose()
    queued = logged.queue_time.ToDatetime(dt.UTC)
    assert queued >= BRISBANE_MONDAY_MORNING
    assert (
        due
        == sla_due(queued, dt.timedelta(hours=48), DEFAULT_CALENDAR, "UTC")
        == dt.datetime(2027, 3, 8, 17, tzinfo=dt.UTC)
    )
