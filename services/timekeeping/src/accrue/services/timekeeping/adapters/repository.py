"""Time entries and period locks in PostgreSQL (SQLAlchemy Core)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from accrue.runtime import Violation
from accrue.services.timekeeping.adapters.tables import period_locks, time_entries
from accrue.services.timekeeping.domain.model import Status, Submission, TimeEntry

# Entries that count towards a consultant's day.
COUNTED = (Status.PENDING_APPROVAL, Status.APPROVED)


def _is_uuid(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


def _row(entry: TimeEntry) -> dict[str, Any]:
    sub = entry.submission
    return {
        "id": entry.id,
        "external_ref_system": sub.external_ref[0] if sub.external_ref else None,
        "external_ref_id": sub.external_ref[1] if sub.external_ref else None,
        "fingerprint": sub.fingerprint(),
        "consultant_id": sub.consultant_id,
        "project_id": sub.project_id,
        "requested_labor_category_id": sub.labor_category_id,
        "labor_category_id": entry.labor_category_id,
        "work_date": sub.work_date,
        "hours": sub.hours,
        "requested_billable": sub.billable,
        "billable": entry.billable,
        "notes": sub.notes,
        "status": str(entry.status),
        "violations": [{"field": v.field, "code": v.code, "message": v.message} for v in entry.violations],
        "approver_id": entry.approver_id,
        "approve_time": entry.approve_time,
        "decline_reason": entry.decline_reason,
        "invoice_id": entry.invoice_id,
        "legal_entity_id": entry.legal_entity_id,
        "customer_id": entry.customer_id,
        "rate": entry.rate,
        "rate_currency": entry.rate_currency,
        "version": entry.version,
        "create_time": entry.create_time,
        "update_time": entry.update_time,
    }


def _entry(row: Any) -> TimeEntry:
    ref = (row.external_ref_system, row.external_ref_id) if row.external_ref_system else None
    return TimeEntry(
        id=row.id,
        submission=Submission(
            consultant_id=row.consultant_id,
            project_id=row.project_id,
            work_date=row.work_date,
            hours=Decimal(row.hours),
            labor_category_id=row.requested_labor_category_id,
            billable=row.requested_billable,
            notes=row.notes,
            external_ref=ref,
        ),
        status=Status(row.status),
        violations=[Violation(v["field"], v["code"], v["message"]) for v in row.violations],
        labor_category_id=row.labor_category_id,
        billable=row.billable,
        approver_id=row.approver_id,
        legal_entity_id=row.legal_entity_id,
        customer_id=row.customer_id,
        rate=Decimal(row.rate) if row.rate is not None else None,
        rate_currency=row.rate_currency,
        approve_time=row.approve_time,
        decline_reason=row.decline_reason,
        invoice_id=row.invoice_id,
        version=row.version,
        create_time=row.create_time,
        update_time=row.update_time,
    )


class TimeEntryRepository:
    """Time entries and locks on the unit of work's connection."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._conn = connection

    async def add_all(self, entries: Sequence[TimeEntry]) -> None:
        """Insert new entries in one statement."""
        if entries:
            await self._conn.execute(sa.insert(time_entries), [_row(e) for e in entries])

    async def replace(self, entry: TimeEntry) -> None:
        """Overwrite an entry (a rejected one resubmitted under its external_ref)."""
        await self._conn.execute(
            sa.update(time_entries).where(time_entries.c.id == entry.id).values(_row(entry))
        )

    async def get(self, entry_id: str, *, for_update: bool = False) -> TimeEntry | None:
        """One entry, optionally locked until the transaction ends."""
        if not _is_uuid(entry_id):
            return None
        query = sa.select(time_entries).where(time_entries.c.id == entry_id)
        if for_update:
            query = query.with_for_update()
        row = (await self._conn.execute(query)).first()
        return _entry(row) if row is not None else None

    async def by_external_refs(self, refs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], TimeEntry]:
        """Entries by (system, id), locked so concurrent resubmissions serialize."""
        wanted = list(set(refs))
        if not wanted:
            return {}
        pair = sa.tuple_(time_entries.c.external_ref_system, time_entries.c.external_ref_id)
        rows = await self._conn.execute(sa.select(time_entries).where(pair.in_(wanted)).with_for_update())
        return {(row.external_ref_system, row.external_ref_id): _entry(row) for row in rows}

    async def hours_on_days(self, keys: Iterable[tuple[str, dt.date]]) -> dict[tuple[str, dt.date], Decimal]:
        """Counted hours per (consultant, day) already recorded."""
        wanted = list(set(keys))
        if not wanted:
            return {}
        t = time_entries
        rows = await self._conn.execute(
            sa.select(t.c.consultant_id, t.c.work_date, sa.func.sum(t.c.hours))
            .where(
                sa.tuple_(t.c.consultant_id, t.c.work_date).in_(wanted),
                t.c.status.in_([str(s) for s in COUNTED]),
            )
            .group_by(t.c.consultant_id, t.c.work_date)
        )
        return {(row[0], row[1]): Decimal(row[2]) for row in rows}

    async def update_status(self, entry: TimeEntry, now: dt.datetime) -> None:
        """Persist a workflow transition."""
        entry.version += 1
        entry.update_time = now
        await self._conn.execute(
            sa.update(time_entries)
            .where(time_entries.c.id == entry.id)
            .values(
                status=str(entry.status),
                approve_time=entry.approve_time,
                decline_reason=entry.decline_reason,
                version=entry.version,
                update_time=now,
            )
        )

    async def page(
        self, filters: Mapping[str, Any], after: tuple[dt.date, str] | None, limit: int
    ) -> list[TimeEntry]:
        """Entries matching filters, ordered by (work_date, id)."""
        t = time_entries
        query = sa.select(t)
        for name in ("consultant_id", "project_id", "status", "approver_id"):
            if filters.get(name):
                query = query.where(t.c[name] == filters[name])
        if filters.get("work_date_from"):
            query = query.where(t.c.work_date >= filters["work_date_from"])
        if filters.get("work_date_to"):
            query = query.where(t.c.work_date <= filters["work_date_to"])
        if after is not None:
            query = query.where(
                sa.tuple_(t.c.work_date, t.c.id)
                > sa.tuple_(sa.literal(after[0]), sa.literal(after[1], sa.Uuid(as_uuid=False)))
            )
        rows = await self._conn.execute(query.order_by(t.c.work_date, t.c.id).limit(limit))
        return [_entry(row) for row in rows]

    async def approved_in(self, start: dt.date, end: dt.date, legal_entity_id: str) -> list[TimeEntry]:
        """Entries that were approved (still APPROVED, or REVERSED since) worked in the period."""
        t = time_entries
        query = sa.select(t).where(
            t.c.work_date.between(start, end), t.c.status.in_([str(Status.APPROVED), str(Status.REVERSED)])
        )
        if legal_entity_id:
            query = query.where(t.c.legal_entity_id == legal_entity_id)
        rows = await self._conn.execute(query.order_by(t.c.project_id, t.c.work_date, t.c.id))
        return [_entry(row) for row in rows]

    async def locked_through(self, legal_entity_ids: Iterable[str]) -> dict[str, dt.date]:
        """The latest locked day per legal entity."""
        wanted = list(set(legal_entity_ids))
        if not wanted:
            return {}
        rows = await self._conn.execute(
            sa.select(period_locks.c.legal_entity_id, sa.func.max(period_locks.c.locked_through))
            .where(period_locks.c.legal_entity_id.in_(wanted))
            .group_by(period_locks.c.legal_entity_id)
        )
        return {row[0]: row[1] for row in rows}

    async def add_lock(
        self, lock_id: str, legal_entity_id: str, through: dt.date, reason: str, now: dt.datetime
    ) -> None:
        """Record a period lock."""
        await self._conn.execute(
            sa.insert(period_locks).values(
                id=lock_id,
                legal_entity_id=legal_entity_id,
                locked_through=through,
                reason=reason,
                create_time=now,
            )
        )
