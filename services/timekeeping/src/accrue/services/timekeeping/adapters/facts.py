"""Master-data facts for validation, read from the local projection (gRPC on a miss).

`load` reads everything a set of submissions needs in two statements, however many entries:
their projects, consultants, (project, consultant) assignments and the projects' contract
lines, then those lines' contracts and rate cards. Only what the projection does not hold yet
is asked of master data over gRPC, and stored on the way (`MasterDataReader`). The hot path
talks to the asyncpg connection directly (see repository.driver).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from google.protobuf.message import Message
from sqlalchemy.ext.asyncio import AsyncConnection

from accrue.masterdata.v1 import resources_pb2 as md
from accrue.mdprojection import MasterDataReader
from accrue.pricing import RateEntry
from accrue.services.timekeeping.adapters.repository import driver
from accrue.services.timekeeping.adapters.tables import md_projection
from accrue.services.timekeeping.domain.masterdata import (
    AssignmentFacts,
    ConsultantFacts,
    PricingFacts,
    ProjectFacts,
)
from accrue.services.timekeeping.domain.model import Submission

_TABLE = f"{md_projection.schema}.{md_projection.name}"
# Projects, consultants and contract lines by key; assignments per (project, consultant) pair
# through a LATERAL index probe, whatever the table's statistics say.
_FIRST = f"""
SELECT kind, id, parent_id, project_id, consultant_id, payload FROM {_TABLE}
WHERE kind = 'project' AND id = ANY($1::text[])
UNION ALL
SELECT kind, id, parent_id, project_id, consultant_id, payload FROM {_TABLE}
WHERE kind = 'consultant' AND id = ANY($2::text[])
UNION ALL
SELECT kind, id, parent_id, project_id, consultant_id, payload FROM {_TABLE}
WHERE kind = 'contract_line' AND project_id = ANY($1::text[])
UNION ALL
SELECT a.kind, a.id, a.parent_id, a.project_id, a.consultant_id, a.payload
FROM unnest($3::text[], $4::text[]) AS k(p, c)
CROSS JOIN LATERAL (
    SELECT * FROM {_TABLE} m WHERE m.kind = 'assignment' AND m.consultant_id = k.c AND m.project_id = k.p
) AS a
"""
_SECOND = f"""
SELECT kind, id, payload FROM {_TABLE} WHERE kind = 'contract' AND id = ANY($1::text[])
UNION ALL
SELECT kind, id, payload FROM {_TABLE} WHERE kind = 'rate_card' AND id = ANY($2::text[])
"""


def _date(value: str) -> dt.date | None:
    return dt.date.fromisoformat(value) if value else None


def _strip(prefix: str, name: str) -> str:
    return name.removeprefix(prefix)


def _project(p: md.Project) -> ProjectFacts:
    return ProjectFacts(
        id=p.id,
        status=_strip("PROJECT_STATUS_", md.ProjectStatus.Name(p.status)),
        start_date=dt.date.fromisoformat(p.start_date),
        end_date=_date(p.end_date),
        manager_id=p.manager_id,
        legal_entity_id=p.legal_entity_id,
        customer_id=p.customer_id,
        deactivated=p.HasField("deactivate_time"),
    )


def _consultant(c: md.Consultant) -> ConsultantFacts:
    return ConsultantFacts(
        id=c.id,
        legal_entity_id=c.legal_entity_id,
        manager_id=c.manager_id,
        active_from=dt.date.fromisoformat(c.active_from),
        active_to=_date(c.active_to),
        deactivated=c.HasField("deactivate_time"),
    )


def _assignment(a: md.Assignment) -> AssignmentFacts:
    return AssignmentFacts(
        id=a.id,
        labor_category_id=a.labor_category_id,
        start_date=dt.date.fromisoformat(a.start_date),
        end_date=_date(a.end_date),
        billable=a.billable if a.HasField("billable") else True,
        deactivated=a.HasField("deactivate_time"),
    )


def _active(record: Message | None) -> bool:
    return record is not None and not record.HasField("deactivate_time")


class FactsLoader:
    """Turns projected master data into the plain facts the rules read; caches per unit of work."""

    def __init__(self, reader: MasterDataReader, conn: AsyncConnection) -> None:
        self._reader = reader
        self._conn = conn
        self._projects: dict[str, ProjectFacts | None] = {}
        self._consultants: dict[str, ConsultantFacts | None] = {}
        self._pricing: dict[str, PricingFacts | None] = {}
        self._assignments: dict[tuple[str, str], tuple[AssignmentFacts, ...]] = {}

    # -- what the rules read, once loaded --------------------------------------------------------

    def project(self, project_id: str) -> ProjectFacts | None:
        """A loaded project (None when master data does not know it)."""
        return self._projects.get(project_id)

    def consultant(self, consultant_id: str) -> ConsultantFacts | None:
        """A loaded consultant (None when master data does not know them)."""
        return self._consultants.get(consultant_id)

    def assignments(self, project_id: str, consultant_id: str) -> tuple[AssignmentFacts, ...]:
        """The consultant's loaded assignments on the project."""
        return self._assignments.get((project_id, consultant_id), ())

    def pricing(self, project_id: str) -> PricingFacts | None:
        """How the project's time is priced, or None when no active contract line covers it."""
        return self._pricing.get(project_id)

    # -- loading -------------------------------------------------------------------------------------

    async def load(self, subs: Iterable[Submission]) -> None:
        """Everything the rules need for these submissions, in two statements plus any misses.

        Assignments are read for known (project, consultant) pairs and pricing for known
        projects only: an unknown one is already a violation, and asking master data about it
        would be a gRPC call per bad entry.
        """
        subs = list(subs)
        projects = {s.project_id for s in subs} - self._projects.keys()
        consultants = {s.consultant_id for s in subs} - self._consultants.keys()
        pairs = {(s.project_id, s.consultant_id) for s in subs} - self._assignments.keys()
        conn = await driver(self._conn)
        rows = await conn.fetch(
            _FIRST,
            sorted(projects),
            sorted(consultants),
            [p for p, _ in sorted(pairs)],
            [c for _, c in sorted(pairs)],
        )
        found_projects: dict[str, Message] = {}
        found_consultants: dict[str, Message] = {}
        lines: dict[str, list[tuple[md.ContractLine, str]]] = {}
        local_assignments: dict[tuple[str, str], list[AssignmentFacts]] = {}
        for row in rows:
            kind, payload = row["kind"], row["payload"]
            if kind == "project":
                found_projects[row["id"]] = md.Project.FromString(payload)
            elif kind == "consultant":
                found_consultants[row["id"]] = md.Consultant.FromString(payload)
            elif kind == "contract_line":
                lines.setdefault(row["project_id"], []).append(
                    (md.ContractLine.FromString(payload), row["parent_id"])
                )
            else:
                key = (row["project_id"], row["consultant_id"])
                local_assignments.setdefault(key, []).append(_assignment(md.Assignment.FromString(payload)))

        for kind, wanted, found in (
            ("project", projects, found_projects),
            ("consultant", consultants, found_consultants),
        ):
            missing = wanted - found.keys()
            if missing:
                # Not projected (yet): master data answers, and the reader stores what it says.
                found.update(await self._reader.records(self._conn, kind, missing))
        for pid in projects:
            p = found_projects.get(pid)
            self._projects[pid] = _project(p) if isinstance(p, md.Project) else None
        for cid in consultants:
            c = found_consultants.get(cid)
            self._consultants[cid] = _consultant(c) if isinstance(c, md.Consultant) else None

        for pair in pairs:
            if self._projects.get(pair[0]) is None or self._consultants.get(pair[1]) is None:
                continue
            if pair in local_assignments:
                self._assignments[pair] = tuple(local_assignments[pair])
            else:
                remote = await self._reader.assignments(self._conn, *pair)
                self._assignments[pair] = tuple(_assignment(a) for a in remote)

        await self._load_pricing({p for p in projects if self._projects.get(p) is not None}, lines)

    async def _load_pricing(
        self, projects: set[str], lines: dict[str, list[tuple[md.ContractLine, str]]]
    ) -> None:
        if not projects:
            return
        chosen: dict[str, tuple[md.ContractLine, md.Contract]] = {}
        parents = {parent for p in projects for _, parent in lines.get(p, [])}
        card_ids = {line.rate_card_id for p in projects for line, _ in lines.get(p, []) if line.rate_card_id}
        contracts: dict[str, Any] = {}
        cards: dict[str, Any] = {}
        if parents or card_ids:
            conn = await driver(self._conn)
            for row in await conn.fetch(_SECOND, sorted(parents), sorted(card_ids)):
                if row["kind"] == "contract":
                    contracts[row["id"]] = md.Contract.FromString(row["payload"])
                else:
                    cards[row["id"]] = md.RateCard.FromString(row["payload"])
        if parents - contracts.keys():
            contracts.update(await self._reader.records(self._conn, "contract", parents - contracts.keys()))
        for project_id in projects:
            for line, parent in lines.get(project_id, []):
                contract = contracts.get(parent)
                # A deactivated contract bills nothing; another line may still cover the project.
                if isinstance(contract, md.Contract) and _active(contract):
                    chosen[project_id] = (line, contract)
                    break
        for project_id in projects - lines.keys():
            # No line projected: ask master data (which may not know one either).
            remote = await self._reader.contract_line(self._conn, project_id)
            if remote is not None and _active(remote[1]):
                chosen[project_id] = remote
        missing_cards = {line.rate_card_id for line, _ in chosen.values() if line.rate_card_id} - cards.keys()
        if missing_cards:
            cards.update(await self._reader.records(self._conn, "rate_card", missing_cards))
        for project_id in projects:
            if project_id not in chosen:
                self._pricing[project_id] = None
                continue
            line, contract = chosen[project_id]
            currency = contract.currency
            rates: tuple[RateEntry, ...] = ()
            card = cards.get(line.rate_card_id)
            if isinstance(card, md.RateCard) and _active(card):
                currency = card.currency
                rates = tuple(RateEntry.of(e) for e in card.rates)
            model = _strip("BILLING_MODEL_", md.BillingModel.Name(line.billing_model))
            self._pricing[project_id] = PricingFacts(billing_model=model, currency=currency, rates=rates)

    # -- single reads off the hot path ----------------------------------------------------------

    async def legal_entity_known(self, legal_entity_id: str) -> bool:
        """Whether master data knows the legal entity (period locks name one)."""
        if not legal_entity_id:
            return False
        found = await self._reader.records(self._conn, "legal_entity", [legal_entity_id])
        return isinstance(found.get(legal_entity_id), md.LegalEntity)

    async def consultants(self, ids: Iterable[str]) -> dict[str, ConsultantFacts]:
        """Consultants by id (reporting lines, delegations, reversals)."""
        wanted = {i for i in ids if i}
        todo = wanted - self._consultants.keys()
        if todo:
            found = await self._reader.records(self._conn, "consultant", todo)
            for cid in todo:
                record = found.get(cid)
                self._consultants[cid] = _consultant(record) if isinstance(record, md.Consultant) else None
        return {cid: c for cid in wanted if (c := self._consultants.get(cid)) is not None}
