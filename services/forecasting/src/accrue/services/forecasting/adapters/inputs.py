"""Master data from the local projection, translated into the forecast's domain inputs."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from accrue.masterdata.v1 import resources_pb2 as md
from accrue.mdprojection import ProjectionStore
from accrue.pricing import RateEntry
from accrue.services.forecasting.adapters.repository import ForecastRepository
from accrue.services.forecasting.adapters.tables import md_projection
from accrue.services.forecasting.domain.calendar import WorkCalendar
from accrue.services.forecasting.domain.forecast import (
    DEFAULT_WEEKLY_CAPACITY,
    FxTable,
    Inputs,
    Milestone,
    Model,
    Opportunity,
    Person,
    ProjectTerms,
    Staffing,
)

# The master-data kinds the forecast projects from md.* events.
PROJECTED_KINDS = (
    "legal_entity",
    "customer",
    "consultant",
    "project",
    "rate_card",
    "contract",
    "milestone",
    "assignment",
    "opportunity",
    "fx_rate",
    "calendar",
)

_SCHEDULABLE = {md.PROJECT_STATUS_PLANNED, md.PROJECT_STATUS_ACTIVE}


def _date(text: str) -> dt.date | None:
    return dt.date.fromisoformat(text) if text else None


def _dec(text: str) -> Decimal | None:
    return Decimal(text) if text else None


def _live(record: Any) -> bool:
    return not record.HasField("deactivate_time")


class _Scope:
    """The master data one project's forecast reads, instead of every record: a filtered read
    stays cheap however large the firm (the consumer shares the process)."""

    def __init__(self, records: dict[str, list[Any]]) -> None:
        self.records = records

    @classmethod
    async def of(cls, store: ProjectionStore, conn: AsyncConnection, project_id: str) -> _Scope:
        t = md_projection
        projects = list((await store.get_many("project", [project_id])).values())
        contract_ids = list(
            await conn.scalars(
                sa.select(t.c.parent_id).where(t.c.kind == "contract_line", t.c.project_id == project_id)
            )
        )
        contracts: list[Any] = list(
            (await store.get_many("contract", [i for i in contract_ids if i])).values()
        )
        card_ids = [line.rate_card_id for c in contracts for line in c.lines if line.project_id == project_id]
        assignments = await store.by_project("assignment", [project_id])
        consultant_ids = [a.consultant_id for a in assignments]  # type: ignore[attr-defined]
        customer_ids = [p.customer_id for p in projects]  # type: ignore[attr-defined]
        return cls(
            {
                "project": projects,
                "contract": contracts,
                "rate_card": list((await store.get_many("rate_card", card_ids)).values()),
                "assignment": assignments,
                "consultant": list((await store.get_many("consultant", consultant_ids)).values()),
                "customer": list((await store.get_many("customer", customer_ids)).values()),
                "opportunity": [],  # pipeline rows belong to no project
            }
        )


async def load_inputs(
    conn: AsyncConnection,
    *,
    now: dt.datetime,
    horizon_months: int,
    reporting_currency: str,
    project_id: str = "",
) -> Inputs:
    """Everything the forecast needs, read in one transaction (approved work and invoices of
    one project only, when project_id is given)."""
    store = ProjectionStore(conn, md_projection)
    scoped = await _Scope.of(store, conn, project_id) if project_id else None

    async def every(kind: str) -> list[Any]:
        """Records of a kind: all of them, or only those the project needs."""
        if scoped is None or kind not in scoped.records:
            return list(await store.all(kind))
        return scoped.records[kind]

    entities = await every("legal_entity")
    customers = {c.id: c for c in await every("customer")}
    base = {e.id: e.base_currency for e in entities}
    zones = {e.id: e.time_zone for e in entities}
    contracts = sorted((c for c in await every("contract") if _live(c)), key=lambda c: c.id)
    cards = {c.id: c for c in await every("rate_card") if _live(c)}
    line_of: dict[str, tuple[Any, Any]] = {}  # project id -> (line, contract)
    project_of_line: dict[str, str] = {}
    for contract in contracts:
        for line in contract.lines:
            line_of.setdefault(line.project_id, (line, contract))
            project_of_line[line.id] = line.project_id

    projects: dict[str, ProjectTerms] = {}
    for p in await every("project"):
        line, contract = line_of.get(p.id, (None, None))
        customer = customers.get(p.customer_id)
        currency = (
            contract.currency
            if contract is not None
            else customer.currency
            if customer is not None
            else base.get(p.legal_entity_id, "")
        )
        card = cards.get(line.rate_card_id) if line is not None and line.rate_card_id else None
        projects[p.id] = ProjectTerms(
            id=p.id,
            customer_id=p.customer_id,
            legal_entity_id=p.legal_entity_id,
            currency=currency,
            schedulable=_live(p) and p.status in _SCHEDULABLE,
            start=_date(p.start_date),
            end=_date(p.end_date),
            budget_hours=_dec(p.budget_hours),
            model=Model(md.BillingModel.Name(line.billing_model).removeprefix("BILLING_MODEL_"))
            if line is not None and line.billing_model
            else Model.NONE,
            contract_line_id=line.id if line is not None else "",
            cap_amount=_dec(line.cap_amount) if line is not None else None,
            rate_currency=card.currency if card is not None else "",
            rates=tuple(RateEntry.of(e) for e in (card.rates if card is not None else ())),
        )

    people = {
        c.id: Person(
            c.id,
            c.legal_entity_id,
            _dec(c.weekly_capacity_hours) or DEFAULT_WEEKLY_CAPACITY,
            _date(c.active_from),
            _date(c.active_to),
        )
        for c in await every("consultant")
        if _live(c)
    }
    staffing = [
        Staffing(
            a.project_id,
            a.consultant_id,
            a.labor_category_id,
            dt.date.fromisoformat(a.start_date),
            _date(a.end_date),
            Decimal(a.allocation_percent or "0"),
            a.billable if a.HasField("billable") else True,
        )
        for a in sorted(await every("assignment"), key=lambda a: a.id)
        if _live(a)
    ]
    calendars: dict[str, WorkCalendar] = {}
    for c in sorted(await every("calendar"), key=lambda c: c.code):
        if _live(c) and c.legal_entity_id not in calendars:
            calendars[c.legal_entity_id] = WorkCalendar(
                frozenset(c.working_days) if c.working_days else WorkCalendar().working_days,
                frozenset(dt.date.fromisoformat(h.date) for h in c.holidays),
            )
    repo = ForecastRepository(conn)
    invoiced_milestones = await repo.invoiced_milestones()
    milestones = [
        Milestone(
            m.id,
            project_of_line[m.contract_line_id],
            Decimal(m.amount),
            dt.date.fromisoformat(m.due_date),
            m.status == md.MILESTONE_STATUS_INVOICED or m.id in invoiced_milestones,
        )
        for m in await every("milestone")
        if _live(m) and m.contract_line_id in project_of_line
    ]
    opportunities = [
        Opportunity(
            o.id,
            o.customer_id,
            o.legal_entity_id,
            Decimal(o.amount),
            o.currency,
            Decimal(o.probability or "0"),
            o.stage,
            dt.date.fromisoformat(o.expected_start),
            o.duration_months,
        )
        for o in await every("opportunity")
        if _live(o)
    ]
    fx = FxTable()
    for r in await every("fx_rate"):
        if _live(r):
            fx.add(r.base, r.quote, dt.date.fromisoformat(r.effective_date), Decimal(r.rate))

    return Inputs(
        now=now,
        horizon_months=horizon_months,
        reporting_currency=reporting_currency,
        projects=projects,
        staffing=staffing,
        people=people,
        calendars=calendars,
        milestones=milestones,
        opportunities=opportunities,
        work=await repo.work(project_id),
        invoiced=await repo.invoiced(project_id),
        fx=fx,
        base_currencies=base,
        time_zones=zones,
    )


async def load_time_zones(conn: AsyncConnection) -> dict[str, str]:
    """Every legal entity's time zone (IANA; "" or "UTC" is UTC), by id."""
    entities: list[Any] = await ProjectionStore(conn, md_projection).all("legal_entity")
    return {e.id: e.time_zone for e in entities}
