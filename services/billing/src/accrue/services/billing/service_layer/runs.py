"""One call of a billing run: stream the scope's unbilled work, price it, write drafts.

The work arrives project by project from a server-side cursor (`stream_unbilled`), so memory
holds one project's entries at a time, however large the period. Each project is priced against
its contract line (rate per entry on its date, FX and tax on the period end, the cap), its
lines are written at once, and its entries are marked billed with one UPDATE per line. Master
data (contract lines, rate cards, FX and tax rates) is read once per run and kept.

Late work joins the run's existing DRAFT for its contract (its line's figures are re-rounded
from the stored exact amount), so a run keeps one line per (role, rate) per contract line.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from accrue.masterdata.v1 import resources_pb2 as md
from accrue.mdprojection import ProjectionStore
from accrue.money import Rounding, format_decimal, format_money, parse_decimal, round_money
from accrue.pricing import RateEntry, resolve_rate
from accrue.services.billing.adapters.repository import (
    CreditSource,
    ExceptionDraft,
    StoredDraft,
    UnbilledEntry,
)
from accrue.services.billing.adapters.tables import md_projection
from accrue.services.billing.adapters.unit_of_work import BillingUnitOfWork
from accrue.services.billing.domain.invoicing import (
    DraftLine,
    LineKind,
    LineTotals,
    PricedItem,
    RoundingPolicy,
    RoundingScope,
    split_at_cap,
    time_lines,
)
from accrue.services.billing.domain.periods import PeriodKind

ZERO = Decimal(0)


@dataclass(frozen=True)
class RunScope:
    """What one run bills."""

    run_id: str
    legal_entity_id: str  # "" for every legal entity
    period_start: dt.date
    period_end: dt.date
    # On-demand runs bill work dated in the period; scheduled runs everything dated up to its
    # end and approved by the cut-off (late work from earlier periods included).
    work_from: dt.date | None
    cutoff: dt.datetime | None
    billing_period: str  # "" for every contract line, else a PeriodKind


@dataclass
class CappedLine:
    """A CAPPED contract line this call billed on, for the threshold bookkeeping."""

    contract_id: str
    project_id: str
    legal_entity_id: str
    currency: str
    cap: Decimal


@dataclass
class RunOutcome:
    """What one call changed."""

    touched_invoices: list[str] = field(default_factory=list)
    problems: list[ExceptionDraft] = field(default_factory=list)
    capped: dict[str, CappedLine] = field(default_factory=dict)
    entries_billed: int = 0
    # Time on FIXED_FEE lines settled as covered by the fee (its milestones bill the line).
    entries_fixed_fee: int = 0


def policy_of(contract: md.Contract) -> RoundingPolicy:
    """The contract's rounding (half-even per line when it says nothing)."""
    mode = Rounding.HALF_UP if contract.rounding_mode == md.ROUNDING_MODE_HALF_UP else Rounding.HALF_EVEN
    scope = (
        RoundingScope.PER_ENTRY
        if contract.rounding_scope == md.ROUNDING_SCOPE_PER_ENTRY
        else RoundingScope.PER_LINE
    )
    return RoundingPolicy(mode, scope)


def period_kind(line: md.ContractLine) -> str:
    """How often the line is invoiced (monthly when not given)."""
    if line.billing_period == md.BILLING_PERIOD_UNSPECIFIED:
        return PeriodKind.MONTHLY.value
    return str(md.BillingPeriod.Name(line.billing_period)).removeprefix("BILLING_PERIOD_")


def _model(line: md.ContractLine) -> str:
    return str(md.BillingModel.Name(line.billing_model)).removeprefix("BILLING_MODEL_")


def _latest_on(rates: Sequence[Any], day: dt.date, date_field: str) -> Any | None:
    """The rate effective on day: the latest one dated on or before it."""
    candidates = [r for r in rates if dt.date.fromisoformat(getattr(r, date_field)) <= day]
    return max(candidates, key=lambda r: getattr(r, date_field), default=None)


def describe(line: DraftLine, currency: str, name: str = "") -> str:
    """The text printed on the invoice."""
    hours = format_decimal(line.quantity, 2)
    if line.kind == LineKind.CREDIT:
        return f"Credit for reversed time, {hours} h at {format_money(line.unit_price, currency)}"
    if line.kind == LineKind.MILESTONE:
        return f"Milestone: {name}" if name else "Milestone"
    return f"Professional services, {hours} h at {format_money(line.unit_price, currency)}"


class RunPricer:
    """Prices one call of a run inside its unit of work."""

    def __init__(self, uow: BillingUnitOfWork, scope: RunScope, now: dt.datetime) -> None:
        self.uow = uow
        self.scope = scope
        self.now = now
        self.outcome = RunOutcome()
        self._drafts: dict[tuple[str, str], StoredDraft] = {}
        self._touched: dict[str, None] = {}
        self._lines: dict[str, tuple[md.ContractLine, md.Contract] | None] = {}
        self._cards: dict[str, tuple[md.RateCard, dict[str, RateEntry]] | None] = {}
        self._fx: dict[tuple[str, str], Any | None] = {}
        self._tax: dict[str, Any | None] = {}
        # The rate for (card, consultant, role, day), shared by every project priced from a card.
        self._rate_memo: dict[tuple[str, str, str, dt.date], RateEntry | None] = {}

    async def price(self) -> RunOutcome:
        """Bill everything in scope; exceptions are collected, not raised."""
        repo = self.uow.billing
        self._drafts = await repo.drafts_of_run(self.scope.run_id)
        await self._preload_lines()
        async for group in repo.stream_unbilled(
            self.scope.legal_entity_id, self.scope.work_from, self.scope.period_end, self.scope.cutoff
        ):
            await self._project(group)
        await self._milestones()
        await repo.apply_billed()
        await repo.refresh_totals(self._touched, self.now)
        self.outcome.touched_invoices = list(self._touched)
        return self.outcome

    # -- master data, read once per run ------------------------------------------------------

    async def _preload_lines(self) -> None:
        """Every projected contract line with its contract, in two queries rather than per project."""
        t = md_projection
        rows = await self.uow.connection.execute(
            sa.select(t.c.parent_id, t.c.payload).where(
                t.c.kind == "contract_line", t.c.project_id.is_not(None)
            )
        )
        lines = [(r.parent_id, md.ContractLine.FromString(r.payload)) for r in rows]
        store = ProjectionStore(self.uow.connection, md_projection)
        contracts = await store.get_many("contract", {parent for parent, _ in lines if parent})
        for parent, line in lines:
            contract = contracts.get(parent)
            if isinstance(contract, md.Contract) and line.project_id not in self._lines:
                self._lines[line.project_id] = (line, contract)

    async def _line(self, project_id: str) -> tuple[md.ContractLine, md.Contract] | None:
        if project_id not in self._lines:
            self._lines[project_id] = await self.uow.masterdata.contract_line(self.uow.connection, project_id)
        return self._lines[project_id]

    async def _card(self, card_id: str) -> tuple[md.RateCard, dict[str, RateEntry]] | None:
        if card_id not in self._cards:
            found = (await self.uow.masterdata.records(self.uow.connection, "rate_card", [card_id])).get(
                card_id
            )
            self._cards[card_id] = (
                (found, {e.id: RateEntry.of(e) for e in found.rates})
                if isinstance(found, md.RateCard)
                else None
            )
        return self._cards[card_id]

    async def _fx_rate(self, base: str, quote: str) -> Any | None:
        if (base, quote) not in self._fx:
            rates = await self.uow.masterdata.fx_rates(self.uow.connection, base, quote)
            self._fx[(base, quote)] = _latest_on(rates, self.scope.period_end, "effective_date")
        return self._fx[(base, quote)]

    async def _tax_rate(self, code: str) -> Any | None:
        if code not in self._tax:
            rates = await self.uow.masterdata.tax_rates(self.uow.connection, code)
            self._tax[code] = _latest_on(rates, self.scope.period_end, "effective_from")
        return self._tax[code]

    def _in_scope(self, line: md.ContractLine) -> bool:
        return not self.scope.billing_period or period_kind(line) == self.scope.billing_period

    # -- time -------------------------------------------------------------------------------

    async def _project(self, group: list[UnbilledEntry]) -> None:
        project_id = group[0].item.project_id
        legal_entity_id = group[0].legal_entity_id
        found = await self._line(project_id)
        if found is not None and not self._in_scope(found[0]):
            return
        reversals = [e for e in group if e.reverses_id]
        work = [e for e in group if not e.reverses_id]
        if reversals:
            await self._credits(reversals, found)
        if not work:
            return
        ids = tuple(e.item.time_entry_id for e in work)
        hours = sum((e.item.hours for e in work), ZERO)
        if found is None:
            self._problem(
                "MISSING_CONTRACT",
                legal_entity_id,
                "approved time on a project with no contract line",
                ids,
                hours,
                project_id=project_id,
            )
            return
        line, contract = found
        model = _model(line)
        if model == "FIXED_FEE":
            # The fee is billed through the line's milestones, never by the hour: the time is
            # settled here, in the run's transaction, so it stops counting as unbilled and no
            # later run (nor a later T&M line on the project) bills it.
            self.outcome.entries_fixed_fee += await self.uow.billing.settle_fixed_fee(ids, line.id)
            return
        if model not in ("TIME_AND_MATERIALS", "CAPPED"):
            return  # non-billable lines bill nothing
        currency = contract.currency
        where = {
            "contract_id": contract.id,
            "contract_line_id": line.id,
            "project_id": project_id,
            "currency": currency,
        }
        card = await self._card(line.rate_card_id)
        if card is None:
            self._problem(
                "MISSING_RATE",
                legal_entity_id,
                f"rate card {line.rate_card_id} is unknown",
                ids,
                hours,
                **where,
            )
            return
        rate_card, rates = card
        fx, fx_id = Decimal(1), ""
        if rate_card.currency != currency:
            fx_rate = await self._fx_rate(rate_card.currency, currency)
            if fx_rate is None:
                self._problem(
                    "MISSING_FX",
                    legal_entity_id,
                    f"no {rate_card.currency}/{currency} rate on or before {self.scope.period_end}",
                    ids,
                    hours,
                    **where,
                )
                return
            fx, fx_id = parse_decimal(fx_rate.rate), fx_rate.id
        priced, unpriced = self._rates(rate_card.id, work, list(rates.values()), fx)
        if unpriced:
            self._problem(
                "MISSING_RATE",
                legal_entity_id,
                f"rate card {rate_card.code} has no rate for these entries",
                tuple(e.item.time_entry_id for e in unpriced),
                sum((e.item.hours for e in unpriced), ZERO),
                **where,
            )
        policy = policy_of(contract)
        if model == "CAPPED":
            cap = parse_decimal(line.cap_amount or "0")
            remaining = max(cap - await self.uow.billing.billed_on_line(line.id), ZERO)
            split = split_at_cap(priced, remaining, currency, policy)
            priced = split.within
            if split.excess:
                self._problem(
                    "CAP_EXCEEDED",
                    legal_entity_id,
                    f"work beyond the cap of {line.cap_amount} {currency}",
                    tuple(p.item.time_entry_id for p in split.excess),
                    sum((p.item.hours for p in split.excess), ZERO),
                    amount=split.excess_value(currency, policy),
                    **where,
                )
            self.outcome.capped[line.id] = CappedLine(contract.id, project_id, legal_entity_id, currency, cap)
        if not priced:
            return
        tax_rate, tax_id = ZERO, ""
        if line.tax_code:
            found_tax = await self._tax_rate(line.tax_code)
            if found_tax is None:
                self._problem(
                    "MISSING_TAX_RATE",
                    legal_entity_id,
                    f"tax code {line.tax_code} has no rate on or before {self.scope.period_end}",
                    tuple(p.item.time_entry_id for p in priced),
                    sum((p.item.hours for p in priced), ZERO),
                    **where,
                )
                return
            tax_rate, tax_id = parse_decimal(found_tax.rate), found_tax.id
        lines = time_lines(line.id, project_id, priced, currency, policy, line.tax_code, tax_rate)
        for draft_line in lines:
            entry = rates[draft_line.rate_card_entry_id]
            draft_line.rate_card_rate = entry.rate
            draft_line.rate_card_currency = rate_card.currency
            draft_line.fx_rate = fx if fx_id else None
            draft_line.fx_rate_id = fx_id
            draft_line.tax_rate_id = tax_id
        await self._write(contract.id, contract.customer_id, legal_entity_id, currency, policy, lines)
        self.outcome.entries_billed += len(priced)

    def _rates(
        self, card_id: str, work: list[UnbilledEntry], rates: list[RateEntry], fx: Decimal
    ) -> tuple[list[PricedItem], list[UnbilledEntry]]:
        """Each entry at the rate effective on its date (resolved once per consultant, role, day)."""
        priced: list[PricedItem] = []
        unpriced: list[UnbilledEntry] = []
        memo = self._rate_memo
        for e in work:
            key = (card_id, e.item.consultant_id, e.item.labor_category_id, e.item.work_date)
            if key not in memo:
                memo[key] = resolve_rate(rates, consultant_id=key[1], labor_category_id=key[2], day=key[3])
            rate = memo[key]
            if rate is None:
                unpriced.append(e)
            else:
                priced.append(PricedItem(e.item, rate.id, rate.rate * fx, e.overage_approved))
        return priced, unpriced

    async def _credits(
        self, reversals: list[UnbilledEntry], found: tuple[md.ContractLine, md.Contract] | None
    ) -> None:
        """Reversed invoiced time: a CREDIT line per credited line, at the price it was billed at."""
        sources = await self.uow.billing.credit_sources([e.reverses_id or "" for e in reversals])
        by_line: dict[str, list[UnbilledEntry]] = defaultdict(list)
        for e in reversals:
            src = sources.get(e.reverses_id or "")
            if src is not None:
                by_line[src.line_id].append(e)
        for entries in by_line.values():
            src = sources[entries[0].reverses_id or ""]
            policy = RoundingPolicy(
                Rounding.HALF_UP if src.rounding_mode == "HALF_UP" else Rounding.HALF_EVEN,
                RoundingScope(src.rounding_scope),
            )
            line = self._credit_line(src)
            for e in sorted(entries, key=lambda e: (e.item.work_date, e.item.time_entry_id)):
                line.add(e.item.time_entry_id, e.item.hours, src.currency, policy)
            await self._write(
                src.contract_id, src.customer_id, entries[0].legal_entity_id, src.currency, policy, [line]
            )
            if found is not None and _model(found[0]) == "CAPPED" and found[0].id == src.contract_line_id:
                self.outcome.capped[src.contract_line_id] = CappedLine(
                    src.contract_id,
                    src.project_id,
                    entries[0].legal_entity_id,
                    src.currency,
                    parse_decimal(found[0].cap_amount or "0"),
                )

    @staticmethod
    def _credit_line(src: CreditSource) -> DraftLine:
        return DraftLine(
            kind=LineKind.CREDIT,
            contract_line_id=src.contract_line_id,
            project_id=src.project_id,
            unit_price=src.unit_price,
            labor_category_id=src.labor_category_id,
            rate_card_entry_id=src.rate_card_entry_id,
            rate_card_rate=src.rate_card_rate,
            rate_card_currency=src.rate_card_currency,
            fx_rate=src.fx_rate,
            fx_rate_id=src.fx_rate_id,
            tax_code=src.tax_code,
            tax_rate=src.tax_rate,
            tax_rate_id=src.tax_rate_id,
            credited_invoice_id=src.invoice_id,
            credited_line_id=src.line_id,
        )

    # -- milestones -------------------------------------------------------------------------

    async def _milestones(self) -> None:
        """Each completed milestone of a FIXED_FEE line becomes a MILESTONE line, once."""
        rows = await self.uow.billing.unbilled_milestones(
            self.scope.legal_entity_id, self.scope.work_from, self.scope.period_end, self.scope.cutoff
        )
        for m in rows:
            found = await self._milestone_line(m.contract_id, m.contract_line_id)
            if found is None:
                self._problem(
                    "MISSING_CONTRACT",
                    m.legal_entity_id,
                    f"milestone {m.name!r} names an unknown contract line",
                    (),
                    ZERO,
                    contract_id=m.contract_id,
                    contract_line_id=m.contract_line_id,
                    project_id=m.project_id,
                    milestone_ids=(m.milestone_id,),
                )
                continue
            line, contract = found
            if not self._in_scope(line):
                continue
            currency, policy = contract.currency, policy_of(contract)
            tax_rate, tax_id = ZERO, ""
            if line.tax_code:
                found_tax = await self._tax_rate(line.tax_code)
                if found_tax is None:
                    self._problem(
                        "MISSING_TAX_RATE",
                        m.legal_entity_id,
                        f"tax code {line.tax_code} has no rate on or before {self.scope.period_end}",
                        (),
                        ZERO,
                        contract_id=contract.id,
                        contract_line_id=line.id,
                        project_id=m.project_id,
                        amount=Decimal(m.amount),
                        currency=currency,
                        milestone_ids=(m.milestone_id,),
                    )
                    continue
                tax_rate, tax_id = parse_decimal(found_tax.rate), found_tax.id
            draft_line = DraftLine(
                kind=LineKind.MILESTONE,
                contract_line_id=line.id,
                project_id=m.project_id,
                unit_price=Decimal(m.amount),
                tax_code=line.tax_code,
                tax_rate=tax_rate,
                tax_rate_id=tax_id,
                milestone_id=m.milestone_id,
                description=describe(DraftLine(LineKind.MILESTONE, "", "", ZERO), currency, m.name),
            )
            draft_line.add("", Decimal(1), currency, policy)
            await self._write(
                contract.id, contract.customer_id, m.legal_entity_id, currency, policy, [draft_line]
            )

    async def _milestone_line(
        self, contract_id: str, contract_line_id: str
    ) -> tuple[md.ContractLine, md.Contract] | None:
        contract = (await self.uow.masterdata.records(self.uow.connection, "contract", [contract_id])).get(
            contract_id
        )
        if not isinstance(contract, md.Contract):
            return None
        for line in contract.lines:
            if line.id == contract_line_id:
                return line, contract
        # The line may be newer than the stored contract: read the projection's line row.
        store = ProjectionStore(self.uow.connection, md_projection)
        found = (await store.get_many("contract_line", [contract_line_id])).get(contract_line_id)
        return (found, contract) if isinstance(found, md.ContractLine) else None

    # -- writing ------------------------------------------------------------------------------

    async def _write(
        self,
        contract_id: str,
        customer_id: str,
        legal_entity_id: str,
        currency: str,
        policy: RoundingPolicy,
        lines: list[DraftLine],
    ) -> None:
        """Add lines to the run's draft for the contract (made on first use); mark their sources."""
        repo = self.uow.billing
        draft = self._drafts.get((contract_id, currency))
        if draft is None:
            invoice_id = await repo.create_invoice(
                run_id=self.scope.run_id,
                contract_id=contract_id,
                customer_id=customer_id,
                legal_entity_id=legal_entity_id,
                currency=currency,
                start=self.scope.period_start,
                end=self.scope.period_end,
                rounding_mode=policy.mode_name,
                rounding_scope=policy.scope.value,
                now=self.now,
            )
            draft = self._drafts[(contract_id, currency)] = StoredDraft(invoice_id)
        fresh: list[DraftLine] = []
        marks: list[tuple[str, list[str]]] = []
        milestones: list[tuple[str, str]] = []
        for line in lines:
            stored = draft.lines.get(line.key)
            if stored is None:
                if not line.description:
                    line.description = describe(line, currency)
                fresh.append(line)
                continue
            line_id, totals = stored
            merged = _merge(totals, line, currency, policy)
            tax = round_money(merged.amount * line.tax_rate, currency, policy.mode)
            merged_view = DraftLine(
                line.kind, line.contract_line_id, line.project_id, line.unit_price, totals=merged
            )
            await repo.update_line(
                line_id, merged, tax, line.description or describe(merged_view, currency), line.items
            )
            draft.lines[line.key] = (line_id, merged)
            marks.append((line_id, line.items))
            if line.milestone_id:
                milestones.append((line.milestone_id, line_id))
        if fresh:
            ids = await repo.insert_lines(draft.invoice_id, draft.positions + 1, fresh)
            draft.positions += len(fresh)
            for line, line_id in zip(fresh, ids, strict=True):
                draft.lines[line.key] = (line_id, line.totals)
                marks.append((line_id, line.items))
                if line.milestone_id:
                    milestones.append((line.milestone_id, line_id))
        await repo.mark_billed(draft.invoice_id, marks)
        for milestone_id, line_id in milestones:
            await repo.set_milestones([milestone_id], invoice_id=draft.invoice_id, invoice_line_id=line_id)
        self._touched[draft.invoice_id] = None

    def _problem(
        self,
        kind: str,
        legal_entity_id: str,
        detail: str,
        ids: tuple[str, ...],
        hours: Decimal,
        **where: Any,
    ) -> None:
        self.outcome.problems.append(ExceptionDraft(kind, legal_entity_id, detail, ids, hours, **where))


def _merge(stored: LineTotals, line: DraftLine, currency: str, policy: RoundingPolicy) -> LineTotals:
    """A stored line's figures plus a new batch of the same line, rounded as the policy says."""
    exact = stored.exact_amount + line.exact_amount
    if policy.scope == RoundingScope.PER_ENTRY:
        amount = stored.amount + line.amount
    else:
        amount = round_money(exact, currency, policy.mode)
    return LineTotals(stored.quantity + line.quantity, exact, amount)
