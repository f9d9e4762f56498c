"""Timekeeping use cases: submit (one or many), approve, decline, list, queues, period locks."""

from __future__ import annotations

import datetime as dt
import uuid
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from accrue.runtime import InvalidArgument, NotFound, Violation
from accrue.runtime.validation import Violations
from accrue.services.timekeeping.adapters.proto import entry_event
from accrue.services.timekeeping.adapters.unit_of_work import TimekeepingUnitOfWork
from accrue.services.timekeeping.domain.model import Status, Submission, TimeEntry
from accrue.services.timekeeping.domain.rules import Facts, evaluate

MAX_BATCH = 1000
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


@dataclass
class SubmitResult:
    """The stored entry, or the entry an external_ref already names with other content."""

    entry: TimeEntry
    conflict: bool = False


def _lock_key(consultant_id: str, day: dt.date) -> int:
    # A signed 32-bit key per consultant-day: concurrent submissions for the same day
    # serialize, so two of them cannot both pass the daily limit.
    return zlib.crc32(f"{consultant_id}/{day.isoformat()}".encode()) - 2**31


class Timekeeping:
    """The timekeeping application service."""

    def __init__(
        self,
        uow_factory: Callable[[], TimekeepingUnitOfWork],
        *,
        future_allowance_days: int = 0,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._uow = uow_factory
        self._future_allowance_days = future_allowance_days
        self._clock = clock

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
        today = now.date()
        results: list[SubmitResult | None] = [None] * len(submissions)
        async with self._uow() as uow:
            for key in sorted({(s.consultant_id, s.work_date) for s in submissions}):
                await uow.connection.exec_driver_sql("SELECT pg_advisory_xact_lock($1)", (_lock_key(*key),))
            refs = [s.external_ref for s in submissions if s.external_ref]
            existing = await uow.entries.by_external_refs(refs)
            evaluate_now: list[tuple[int, Submission, TimeEntry | None]] = []
            claimed: dict[tuple[str, str], int] = {}
            # A row repeating an earlier row's external_ref in the same batch: (first row, conflict?).
            repeats: dict[int, tuple[int, bool]] = {}
            for i, sub in enumerate(submissions):
                ref = sub.external_ref
                prior = existing.get(ref) if ref else None
                if ref and ref in claimed:
                    first = claimed[ref]
                    repeats[i] = (first, submissions[first].fingerprint() != sub.fingerprint())
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
                evaluate_now.append((i, sub, prior))

            stored = await self._evaluate(uow, evaluate_now, today, now)
            for i, entry in stored.items():
                results[i] = SubmitResult(entry)
            await uow.commit()

        for i, (first, conflict) in repeats.items():
            base = results[first]
            assert base is not None
            results[i] = SubmitResult(base.entry, conflict=conflict)
        assert all(r is not None for r in results)
        return [r for r in results if r is not None]

    async def _evaluate(
        self,
        uow: TimekeepingUnitOfWork,
        pending: list[tuple[int, Submission, TimeEntry | None]],
        today: dt.date,
        now: dt.datetime,
    ) -> dict[int, TimeEntry]:
        subs = [sub for _, sub, _ in pending]
        projects = await uow.facts.projects({s.project_id for s in subs})
        consultants = await uow.facts.consultants({s.consultant_id for s in subs})
        locks = await uow.entries.locked_through({c.legal_entity_id for c in consultants.values()})
        day_hours = dict(await uow.entries.hours_on_days({(s.consultant_id, s.work_date) for s in subs}))
        new: list[TimeEntry] = []
        out: dict[int, TimeEntry] = {}
        for i, sub, prior in pending:
            project = projects.get(sub.project_id)
            consultant = consultants.get(sub.consultant_id)
            facts = Facts(
                project=project,
                consultant=consultant,
                assignments=await uow.facts.assignments(sub.project_id, sub.consultant_id),
                pricing=await uow.facts.pricing(sub.project_id) if project is not None else None,
                locked_through=locks.get(consultant.legal_entity_id) if consultant else None,
                hours_already_on_day=day_hours.get((sub.consultant_id, sub.work_date), Decimal(0)),
                today=today,
                future_allowance_days=self._future_allowance_days,
            )
            verdict = evaluate(sub, facts)
            status = Status.REJECTED if verdict.violations else Status.PENDING_APPROVAL
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
                version=prior.version + 1 if prior else 1,
                create_time=prior.create_time if prior else now,
                update_time=now,
            )
            if status is Status.PENDING_APPROVAL:
                key = (sub.consultant_id, sub.work_date)
                day_hours[key] = day_hours.get(key, Decimal(0)) + sub.hours
                uow.events.add(entry_event("submitted", entry))
            if prior is None:
                new.append(entry)
            else:
                await uow.entries.replace(entry)
            out[i] = entry
        await uow.entries.add_all(new)
        return out

    async def approve(self, entry_id: str, approver_id: str) -> TimeEntry:
        """Approve as the resolved approver; approving twice is harmless."""
        now = self._clock()
        async with self._uow() as uow:
            entry = await self._get_for_update(uow, entry_id)
            if entry.approve(approver_id, now):
                await uow.entries.update_status(entry, now)
                uow.events.add(entry_event("approved", entry))
            await uow.commit()
        return entry

    async def decline(self, entry_id: str, approver_id: str, reason: str) -> TimeEntry:
        """Decline as the resolved approver, with a reason."""
        v = Violations()
        v.required("reason", reason)
        v.raise_if_any("a decline needs a reason")
        now = self._clock()
        async with self._uow() as uow:
            entry = await self._get_for_update(uow, entry_id)
            if entry.decline(approver_id, reason):
                await uow.entries.update_status(entry, now)
                uow.events.add(entry_event("declined", entry))
            await uow.commit()
        return entry

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
        size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        after = _decode_token(page_token)
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
        """Approved entries worked in the period (for reconciliation)."""
        v = Violations()
        start = v.date("period_start", period_start)
        end = v.date("period_end", period_end)
        v.date_range("period_start", start, "period_end", end)
        v.raise_if_any("the period is invalid")
        assert start is not None
        assert end is not None
        async with self._uow() as uow:
            return await uow.entries.approved_in(start, end, legal_entity_id)

    async def lock_period(
        self, legal_entity_id: str, locked_through: dt.date, reason: str
    ) -> tuple[str, dt.datetime]:
        """Close a legal entity's time up to and including a day."""
        now = self._clock()
        lock_id = str(uuid.uuid4())
        async with self._uow() as uow:
            await uow.entries.add_lock(lock_id, legal_entity_id, locked_through, reason, now)
            await uow.commit()
        return lock_id, now

    async def _get_for_update(self, uow: TimekeepingUnitOfWork, entry_id: str) -> TimeEntry:
        entry = await uow.entries.get(entry_id, for_update=True)
        if entry is None:
            raise NotFound(f"no time entry with id {entry_id!r}", reason="NOT_FOUND")
        return entry


def _decode_token(token: str) -> tuple[dt.date, str] | None:
    if not token:
        return None
    try:
        day, entry_id = token.split("/", 1)
        return dt.date.fromisoformat(day), str(uuid.UUID(entry_id))
    except ValueError:
        raise InvalidArgument(
            "page_token is not valid",
            [Violation("page_token", "INVALID_PAGE_TOKEN", "page_token is not one we issued")],
        ) from None
