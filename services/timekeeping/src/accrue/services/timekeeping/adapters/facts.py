"""Master-data facts for validation, read from the local projection (gRPC on a miss)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from sqlalchemy.ext.asyncio import AsyncConnection

from accrue.masterdata.v1 import resources_pb2 as md
from accrue.mdprojection import MasterDataReader
from accrue.money import parse_decimal
from accrue.pricing import RateEntry
from accrue.services.timekeeping.domain.masterdata import (
    AssignmentFacts,
    ConsultantFacts,
    PricingFacts,
    ProjectFacts,
)


def _date(value: str) -> dt.date | None:
    return dt.date.fromisoformat(value) if value else None


def _strip(prefix: str, name: str) -> str:
    return name.removeprefix(prefix)


class FactsLoader:
    """Turns projected master data into the plain facts the rules read; caches per batch."""

    def __init__(self, reader: MasterDataReader, conn: AsyncConnection) -> None:
        self._reader = reader
        self._conn = conn
        self._pricing: dict[str, PricingFacts | None] = {}
        self._assignments: dict[tuple[str, str], tuple[AssignmentFacts, ...]] = {}

    async def projects(self, ids: Iterable[str]) -> dict[str, ProjectFacts]:
        """Projects by id."""
        found = await self._reader.records(self._conn, "project", ids)
        out = {}
        for pid, p in found.items():
            assert isinstance(p, md.Project)
            out[pid] = ProjectFacts(
                id=p.id,
                status=_strip("PROJECT_STATUS_", md.ProjectStatus.Name(p.status)),
                start_date=dt.date.fromisoformat(p.start_date),
                end_date=_date(p.end_date),
                manager_id=p.manager_id,
                legal_entity_id=p.legal_entity_id,
                customer_id=p.customer_id,
            )
        return out

    async def consultants(self, ids: Iterable[str]) -> dict[str, ConsultantFacts]:
        """Consultants by id."""
        found = await self._reader.records(self._conn, "consultant", ids)
        out = {}
        for cid, c in found.items():
            assert isinstance(c, md.Consultant)
            out[cid] = ConsultantFacts(
                id=c.id,
                legal_entity_id=c.legal_entity_id,
                manager_id=c.manager_id,
                active_from=dt.date.fromisoformat(c.active_from),
                active_to=_date(c.active_to),
            )
        return out

    async def assignments(self, project_id: str, consultant_id: str) -> tuple[AssignmentFacts, ...]:
        """The consultant's assignments on the project."""
        key = (project_id, consultant_id)
        if key not in self._assignments:
            found = await self._reader.assignments(self._conn, project_id, consultant_id)
            self._assignments[key] = tuple(
                AssignmentFacts(
                    id=a.id,
                    labor_category_id=a.labor_category_id,
                    start_date=dt.date.fromisoformat(a.start_date),
                    end_date=_date(a.end_date),
                    billable=a.billable if a.HasField("billable") else True,
                )
                for a in found
            )
        return self._assignments[key]

    async def pricing(self, project_id: str) -> PricingFacts | None:
        """The project's billing model and rates, or None when no contract line covers it."""
        if project_id not in self._pricing:
            self._pricing[project_id] = await self._load_pricing(project_id)
        return self._pricing[project_id]

    async def _load_pricing(self, project_id: str) -> PricingFacts | None:
        found = await self._reader.contract_line(self._conn, project_id)
        if found is None:
            return None
        line, contract = found
        currency = contract.currency
        model = _strip("BILLING_MODEL_", md.BillingModel.Name(line.billing_model))
        rates: tuple[RateEntry, ...] = ()
        if line.rate_card_id:
            cards = await self._reader.records(self._conn, "rate_card", [line.rate_card_id])
            card = cards.get(line.rate_card_id)
            if isinstance(card, md.RateCard):
                currency = card.currency
                rates = tuple(
                    RateEntry(
                        id=e.id,
                        labor_category_id=e.labor_category_id,
                        consultant_id=e.consultant_id or None,
                        rate=parse_decimal(e.rate),
                        effective_from=dt.date.fromisoformat(e.effective_from),
                        effective_to=_date(e.effective_to),
                    )
                    for e in card.rates
                )
        return PricingFacts(billing_model=model, currency=currency, rates=rates)
