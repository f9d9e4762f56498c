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
    Violation,
)
from accrue.runtime.clock import UTC_ZONE, Clock, local_date
from accrue.runtime.validation import Violations
from accrue.services.timekeeping.adapters.proto import entry_event, escalated_event, reversed_event, to_proto
from accrue.services.timekeeping.adapters.repository import (
    CONSULTANT_DAY,
    EXTERNAL_REF,
    LEGAL_ENTITY,
    lock_key,
)
from accrue.services.timekeeping.adapters.unit_of_work import TimekeepingUnitOfWork
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
        """
        if len(submissions) > MAX_BATCH:
            raise InvalidArgument(
                f"a batch holds at most {MAX_BATCH} entries, got {len(submissions)}",
                [Violation("time_entries", "BATCH_TOO_LARGE", f"at most {MAX_BATCH} entries")],
            )
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
                uow, [(sub, prior) for _, sub, prior in to_validate], same_day, locked, now
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
                results[i] = SubmitResult(entry, wire=wire)
            await uow.entries.add_all(new)
            await uow.commit()

        for i, first in repeats.items():
            # The reference already resolves to one entry (stored, or made by the first row):
            # the repeat is judged against that entry's content, not the first row's, so a
            # row repeating a conflicting row conflicts too instead of returning the entry.
            base = results[first]
            assert base is not None
            conflict = base.entry.submission.fingerprint() != submissions[i].fingerprint()
            results[i] = SubmitResult(base.entry, conflict=conflict)
        assert all(r is not None for r in results)
        return [r for r in results if r is not None]

    def _evaluate(
        self,
        uow: TimekeepingUnitOfWork,
        items: Sequence[tuple[Submission, TimeEntry | None]],
        same_day: dict[tuple[str, dt.date], list[TimeEntry]],
        locked: Mapping[str, dt.date],
        now: dt.datetime,
    ) -> list[TimeEntry]:
        """Evaluate submissions in order against the loaded facts and what is already recorded.

        Nothing is written here. Each valid entry counts towards its day (and may be the
        duplicate of) the ones after it in the same batch.
        """
        out: list[TimeEntry] = []
        todays: dict[str, dt.date] = {}
        dues: dict[str, dt.datetime] = {}
        for sub, prior in items:
            project = uow.facts.project(sub.project_id)
            consultant = uow.facts.consultant(sub.consultant_id)
            day = same_day.setdefault((sub.consultant_id, sub.work_date), [])
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
                assignments=uow.facts.assignments(sub.project_id, sub.consultant_id),
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

    async def approve(self, entry_id: str, actor_id: str) -> TimeEntry:
        """Approve as the resolved approver or their delegate; approving twice is harmless."""
        now = self._clock()
        async with self._uow() as uow:
            entry = await self._get_for_update(uow, entry_id)
            acting_for = await self._acting_for(uow, actor_id, entry.approver_id, now)
            if entry.approve(actor_id, now, acting_for):
                await uow.entries.save(entry, now)
                uow.events.add(entry_event("approved", entry, occurred_at=now))
            await uow.commit()
        return entry

    async def decline(self, entry_id: str, actor_id: str, reason: str) -> TimeEntry:
        """Decline as the resolved approver or their delegate, with a reason."""
        _require_reason(reason, "a decline needs a reason")
        now = self._clock()
        async with self._uow() as uow:
            entry = await self._get_for_update(uow, entry_id)
            acting_for = await self._acting_for(uow, actor_id, entry.approver_id, now)
            if entry.decline(actor_id, reason, acting_for):
                await uow.entries.save(entry, now)
                uow.events.add(entry_event("declined", entry, occurred_at=now))
            await uow.commit()
        return entry

    async def decide_many(
        self, entry_ids: Sequence[str], actor_id: str, decline_reason: str | None
    ) -> list[Decision]:
        """Approve (or, with a reason, decline) many entries; each succeeds or fails on its own.

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
        now = self._clock()
        out: list[Decision] = []
        async with self._uow() as uow:
            entries = await uow.entries.get_many(entry_ids, for_update=True)
            acting_for = await self._delegators(uow, actor_id, now)
            changed: dict[str, TimeEntry] = {}
            for entry_id in entry_ids:
                entry = entries.get(entry_id)
                if entry is None:
                    out.append(
                        Decision(
                            entry_id,
                            None,
                            NotFound(f"no time entry with id {entry_id!r}", reason="NOT_FOUND"),
                        )
                    )
                    continue
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
            await uow.commit()
        return out

    async def approvals(
        self, approver_id: str, page_size: int, page_token: str
    ) -> tuple[list[TimeEntry], str]:
        """An approver's queue: their pending entries and those of approvers who delegated to them today."""
        async with self._uow() as uow:
            acting_for = await self._delegators(uow, approver_id, self._clock())
        filters = {"approver_ids": {approver_id, *acting_for}, "status": str(Status.PENDING_APPROVAL)}
        return await self.list_entries(filters, page_size, page_token)

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

    async def reverse(
        self, entry_id: str, actor_id: str, reason: str, replacement: Submission | None
    ) -> Correction:
        """Reverse approved time with a linked negative entry, and optionally submit its correction.

        The replacement is validated like any submission; if it breaks a rule, nothing is
        written and the violations come back (under `replacement.`), because a correction that
        only takes time away was not what the caller asked for.
        """
        _require_reason(reason, "a reversal needs a reason")
        now = self._clock()
        subs = [replacement] if replacement is not None else []
        async with self._uow() as uow:
            peek = await uow.entries.get(entry_id)
            if peek is None:
                raise NotFound(f"no time entry with id {entry_id!r}", reason="NOT_FOUND")
            await uow.facts.load(subs)
            owners = await uow.facts.consultants({peek.submission.consultant_id})
            owner = owners.get(peek.submission.consultant_id)
            original_entity = owner.legal_entity_id if owner else peek.legal_entity_id
            entities = {original_entity, *self._legal_entities(uow, subs)}
            # The same lock order as a submission: advisory locks first, then rows.
            await uow.entries.advisory_locks(_day_keys(subs), shared=_entity_keys(entities))
            original = await self._get_for_update(uow, entry_id)
            acting_for = await self._acting_for(uow, actor_id, original.approver_id, now)
            reversal = original.reverse(actor_id, reason, str(uuid.uuid4()), now, acting_for)
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
                corrected = await self._replacement(uow, original, replacement, locked, now)
                await uow.entries.add_all([corrected])
                uow.events.add(entry_event("submitted", corrected, occurred_at=now))
            uow.events.add(reversed_event(original, reversal, corrected, occurred_at=now))
            await uow.commit()
        return Correction(original, reversal, corrected)

    async def _replacement(
        self,
        uow: TimekeepingUnitOfWork,
        original: TimeEntry,
        sub: Submission,
        locked: Mapping[str, dt.date],
        now: dt.datetime,
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
        (entry,) = self._evaluate(uow, [(sub, None)], same_day, locked, now)
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
        """One entry, or NOT_FOUND."""
        async with self._uow() as uow:
            entry = await uow.entries.get(entry_id)
        if entry is None:
            raise NotFound(f"no time entry with id {entry_id!r}", reason="NOT_FOUND")
        return entry

    async def list_entries(
        self, filters: Mapping[str, Any], page_size: int, page_token: str
    ) -> tuple[list[TimeEntry], str]:
        """A page of entries and the next page's token."""
        size = _page_size(page_size)
        after = _decode_token(page_token, dt.date.fromisoformat)
        async with self._uow() as uow:
            entries = await uow.entries.page(filters, after, size + 1)
        if len(entries) <= size:
            return entries, ""
        entries = entries[:size]
        last = entries[-1]
        return entries, f"{last.submission.work_date.isoformat()}/{last.id}"

    async def approved_time(
        self, period_start: str, period_end: str, legal_entity_id: str
    ) -> list[TimeEntry]:
        """Approved entries worked in the period (for reconciliation), reversals and reversed included."""
        v = Violations()
        start = v.date("period_start", period_start)
        end = v.date("period_end", period_end)
        v.date_range("period_start", start, "period_end", end)
        v.raise_if_any("the period is invalid")
        assert start is not None
        assert end is not None
        async with self._uow() as uow:
            return await uow.entries.approved_in(start, end, legal_entity_id)

    # -- period locks ------------------------------------------------------------------------

    async def lock_period(
        self, legal_entity_id: str, through: dt.date, reason: str, actor_id: str
    ) -> PeriodLock:
        """Close a legal entity's time up to and including a day.

        Locking the day already locked returns that lock; an earlier day is refused (reopen
        instead), since moving a lock back is a reopening and needs its reason.
        """
        now = self._clock()
        async with self._uow() as uow:
            await _require_legal_entity(uow, legal_entity_id, "period_lock.legal_entity_id")
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
            await uow.commit()
        log.info("period_locked", legal_entity_id=legal_entity_id, locked_through=str(through), by=actor_id)
        return lock

    async def reopen_lock(self, lock_id: str, actor_id: str, reason: str) -> PeriodLock:
        """Reopen the legal entity's latest lock, keeping who, when and why."""
        _require_reason(reason, "reopening a period needs a reason")
        now = self._clock()
        async with self._uow() as uow:
            peek = await uow.locks.get(lock_id)
            if peek is None:
                raise NotFound(f"no period lock with id {lock_id!r}", reason="NOT_FOUND")
            await _require_legal_entity(uow, peek.legal_entity_id, "legal_entity_id")
            await uow.entries.advisory_locks([lock_key(LEGAL_ENTITY, peek.legal_entity_id)])
            lock = await uow.locks.get(lock_id)
            assert lock is not None
            latest = (await uow.locks.latest_active([lock.legal_entity_id])).get(lock.legal_entity_id)
            lock.reopen(actor_id, reason, now, latest.id if latest else None)
            await uow.locks.save_reopening(lock)
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
        """One lock, or NOT_FOUND."""
        async with self._uow() as uow:
            lock = await uow.locks.get(lock_id)
        if lock is None:
            raise NotFound(f"no period lock with id {lock_id!r}", reason="NOT_FOUND")
        return lock

    async def list_locks(
        self, legal_entity_id: str, page_size: int, page_token: str
    ) -> tuple[list[PeriodLock], str]:
        """Locks newest first: the audit trail of closing and reopening."""
        size = _page_size(page_size)
        after = _decode_token(page_token, dt.datetime.fromisoformat)
        async with self._uow() as uow:
            locks = await uow.locks.page(legal_entity_id, after, size + 1)
        if len(locks) <= size:
            return locks, ""
        locks = locks[:size]
        return locks, f"{locks[-1].create_time.isoformat()}/{locks[-1].id}"

    # -- delegations -------------------------------------------------------------------------

    async def delegate(
        self, delegator_id: str, delegate_id: str, start: dt.date, end: dt.date, reason: str
    ) -> Delegation:
        """Let delegate_id act for delegator_id from start to end; both must be known consultants."""
        now = self._clock()
        async with self._uow() as uow:
            known = await uow.facts.consultants({delegator_id, delegate_id})
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
            delegation = Delegation(str(uuid.uuid4()), delegator_id, delegate_id, start, end, reason, now)
            await uow.delegations.add(delegation)
            await uow.commit()
        return delegation

    async def revoke_delegation(self, delegation_id: str, actor_id: str) -> Delegation:
        """End a delegation early (the delegator only); revoking twice is harmless."""
        now = self._clock()
        async with self._uow() as uow:
            delegation = await uow.delegations.get(delegation_id, for_update=True)
            if delegation is None:
                raise NotFound(f"no approval delegation with id {delegation_id!r}", reason="NOT_FOUND")
            if delegation.revoke(actor_id, now):
                await uow.delegations.save_revocation(delegation)
            await uow.commit()
        return delegation

    async def get_delegation(self, delegation_id: str) -> Delegation:
        """One delegation, or NOT_FOUND."""
        async with self._uow() as uow:
            delegation = await uow.delegations.get(delegation_id)
        if delegation is None:
            raise NotFound(f"no approval delegation with id {delegation_id!r}", reason="NOT_FOUND")
        return delegation

    async def list_delegations(
        self, filters: Mapping[str, Any], page_size: int, page_token: str
    ) -> tuple[list[Delegation], str]:
        """Delegations newest first."""
        size = _page_size(page_size)
        after = _decode_token(page_token, dt.datetime.fromisoformat)
        async with self._uow() as uow:
            found = await uow.delegations.page(filters, after, size + 1)
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
            await uow.commit()
        through = await self._replay_masterdata()
        log.warning("masterdata_projection_rebuild_started", cleared=cleared, replay_through=through)
        return cleared, through

    async def _get_for_update(self, uow: TimekeepingUnitOfWork, entry_id: str) -> TimeEntry:
        entry = await uow.entries.get(entry_id, for_update=True)
        if entry is None:
            raise NotFound(f"no time entry with id {entry_id!r}", reason="NOT_FOUND")
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


async def _require_legal_entity(uow: TimekeepingUnitOfWork, legal_entity_id: str, field: str) -> None:
    # A lock on an id master data does not know would lock nothing, silently (a typo, say).
    # Raised before anything is written, so the unit of work rolls back whole.
    if not await uow.facts.legal_entity_known(legal_entity_id):
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
