"""Timekeeping use cases: submit, approve, decline, reverse, escalate, delegate, lock and reopen.

Each public method is one use case in one explicit unit of work: it commits its change and its
events together, or nothing.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any, TypeVar

from accrue.runtime import (
    AlreadyExists,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Violation,
)
from accrue.runtime.audit import note as audit_note
from accrue.runtime.clock import UTC_ZONE, Clock, local_date
from accrue.runtime.identity import Principal, current_principal
from accrue.runtime.validation import Violations
from accrue.services.timekeeping.adapters.proto import entry_event, escalated_event, reversed_event, to_proto
from accrue.services.timekeeping.adapters.repository import (
    CONSULTANT_DAY,
    EXTERNAL_REF,
    LEGAL_ENTITY,
    lock_key,
)
from accrue.services.timekeeping.adapters.unit_of_work import TimekeepingUnitOfWork
from accrue.services.timekeeping.domain.access import (
    EntryView,
    delegation_view,
    entry_view,
    not_found,
    reads_any_queue,
    reverses_any,
    scope_of,
    sees,
    submits_only_own_time,
)
from accrue.services.timekeeping.domain.approval import Delegation, check_delegation, escalation_target
from accrue.services.timekeeping.domain.locks import PeriodLock
from accrue.services.timekeeping.domain.model import Status, Submission, TimeEntry
from accrue.services.timekeeping.domain.rules import Facts, evaluate
from accrue.services.timekeeping.domain.working_time import sla_due
from accrue.telemetry import get_logger
from accrue.timekeeping.v1 import resources_pb2 as tk

log = get_logger(__name__)

MAX_BATCH = 1000
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
# How far up the reporting lines escalation looks for someone who may approve.
MAX_CHAIN = 8

Replay = Callable[[], Awaitable[int]]
T = TypeVar("T")


@dataclass
class SubmitResult:
    """The stored entry, or the entry an external_ref already names with other content."""

    entry: TimeEntry
    conflict: bool = False
    # The entry as its event carries it, when this call published one: the reply reuses it.
    wire: tk.TimeEntry | None = None
    # The reference names an entry the caller may not see: the reply must not show it.
    hidden: bool = False


@dataclass
class Decision:
    """One entry of a batch approval or decline: the entry after it, or why it failed."""

    entry_id: str
    entry: TimeEntry | None
    error: DomainError | None = None


@dataclass
class Correction:
    """What a reversal made: the reversed original, its negative twin and any replacement."""

    original: TimeEntry
    reversal: TimeEntry
    replacement: TimeEntry | None


def _entity_keys(legal_entity_ids: Iterable[str]) -> list[tuple[int, int]]:
    return [lock_key(LEGAL_ENTITY, le) for le in legal_entity_ids]


def _day_keys(subs: Sequence[Submission]) -> list[tuple[int, int]]:
    # Submissions for the same consultant-day serialize, so two cannot both pass the daily
    # limit; those for the same external_ref too, so two cannot both claim it.
    keys = [lock_key(CONSULTANT_DAY, s.consultant_id, s.work_date.isoformat()) for s in subs]
    keys += [lock_key(EXTERNAL_REF, *s.external_ref) for s in subs if s.external_ref]
    return keys


class Timekeeping:
    """The timekeeping application service."""

    def __init__(
        self,
        uow_factory: Callable[[], TimekeepingUnitOfWork],
        *,
        clock: Clock,
        future_allowance_days: int = 0,
        approval_sla: dt.timedelta = dt.timedelta(hours=48),
        max_escalation_level: int = 3,
        replay_masterdata: Replay | None = None,
    ) -> None:
        self._uow = uow_factory
        self._future_allowance_days = future_allowance_days
        # Working hours of the project's legal entity's calendar, not wall-clock hours.
        self._approval_sla = approval_sla
        self._max_escalation_level = max_escalation_level
        self._replay_masterdata = replay_masterdata
        self._clock = clock

    # -- submission --------------------------------------------------------------------------

    async def submit(self, submissions: Sequence[Submission]) -> list[SubmitResult]:
        """Validate and store entries; valid ones wait for their approver, invalid are REJECTED.

        Idempotent by external_ref: the same reference with the same content returns the stored
        entry and publishes nothing; with other content it is a conflict (a REJECTED entry may
        be corrected and resubmitted under its reference).

        own-time (domain.access): a consultant records only their own time (anything else
        refuses the whole call, nothing stored); an integration client records for the
        consultants of its legal entities, and one of another entity is as unknown to it.
        """
        if len(submissions) > MAX_BATCH:
            raise InvalidArgument(
                f"a batch holds at most {MAX_BATCH} entries, got {len(submissions)}",
                [Violation("time_entries", "BATCH_TOO_LARGE", f"at most {MAX_BATCH} entries")],
            )
        principal = current_principal()
        own_only = submits_only_own_time(principal)
        if own_only:
            _require_own_time(principal, submissions)
        # Own time is the consultant's wherever it is recorded; others are held to their scope.
        scope = None if own_only else scope_of(principal)
        now = self._clock()
        results: list[SubmitResult | None] = [None] * len(submissions)
        async with self._uow() as uow:
            await uow.facts.load(submissions)
            legal_entities = self._legal_entities(uow, submissions)
            await uow.entries.advisory_locks(_day_keys(submissions), shared=_entity_keys(legal_entities))
            refs = [s.external_ref for s in submissions if s.external_ref]
            existing, same_day = await uow.entries.existing(
                refs, [(s.consultant_id, s.work_date) for s in submissions]
            )
            locked = await self._locked_through(uow, legal_entities)
            to_validate: list[tuple[int, Submission, TimeEntry | None]] = []
            claimed: dict[tuple[str, str], int] = {}
            # A row repeating an earlier row's external_ref in the same batch -> that first row.
            repeats: dict[int, int] = {}
            for i, sub in enumerate(submissions):
                ref = sub.external_ref
                prior = existing.get(ref) if ref else None
                if ref and ref in claimed:
                    repeats[i] = claimed[ref]
                    continue
                if ref:
                    claimed[ref] = i
                if prior is not None and not _may_see_prior(principal, own_only, prior):
                    # Taken by an entry the caller may not read: a conflict that names nothing.
                    results[i] = SubmitResult(prior, conflict=True, hidden=True)
                    continue
                if prior is not None and prior.status is not Status.REJECTED:
                    results[i] = SubmitResult(
                        prior, conflict=prior.submission.fingerprint() != sub.fingerprint()
                    )
                    continue
                if prior is not None and prior.submission.fingerprint() == sub.fingerprint():
                    results[i] = SubmitResult(prior)
                    continue
                to_validate.append((i, sub, prior))

            validated = self._evaluate(
                uow, [(sub, prior) for _, sub, prior in to_validate], same_day, locked, now, scope
            )
            new: list[TimeEntry] = []
            for (i, _, prior), entry in zip(to_validate, validated, strict=True):
                wire = to_proto(entry)
                if entry.status is Status.PENDING_APPROVAL:
                    uow.events.add(entry_event("submitted", entry, wire, occurred_at=now))
                if prior is None:
                    new.append(entry)
                else:
                    await uow.entries.replace(entry)
                audit_note(
                    "time_entry",
                    entry.id,
                    entry.legal_entity_id,
                    _audited(prior) if prior is not None else None,
                    _audited(entry),
                )
                results[i] = SubmitResult(entry, wire=wire)
            await uow.entries.add_all(new)
            await uow.commit()

        for i, first in repeats.items():
            # The reference already resolves to one entry (stored, or made by the first row):
            # the repeat is judged against that entry's content, not the first row's, so a
            # row repeating a conflicting row conflicts too instead of returning the entry.
            base = results[first]
            assert base is not None
            conflict = base.hidden or base.entry.submission.fingerprint() != submissions[i].fingerprint()
            results[i] = SubmitResult(base.entry, conflict=conflict, hidden=base.hidden)
        assert all(r is not None for r in results)
        return [r for r in results if r is not None]

    def _evaluate(
        self,
        uow: TimekeepingUnitOfWork,
        items: Sequence[tuple[Submission, TimeEntry | None]],
        same_day: dict[tuple[str, dt.date], list[TimeEntry]],
        locked: Mapping[str, dt.date],
        now: dt.datetime,
        scope: frozenset[str] | None = None,
    ) -> list[TimeEntry]:
        """Evaluate submissions in order against the loaded facts and what is already recorded.

        Nothing is written here. Each valid entry counts towards its day (and may be the
        duplicate of) the ones after it in the same batch. A consultant outside scope (the
        caller's legal entities, when it is limited) is judged as unknown: the same
        CONSULTANT_NOT_FOUND a missing one gets, so the reply tells nothing of them.
        """
        out: list[TimeEntry] = []
        todays: dict[str, dt.date] = {}
        dues: dict[str, dt.datetime] = {}
        for sub, prior in items:
            project = uow.facts.project(sub.project_id)
            consultant = uow.facts.consultant(sub.consultant_id)
            assignments = uow.facts.assignments(sub.project_id, sub.consultant_id)
            day = same_day.setdefault((sub.consultant_id, sub.work_date), [])
            if consultant is not None and scope is not None and consultant.legal_entity_id not in scope:
                # Judged as unknown, with nothing of theirs: no staffing, no time on the day.
                consultant, assignments, day = None, (), []
            # "Today" is the consultant's: in their own zone, else their legal entity's.
            if consultant is not None:
                zone_name = uow.facts.consultant_zone(consultant)
            elif project is not None:
                zone_name = uow.facts.legal_entity_zone(project.legal_entity_id)
            else:
                zone_name = UTC_ZONE
            if zone_name not in todays:
                todays[zone_name] = local_date(now, zone_name)
            facts = Facts(
                project=project,
                consultant=consultant,
                assignments=assignments,
                pricing=uow.facts.pricing(sub.project_id),
                locked_through=locked.get(consultant.legal_entity_id) if consultant else None,
                hours_already_on_day=sum((e.submission.hours for e in day), Decimal(0)),
                today=todays[zone_name],
                future_allowance_days=self._future_allowance_days,
                same_day=tuple(day),
            )
            verdict = evaluate(sub, facts)
            status = Status.REJECTED if verdict.violations else Status.PENDING_APPROVAL
            due = None
            if status is Status.PENDING_APPROVAL and project is not None:
                if project.legal_entity_id not in dues:
                    dues[project.legal_entity_id] = self._due(uow, project.legal_entity_id, now)
                due = dues[project.legal_entity_id]
            entry = TimeEntry(
                id=prior.id if prior else str(uuid.uuid4()),
                submission=sub,
                status=status,
                violations=verdict.violations,
                labor_category_id=verdict.labor_category_id or sub.labor_category_id or "",
                billable=verdict.billable,
                approver_id=verdict.approver_id if status is Status.PENDING_APPROVAL else "",
                legal_entity_id=project.legal_entity_id if project else "",
                customer_id=project.customer_id if project else "",
                rate=verdict.rate,
                rate_currency=verdict.rate_currency,
                likely_duplicate_of_id=verdict.likely_duplicate_of_id,
                queue_time=now if status is Status.PENDING_APPROVAL else None,
                escalation_due_time=due,
                version=prior.version + 1 if prior else 1,
                create_time=prior.create_time if prior else now,
                update_time=now,
            )
            if status is Status.PENDING_APPROVAL:
                day.append(entry)
            out.append(entry)
        return out

    def _due(self, uow: TimekeepingUnitOfWork, legal_entity_id: str, queued_at: dt.datetime) -> dt.datetime:
        """When an entry queued at queued_at escalates: the SLA in working hours of the legal
        entity's calendar, in its time zone (facts loaded)."""
        return sla_due(
            queued_at,
            self._approval_sla,
            uow.facts.calendar(legal_entity_id),
            uow.facts.legal_entity_zone(legal_entity_id),
        )

    @staticmethod
    def _legal_entities(uow: TimekeepingUnitOfWork, subs: Iterable[Submission]) -> set[str]:
        # A period lock covers the consultants a legal entity employs.
        return {c.legal_entity_id for s in subs if (c := uow.facts.consultant(s.consultant_id)) is not None}

    @staticmethod
    async def _locked_through(
        uow: TimekeepingUnitOfWork, legal_entity_ids: Collection[str]
    ) -> dict[str, dt.date]:
        # Read under the legal entities' shared advisory locks: submissions run side by side,
        # but a lock being set or reopened waits for them (and they for it), so none slips past.
        latest = await uow.locks.latest_active(legal_entity_ids)
        return {le: lock.locked_through for le, lock in latest.items()}

    # -- approval ----------------------------------------------------------------------------

    async def approve(self, entry_id: str) -> TimeEntry:
        """Approve as the resolved approver or their delegate (routed-approver); approving twice
        is harmless."""
        principal = current_principal()
        actor_id = principal.subject
        now = self._clock()
        async with self._uow() as uow:
            entry = await self._get_for_update(uow, entry_id, principal)
            before = _audited(entry)
            acting_for = await self._acting_for(uow, actor_id, entry.approver_id, now)
            if entry.approve(actor_id, now, acting_for):
                await uow.entries.save(entry, now)
                uow.events.add(entry_event("approved", entry, occurred_at=now))
                audit_note("time_entry", entry.id, entry.legal_entity_id, before, _audited(entry))
            await uow.commit()
        return entry

    async def decline(self, entry_id: str, reason: str) -> TimeEntry:
        """Decline as the resolved approver or their delegate (routed-approver), with a reason."""
        _require_reason(reason, "a decline needs a reason")
        principal = current_principal()
        actor_id = principal.subject
        now = self._clock()
        async with self._uow() as uow:
            entry = await self._get_for_update(uow, entry_id, principal)
            before = _audited(entry)
            acting_for = await self._acting_for(uow, actor_id, entry.approver_id, now)
            if entry.decline(actor_id, reason, acting_for):
                await uow.entries.save(entry, now)
                uow.events.add(entry_event("declined", entry, occurred_at=now))
                audit_note("time_entry", entry.id, entry.legal_entity_id, before, _audited(entry))
            await uow.commit()
        return entry

    async def decide_many(self, entry_ids: Sequence[str], decline_reason: str | None) -> list[Decision]:
        """Approve (or, with a reason, decline) many entries; each succeeds or fails on its own
        (routed-approver each; another legal entity's entry is NOT_FOUND like a missing one).

        One transaction: the decisions that succeed commit together with their events.
        """
        v = Violations()
        if not entry_ids:
            v.add("ids", "REQUIRED", "name at least one entry")
        elif len(entry_ids) > MAX_BATCH:
            v.add("ids", "BATCH_TOO_LARGE", f"at most {MAX_BATCH} entries, got {len(entry_ids)}")
        if decline_reason is not None:
            v.required("reason", decline_reason)
        v.raise_if_any("the batch is invalid")
        principal = current_principal()
        actor_id = principal.subject
        now = self._clock()
        out: list[Decision] = []
        async with self._uow() as uow:
            entries = await uow.entries.get_many(entry_ids, for_update=True)
            acting_for = await self._delegators(uow, actor_id, now)
            changed: dict[str, TimeEntry] = {}
            befores: dict[str, dict[str, Any]] = {}
            for entry_id in entry_ids:
                entry = entries.get(entry_id)
                if entry is None or not sees(principal, entry.legal_entity_id):
                    out.append(Decision(entry_id, None, not_found("time entry", entry_id)))
                    continue
                befores.setdefault(entry.id, _audited(entry))
                try:
                    if decline_reason is None:
                        done = entry.approve(actor_id, now, acting_for)
                    else:
                        done = entry.decline(actor_id, decline_reason, acting_for)
                except DomainError as exc:
                    out.append(Decision(entry_id, None, exc))
                    continue
                if done:
                    changed[entry.id] = entry
                out.append(Decision(entry_id, entry))
            # Saved first, so each event carries the entry's new version.
            await uow.entries.save_many(list(changed.values()), now)
            for entry in changed.values():
                uow.events.add(
                    entry_event("approved" if decline_reason is None else "declined", entry, occurred_at=now)
                )
                audit_note("time_entry", entry.id, entry.legal_entity_id, befores[entry.id], _audited(entry))
            await uow.commit()
        return out

    async def approvals(
        self, approver_id: str, page_size: int, page_token: str
    ) -> tuple[list[TimeEntry], str]:
        """An approver's queue: their pending entries and those of approvers who delegated to them
        today (routed-approver-or-scope).

        An approver lists its own queue (approver_id, when named, must be the caller); finance
        and auditors list anyone's, or with none named every pending entry; all within the
        caller's legal entities.
        """
        principal = current_principal()
        any_queue = reads_any_queue(principal)
        if approver_id and approver_id != principal.subject and not any_queue:
            raise PermissionDenied(
                f"approver_id names {approver_id!r}, but the caller is {principal.subject!r}; an "
                "approver lists only their own queue (rule routed-approver-or-scope)",
                [Violation("approver_id", "NOT_THE_CALLER", "approver_id must be the caller or left out")],
                reason="ACTOR_MISMATCH",
            )
        owner = approver_id or ("" if any_queue else principal.subject)
        filters: dict[str, Any] = {"status": str(Status.PENDING_APPROVAL)}
        if owner:
            async with self._uow() as uow:
                acting_for = await self._delegators(uow, owner, self._clock())
            filters["approver_ids"] = {owner, *acting_for}
        view = EntryView(legal_entity_ids=scope_of(principal))
        return await self._page_entries(filters, page_size, page_token, view)

    async def _acting_for(
        self, uow: TimekeepingUnitOfWork, actor_id: str, approver_id: str, now: dt.datetime
    ) -> frozenset[str]:
        if not actor_id or actor_id == approver_id:
            return frozenset()
        return await self._delegators(uow, actor_id, now)

    async def _delegators(
        self, uow: TimekeepingUnitOfWork, delegate_id: str, now: dt.datetime
    ) -> frozenset[str]:
        """The approvers delegate_id may act for now: each delegation covers days of its
        delegator, so it is judged on the delegator's own today (their zone, else their legal
        entity's)."""
        # Every zone's today is within a day of UTC's: read those, then judge each.
        utc_today = local_date(now, UTC_ZONE)
        found = await uow.delegations.live_for(
            delegate_id, utc_today - dt.timedelta(days=1), utc_today + dt.timedelta(days=1)
        )
        if not found:
            return frozenset()
        zones = await self._zones(uow, {d.delegator_id for d in found})
        return frozenset(
            d.delegator_id for d in found if d.active_on(local_date(now, zones.get(d.delegator_id, UTC_ZONE)))
        )

    @staticmethod
    async def _zones(uow: TimekeepingUnitOfWork, consultant_ids: set[str]) -> dict[str, str]:
        """Each known consultant's time zone (their own, else their legal entity's)."""
        found = await uow.facts.consultants(consultant_ids)
        await uow.facts.working_time({c.legal_entity_id for c in found.values()})
        return {cid: uow.facts.consultant_zone(c) for cid, c in found.items()}

    # -- corrections -------------------------------------------------------------------------

    async def reverse(self, entry_id: str, reason: str, replacement: Submission | None) -> Correction:
        """Reverse approved time with a linked negative entry, and optionally submit its correction.

        Within the caller's legal entities: finance reverses any approved entry, others only
        those they (or whoever delegated to them) approve; nobody their own time.
        The replacement is validated like any submission; if it breaks a rule, nothing is
        written and the violations come back (under `replacement.`), because a correction that
        only takes time away was not what the caller asked for.
        """
        _require_reason(reason, "a reversal needs a reason")
        principal = current_principal()
        actor_id = principal.subject
        now = self._clock()
        subs = [replacement] if replacement is not None else []
        async with self._uow() as uow:
            peek = await uow.entries.get(entry_id)
            if peek is None or not sees(principal, peek.legal_entity_id):
                raise not_found("time entry", entry_id)
            await uow.facts.load(subs)
            owners = await uow.facts.consultants({peek.submission.consultant_id})
            owner = owners.get(peek.submission.consultant_id)
            original_entity = owner.legal_entity_id if owner else peek.legal_entity_id
            entities = {original_entity, *self._legal_entities(uow, subs)}
            # The same lock order as a submission: advisory locks first, then rows.
            await uow.entries.advisory_locks(_day_keys(subs), shared=_entity_keys(entities))
            original = await self._get_for_update(uow, entry_id, principal)
            before = _audited(original)
            acting_for = await self._acting_for(uow, actor_id, original.approver_id, now)
            reversal = original.reverse(
                actor_id, reason, str(uuid.uuid4()), now, acting_for, any_approver=reverses_any(principal)
            )
            locked = await self._locked_through(uow, entities)
            through = locked.get(original_entity)
            if through is not None and original.submission.work_date <= through:
                raise FailedPrecondition(
                    f"time up to {through} is locked for the legal entity; reopen the period to "
                    f"reverse an entry of {original.submission.work_date}",
                    reason="PERIOD_LOCKED",
                )
            await uow.entries.save(original, now)
            await uow.entries.add_all([reversal])
            corrected = None
            if replacement is not None:
                corrected = await self._replacement(
                    uow, original, replacement, locked, now, scope_of(principal)
                )
                await uow.entries.add_all([corrected])
                uow.events.add(entry_event("submitted", corrected, occurred_at=now))
            uow.events.add(reversed_event(original, reversal, corrected, occurred_at=now))
            audit_note("time_entry", original.id, original.legal_entity_id, before, _audited(original))
            audit_note("time_entry", reversal.id, reversal.legal_entity_id, None, _audited(reversal))
            if corrected is not None:
                audit_note("time_entry", corrected.id, corrected.legal_entity_id, None, _audited(corrected))
            await uow.commit()
        return Correction(original, reversal, corrected)

    async def _replacement(
        self,
        uow: TimekeepingUnitOfWork,
        original: TimeEntry,
        sub: Submission,
        locked: Mapping[str, dt.date],
        now: dt.datetime,
        scope: frozenset[str] | None,
    ) -> TimeEntry:
        # Read after the original is saved REVERSED, so its hours no longer count on the day.
        named, same_day = await uow.entries.existing(
            [sub.external_ref] if sub.external_ref else [], [(sub.consultant_id, sub.work_date)]
        )
        if sub.external_ref and sub.external_ref != original.submission.external_ref:
            holder = named.get(sub.external_ref)
            if holder is not None:
                raise AlreadyExists(
                    f"external_ref {sub.external_ref} already names time entry {holder.id}",
                    reason="EXTERNAL_REF_CONFLICT",
                )
        (entry,) = self._evaluate(uow, [(sub, None)], same_day, locked, now, scope)
        if entry.status is Status.REJECTED:
            raise InvalidArgument(
                "the replacement breaks the rules; nothing was reversed",
                [replace(v, field=f"replacement.{v.field}") for v in entry.violations],
            )
        entry.replaces_id = original.id
        return entry

    # -- escalation --------------------------------------------------------------------------

    async def escalate_due(self, limit: int = 200) -> int:
        """Move entries whose SLA has run out to the next level; returns how many were looked at.

        The SLA counts working hours of the project's legal entity's calendar; each pending
        entry carries the instant it falls due. Safe with several replicas: each takes the rows
        it escalates FOR UPDATE SKIP LOCKED. An entry with nobody above its approver stays and
        is looked at again one SLA later.
        """
        now = self._clock()
        async with self._uow() as uow:
            due = await uow.entries.due_for_escalation(now, self._max_escalation_level, limit)
            if not due:
                return 0
            await uow.facts.working_time({e.legal_entity_id for e in due})
            ready: list[TimeEntry] = []
            not_yet: list[TimeEntry] = []
            for entry in due:
                if entry.escalation_due_time is None:
                    # Queued before due times were stored: its SLA runs from when it was queued
                    # (or last found nobody above its approver).
                    since = entry.escalation_checked_time or entry.queue_time or now
                    entry.escalation_due_time = self._due(uow, entry.legal_entity_id, since)
                    if entry.escalation_due_time > now:
                        not_yet.append(entry)
                        continue
                ready.append(entry)
            managers = await self._managers_above(uow, {e.approver_id for e in ready})
            stuck: list[TimeEntry] = []
            moved: list[tuple[TimeEntry, str]] = []
            for entry in ready:
                chain = _chain(entry.approver_id, managers)
                target = escalation_target(entry.approver_id, entry.submission.consultant_id, chain)
                next_due = self._due(uow, entry.legal_entity_id, now)
                if target is None:
                    entry.escalation_due_time = next_due
                    stuck.append(entry)
                    continue
                moved.append((entry, entry.escalate(target, now, next_due)))
            # Saved first, so each event carries the entry's new version.
            await uow.entries.save_many([entry for entry, _ in moved], now)
            for entry, previous in moved:
                uow.events.add(escalated_event(entry, previous, occurred_at=now))
            await uow.entries.set_escalation_due(stuck, checked=now)
            await uow.entries.set_escalation_due(not_yet)
            await uow.commit()
        if stuck:
            log.warning("escalation_has_no_next_level", entries=len(stuck))
        if moved:
            log.info("time_entries_escalated", entries=len(moved))
        return len(due)

    async def _managers_above(self, uow: TimekeepingUnitOfWork, approvers: set[str]) -> dict[str, str]:
        """Line manager by consultant, for the approvers and up their reporting lines."""
        managers: dict[str, str] = {}
        frontier = {a for a in approvers if a}
        for _ in range(MAX_CHAIN):
            todo = frontier - managers.keys()
            if not todo:
                break
            found = await uow.facts.consultants(todo)
            for consultant_id in todo:
                consultant = found.get(consultant_id)
                managers[consultant_id] = consultant.manager_id if consultant else ""
            frontier = {m for m in managers.values() if m}
        return managers

    # -- reads -------------------------------------------------------------------------------

    async def get(self, entry_id: str) -> TimeEntry:
        """One entry the caller may read (own-time-or-scope), or NOT_FOUND."""
        view = entry_view(current_principal())
        async with self._uow() as uow:
            entry = await uow.entries.get(entry_id)
        if entry is None or not view.shows(entry.submission.consultant_id, entry.legal_entity_id):
            raise not_found("time entry", entry_id)
        return entry

    async def list_entries(
        self, filters: Mapping[str, Any], page_size: int, page_token: str
    ) -> tuple[list[TimeEntry], str]:
        """A page of the entries the caller may read (own-time-or-scope) and the next page's token."""
        return await self._page_entries(filters, page_size, page_token, entry_view(current_principal()))

    async def _page_entries(
        self, filters: Mapping[str, Any], page_size: int, page_token: str, view: EntryView
    ) -> tuple[list[TimeEntry], str]:
        size = _page_size(page_size)
        after = _decode_token(page_token, dt.date.fromisoformat)
        async with self._uow() as uow:
            entries = await uow.entries.page(filters, after, size + 1, view)
        if len(entries) <= size:
            return entries, ""
        entries = entries[:size]
        last = entries[-1]
        return entries, f"{last.submission.work_date.isoformat()}/{last.id}"

    async def approved_time(
        self, period_start: str, period_end: str, legal_entity_id: str
    ) -> list[TimeEntry]:
        """Approved entries worked in the period (for reconciliation), reversals and reversed
        included; only the caller's legal entities (another entity named reads as one with none)."""
        scope = scope_of(current_principal())
        v = Violations()
        start = v.date("period_start", period_start)
        end = v.date("period_end", period_end)
        v.date_range("period_start", start, "period_end", end)
        v.raise_if_any("the period is invalid")
        assert start is not None
        assert end is not None
        if legal_entity_id and scope is not None and legal_entity_id not in scope:
            return []
        async with self._uow() as uow:
            return await uow.entries.approved_in(start, end, legal_entity_id, scope)

    # -- period locks ------------------------------------------------------------------------

    async def lock_period(self, legal_entity_id: str, through: dt.date, reason: str) -> PeriodLock:
        """Close a legal entity's time up to and including a day, as the caller.

        Locking the day already locked returns that lock; an earlier day is refused (reopen
        instead), since moving a lock back is a reopening and needs its reason. Another legal
        entity than the caller's is refused as an unknown one.
        """
        principal = current_principal()
        actor_id = principal.subject
        now = self._clock()
        async with self._uow() as uow:
            await _require_legal_entity(uow, legal_entity_id, "period_lock.legal_entity_id", principal)
            await uow.entries.advisory_locks([lock_key(LEGAL_ENTITY, legal_entity_id)])
            current = (await uow.locks.latest_active([legal_entity_id])).get(legal_entity_id)
            if current is not None and through == current.locked_through:
                return current
            if current is not None and through < current.locked_through:
                raise FailedPrecondition(
                    f"time is already locked through {current.locked_through} (lock {current.id}); "
                    "reopen it to move the lock back",
                    reason="ALREADY_LOCKED_LATER",
                )
            lock = PeriodLock(str(uuid.uuid4()), legal_entity_id, through, reason, actor_id, now)
            await uow.locks.add(lock)
            audit_note("period_lock", lock.id, legal_entity_id, None, _audited_lock(lock))
            await uow.commit()
        log.info("period_locked", legal_entity_id=legal_entity_id, locked_through=str(through), by=actor_id)
        return lock

    async def reopen_lock(self, lock_id: str, reason: str) -> PeriodLock:
        """Reopen the legal entity's latest lock, keeping who (the caller), when and why."""
        _require_reason(reason, "reopening a period needs a reason")
        principal = current_principal()
        actor_id = principal.subject
        now = self._clock()
        async with self._uow() as uow:
            peek = await uow.locks.get(lock_id)
            if peek is None or not sees(principal, peek.legal_entity_id):
                raise not_found("period lock", lock_id)
            await _require_legal_entity(uow, peek.legal_entity_id, "legal_entity_id", principal)
            await uow.entries.advisory_locks([lock_key(LEGAL_ENTITY, peek.legal_entity_id)])
            lock = await uow.locks.get(lock_id)
            assert lock is not None
            latest = (await uow.locks.latest_active([lock.legal_entity_id])).get(lock.legal_entity_id)
            before = _audited_lock(lock)
            lock.reopen(actor_id, reason, now, latest.id if latest else None)
            await uow.locks.save_reopening(lock)
            audit_note("period_lock", lock.id, lock.legal_entity_id, before, _audited_lock(lock))
            await uow.commit()
        log.warning(
            "period_reopened",
            legal_entity_id=lock.legal_entity_id,
            locked_through=str(lock.locked_through),
            by=actor_id,
            reason=reason,
        )
        return lock

    async def get_lock(self, lock_id: str) -> PeriodLock:
        """One lock of the caller's legal entities, or NOT_FOUND."""
        principal = current_principal()
        async with self._uow() as uow:
            lock = await uow.locks.get(lock_id)
        if lock is None or not sees(principal, lock.legal_entity_id):
            raise not_found("period lock", lock_id)
        return lock

    async def list_locks(
        self, legal_entity_id: str, page_size: int, page_token: str
    ) -> tuple[list[PeriodLock], str]:
        """Locks of the caller's legal entities, newest first: the audit trail of closing and reopening."""
        scope = scope_of(current_principal())
        size = _page_size(page_size)
        after = _decode_token(page_token, dt.datetime.fromisoformat)
        async with self._uow() as uow:
            locks = await uow.locks.page(legal_entity_id, after, size + 1, scope)
        if len(locks) <= size:
            return locks, ""
        locks = locks[:size]
        return locks, f"{locks[-1].create_time.isoformat()}/{locks[-1].id}"

    # -- delegations -------------------------------------------------------------------------

    async def delegate(self, delegate_id: str, start: dt.date, end: dt.date, reason: str) -> Delegation:
        """Let delegate_id act for the caller from start to end (own-delegation); both must be
        known consultants, the delegate one of the caller's legal entities (another entity's
        is as unknown)."""
        principal = current_principal()
        delegator_id = principal.subject
        now = self._clock()
        async with self._uow() as uow:
            known = await uow.facts.consultants({delegator_id, delegate_id})
            delegate = known.get(delegate_id)
            if (
                delegate is not None
                and delegate_id != delegator_id
                and not sees(principal, delegate.legal_entity_id)
            ):
                del known[delegate_id]
            # The days are the delegator's: "already passed" is judged on their own today.
            zones = await self._zones(uow, {delegator_id})
            today = local_date(now, zones.get(delegator_id, UTC_ZONE))
            problems = check_delegation(delegator_id, delegate_id, start, end, today)
            for field, consultant_id in (("delegator_id", delegator_id), ("delegate_id", delegate_id)):
                if consultant_id not in known:
                    problems.append(
                        Violation(field, "CONSULTANT_NOT_FOUND", f"no consultant with id {consultant_id!r}")
                    )
            if problems:
                raise InvalidArgument(
                    "the delegation is invalid",
                    [replace(p, field=f"approval_delegation.{p.field}") for p in problems],
                )
            delegation = Delegation(
                str(uuid.uuid4()),
                delegator_id,
                delegate_id,
                start,
                end,
                reason,
                now,
                legal_entity_id=known[delegator_id].legal_entity_id,
            )
            await uow.delegations.add(delegation)
            audit_note(
                "approval_delegation",
                delegation.id,
                delegation.legal_entity_id,
                None,
                _audited_delegation(delegation),
            )
            await uow.commit()
        return delegation

    async def revoke_delegation(self, delegation_id: str) -> Delegation:
        """End a delegation early (its delegator only: own-delegation); revoking twice is harmless.
        A delegation the caller may not read is NOT_FOUND."""
        principal = current_principal()
        view = delegation_view(principal)
        now = self._clock()
        async with self._uow() as uow:
            delegation = await uow.delegations.get(delegation_id, for_update=True)
            if delegation is None or not view.shows(
                delegation.delegator_id, delegation.delegate_id, delegation.legal_entity_id
            ):
                raise not_found("approval delegation", delegation_id)
            before = _audited_delegation(delegation)
            if delegation.revoke(principal.subject, now):
                await uow.delegations.save_revocation(delegation)
                audit_note(
                    "approval_delegation",
                    delegation.id,
                    delegation.legal_entity_id,
                    before,
                    _audited_delegation(delegation),
                )
            await uow.commit()
        return delegation

    async def get_delegation(self, delegation_id: str) -> Delegation:
        """One delegation the caller may read (own-delegation-or-scope), or NOT_FOUND."""
        view = delegation_view(current_principal())
        async with self._uow() as uow:
            delegation = await uow.delegations.get(delegation_id)
        if delegation is None or not view.shows(
            delegation.delegator_id, delegation.delegate_id, delegation.legal_entity_id
        ):
            raise not_found("approval delegation", delegation_id)
        return delegation

    async def list_delegations(
        self, filters: Mapping[str, Any], page_size: int, page_token: str
    ) -> tuple[list[Delegation], str]:
        """Delegations the caller may read (own-delegation-or-scope), newest first."""
        view = delegation_view(current_principal())
        size = _page_size(page_size)
        after = _decode_token(page_token, dt.datetime.fromisoformat)
        async with self._uow() as uow:
            found = await uow.delegations.page(filters, after, size + 1, view)
        if len(found) <= size:
            return found, ""
        found = found[:size]
        return found, f"{found[-1].create_time.isoformat()}/{found[-1].id}"

    # -- master-data projection --------------------------------------------------------------

    # -- billing's view ----------------------------------------------------------------------

    async def record_invoiced(
        self, uow: TimekeepingUnitOfWork, invoice_id: str, entry_ids: Iterable[str]
    ) -> int:
        """An invoice (a draft or later) bills these entries: they show its id from now on.

        Called for every billing.invoice.drafted, which billing sends again with the whole
        invoice when late work joins a draft, so it only touches entries not yet marked. The
        caller's unit of work commits.
        """
        return await uow.entries.mark_invoiced(entry_ids, invoice_id, self._clock())

    async def record_voided(self, uow: TimekeepingUnitOfWork, invoice_id: str) -> int:
        """A voided invoice bills nothing: its entries are unbilled again until the next run
        drafts them onto another invoice."""
        return await uow.entries.clear_invoice(invoice_id, self._clock())

    async def rebuild_projection(self) -> tuple[int, int]:
        """Clear the projection and its consumer's inbox, then replay the MD stream from the start.

        In that order: an event applied between the two steps is kept (and skipped on replay);
        one applied before is cleared and applied again. Meanwhile validation reads what is
        missing from master data over gRPC. Returns (records cleared, replay-through sequence).
        """
        if self._replay_masterdata is None:
            raise FailedPrecondition(
                "this instance has no event backbone to replay from", reason="NO_BACKBONE"
            )
        async with self._uow() as uow:
            cleared = await uow.projection.clear()
            audit_note("masterdata_projection", "timekeeping", "", {"records": cleared}, {"records": 0})
            await uow.commit()
        through = await self._replay_masterdata()
        log.warning("masterdata_projection_rebuild_started", cleared=cleared, replay_through=through)
        return cleared, through

    async def _get_for_update(
        self, uow: TimekeepingUnitOfWork, entry_id: str, principal: Principal
    ) -> TimeEntry:
        # Another legal entity's entry is as missing: the same error, before any rule is judged.
        entry = await uow.entries.get(entry_id, for_update=True)
        if entry is None or not sees(principal, entry.legal_entity_id):
            raise not_found("time entry", entry_id)
        return entry


def _chain(approver_id: str, managers: Mapping[str, str]) -> list[str]:
    chain: list[str] = []
    current = approver_id
    for _ in range(MAX_CHAIN):
        current = managers.get(current, "")
        if not current:
            break
        chain.append(current)
    return chain


async def _require_legal_entity(
    uow: TimekeepingUnitOfWork, legal_entity_id: str, field: str, principal: Principal
) -> None:
    # A lock on an id master data does not know would lock nothing, silently (a typo, say).
    # Raised before anything is written, so the unit of work rolls back whole. Another legal
    # entity than the caller's is refused in the very same words (no existence leak).
    if not sees(principal, legal_entity_id) or not await uow.facts.legal_entity_known(legal_entity_id):
        raise NotFound(
            f"no legal entity with id {legal_entity_id!r} (legal_entity_id)",
            [
                Violation(
                    field, "LEGAL_ENTITY_NOT_FOUND", f"master data knows no legal entity {legal_entity_id!r}"
                )
            ],
            reason="LEGAL_ENTITY_NOT_FOUND",
        )


def _require_reason(reason: str, message: str) -> None:
    v = Violations()
    v.required("reason", reason)
    v.raise_if_any(message)


def _page_size(requested: int) -> int:
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def _decode_token(token: str, parse: Callable[[str], T]) -> tuple[T, str] | None:
    if not token:
        return None
    try:
        head, item_id = token.split("/", 1)
        return parse(head), str(uuid.UUID(item_id))
    except ValueError:
        raise InvalidArgument(
            "page_token is not valid",
            [Violation("page_token", "INVALID_PAGE_TOKEN", "page_token is not one we issued")],
        ) from None


def _require_own_time(principal: Principal, submissions: Sequence[Submission]) -> None:
    """own-time: a consultant records only their own time; the whole call is refused otherwise."""
    for sub in submissions:
        if sub.consultant_id != principal.subject:
            raise PermissionDenied(
                f"consultant_id names {sub.consultant_id!r}, but the caller is {principal.subject!r}; "
                "a consultant records only their own time (rule own-time)",
                [Violation("consultant_id", "NOT_OWN_TIME", "consultant_id must be the caller")],
                reason="NOT_OWN_TIME",
            )


def _may_see_prior(principal: Principal, own_only: bool, prior: TimeEntry) -> bool:
    """Whether a submitter may be shown the entry its external_ref already names."""
    if own_only:
        return prior.submission.consultant_id == principal.subject
    return sees(principal, prior.legal_entity_id)


def _audited(entry: TimeEntry) -> dict[str, Any]:
    """A time entry's fields that matter to the audit trail."""
    sub = entry.submission
    return {
        "consultant_id": sub.consultant_id,
        "project_id": sub.project_id,
        "work_date": sub.work_date,
        "hours": sub.hours,
        "status": str(entry.status),
        "approver_id": entry.approver_id,
        "decided_by_id": entry.decided_by_id,
        "decline_reason": entry.decline_reason,
        "billable": entry.billable,
        "labor_category_id": entry.labor_category_id,
        "rate": entry.rate,
        "reverses_id": entry.reverses_id,
        "reversed_by_id": entry.reversed_by_id,
        "reversal_reason": entry.reversal_reason,
        "replaces_id": entry.replaces_id,
    }


def _audited_lock(lock: PeriodLock) -> dict[str, Any]:
    return {
        "legal_entity_id": lock.legal_entity_id,
        "locked_through": lock.locked_through,
        "reason": lock.reason,
        "locked_by_id": lock.locked_by_id,
        "reopened_by_id": lock.reopened_by_id,
        "reopen_reason": lock.reopen_reason,
    }


def _audited_delegation(delegation: Delegation) -> dict[str, Any]:
    return {
        "delegator_id": delegation.delegator_id,
        "delegate_id": delegation.delegate_id,
        "start_date": delegation.start_date,
        "end_date": delegation.end_date,
        "reason": delegation.reason,
        "revoked_by_id": delegation.revoked_by_id,
    }
