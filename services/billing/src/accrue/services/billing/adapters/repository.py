"""The billing ledger, runs, invoices, posting jobs and exceptions in PostgreSQL (SQLAlchemy Core).

Two hot paths use the asyncpg connection under the unit of work directly (same transaction):
streaming unbilled work through a server-side cursor, and marking billed entries per line with
one array-bound UPDATE each. Everything else is plain SQLAlchemy Core.
"""

from __future__ import annotations

import datetime as dt
import uuid
import zlib
from collections.abc import AsyncIterator, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.ext.asyncio import AsyncConnection

from accrue.billing.v1 import resources_pb2 as bl
from accrue.masterdata.v1 import resources_pb2 as md
from accrue.money import format_decimal, format_money
from accrue.runtime import Aborted
from accrue.services.billing.adapters.tables import (
    UNBILLED,
    billing_exceptions,
    billing_runs,
    cap_thresholds,
    invoice_lines,
    invoice_numbers,
    invoices,
    milestones,
    posting_jobs,
    rate_limits,
    wip_entries,
)
from accrue.services.billing.domain.invoicing import DraftLine, LineKind, LineTotals, WorkItem

ZERO = Decimal(0)
# work_mem for a run's transaction: a million unbilled rows sort in about 200 MB.
SORT_MEMORY = "256MB"


@dataclass(frozen=True, slots=True)
class UnbilledEntry:
    """An unbilled ledger row as a run streams it."""

    item: WorkItem
    legal_entity_id: str
    customer_id: str
    reverses_id: str | None = None
    overage_approved: bool = False


@dataclass(frozen=True)
class ExceptionDraft:
    """A billing exception to raise."""

    kind: str  # BillingExceptionKind without prefix
    legal_entity_id: str
    detail: str
    time_entry_ids: tuple[str, ...]
    hours: Decimal
    contract_id: str = ""
    contract_line_id: str = ""
    project_id: str = ""
    amount: Decimal | None = None
    currency: str = ""
    invoice_id: str | None = None
    milestone_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class CreditSource:
    """What a reversal credits: the invoiced line of its original entry."""

    invoice_id: str
    line_id: str
    contract_id: str
    customer_id: str
    currency: str
    contract_line_id: str
    project_id: str
    labor_category_id: str
    rate_card_entry_id: str
    unit_price: Decimal
    tax_code: str
    tax_rate: Decimal
    tax_rate_id: str
    rate_card_rate: Decimal | None
    rate_card_currency: str
    fx_rate: Decimal | None
    fx_rate_id: str
    rounding_mode: str
    rounding_scope: str


@dataclass
class StoredDraft:
    """A DRAFT invoice of the current run, which late work may join."""

    invoice_id: str
    lines: dict[tuple[object, ...], tuple[str, LineTotals]] = field(default_factory=dict)
    positions: int = 0


@dataclass(frozen=True)
class PostingJob:
    """A claimed (leased) posting job; `attempts` already counts the attempt it was claimed for."""

    invoice_id: str
    legal_entity_id: str
    attempts: int
    erp_system: str
    leased_until: dt.datetime


def _is_uuid(value: str) -> bool:
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


def _ts(msg: Any, field_name: str, value: dt.datetime | None) -> None:
    if value is not None:
        getattr(msg, field_name).FromDatetime(value)


def _dec(value: Decimal | None, places: int | None = None) -> str:
    return "" if value is None else format_decimal(Decimal(value), places)


class BillingRepository:
    """Billing tables on the unit of work's connection."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._conn = connection
        self._billed_table = False
        self._billed_notes = 0

    async def _raw(self) -> Any:
        """The asyncpg connection under this transaction (for cursors and array updates)."""
        raw = await self._conn.get_raw_connection()
        return raw.driver_connection

    # -- the ledger ---------------------------------------------------------------------------

    async def add_work(self, row: Mapping[str, Any]) -> bool:
        """Record approved time once; False when it was already there."""
        result = await self._conn.execute(
            insert(wip_entries).values(**row).on_conflict_do_nothing().returning(wip_entries.c.time_entry_id)
        )
        return result.first() is not None

    async def work_for_update(self, time_entry_id: str) -> Any | None:
        """One ledger row, locked."""
        return (
            await self._conn.execute(
                sa.select(wip_entries).where(wip_entries.c.time_entry_id == time_entry_id).with_for_update()
            )
        ).first()

    async def set_work(self, time_entry_ids: Sequence[str], **values: Any) -> None:
        """Update ledger rows."""
        if time_entry_ids:
            await self._conn.execute(
                sa.update(wip_entries)
                .where(wip_entries.c.time_entry_id.in_(list(time_entry_ids)))
                .values(**values)
            )

    async def stream_unbilled(
        self,
        legal_entity_id: str,
        start: dt.date | None,
        end: dt.date,
        cutoff: dt.datetime | None,
        batch: int = 5000,
    ) -> AsyncIterator[list[UnbilledEntry]]:
        """Unbilled work, project by project: yields one project's rows at a time.

        A server-side cursor fetches `batch` rows at a time, so memory holds one project's work,
        not the period's. The caller holds its legal entities' billing locks (`lock_legal_entities`),
        so no other run and no reversal, void or write-off changes these rows until it commits:
        locking the rows themselves would cost a write per row for nothing.
        """
        conditions = [UNBILLED, "work_date <= $1"]
        args: list[Any] = [end]
        if start is not None:
            args.append(start)
            conditions.append(f"work_date >= ${len(args)}")
        if cutoff is not None:
            args.append(cutoff)
            conditions.append(f"(approve_time IS NULL OR approve_time <= ${len(args)})")
        if legal_entity_id:
            args.append(legal_entity_id)
            conditions.append(f"legal_entity_id = ${len(args)}")
        sql = (
            "SELECT time_entry_id, project_id, consultant_id, labor_category_id, legal_entity_id,"
            " customer_id, work_date, hours, reverses_id, overage_approved"
            f" FROM {wip_entries.schema}.wip_entries WHERE {' AND '.join(conditions)}"
            " ORDER BY legal_entity_id, project_id, work_date, time_entry_id"
        )
        raw = await self._raw()
        # A run sorts the period's work once; let that happen in memory rather than on disk.
        await raw.execute(f"SET LOCAL work_mem = '{SORT_MEMORY}'")
        group: list[UnbilledEntry] = []
        current = None
        async for r in raw.cursor(sql, *args, prefetch=batch):
            if r[1] != current and group:
                yield group
                group = []
            current = r[1]
            group.append(UnbilledEntry(WorkItem(r[0], r[1], r[2], r[3], r[6], r[7]), r[4], r[5], r[8], r[9]))
        if group:
            yield group

    async def credit_sources(self, originals: Sequence[str]) -> dict[str, CreditSource]:
        """For reversed entries: the invoice line each was billed on (live invoices only)."""
        if not originals:
            return {}
        w, ln, inv = wip_entries, invoice_lines, invoices
        rows = await self._conn.execute(
            sa.select(
                w.c.time_entry_id,
                ln.c.id,
                ln.c.invoice_id,
                inv.c.contract_id,
                inv.c.customer_id,
                inv.c.currency,
                ln.c.contract_line_id,
                ln.c.project_id,
                ln.c.labor_category_id,
                ln.c.rate_card_entry_id,
                ln.c.unit_price,
                ln.c.tax_code,
                ln.c.tax_rate,
                ln.c.tax_rate_id,
                ln.c.rate_card_rate,
                ln.c.rate_card_currency,
                ln.c.fx_rate,
                ln.c.fx_rate_id,
                inv.c.rounding_mode,
                inv.c.rounding_scope,
            )
            .select_from(w.join(ln, ln.c.id == w.c.invoice_line_id).join(inv, inv.c.id == ln.c.invoice_id))
            .where(w.c.time_entry_id.in_(list(originals)), inv.c.status != "VOID")
        )
        return {
            r[0]: CreditSource(
                r[2],
                r[1],
                r[3],
                r[4],
                r[5],
                r[6],
                r[7],
                r[8],
                r[9],
                r[10],
                r[11],
                r[12],
                r[13],
                r[14],
                r[15],
                r[16],
                r[17],
                r[18],
                r[19],
            )
            for r in rows
        }

    async def lock_legal_entities(self, legal_entity_ids: Iterable[str], *, shared: bool = False) -> None:
        """Take the legal entities' billing locks until commit (in a fixed order: no deadlock).

        A run takes them exclusively; whatever changes unbilled work (a reversal, a void, a
        write-off) takes its legal entity's lock shared, so it waits for a run in progress and
        a run waits for it. Approvals only insert and need no lock.
        """
        function = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
        for legal_entity_id in sorted(set(legal_entity_ids)):
            key = zlib.crc32(f"billing-legal-entity|{legal_entity_id}".encode()) - 2**31
            await self._conn.exec_driver_sql(f"SELECT {function}($1)", (key,))

    async def legal_entities_of(self, kind: str, record_id: str) -> list[str]:
        """The legal entity of an invoice or an exception (none when the id is unknown)."""
        if not _is_uuid(record_id):
            return []
        table = invoices if kind == "invoice" else billing_exceptions
        found = await self._conn.scalar(sa.select(table.c.legal_entity_id).where(table.c.id == record_id))
        return [found] if found is not None else []

    async def legal_entities_in_scope(self, end: dt.date) -> list[str]:
        """Legal entities with unbilled work or milestones dated up to end."""
        w, m = wip_entries, milestones
        work = sa.select(w.c.legal_entity_id).where(sa.text(UNBILLED), w.c.work_date <= end).distinct()
        done = sa.select(m.c.legal_entity_id).where(
            m.c.invoice_id.is_(None), m.c.hold.is_(None), m.c.complete_date <= end
        )
        return sorted(r[0] for r in await self._conn.execute(sa.union(work, done)))

    async def mark_billed(self, invoice_id: str, lines: Iterable[tuple[str, list[str]]]) -> None:
        """Note entries as billed on their lines; `apply_billed` writes them to the ledger.

        The notes go to a temporary table by COPY as the run streams; the ledger is updated once,
        at the end, in one join. Updating project by project would visit every heap page of the
        ledger once per project (a project's entries are spread over the table); one join visits
        each page once.
        """
        rows = [(entry_id, invoice_id, line_id) for line_id, ids in lines for entry_id in ids]
        if not rows:
            return
        raw = await self._raw()
        if not self._billed_table:
            await raw.execute(
                "CREATE TEMPORARY TABLE billed_now (entry_id text, invoice_id uuid, line_id uuid)"
                " ON COMMIT DROP"
            )
            self._billed_table = True
        await raw.copy_records_to_table(
            "billed_now", records=rows, columns=["entry_id", "invoice_id", "line_id"]
        )
        self._billed_notes += len(rows)

    async def apply_billed(self) -> int:
        """Write the noted entries' invoice and line to the ledger; returns how many."""
        if not self._billed_notes:
            return 0
        raw = await self._raw()
        status = await raw.execute(
            f"UPDATE {wip_entries.schema}.wip_entries w"
            " SET invoice_id = b.invoice_id, invoice_line_id = b.line_id"
            " FROM billed_now b WHERE w.time_entry_id = b.entry_id"
        )
        noted, self._billed_notes = self._billed_notes, 0
        await raw.execute("TRUNCATE billed_now")
        if status != f"UPDATE {noted}":
            # Cannot happen while the legal entity lock is held; refuse to commit if it does.
            raise Aborted(f"billing {noted} entries changed {status}; the run is rolled back, try again")
        return noted

    async def settle_fixed_fee(self, time_entry_ids: Sequence[str], contract_line_id: str) -> int:
        """Hold unbilled time as covered by a fixed fee (never invoiced); returns how many rows.

        Only rows still unbilled are taken, so settling the same entries again changes nothing.
        """
        if not time_entry_ids:
            return 0
        raw = await self._raw()
        status = await raw.execute(
            f"UPDATE {wip_entries.schema}.wip_entries SET hold = 'FIXED_FEE', hold_ref = $2"
            f" WHERE time_entry_id = ANY($1::text[]) AND {UNBILLED}",
            list(time_entry_ids),
            contract_line_id,
        )
        return int(status.split()[-1])

    async def legal_entities_with_work(
        self, end: dt.date, cutoff: dt.datetime, among: Sequence[str]
    ) -> list[str]:
        """Which of these legal entities have unbilled work or milestones due by the period end
        and cut-off."""
        w, m = wip_entries, milestones
        work = sa.select(w.c.legal_entity_id).where(
            sa.text(UNBILLED),
            w.c.legal_entity_id.in_(list(among)),
            w.c.work_date <= end,
            sa.or_(w.c.approve_time.is_(None), w.c.approve_time <= cutoff),
        )
        done = sa.select(m.c.legal_entity_id).where(
            m.c.invoice_id.is_(None),
            m.c.hold.is_(None),
            m.c.legal_entity_id.in_(list(among)),
            m.c.complete_date <= end,
            m.c.complete_time <= cutoff,
        )
        rows = await self._conn.execute(sa.union(work, done))
        return sorted(r[0] for r in rows)

    async def earliest_unbilled(self) -> dict[str, dt.date]:
        """Every legal entity with unbilled work or milestones, and the oldest day among them."""
        w, m = wip_entries, milestones
        work = (
            sa.select(w.c.legal_entity_id, sa.func.min(w.c.work_date).label("day"))
            .where(sa.text(UNBILLED))
            .group_by(w.c.legal_entity_id)
        )
        done = (
            sa.select(m.c.legal_entity_id, sa.func.min(m.c.complete_date).label("day"))
            .where(m.c.invoice_id.is_(None), m.c.hold.is_(None))
            .group_by(m.c.legal_entity_id)
        )
        both = sa.union_all(work, done).subquery()
        rows = await self._conn.execute(
            sa.select(both.c.legal_entity_id, sa.func.min(both.c.day)).group_by(both.c.legal_entity_id)
        )
        return {r[0]: r[1] for r in rows}

    async def work_in(
        self, start: dt.date, end: dt.date, legal_entity_id: str, scope: Collection[str] | None = None
    ) -> list[Any]:
        """Every entry billing holds worked in the period, with its invoice's status if any.

        scope: the legal entities the caller may see (None: all).
        """
        t = wip_entries
        query = (
            sa.select(
                t.c.time_entry_id,
                t.c.project_id,
                t.c.legal_entity_id,
                t.c.hours,
                t.c.billable,
                t.c.invoice_id,
                t.c.reverses_id,
                t.c.hold,
                invoices.c.status,
            )
            .select_from(t.outerjoin(invoices, invoices.c.id == t.c.invoice_id))
            .where(t.c.work_date.between(start, end))
        )
        if legal_entity_id:
            query = query.where(t.c.legal_entity_id == legal_entity_id)
        if scope is not None:
            query = query.where(t.c.legal_entity_id.in_(sorted(scope)))
        return list(
            await self._conn.execute(query.order_by(t.c.project_id, t.c.work_date, t.c.time_entry_id))
        )

    # -- milestones ---------------------------------------------------------------------------

    async def add_milestone(self, row: Mapping[str, Any]) -> bool:
        """Record a completed milestone once; False when it was already there."""
        result = await self._conn.execute(
            insert(milestones).values(**row).on_conflict_do_nothing().returning(milestones.c.milestone_id)
        )
        return result.first() is not None

    async def unbilled_milestones(
        self, legal_entity_id: str, start: dt.date | None, end: dt.date, cutoff: dt.datetime | None
    ) -> list[Any]:
        """Completed, unbilled milestones in scope, locked."""
        m = milestones
        query = sa.select(m).where(m.c.invoice_id.is_(None), m.c.hold.is_(None), m.c.complete_date <= end)
        if start is not None:
            query = query.where(m.c.complete_date >= start)
        if cutoff is not None:
            query = query.where(m.c.complete_time <= cutoff)
        if legal_entity_id:
            query = query.where(m.c.legal_entity_id == legal_entity_id)
        rows = await self._conn.execute(
            query.order_by(m.c.contract_id, m.c.complete_date, m.c.milestone_id).with_for_update()
        )
        return list(rows)

    async def set_milestones(self, milestone_ids: Sequence[str], **values: Any) -> None:
        """Update milestones."""
        if milestone_ids:
            await self._conn.execute(
                sa.update(milestones)
                .where(milestones.c.milestone_id.in_(list(milestone_ids)))
                .values(**values)
            )

    # -- runs ---------------------------------------------------------------------------------

    async def run_for(
        self,
        legal_entity_key: str,
        start: dt.date,
        end: dt.date,
        billing_period: str,
        now: dt.datetime,
        *,
        scheduled: bool = False,
        cutoff: dt.datetime | None = None,
    ) -> tuple[str, dt.datetime, bool]:
        """The run for this scope and period (created on first use) and whether it is new."""
        run_id = str(uuid.uuid4())
        stmt = insert(billing_runs).values(
            id=run_id,
            legal_entity_key=legal_entity_key,
            period_start=start,
            period_end=end,
            billing_period=billing_period,
            scheduled=scheduled,
            cutoff_time=cutoff,
            create_time=now,
        )
        await self._conn.execute(stmt.on_conflict_do_nothing(constraint="billing_runs_scope_key"))
        t = billing_runs
        row = (
            await self._conn.execute(
                sa.select(t.c.id, t.c.create_time).where(
                    t.c.legal_entity_key == legal_entity_key,
                    t.c.period_start == start,
                    t.c.period_end == end,
                    t.c.billing_period == billing_period,
                )
            )
        ).one()
        return row.id, row.create_time, row.id == run_id

    async def last_scheduled_ends(self, billing_period: str) -> dict[str, dt.date]:
        """Per legal entity, the end of the latest period of this frequency the scheduler billed.

        Per legal entity because each has its own calendar: a Brisbane entity's month is billed
        hours before a UTC one's, and must not count as the UTC one's.
        """
        t = billing_runs
        rows = await self._conn.execute(
            sa.select(t.c.legal_entity_key, sa.func.max(t.c.period_end))
            .where(t.c.scheduled, t.c.billing_period == billing_period)
            .group_by(t.c.legal_entity_key)
        )
        return {r[0]: r[1] for r in rows}

    async def run(self, run_id: str) -> Any | None:
        """A run's row."""
        if not _is_uuid(run_id):
            return None
        return (await self._conn.execute(sa.select(billing_runs).where(billing_runs.c.id == run_id))).first()

    async def run_exceptions(self, run_id: str, scope: Collection[str] | None = None) -> list[str]:
        """Ids of the exceptions a run raised (in scope's legal entities, if given), newest first."""
        t = billing_exceptions
        query = sa.select(t.c.id).where(t.c.billing_run_id == run_id)
        if scope is not None:
            query = query.where(t.c.legal_entity_id.in_(sorted(scope)))
        rows = await self._conn.execute(query.order_by(t.c.create_time.desc(), t.c.id))
        return [r.id for r in rows]

    async def billed_on_line(self, contract_line_id: str) -> Decimal:
        """What live (non-void) invoices bill on a contract line, credits deducted."""
        total = await self._conn.scalar(
            sa.select(sa.func.coalesce(sa.func.sum(invoice_lines.c.amount), 0))
            .select_from(invoice_lines.join(invoices))
            .where(invoice_lines.c.contract_line_id == contract_line_id, invoices.c.status != "VOID")
        )
        return Decimal(total or 0)

    async def posted_on_line(self, contract_line_id: str) -> Decimal:
        """What POSTED invoices bill on a contract line."""
        total = await self._conn.scalar(
            sa.select(sa.func.coalesce(sa.func.sum(invoice_lines.c.amount), 0))
            .select_from(invoice_lines.join(invoices))
            .where(invoice_lines.c.contract_line_id == contract_line_id, invoices.c.status == "POSTED")
        )
        return Decimal(total or 0)

    async def capped_lines_of(self, invoice_id: str) -> list[str]:
        """The contract lines an invoice bills (for cap bookkeeping after a void)."""
        rows = await self._conn.execute(
            sa.select(invoice_lines.c.contract_line_id)
            .distinct()
            .where(invoice_lines.c.invoice_id == invoice_id)
        )
        return [r[0] for r in rows]

    async def sync_cap_thresholds(
        self, contract_line_id: str, reached: set[int], billed: Decimal, now: dt.datetime
    ) -> list[int]:
        """Record the thresholds reached now; forget those no longer reached. Returns new ones."""
        t = cap_thresholds
        known = {
            r[0]
            for r in await self._conn.execute(
                sa.select(t.c.threshold_percent)
                .where(t.c.contract_line_id == contract_line_id)
                .with_for_update()
            )
        }
        gone = known - reached
        if gone:
            await self._conn.execute(
                sa.delete(t).where(t.c.contract_line_id == contract_line_id, t.c.threshold_percent.in_(gone))
            )
        new = sorted(reached - known)
        if new:
            await self._conn.execute(
                sa.insert(t),
                [
                    {
                        "contract_line_id": contract_line_id,
                        "threshold_percent": p,
                        "billed_amount": billed,
                        "reach_time": now,
                    }
                    for p in new
                ],
            )
        return new

    async def thresholds_of(self, contract_line_id: str) -> list[int]:
        """Thresholds currently reached on a line."""
        t = cap_thresholds
        rows = await self._conn.execute(
            sa.select(t.c.threshold_percent)
            .where(t.c.contract_line_id == contract_line_id)
            .order_by(t.c.threshold_percent)
        )
        return [r[0] for r in rows]

    # -- invoices -----------------------------------------------------------------------------

    async def drafts_of_run(self, run_id: str) -> dict[tuple[str, str], StoredDraft]:
        """The run's DRAFT invoices by (contract, currency), with their lines' running figures."""
        heads = await self._conn.execute(
            sa.select(invoices.c.id, invoices.c.contract_id, invoices.c.currency)
            .where(invoices.c.billing_run_id == run_id, invoices.c.status == "DRAFT")
            .order_by(invoices.c.create_time)
            .with_for_update()
        )
        drafts: dict[tuple[str, str], StoredDraft] = {}
        by_id: dict[str, StoredDraft] = {}
        for h in heads:
            key = (h.contract_id, h.currency)
            if key not in drafts:
                drafts[key] = by_id[h.id] = StoredDraft(h.id)
        if not by_id:
            return drafts
        ln = invoice_lines
        for r in await self._conn.execute(sa.select(ln).where(ln.c.invoice_id.in_(list(by_id)))):
            draft = by_id[r.invoice_id]
            draft.positions = max(draft.positions, r.position)
            line = DraftLine(
                kind=LineKind(r.kind),
                contract_line_id=r.contract_line_id,
                project_id=r.project_id,
                unit_price=Decimal(r.unit_price),
                labor_category_id=r.labor_category_id,
                rate_card_entry_id=r.rate_card_entry_id,
                tax_code=r.tax_code,
                tax_rate=Decimal(r.tax_rate),
                milestone_id=r.milestone_id,
                credited_line_id=r.credited_line_id or "",
            )
            draft.lines[line.key] = (
                r.id,
                LineTotals(Decimal(r.quantity), Decimal(r.exact_amount), Decimal(r.amount)),
            )
        return drafts

    async def create_invoice(
        self,
        *,
        run_id: str,
        contract_id: str,
        customer_id: str,
        legal_entity_id: str,
        currency: str,
        start: dt.date,
        end: dt.date,
        rounding_mode: str,
        rounding_scope: str,
        now: dt.datetime,
    ) -> str:
        """An empty DRAFT; lines and totals follow."""
        invoice_id = str(uuid.uuid4())
        await self._conn.execute(
            sa.insert(invoices).values(
                id=invoice_id,
                number=None,
                legal_entity_id=legal_entity_id,
                customer_id=customer_id,
                contract_id=contract_id,
                billing_run_id=run_id,
                period_start=start,
                period_end=end,
                currency=currency,
                status="DRAFT",
                subtotal=ZERO,
                tax_total=ZERO,
                total=ZERO,
                rounding_residual=ZERO,
                rounding_mode=rounding_mode,
                rounding_scope=rounding_scope,
                erp_document_id="",
                post_time=None,
                create_time=now,
                update_time=now,
            )
        )
        return invoice_id

    async def insert_lines(
        self, invoice_id: str, first_position: int, lines: Sequence[DraftLine]
    ) -> list[str]:
        """Insert new lines; returns their ids in order."""
        ids = [str(uuid.uuid4()) for _ in lines]
        if not lines:
            return ids
        await self._conn.execute(
            sa.insert(invoice_lines),
            [
                {
                    "id": line_id,
                    "invoice_id": invoice_id,
                    "position": first_position + i,
                    "kind": line.kind.value,
                    "description": line.description,
                    "quantity": line.quantity,
                    "unit_price": line.unit_price,
                    "amount": line.amount,
                    "exact_amount": line.exact_amount,
                    "tax_code": line.tax_code,
                    "tax_rate": line.tax_rate,
                    "tax_amount": line.tax_amount,
                    "tax_rate_id": line.tax_rate_id,
                    "contract_line_id": line.contract_line_id,
                    "project_id": line.project_id,
                    "labor_category_id": line.labor_category_id,
                    "rate_card_entry_id": line.rate_card_entry_id,
                    "source_time_entry_ids": line.items,
                    "rate_card_rate": line.rate_card_rate,
                    "rate_card_currency": line.rate_card_currency,
                    "fx_rate": line.fx_rate,
                    "fx_rate_id": line.fx_rate_id,
                    "milestone_id": line.milestone_id,
                    "credited_invoice_id": line.credited_invoice_id or None,
                    "credited_line_id": line.credited_line_id or None,
                }
                for i, (line_id, line) in enumerate(zip(ids, lines, strict=True))
            ],
        )
        return ids

    async def update_line(
        self, line_id: str, totals: LineTotals, tax_amount: Decimal, description: str, added: Sequence[str]
    ) -> None:
        """New running figures for a draft line that late work joined, and its added sources."""
        ln = invoice_lines
        await self._conn.execute(
            sa.update(ln)
            .where(ln.c.id == line_id)
            .values(
                quantity=totals.quantity,
                exact_amount=totals.exact_amount,
                amount=totals.amount,
                tax_amount=tax_amount,
                description=description,
                source_time_entry_ids=ln.c.source_time_entry_ids + sa.cast(list(added), ARRAY(sa.Text)),
            )
        )

    async def refresh_totals(self, invoice_ids: Iterable[str], now: dt.datetime) -> None:
        """Invoice totals as the sums of their rounded lines."""
        ids = list(invoice_ids)
        if not ids:
            return
        ln = invoice_lines
        sums = (
            sa.select(
                ln.c.invoice_id,
                sa.func.sum(ln.c.amount).label("subtotal"),
                sa.func.sum(ln.c.tax_amount).label("tax_total"),
                sa.func.sum(ln.c.amount - ln.c.exact_amount).label("residual"),
            )
            .where(ln.c.invoice_id.in_(ids))
            .group_by(ln.c.invoice_id)
            .subquery()
        )
        await self._conn.execute(
            sa.update(invoices)
            .where(invoices.c.id == sums.c.invoice_id)
            .values(
                subtotal=sums.c.subtotal,
                tax_total=sums.c.tax_total,
                total=sums.c.subtotal + sums.c.tax_total,
                rounding_residual=sums.c.residual,
                update_time=now,
            )
        )

    async def invoice_for_update(self, invoice_id: str) -> Any | None:
        """An invoice's row with its posting job's status, locked."""
        if not _is_uuid(invoice_id):
            return None
        return (
            await self._conn.execute(
                sa.select(invoices, posting_jobs.c.status.label("posting_status"))
                .select_from(invoices.outerjoin(posting_jobs, posting_jobs.c.invoice_id == invoices.c.id))
                .where(invoices.c.id == invoice_id)
                .with_for_update(of=invoices)
            )
        ).first()

    async def approver_of(self, invoice_id: str) -> str:
        """Who approved an invoice ("" when nobody has, or there is no such invoice); unlocked."""
        if not _is_uuid(invoice_id):
            return ""
        found = await self._conn.scalar(sa.select(invoices.c.approved_by).where(invoices.c.id == invoice_id))
        return found or ""

    async def set_invoice(self, invoice_id: str, **values: Any) -> None:
        """Update an invoice's head."""
        await self._conn.execute(sa.update(invoices).where(invoices.c.id == invoice_id).values(**values))

    async def release_invoice(self, invoice_id: str) -> tuple[list[Any], list[str]]:
        """Take a voided invoice's work and milestones off it; returns the work rows and milestones."""
        w, ln = wip_entries, invoice_lines
        sources = sa.select(sa.func.unnest(ln.c.source_time_entry_ids)).where(ln.c.invoice_id == invoice_id)
        work = list(
            await self._conn.execute(
                sa.update(w)
                .where(w.c.time_entry_id.in_(sources.scalar_subquery()), w.c.invoice_id == invoice_id)
                .values(invoice_id=None, invoice_line_id=None)
                .returning(w.c.time_entry_id, w.c.reverses_id, w.c.reversed_by_id)
            )
        )
        m = milestones
        released = [
            r[0]
            for r in await self._conn.execute(
                sa.update(m)
                .where(m.c.invoice_id == invoice_id)
                .values(invoice_id=None, invoice_line_id=None)
                .returning(m.c.milestone_id)
            )
        ]
        return work, released

    async def live_credits_for(self, original_ids: Sequence[str]) -> list[str]:
        """Reversals of these entries that are on a live invoice (credited already)."""
        if not original_ids:
            return []
        w = wip_entries
        rows = await self._conn.execute(
            sa.select(w.c.time_entry_id, w.c.invoice_id)
            .select_from(w.join(invoices, invoices.c.id == w.c.invoice_id))
            .where(w.c.reverses_id.in_(list(original_ids)), invoices.c.status != "VOID")
        )
        return [f"{r[0]} (on invoice {r[1]})" for r in rows]

    async def next_number(self, legal_entity_id: str) -> int:
        """The legal entity's next invoice number; the counter row stays locked until commit."""
        t = invoice_numbers
        await self._conn.execute(
            insert(t).values(legal_entity_id=legal_entity_id, last_number=0).on_conflict_do_nothing()
        )
        number = await self._conn.scalar(
            sa.update(t)
            .where(t.c.legal_entity_id == legal_entity_id)
            .values(last_number=t.c.last_number + 1)
            .returning(t.c.last_number)
        )
        return int(number)

    async def invoices(self, ids: Sequence[str]) -> list[bl.Invoice]:
        """Invoices with their lines, lineage and posting state, in the order of ids."""
        wanted = [i for i in ids if _is_uuid(i)]
        if not wanted:
            return []
        heads = {
            r.id: r
            for r in await self._conn.execute(
                sa.select(
                    invoices, *[c.label(f"job_{c.name}") for c in posting_jobs.c if c.name != "invoice_id"]
                )
                .select_from(invoices.outerjoin(posting_jobs, posting_jobs.c.invoice_id == invoices.c.id))
                .where(invoices.c.id.in_(wanted))
            )
        }
        lines: dict[str, list[Any]] = {}
        for r in await self._conn.execute(
            sa.select(invoice_lines)
            .where(invoice_lines.c.invoice_id.in_(wanted))
            .order_by(invoice_lines.c.invoice_id, invoice_lines.c.position)
        ):
            lines.setdefault(r.invoice_id, []).append(r)
        return [_invoice(heads[i], lines.get(i, [])) for i in wanted if i in heads]

    async def invoice_ids(
        self,
        filters: Mapping[str, Any],
        after: str | None,
        limit: int,
        scope: Collection[str] | None = None,
    ) -> list[str]:
        """Invoice ids matching filters, newest first; only scope's legal entities' when given."""
        t = invoices
        query = sa.select(t.c.id)
        if scope is not None:
            # In the query, so a page is full of visible invoices and the token never skips any.
            query = query.where(t.c.legal_entity_id.in_(sorted(scope)))
        for name in ("legal_entity_id", "customer_id", "status", "billing_run_id"):
            if filters.get(name):
                if name == "billing_run_id" and not _is_uuid(filters[name]):
                    return []
                query = query.where(t.c[name] == filters[name])
        if after:
            if not _is_uuid(after):
                return []
            query = query.where(t.c.id < after)
        rows = await self._conn.execute(query.order_by(t.c.id.desc()).limit(limit))
        return [r.id for r in rows]

    # -- posting ------------------------------------------------------------------------------

    async def queue_posting(
        self, invoice_id: str, legal_entity_id: str, erp_system: str, actor: str, now: dt.datetime
    ) -> None:
        """Queue (or, after a failure, queue again) the invoice's posting job."""
        t = posting_jobs
        stmt = insert(t).values(
            invoice_id=invoice_id,
            legal_entity_id=legal_entity_id,
            status="QUEUED",
            attempts=0,
            next_attempt_time=now,
            last_error="",
            erp_system=erp_system,
            request_time=now,
            requested_by=actor,
            update_time=now,
        )
        await self._conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[t.c.invoice_id],
                set_={
                    "status": "QUEUED",
                    "attempts": 0,
                    "next_attempt_time": now,
                    "erp_system": erp_system,
                    "requested_by": actor,
                    "update_time": now,
                    "leased_until": None,
                },
                where=t.c.status == "FAILED",
            )
        )

    async def claim_posting_job(self, now: dt.datetime, lease: dt.timedelta) -> PostingJob | None:
        """Lease the oldest due job to the caller and count the attempt; None when none is due.

        SKIP LOCKED lets replicas claim side by side; the lease (and next_attempt_time moved to
        its end) keeps the job the caller's after this short transaction commits.
        """
        t = posting_jobs
        due = (
            sa.select(t.c.invoice_id)
            .where(t.c.status == "QUEUED", t.c.next_attempt_time <= now)
            .order_by(t.c.next_attempt_time)
            .limit(1)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        until = now + lease
        row = (
            await self._conn.execute(
                sa.update(t)
                .where(t.c.invoice_id == due)
                .values(
                    attempts=t.c.attempts + 1, leased_until=until, next_attempt_time=until, update_time=now
                )
                .returning(
                    t.c.invoice_id, t.c.legal_entity_id, t.c.attempts, t.c.erp_system, t.c.leased_until
                )
            )
        ).first()
        return PostingJob(row[0], row[1], row[2], row[3], row[4]) if row else None

    async def holds_lease(self, job: PostingJob) -> bool:
        """Whether the job is still QUEUED under this very lease; locks its row until commit.

        False once another worker re-claimed it after the lease ran out (it finishes the job), or
        once the job was closed.
        """
        t = posting_jobs
        found = await self._conn.scalar(
            sa.select(t.c.invoice_id)
            .where(
                t.c.invoice_id == job.invoice_id,
                t.c.status == "QUEUED",
                t.c.attempts == job.attempts,
                t.c.leased_until == job.leased_until,
            )
            .with_for_update()
        )
        return found is not None

    async def set_posting(self, invoice_id: str, **values: Any) -> None:
        """Update a posting job."""
        await self._conn.execute(
            sa.update(posting_jobs).where(posting_jobs.c.invoice_id == invoice_id).values(**values)
        )

    async def posting_counts(self) -> dict[str, int]:
        """Jobs per status (for the metrics)."""
        t = posting_jobs
        rows = await self._conn.execute(sa.select(t.c.status, sa.func.count()).group_by(t.c.status))
        return {r[0]: int(r[1]) for r in rows}

    async def take_token(self, name: str, rate: float, burst: float) -> float:
        """Take one token from a shared bucket; returns 0 on success, else seconds to wait.

        The bucket's row is locked for the (short) transaction, so replicas take turns; the
        database's clock is the one clock every replica shares.
        """
        t = rate_limits
        await self._conn.execute(
            insert(t)
            .values(name=name, tokens=burst, update_time=sa.func.clock_timestamp())
            .on_conflict_do_nothing()
        )
        tokens, now = (
            await self._conn.execute(
                sa.select(
                    sa.func.least(
                        burst,
                        t.c.tokens + rate * sa.extract("epoch", sa.func.clock_timestamp() - t.c.update_time),
                    ),
                    sa.func.clock_timestamp(),
                )
                .where(t.c.name == name)
                .with_for_update()
            )
        ).one()
        available = float(tokens)
        taken = available >= 1
        await self._conn.execute(
            sa.update(t)
            .where(t.c.name == name)
            .values(tokens=available - 1 if taken else available, update_time=now)
        )
        return 0.0 if taken else (1 - available) / rate

    # -- exceptions ---------------------------------------------------------------------------

    async def raise_exception(
        self, draft: ExceptionDraft, run_id: str | None, now: dt.datetime
    ) -> str | None:
        """Record an exception unless the same one is open; returns its id if new.

        The same problem with the same entries (or milestones, or invoice) is raised once while
        it is open. A new exception of the same kind on the same contract line supersedes open
        ones that share entries with it: it lists the problem as it stands now.
        """
        ids = sorted(draft.time_entry_ids)
        subject = draft.invoice_id or draft.contract_line_id or draft.project_id
        members = ",".join(ids) or ",".join(sorted(draft.milestone_ids))
        key = f"{draft.kind}|{subject}|{members}"
        exception_id = str(uuid.uuid4())
        stmt = insert(billing_exceptions).values(
            id=exception_id,
            kind=draft.kind,
            status="OPEN",
            legal_entity_id=draft.legal_entity_id,
            contract_id=draft.contract_id,
            contract_line_id=draft.contract_line_id,
            project_id=draft.project_id,
            amount=draft.amount,
            currency=draft.currency,
            hours=draft.hours,
            detail=draft.detail,
            time_entry_ids=ids,
            milestone_ids=sorted(draft.milestone_ids),
            invoice_id=draft.invoice_id,
            billing_run_id=run_id,
            dedupe_key=key,
            create_time=now,
            resolve_time=None,
        )
        result = await self._conn.execute(
            stmt.on_conflict_do_nothing(
                index_elements=[billing_exceptions.c.dedupe_key], index_where=sa.text("status = 'OPEN'")
            ).returning(billing_exceptions.c.id)
        )
        return exception_id if result.first() is not None else None

    async def overlapping_open(
        self, kind: str, subject: str, time_entry_ids: Sequence[str], but: str
    ) -> list[str]:
        """Open exceptions of this kind on the same line that share entries with a new one."""
        t = billing_exceptions
        if not time_entry_ids:
            return []
        rows = await self._conn.execute(
            sa.select(t.c.id).where(
                t.c.status == "OPEN",
                t.c.kind == kind,
                sa.or_(t.c.contract_line_id == subject, t.c.project_id == subject),
                t.c.id != but,
                t.c.time_entry_ids.overlap(list(time_entry_ids)),
            )
        )
        return [r.id for r in rows]

    async def settled_open_exceptions(self, legal_entity_id: str, kinds: Iterable[str]) -> list[str]:
        """Open work exceptions none of whose entries or milestones is still waiting unbilled."""
        t, w, m = billing_exceptions, wip_entries, milestones
        waiting_work = sa.exists().where(
            w.c.time_entry_id == sa.func.any(t.c.time_entry_ids), w.c.invoice_id.is_(None), w.c.hold.is_(None)
        )
        waiting_milestone = sa.exists().where(
            m.c.milestone_id == sa.func.any(t.c.milestone_ids), m.c.invoice_id.is_(None), m.c.hold.is_(None)
        )
        query = sa.select(t.c.id).where(
            t.c.status == "OPEN", t.c.kind.in_(list(kinds)), ~waiting_work, ~waiting_milestone
        )
        if legal_entity_id:
            query = query.where(t.c.legal_entity_id == legal_entity_id)
        return [r.id for r in await self._conn.execute(query)]

    async def open_exceptions_for_invoice(self, invoice_id: str) -> list[str]:
        """Open ERP_POST_FAILED exceptions of an invoice."""
        t = billing_exceptions
        rows = await self._conn.execute(
            sa.select(t.c.id).where(t.c.status == "OPEN", t.c.invoice_id == invoice_id)
        )
        return [r.id for r in rows]

    async def exception_for_update(self, exception_id: str) -> Any | None:
        """One exception's row, locked."""
        if not _is_uuid(exception_id):
            return None
        t = billing_exceptions
        return (
            await self._conn.execute(sa.select(t).where(t.c.id == exception_id).with_for_update())
        ).first()

    async def resolve_exceptions(
        self, ids: Sequence[str], resolution: str, actor: str, note: str, now: dt.datetime
    ) -> None:
        """Mark exceptions RESOLVED."""
        if ids:
            t = billing_exceptions
            await self._conn.execute(
                sa.update(t)
                .where(t.c.id.in_(list(ids)), t.c.status == "OPEN")
                .values(
                    status="RESOLVED",
                    resolution=resolution,
                    resolved_by=actor,
                    resolution_note=note,
                    resolve_time=now,
                )
            )

    async def open_cap_excess(self, contract_line_id: str) -> tuple[Decimal, Decimal]:
        """Amount and hours waiting in open CAP_EXCEEDED exceptions of a line."""
        t = billing_exceptions
        row = (
            await self._conn.execute(
                sa.select(
                    sa.func.coalesce(sa.func.sum(t.c.amount), 0), sa.func.coalesce(sa.func.sum(t.c.hours), 0)
                ).where(
                    t.c.status == "OPEN", t.c.kind == "CAP_EXCEEDED", t.c.contract_line_id == contract_line_id
                )
            )
        ).one()
        return Decimal(row[0]), Decimal(row[1])

    async def exceptions(
        self,
        filters: Mapping[str, Any],
        after: str | None,
        limit: int,
        ids: Iterable[str] | None = None,
        scope: Collection[str] | None = None,
    ) -> list[bl.BillingException]:
        """Exceptions matching filters (or the given ids), newest first; scope as invoice_ids."""
        t = billing_exceptions
        query = sa.select(t)
        if scope is not None:
            query = query.where(t.c.legal_entity_id.in_(sorted(scope)))
        if ids is not None:
            wanted = [i for i in ids if _is_uuid(i)]
            if not wanted:
                return []
            query = query.where(t.c.id.in_(wanted))
        for name in ("status", "kind", "billing_run_id", "legal_entity_id"):
            if filters.get(name):
                query = query.where(t.c[name] == filters[name])
        if after:
            if not _is_uuid(after):
                return []
            query = query.where(t.c.id < after)
        rows = await self._conn.execute(query.order_by(t.c.id.desc()).limit(limit))
        return [_exception(r) for r in rows]


def _rounding_mode(name: str) -> Any:
    return md.ROUNDING_MODE_HALF_UP if name == "HALF_UP" else md.ROUNDING_MODE_HALF_EVEN


def _rounding_scope(name: str) -> Any:
    return md.ROUNDING_SCOPE_PER_ENTRY if name == "PER_ENTRY" else md.ROUNDING_SCOPE_PER_LINE


def _invoice(head: Any, lines: Sequence[Any]) -> bl.Invoice:
    currency = head.currency
    msg = bl.Invoice(
        id=head.id,
        number=head.number or "",
        customer_id=head.customer_id,
        legal_entity_id=head.legal_entity_id,
        contract_id=head.contract_id,
        billing_run_id=head.billing_run_id,
        period_start=head.period_start.isoformat(),
        period_end=head.period_end.isoformat(),
        currency=currency,
        status=bl.InvoiceStatus.Value(f"INVOICE_STATUS_{head.status}"),
        subtotal=format_money(head.subtotal, currency),
        tax_total=format_money(head.tax_total, currency),
        total=format_money(head.total, currency),
        rounding_residual=format_decimal(Decimal(head.rounding_residual).normalize(), 0),
        rounding_mode=_rounding_mode(head.rounding_mode),
        rounding_scope=_rounding_scope(head.rounding_scope),
        erp_document_id=head.erp_document_id,
        erp_number=head.erp_number,
        approved_by=head.approved_by,
        voided_by=head.voided_by,
        void_reason=head.void_reason,
        lines=[
            bl.InvoiceLine(
                id=r.id,
                kind=bl.InvoiceLineKind.Value(f"INVOICE_LINE_KIND_{r.kind}"),
                description=r.description,
                quantity=format_decimal(r.quantity, 2),
                unit_price=format_money(r.unit_price, currency),
                amount=format_money(r.amount, currency),
                rounding_residual=format_decimal(
                    (Decimal(r.amount) - Decimal(r.exact_amount)).normalize(), 0
                ),
                tax_code=r.tax_code,
                tax_rate=format_decimal(Decimal(r.tax_rate).normalize(), 0),
                tax_amount=format_money(r.tax_amount, currency),
                tax_rate_id=r.tax_rate_id,
                contract_line_id=r.contract_line_id,
                project_id=r.project_id,
                labor_category_id=r.labor_category_id,
                rate_card_entry_id=r.rate_card_entry_id,
                rate_card_rate=_dec(
                    r.rate_card_rate.normalize() if r.rate_card_rate is not None else None, 2
                ),
                rate_card_currency=r.rate_card_currency,
                fx_rate=_dec(r.fx_rate.normalize() if r.fx_rate is not None else None, 0),
                fx_rate_id=r.fx_rate_id,
                source_time_entry_ids=list(r.source_time_entry_ids),
                milestone_id=r.milestone_id,
                credited_invoice_id=r.credited_invoice_id or "",
                credited_line_id=r.credited_line_id or "",
            )
            for r in lines
        ],
    )
    _ts(msg, "post_time", head.post_time)
    _ts(msg, "approve_time", head.approve_time)
    _ts(msg, "void_time", head.void_time)
    _ts(msg, "create_time", head.create_time)
    _ts(msg, "update_time", head.update_time)
    if head.job_status is not None:
        msg.posting.status = bl.InvoicePostingStatus.Value(f"INVOICE_POSTING_STATUS_{head.job_status}")
        msg.posting.attempts = head.job_attempts
        msg.posting.last_error = head.job_last_error
        msg.posting.erp_system = head.job_erp_system
        msg.posting.requested_by = head.job_requested_by
        _ts(msg.posting, "request_time", head.job_request_time)
        if head.job_status == "QUEUED":
            _ts(msg.posting, "next_attempt_time", head.job_next_attempt_time)
    return msg


def _exception(r: Any) -> bl.BillingException:
    msg = bl.BillingException(
        id=r.id,
        kind=bl.BillingExceptionKind.Value(f"BILLING_EXCEPTION_KIND_{r.kind}"),
        status=bl.BillingExceptionStatus.Value(f"BILLING_EXCEPTION_STATUS_{r.status}"),
        contract_id=r.contract_id,
        contract_line_id=r.contract_line_id,
        project_id=r.project_id,
        amount=format_money(r.amount, r.currency) if r.amount is not None and r.currency else "",
        currency=r.currency,
        hours=format_decimal(r.hours, 2),
        detail=r.detail,
        time_entry_ids=list(r.time_entry_ids),
        milestone_ids=list(r.milestone_ids),
        billing_run_id=r.billing_run_id or "",
        legal_entity_id=r.legal_entity_id,
        invoice_id=r.invoice_id or "",
        resolved_by=r.resolved_by,
        resolution_note=r.resolution_note,
    )
    if r.resolution:
        msg.resolution = bl.BillingExceptionResolution.Value(f"BILLING_EXCEPTION_RESOLUTION_{r.resolution}")
    _ts(msg, "create_time", r.create_time)
    _ts(msg, "resolve_time", r.resolve_time)
    return msg
