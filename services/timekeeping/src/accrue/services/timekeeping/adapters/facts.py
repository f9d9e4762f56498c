"""Master-data facts for validation, read from the local projection (gRPC on a miss).

A batch of a thousand entries reads its facts in a handful of set-based queries (`preload`):
projects, consultants, every (project, consultant) assignment, and every project's contract
line, contract and rate card. Only what the projection does not hold yet is asked of master
data over gRPC, and stored on the way (`MasterDataReader`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from accrue.masterdata.v1 import resources_pb2 as md
from accrue.mdprojection import MasterDataReader
from accrue.money import parse_decimal
from accrue.pricing import RateEntry
from accrue.services.timekeeping.adapters.tables import md_projection
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


def _assignment(a: md.Assignment) -> AssignmentFacts:
    return AssignmentFacts(
        id=a.id,
        labor_category_id=a.labor_category_id,
        start_date=dt.date.fromisoformat(a.start_date),
        end_date=_date(a.end_date),
        billable=a.billable if a.HasField("billable") else True,
        deactivated=a.HasField("deactivate_time"),
    )


class FactsLoader:
    """Turns projected master data into the plain facts the rules read; caches per unit of work."""

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
                deactivated=p.HasField("deactivate_time"),
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
                deactivated=c.HasField("deactivate_time"),
            )
        return out

    async def preload(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Read the assignments of every (project, consultant) pair and the pricing of every
        project in a few queries, so a batch does not query per entry."""
        wanted = set(pairs)
        todo = {p for p in wanted if p not in self._assignments}
        if todo:
            await self._preload_assignments(todo)
        projects = {project for project, _ in wanted if project not in self._pricing}
        if projects:
            await self._preload_pricing(projects)

    async def assignments(self, project_id: str, consultant_id: str) -> tuple[AssignmentFacts, ...]:
        """The consultant's assignments on the project."""
        key = (project_id, consultant_id)
        if key not in self._assignments:
            await self._preload_assignments({key})
        return self._assignments[key]

    async def pricing(self, project_id: str) -> PricingFacts | None:
        """The project's billing model and rates, or None when no contract line covers it."""
        if project_id not in self._pricing:
            await self._preload_pricing({project_id})
        return self._pricing[project_id]

    async def _preload_assignments(self, pairs: set[tuple[str, str]]) -> None:
        t = md_projection
        # One array parameter per key and an index probe per pair (see repository._by_pairs).
        query = sa.text(
            f"SELECT a.project_id, a.consultant_id, a.payload "
            f"FROM unnest(CAST(:p AS text[]), CAST(:c AS text[])) AS k(p, c) "
            f"CROSS JOIN LATERAL (SELECT * FROM {t.schema}.{t.name} m WHERE m.kind = 'assignment' "
            f"AND m.consultant_id = k.c AND m.project_id = k.p) AS a"
        ).bindparams(p=[p for p, _ in pairs], c=[c for _, c in pairs])
        rows = await self._conn.execute(query)
        local: dict[tuple[str, str], list[AssignmentFacts]] = {}
        for row in rows:
            local.setdefault((row.project_id, row.consultant_id), []).append(
                _assignment(md.Assignment.FromString(row.payload))
            )
        for pair in pairs:
            if pair in local:
                self._assignments[pair] = tuple(local[pair])
            else:
                # Not projected (yet): master data answers, and the reader stores what it says.
                found = await self._reader.assignments(self._conn, *pair)
                self._assignments[pair] = tuple(_assignment(a) for a in found)

    async def _preload_pricing(self, projects: set[str]) -> None:
        t = md_projection
        rows = await self._conn.execute(
            sa.select(t.c.project_id, t.c.parent_id, t.c.payload).where(
                t.c.kind == "contract_line", t.c.project_id.in_(sorted(projects))
            )
        )
        lines: dict[str, list[tuple[md.ContractLine, str]]] = {}
        for row in rows:
            lines.setdefault(row.project_id, []).append(
                (md.ContractLine.FromString(row.payload), row.parent_id)
            )
        contracts = await self._reader.records(
            self._conn, "contract", {parent for found in lines.values() for _, parent in found}
        )
        chosen: dict[str, tuple[md.ContractLine, md.Contract]] = {}
        for project_id, found in lines.items():
            for line, parent in found:
                contract = contracts.get(parent)
                # A deactivated contract bills nothing; another line may still cover the project.
                if isinstance(contract, md.Contract) and not contract.HasField("deactivate_time"):
                    chosen[project_id] = (line, contract)
                    break
        for project_id in projects - lines.keys():
            # No line projected: ask master data (which may not know one either).
            remote = await self._reader.contract_line(self._conn, project_id)
            if remote is not None and not remote[1].HasField("deactivate_time"):
                chosen[project_id] = remote
        cards = await self._reader.records(
            self._conn, "rate_card", {line.rate_card_id for line, _ in chosen.values() if line.rate_card_id}
        )
        for project_id in projects:
            if project_id not in chosen:
                self._pricing[project_id] = None
                continue
            line, contract = chosen[project_id]
            currency = contract.currency
            rates: tuple[RateEntry, ...] = ()
            card = cards.get(line.rate_card_id)
            if isinstance(card, md.RateCard) and not card.HasField("deactivate_time"):
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
            model = _strip("BILLING_MODEL_", md.BillingModel.Name(line.billing_model))
            self._pricing[project_id] = PricingFacts(billing_model=model, currency=currency, rates=rates)
