"""Master-data facts for validation, read from the local projection (gRPC on a miss).

`load` reads everything a set of submissions needs in two statements, however many entries:
their projects, consultants, (project, consultant) assignments and the projects' contract
lines, then those lines' contracts and rate cards, the legal entities involved (their time
zones) and the calendars (working hours for the approval SLA). Only what the projection does
not hold yet is asked of master data over gRPC, and stored on the way (`MasterDataReader`);
calendars come from the projection only (a legal entity with none projected works the default
week). The hot path talks to the asyncpg connection directly (see repository.driver).
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
from accrue.runtime.clock import UTC_ZONE, is_time_zone
from accrue.services.timekeeping.adapters.repository import driver
from accrue.services.timekeeping.adapters.tables import md_projection
from accrue.services.timekeeping.domain.masterdata import (
    AssignmentFacts,
    ConsultantFacts,
    LegalEntityFacts,
    PricingFacts,
    ProjectFacts,
)
from accrue.services.timekeeping.domain.model import Submission
from accrue.services.timekeeping.domain.working_time import (
    DEFAULT_CALENDAR,
    DEFAULT_WORKING_DAYS,
    WorkingCalendar,
)

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
# Contracts and rate cards by key, legal entities by key, and (when $4) every calendar: a small
# kind, and the projection has no column to find a legal entity's by.
_SECOND = f"""
SELECT kind, id, payload FROM {_TABLE} WHERE kind = 'contract' AND id = ANY($1::text[])
UNION ALL
SELECT kind, id, payload FROM {_TABLE} WHERE kind = 'rate_card' AND id = ANY($2::text[])
UNION ALL
SELECT kind, id, payload FROM {_TABLE} WHERE kind = 'legal_entity' AND id = ANY($3::text[])
UNION ALL
SELECT kind, id, payload FROM {_TABLE} WHERE kind = 'calendar' AND $4::bool
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


def _zone_name(name: str) -> str:
    # Master data validates zones on write; one this machine's tzdata lacks counts as UTC rather
    # than failing every submission of the legal entity.
    return name if name and is_time_zone(name) else ""


def _consultant(c: md.Consultant) -> ConsultantFacts:
    return ConsultantFacts(
        id=c.id,
        legal_entity_id=c.legal_entity_id,
        manager_id=c.manager_id,
        active_from=dt.date.fromisoformat(c.active_from),
        active_to=_date(c.active_to),
        deactivated=c.HasField("deactivate_time"),
        time_zone=_zone_name(c.time_zone),
    )


def _legal_entity(le: md.LegalEntity) -> LegalEntityFacts:
    return LegalEntityFacts(id=le.id, time_zone=_zone_name(le.time_zone) or UTC_ZONE)


def _time_of_day(text: str, default: dt.time) -> dt.time:
    try:
        return dt.time.fromisoformat(text) if text else default
    except ValueError:
        return default  # master data validates "HH:MM" on write


def _calendar(c: md.Calendar) -> WorkingCalendar:
    return WorkingCalendar(
        working_days=frozenset(int(d) for d in c.working_days) or DEFAULT_WORKING_DAYS,
        holidays=frozenset(dt.date.fromisoformat(h.date) for h in c.holidays),
        workday_start=_time_of_day(c.workday_start, dt.time(9)),
        workday_end=_time_of_day(c.workday_end, dt.time(17)),
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
        self._legal_entities: dict[str, LegalEntityFacts | None] = {}
        # By legal entity, once read (None: not read yet in this unit of work).
        self._calendars: dict[str, WorkingCalendar] | None = None

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

    def legal_entity_zone(self, legal_entity_id: str) -> str:
        """The loaded legal entity's IANA time zone ("UTC" when it has none or is unknown)."""
        le = self._legal_entities.get(legal_entity_id)
        return le.time_zone if le is not None else UTC_ZONE

    def consultant_zone(self, consultant: ConsultantFacts) -> str:
        """Where the consultant's days are judged: their own zone, else their legal entity's."""
        return consultant.time_zone or self.legal_entity_zone(consultant.legal_entity_id)

    def calendar(self, legal_entity_id: str) -> WorkingCalendar:
        """The legal entity's working calendar (its first live one by code), else Monday to
        Friday, 09:00 to 17:00, no holidays."""
        return (self._calendars or {}).get(legal_entity_id, DEFAULT_CALENDAR)

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

        # Consultants' legal entities say what "today" is for them; projects' say whose working
        # hours the approval SLA counts.
        entities = {p.legal_entity_id for p in self._projects.values() if p is not None}
        entities |= {c.legal_entity_id for c in self._consultants.values() if c is not None}
        await self._load_second({p for p in projects if self._projects.get(p) is not None}, lines, entities)

    async def working_time(self, legal_entity_ids: Iterable[str]) -> None:
        """Load legal entities' time zones and calendars (off the submission path: escalation,
        delegations)."""
        await self._load_second(set(), {}, set(legal_entity_ids))

    async def _load_second(
        self,
        projects: set[str],
        lines: dict[str, list[tuple[md.ContractLine, str]]],
        legal_entity_ids: set[str],
    ) -> None:
        chosen: dict[str, tuple[md.ContractLine, md.Contract]] = {}
        parents = {parent for p in projects for _, parent in lines.get(p, [])}
        card_ids = {line.rate_card_id for p in projects for line, _ in lines.get(p, []) if line.rate_card_id}
        entities = {le for le in legal_entity_ids if le} - self._legal_entities.keys()
        want_calendars = self._calendars is None and bool(legal_entity_ids)
        contracts: dict[str, Any] = {}
        cards: dict[str, Any] = {}
        found_entities: dict[str, Message] = {}
        calendars: list[md.Calendar] = []
        # One statement for all of it: the same round trip a submission made for pricing alone.
        if parents or card_ids or entities or want_calendars:
            conn = await driver(self._conn)
            rows = await conn.fetch(
                _SECOND, sorted(parents), sorted(card_ids), sorted(entities), want_calendars
            )
            for row in rows:
                kind, payload = row["kind"], row["payload"]
                if kind == "contract":
                    contracts[row["id"]] = md.Contract.FromString(payload)
                elif kind == "rate_card":
                    cards[row["id"]] = md.RateCard.FromString(payload)
                elif kind == "legal_entity":
                    found_entities[row["id"]] = md.LegalEntity.FromString(payload)
                else:
                    calendars.append(md.Calendar.FromString(payload))
        if entities - found_entities.keys():
            found_entities.update(
                await self._reader.records(self._conn, "legal_entity", entities - found_entities.keys())
            )
        for le_id in entities:
            record = found_entities.get(le_id)
            self._legal_entities[le_id] = (
                _legal_entity(record) if isinstance(record, md.LegalEntity) else None
            )
        if want_calendars:
            self._calendars = {}
            for c in sorted(calendars, key=lambda c: (c.code, c.id)):
                if _active(c) and c.legal_entity_id not in self._calendars:
                    self._calendars[c.legal_entity_id] = _calendar(c)
        if not projects:
            return
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
