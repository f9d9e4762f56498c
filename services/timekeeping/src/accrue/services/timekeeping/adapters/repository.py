"""Time entries, delegations and period locks in PostgreSQL.

SQLAlchemy Core throughout, except the few statements every submission runs (locks, the
entries a submission must see, the insert): those go to the asyncpg connection underneath, in
the same transaction, because at a few hundred submissions a second SQLAlchemy's per-statement
work costs more than the database does.
"""

from __future__ import annotations

import datetime as dt
import json
import operator
import uuid
import zlib
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from accrue.runtime import Violation
from accrue.services.timekeeping.adapters.tables import (
    SCHEMA,
    approval_delegations,
    inbox,
    md_projection,
    period_locks,
    time_entries,
)
from accrue.services.timekeeping.domain.access import DelegationView, EntryView
from accrue.services.timekeeping.domain.approval import Delegation
from accrue.services.timekeeping.domain.locks import PeriodLock
from accrue.services.timekeeping.domain.model import Status, Submission, TimeEntry

# Entries that count towards a consultant's day (reversals aside: see same_day).
COUNTED = (Status.PENDING_APPROVAL, Status.APPROVED)

# Advisory-lock namespaces (the first key of pg_advisory_xact_lock(int, int)), so keys of
# different kinds never collide.
CONSULTANT_DAY, EXTERNAL_REF, LEGAL_ENTITY = 1, 2, 3


def lock_key(namespace: int, *parts: str) -> tuple[int, int]:
    """A (namespace, signed 32-bit) advisory-lock key for the parts."""
    return namespace, zlib.crc32("\x1f".join(parts).encode()) - 2**31


def _is_uuid(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


async def driver(conn: AsyncConnection) -> Any:
    """The asyncpg connection under a SQLAlchemy one, inside the same transaction."""
    raw = await conn.get_raw_connection()
    connection: Any = raw.driver_connection
    if not connection.is_in_transaction():
        # SQLAlchemy sends BEGIN lazily, with its first statement: make that happen now, or
        # what goes straight to the driver would run (and commit) on its own.
        await conn.exec_driver_sql("SELECT 1")
        assert connection.is_in_transaction()
    return connection


def _ref_slot(entry: TimeEntry) -> str:
    # See tables.time_entries: a reversed entry frees its reference for a replacement.
    return entry.id if entry.status is Status.REVERSED else ""


def _row(entry: TimeEntry) -> dict[str, Any]:
    sub = entry.submission
    return {
        "id": entry.id,
        "external_ref_system": sub.external_ref[0] if sub.external_ref else None,
        "external_ref_id": sub.external_ref[1] if sub.external_ref else None,
        "external_ref_slot": _ref_slot(entry),
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
        "reverses_id": entry.reverses_id,
        "reversed_by_id": entry.reversed_by_id,
        "replaces_id": entry.replaces_id,
        "reversal_reason": entry.reversal_reason,
        "escalation_level": entry.escalation_level,
        "likely_duplicate_of_id": entry.likely_duplicate_of_id,
        "decided_by_id": entry.decided_by_id,
        "queue_time": entry.queue_time,
        "escalation_due_time": entry.escalation_due_time,
        "version": entry.version,
        "create_time": entry.create_time,
        "update_time": entry.update_time,
    }


def _record(entry: TimeEntry) -> tuple[Any, ...]:
    """The entry as a tuple in _COLUMNS order, JSON as text: what COPY and the prepared INSERT take."""
    row = _row(entry)
    violations = row["violations"]
    row["violations"] = json.dumps(violations) if violations else "[]"
    row["escalation_checked_time"] = None
    return _in_column_order(row)  # type: ignore[no-any-return]


def _entry(row: Any) -> TimeEntry:
    """An entry from a row: a SQLAlchemy Row or an asyncpg Record (mapping access for both)."""
    m = row._mapping if hasattr(row, "_mapping") else row
    violations = m["violations"]
    if isinstance(violations, str):
        violations = json.loads(violations)
    ref = (m["external_ref_system"], m["external_ref_id"]) if m["external_ref_system"] else None
    return TimeEntry(
        id=str(m["id"]),
        submission=Submission(
            consultant_id=m["consultant_id"],
            project_id=m["project_id"],
            work_date=m["work_date"],
            hours=Decimal(m["hours"]),
            labor_category_id=m["requested_labor_category_id"],
            billable=m["requested_billable"],
            notes=m["notes"],
            external_ref=ref,
        ),
        status=Status(m["status"]),
        violations=[Violation(v["field"], v["code"], v["message"]) for v in violations],
        labor_category_id=m["labor_category_id"],
        billable=m["billable"],
        approver_id=m["approver_id"],
        legal_entity_id=m["legal_entity_id"],
        customer_id=m["customer_id"],
        rate=Decimal(m["rate"]) if m["rate"] is not None else None,
        rate_currency=m["rate_currency"],
        approve_time=m["approve_time"],
        decline_reason=m["decline_reason"],
        invoice_id=m["invoice_id"],
        reverses_id=m["reverses_id"],
        reversed_by_id=m["reversed_by_id"],
        replaces_id=m["replaces_id"],
        reversal_reason=m["reversal_reason"],
        escalation_level=m["escalation_level"],
        likely_duplicate_of_id=m["likely_duplicate_of_id"],
        decided_by_id=m["decided_by_id"],
        queue_time=m["queue_time"],
        escalation_due_time=m["escalation_due_time"],
        escalation_checked_time=m["escalation_checked_time"],
        version=m["version"],
        create_time=m["create_time"],
        update_time=m["update_time"],
    )


_COLUMNS = tuple(column.name for column in time_entries.columns)
_in_column_order = operator.itemgetter(*_COLUMNS)
_TABLE = f"{SCHEMA}.{time_entries.name}"
_INSERT = (
    f"INSERT INTO {_TABLE} ({', '.join(_COLUMNS)}) "
    f"VALUES ({', '.join(f'${i}' for i in range(1, len(_COLUMNS) + 1))})"
)
# A batch this large is copied in; fewer rows go through a prepared INSERT (COPY costs an extra
# round trip to look the table up).
COPY_FROM = 50
_COUNTED = ", ".join(f"'{s}'" for s in COUNTED)
# What a submission must see, in one statement: the entries its external references name (live
# first, then the latest reversed) and the live entries on its consultant-days. Each key is an
# index probe through a LATERAL subquery, a plan that holds whatever the table's statistics say
# (an IN list or a join can become a scan of the whole table while it is young and unanalyzed).
_EXISTING = f"""
SELECT 'ref' AS why, e.* FROM unnest($1::text[], $2::text[]) AS k(s, i)
CROSS JOIN LATERAL (
    SELECT * FROM {_TABLE} t WHERE t.external_ref_system = k.s AND t.external_ref_id = k.i FOR UPDATE
) AS e
UNION ALL
SELECT 'day' AS why, e.* FROM unnest($3::text[], $4::date[]) AS k(c, d)
CROSS JOIN LATERAL (
    SELECT * FROM {_TABLE} t WHERE t.consultant_id = k.c AND t.work_date = k.d
    AND t.status IN ({_COUNTED}) AND t.reverses_id = ''
) AS e
"""


class TimeEntryRepository:
    """Time entries on the unit of work's connection."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._conn = connection

    async def advisory_locks(
        self, keys: Iterable[tuple[int, int]], *, shared: Iterable[tuple[int, int]] = ()
    ) -> None:
        """Take transaction-scoped advisory locks (keys exclusive, shared ones shared) in one
        round trip, in a fixed order.

        Every writer takes its keys sorted, so two transactions never wait on each other in a
        cycle; legal-entity keys sort last, and a lock being set takes only its own.
        """
        wanted = {(n, k): False for n, k in keys}
        for key in shared:
            wanted.setdefault(key, True)
        ordered = sorted(wanted)
        if not ordered:
            return
        conn = await driver(self._conn)
        # unnest yields the arrays in order, so the locks are taken in the sorted order.
        await conn.fetch(
            "SELECT CASE WHEN s THEN pg_advisory_xact_lock_shared(n, k) ELSE pg_advisory_xact_lock(n, k) END "
            "FROM unnest($1::int[], $2::int[], $3::bool[]) AS t(n, k, s)",
            [n for n, _ in ordered],
            [k for _, k in ordered],
            [wanted[key] for key in ordered],
        )

    async def add_all(self, entries: Sequence[TimeEntry]) -> None:
        """Insert new entries: COPY for a batch (the hot path of ingest), a prepared INSERT for
        a few."""
        if not entries:
            return
        records = [_record(entry) for entry in entries]
        conn = await driver(self._conn)
        if len(records) >= COPY_FROM:
            await conn.copy_records_to_table(
                time_entries.name, schema_name=SCHEMA, columns=_COLUMNS, records=records
            )
        else:
            await conn.executemany(_INSERT, records)

    async def replace(self, entry: TimeEntry) -> None:
        """Overwrite an entry (a rejected one resubmitted under its external_ref)."""
        await self._conn.execute(
            sa.update(time_entries).where(time_entries.c.id == entry.id).values(_row(entry))
        )

    async def save(self, entry: TimeEntry, now: dt.datetime) -> None:
        """Persist a workflow transition (the submitted content never changes)."""
        entry.version += 1
        entry.update_time = now
        await self._conn.execute(
            sa.update(time_entries)
            .where(time_entries.c.id == entry.id)
            .values(
                status=str(entry.status),
                external_ref_slot=_ref_slot(entry),
                approver_id=entry.approver_id,
                approve_time=entry.approve_time,
                decline_reason=entry.decline_reason,
                decided_by_id=entry.decided_by_id,
                reversed_by_id=entry.reversed_by_id,
                reversal_reason=entry.reversal_reason,
                escalation_level=entry.escalation_level,
                queue_time=entry.queue_time,
                escalation_checked_time=None,
                escalation_due_time=entry.escalation_due_time,
                version=entry.version,
                update_time=now,
            )
        )

    async def save_many(self, entries: Sequence[TimeEntry], now: dt.datetime) -> None:
        """Persist many workflow transitions in one executemany."""
        if not entries:
            return
        t = time_entries
        params = []
        for entry in entries:
            entry.version += 1
            entry.update_time = now
            params.append(
                {
                    "b_id": entry.id,
                    "b_status": str(entry.status),
                    "b_approver_id": entry.approver_id,
                    "b_approve_time": entry.approve_time,
                    "b_decline_reason": entry.decline_reason,
                    "b_decided_by_id": entry.decided_by_id,
                    "b_escalation_level": entry.escalation_level,
                    "b_queue_time": entry.queue_time,
                    "b_escalation_due_time": entry.escalation_due_time,
                    "b_version": entry.version,
                }
            )
        await self._conn.execute(
            sa.update(t)
            .where(t.c.id == sa.bindparam("b_id"))
            .values(
                status=sa.bindparam("b_status"),
                approver_id=sa.bindparam("b_approver_id"),
                approve_time=sa.bindparam("b_approve_time"),
                decline_reason=sa.bindparam("b_decline_reason"),
                decided_by_id=sa.bindparam("b_decided_by_id"),
                escalation_level=sa.bindparam("b_escalation_level"),
                queue_time=sa.bindparam("b_queue_time"),
                escalation_checked_time=None,
                escalation_due_time=sa.bindparam("b_escalation_due_time"),
                version=sa.bindparam("b_version"),
                update_time=now,
            ),
            params,
        )

    async def mark_invoiced(self, entry_ids: Iterable[str], invoice_id: str, now: dt.datetime) -> int:
        """Put the invoice on the entries that do not carry it yet; returns how many changed."""
        wanted = sorted({i for i in entry_ids if _is_uuid(i)})
        if not wanted:
            return 0
        t = time_entries
        result = await self._conn.execute(
            sa.update(t)
            .where(t.c.id.in_(wanted), t.c.invoice_id != invoice_id)
            .values(invoice_id=invoice_id, version=t.c.version + 1, update_time=now)
        )
        return int(result.rowcount)

    async def clear_invoice(self, invoice_id: str, now: dt.datetime) -> int:
        """Take the invoice off every entry that carries it; returns how many changed."""
        t = time_entries
        result = await self._conn.execute(
            sa.update(t)
            .where(t.c.invoice_id == invoice_id)
            .values(invoice_id="", version=t.c.version + 1, update_time=now)
        )
        return int(result.rowcount)

    async def set_escalation_due(
        self, entries: Sequence[TimeEntry], checked: dt.datetime | None = None
    ) -> None:
        """Store when these entries fall due (their version is unchanged: nothing a client sees
        moved); with `checked`, note that escalation found nobody above their approvers then."""
        if not entries:
            return
        t = time_entries
        values: dict[str, Any] = {"escalation_due_time": sa.bindparam("b_due")}
        if checked is not None:
            values["escalation_checked_time"] = checked
        await self._conn.execute(
            sa.update(t).where(t.c.id == sa.bindparam("b_id")).values(values),
            [{"b_id": e.id, "b_due": e.escalation_due_time} for e in entries],
        )

    async def get(self, entry_id: str, *, for_update: bool = False) -> TimeEntry | None:
        """One entry, optionally locked until the transaction ends."""
        found = await self.get_many([entry_id], for_update=for_update)
        return found.get(entry_id)

    async def get_many(self, entry_ids: Iterable[str], *, for_update: bool = False) -> dict[str, TimeEntry]:
        """Entries by id (unknown ids absent), locked in id order when asked."""
        wanted = sorted({i for i in entry_ids if _is_uuid(i)})
        if not wanted:
            return {}
        query = sa.select(time_entries).where(time_entries.c.id.in_(wanted)).order_by(time_entries.c.id)
        if for_update:
            query = query.with_for_update()
        rows = await self._conn.execute(query)
        return {row.id: _entry(row) for row in rows}

    async def existing(
        self, refs: Iterable[tuple[str, str]], days: Iterable[tuple[str, dt.date]]
    ) -> tuple[dict[tuple[str, str], TimeEntry], dict[tuple[str, dt.date], list[TimeEntry]]]:
        """What a submission must see, in one round trip (take the advisory locks first):

        * the entry each external reference names, locked so concurrent resubmissions
          serialize: the live entry when there is one, else the latest reversed one (a
          reference whose entry was reversed without a replacement still names it, so resending
          the old record cannot bring the time back);
        * the live entries per (consultant, day), oldest first, for the daily limit and the
          duplicate flag. Reversals are left out and reversed entries are not live, so a
          corrected day counts once.
        """
        ref_list = sorted(set(refs))
        day_list = sorted(set(days))
        if not ref_list and not day_list:
            return {}, {}
        conn = await driver(self._conn)
        rows = await conn.fetch(
            _EXISTING,
            [s for s, _ in ref_list],
            [i for _, i in ref_list],
            [c for c, _ in day_list],
            [d for _, d in day_list],
        )
        named: dict[tuple[str, str], TimeEntry] = {}
        same_day: dict[tuple[str, dt.date], list[TimeEntry]] = {}
        ref_rows = sorted(
            (r for r in rows if r["why"] == "ref"),
            key=lambda r: (r["status"] == str(Status.REVERSED), -r["create_time"].timestamp()),
        )
        for row in ref_rows:
            named.setdefault((row["external_ref_system"], row["external_ref_id"]), _entry(row))
        for row in sorted(
            (r for r in rows if r["why"] == "day"), key=lambda r: (r["create_time"], str(r["id"]))
        ):
            same_day.setdefault((row["consultant_id"], row["work_date"]), []).append(_entry(row))
        return named, same_day

    async def by_external_refs(self, refs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], TimeEntry]:
        """The entry each reference names, locked (see existing)."""
        named, _ = await self.existing(refs, ())
        return named

    async def page(
        self,
        filters: Mapping[str, Any],
        after: tuple[dt.date, str] | None,
        limit: int,
        view: EntryView = EntryView(),
    ) -> list[TimeEntry]:
        """Entries matching filters that view shows, ordered by (work_date, id).

        The view is a condition of the query, not a filter of its page: a page is full of
        entries the caller may read, and the next page starts after the last of them.
        """
        t = time_entries
        query = sa.select(t)
        if view.consultant_id is not None:
            query = query.where(t.c.consultant_id == view.consultant_id)
        if view.legal_entity_ids is not None:
            query = query.where(t.c.legal_entity_id.in_(sorted(view.legal_entity_ids)))
        for name in ("consultant_id", "project_id", "status"):
            if filters.get(name):
                query = query.where(t.c[name] == filters[name])
        if filters.get("approver_ids"):
            query = query.where(t.c.approver_id.in_(list(filters["approver_ids"])))
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

    async def approved_in(
        self, start: dt.date, end: dt.date, legal_entity_id: str, scope: frozenset[str] | None = None
    ) -> list[TimeEntry]:
        """Entries that were approved worked in the period: still APPROVED (reversals included,
        with their negative hours) or REVERSED since, so the net is what remains approved.
        Only scope's legal entities when given."""
        t = time_entries
        query = sa.select(t).where(
            t.c.work_date.between(start, end), t.c.status.in_([str(Status.APPROVED), str(Status.REVERSED)])
        )
        if legal_entity_id:
            query = query.where(t.c.legal_entity_id == legal_entity_id)
        if scope is not None:
            query = query.where(t.c.legal_entity_id.in_(sorted(scope)))
        rows = await self._conn.execute(query.order_by(t.c.project_id, t.c.work_date, t.c.id))
        return [_entry(row) for row in rows]

    async def due_for_escalation(self, now: dt.datetime, below_level: int, limit: int) -> list[TimeEntry]:
        """Pending entries due by now, earliest first, locked; rows another replica is escalating
        are skipped, not waited for. Entries queued before due times were stored (none) come
        first, for the caller to work out theirs."""
        t = time_entries
        rows = await self._conn.execute(
            sa.select(t)
            .where(
                t.c.status == str(Status.PENDING_APPROVAL),
                sa.or_(t.c.escalation_due_time <= now, t.c.escalation_due_time.is_(None)),
                t.c.escalation_level < below_level,
            )
            .order_by(t.c.escalation_due_time.asc().nulls_first())
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return [_entry(row) for row in rows]


def _lock(row: Any) -> PeriodLock:
    m = row._mapping if hasattr(row, "_mapping") else row
    return PeriodLock(
        id=str(m["id"]),
        legal_entity_id=m["legal_entity_id"],
        locked_through=m["locked_through"],
        reason=m["reason"],
        locked_by_id=m["locked_by_id"],
        create_time=m["create_time"],
        reopened_by_id=m["reopened_by_id"],
        reopen_reason=m["reopen_reason"],
        reopen_time=m["reopen_time"],
    )


class PeriodLockRepository:
    """Period locks and their reopening."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._conn = connection

    async def add(self, lock: PeriodLock) -> None:
        """Record a new lock."""
        await self._conn.execute(
            sa.insert(period_locks).values(
                id=lock.id,
                legal_entity_id=lock.legal_entity_id,
                locked_through=lock.locked_through,
                reason=lock.reason,
                locked_by_id=lock.locked_by_id,
                create_time=lock.create_time,
            )
        )

    async def save_reopening(self, lock: PeriodLock) -> None:
        """Record who reopened the lock, when and why."""
        await self._conn.execute(
            sa.update(period_locks)
            .where(period_locks.c.id == lock.id)
            .values(
                reopened_by_id=lock.reopened_by_id,
                reopen_reason=lock.reopen_reason,
                reopen_time=lock.reopen_time,
            )
        )

    async def get(self, lock_id: str) -> PeriodLock | None:
        """One lock."""
        if not _is_uuid(lock_id):
            return None
        row = (await self._conn.execute(sa.select(period_locks).where(period_locks.c.id == lock_id))).first()
        return _lock(row) if row is not None else None

    async def latest_active(self, legal_entity_ids: Iterable[str]) -> dict[str, PeriodLock]:
        """Per legal entity, the lock in force that reaches furthest (every submission asks)."""
        wanted = sorted(set(legal_entity_ids))
        if not wanted:
            return {}
        conn = await driver(self._conn)
        rows = await conn.fetch(
            f"SELECT DISTINCT ON (legal_entity_id) * FROM {SCHEMA}.{period_locks.name} "
            "WHERE legal_entity_id = ANY($1::text[]) AND reopen_time IS NULL "
            "ORDER BY legal_entity_id, locked_through DESC, create_time DESC",
            wanted,
        )
        return {row["legal_entity_id"]: _lock(row) for row in rows}

    async def page(
        self,
        legal_entity_id: str,
        after: tuple[dt.datetime, str] | None,
        limit: int,
        scope: frozenset[str] | None = None,
    ) -> list[PeriodLock]:
        """Locks newest first, optionally for one legal entity; only scope's entities when given."""
        t = period_locks
        query = sa.select(t)
        if legal_entity_id:
            query = query.where(t.c.legal_entity_id == legal_entity_id)
        if scope is not None:
            query = query.where(t.c.legal_entity_id.in_(sorted(scope)))
        if after is not None:
            query = query.where(
                sa.tuple_(t.c.create_time, t.c.id)
                < sa.tuple_(sa.literal(after[0]), sa.literal(after[1], sa.Uuid(as_uuid=False)))
            )
        rows = await self._conn.execute(query.order_by(t.c.create_time.desc(), t.c.id.desc()).limit(limit))
        return [_lock(row) for row in rows]


def _delegation(row: Any) -> Delegation:
    return Delegation(
        id=row.id,
        delegator_id=row.delegator_id,
        delegate_id=row.delegate_id,
        start_date=row.start_date,
        end_date=row.end_date,
        reason=row.reason,
        create_time=row.create_time,
        revoked_by_id=row.revoked_by_id,
        revoke_time=row.revoke_time,
        legal_entity_id=row.legal_entity_id,
    )


class DelegationRepository:
    """Approval delegations."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._conn = connection

    async def add(self, delegation: Delegation) -> None:
        """Record a new delegation."""
        await self._conn.execute(
            sa.insert(approval_delegations).values(
                id=delegation.id,
                delegator_id=delegation.delegator_id,
                delegate_id=delegation.delegate_id,
                start_date=delegation.start_date,
                end_date=delegation.end_date,
                reason=delegation.reason,
                create_time=delegation.create_time,
                legal_entity_id=delegation.legal_entity_id,
            )
        )

    async def save_revocation(self, delegation: Delegation) -> None:
        """Record who revoked the delegation and when."""
        await self._conn.execute(
            sa.update(approval_delegations)
            .where(approval_delegations.c.id == delegation.id)
            .values(revoked_by_id=delegation.revoked_by_id, revoke_time=delegation.revoke_time)
        )

    async def get(self, delegation_id: str, *, for_update: bool = False) -> Delegation | None:
        """One delegation."""
        if not _is_uuid(delegation_id):
            return None
        query = sa.select(approval_delegations).where(approval_delegations.c.id == delegation_id)
        if for_update:
            query = query.with_for_update()
        row = (await self._conn.execute(query)).first()
        return _delegation(row) if row is not None else None

    async def live_for(self, delegate_id: str, first: dt.date, last: dt.date) -> list[Delegation]:
        """The delegate's delegations not revoked that cover any day from first to last."""
        t = approval_delegations
        rows = await self._conn.execute(
            sa.select(t).where(
                t.c.delegate_id == delegate_id,
                t.c.revoke_time.is_(None),
                t.c.start_date <= last,
                t.c.end_date >= first,
            )
        )
        return [_delegation(row) for row in rows]

    async def page(
        self,
        filters: Mapping[str, Any],
        after: tuple[dt.datetime, str] | None,
        limit: int,
        view: DelegationView = DelegationView(),
    ) -> list[Delegation]:
        """Delegations view shows, newest first, filtered by delegator, delegate and the day
        they cover."""
        t = approval_delegations
        query = sa.select(t)
        if view.party is not None:
            query = query.where(sa.or_(t.c.delegator_id == view.party, t.c.delegate_id == view.party))
        if view.legal_entity_ids is not None:
            query = query.where(t.c.legal_entity_id.in_(sorted(view.legal_entity_ids)))
        for name in ("delegator_id", "delegate_id"):
            if filters.get(name):
                query = query.where(t.c[name] == filters[name])
        if filters.get("active_on"):
            day = filters["active_on"]
            query = query.where(t.c.revoke_time.is_(None), t.c.start_date <= day, t.c.end_date >= day)
        if after is not None:
            query = query.where(
                sa.tuple_(t.c.create_time, t.c.id)
                < sa.tuple_(sa.literal(after[0]), sa.literal(after[1], sa.Uuid(as_uuid=False)))
            )
        rows = await self._conn.execute(query.order_by(t.c.create_time.desc(), t.c.id.desc()).limit(limit))
        return [_delegation(row) for row in rows]


class ProjectionMaintenance:
    """Clearing the local master-data projection so it can be rebuilt from the stream."""

    def __init__(self, connection: AsyncConnection, consumer: str) -> None:
        self._conn = connection
        self._consumer = consumer

    async def clear(self) -> int:
        """Delete every projected record and the consumer's inbox rows; returns records deleted.

        Without its inbox rows the consumer applies replayed events again instead of dropping
        them as already seen.
        """
        await self._conn.execute(sa.delete(inbox).where(inbox.c.consumer == self._consumer))
        result = await self._conn.execute(sa.delete(md_projection))
        return int(result.rowcount or 0)
