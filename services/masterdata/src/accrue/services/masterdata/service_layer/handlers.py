"""Master-data use cases: create, get, list, batch upsert by external_ref, resolve a rate.

Each use case is one transaction. Validation of a record's own fields is the domain's
(`domain.kinds`); this layer adds what needs the database: references that must exist, codes
and external references that must be unique, and "unchanged" detection so an idempotent
re-sync writes nothing and publishes nothing.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import Message

from accrue.eventbus import Event
from accrue.masterdata.v1 import resources_pb2 as md
from accrue.money import parse_decimal
from accrue.pricing import RateEntry, resolve_rate
from accrue.runtime import AlreadyExists, InvalidArgument, NotFound, Violation
from accrue.runtime.validation import Violations
from accrue.services.masterdata.adapters.repository import body_of, decode_page_token, encode_page_token
from accrue.services.masterdata.adapters.unit_of_work import MasterDataUnitOfWork
from accrue.services.masterdata.domain.kinds import KINDS, Kind

# Violations that mean "another record already holds this" (ALREADY_EXISTS on create).
_CONFLICTS = frozenset({"CODE_TAKEN", "PROJECT_ON_OTHER_CONTRACT"})
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
MAX_BATCH = 1000

# Where each referenced kind lives (contract lines are rows of contracts).
_REF_TABLE = {**{name: name for name in KINDS}, "contract_line": "contract_line"}


class Outcome:
    """Batch-upsert outcomes; the entrypoint maps them to the UpsertOutcome enum."""

    CREATED = "CREATED"
    UPDATED = "UPDATED"
    UNCHANGED = "UNCHANGED"
    REJECTED = "REJECTED"


@dataclass
class UpsertResult:
    """What happened to one row."""

    outcome: str
    record: Message | None = None
    reasons: list[Violation] = field(default_factory=list)


@dataclass(frozen=True)
class RateResolution:
    """The effective rate and where it came from."""

    entry: RateEntry
    currency: str
    rate_card_id: str
    contract: md.Contract
    line: md.ContractLine


def _ref(record: Message) -> tuple[str, str]:
    ref = getattr(record, "external_ref")  # noqa: B009 - every kind has one; Message does not say so
    return ref.system, ref.id


def _new_id() -> str:
    return str(uuid.uuid4())


def _prepare(kind: Kind, resource: Message) -> Message:
    """A copy with server fields cleared and defaults applied, ready to validate."""
    record = kind.message()
    record.CopyFrom(resource)
    for name in ("id", "etag", "create_time", "update_time"):
        record.ClearField(name)
    if isinstance(record, md.Milestone) and record.status == md.MILESTONE_STATUS_UNSPECIFIED:
        record.status = md.MILESTONE_STATUS_PENDING
    if isinstance(record, md.Assignment) and not record.HasField("billable"):
        record.billable = True
    return record


def _assign_child_ids(record: Message, previous: Message | None) -> None:
    """Give rate entries and contract lines ids, keeping those of unchanged children."""
    if isinstance(record, md.RateCard):
        old = {
            (e.labor_category_id, e.consultant_id, e.effective_from): e.id
            for e in getattr(previous, "rates", [])
        }
        for entry in record.rates:
            entry.id = (
                old.get((entry.labor_category_id, entry.consultant_id, entry.effective_from)) or _new_id()
            )
    elif isinstance(record, md.Contract):
        old_lines = {line.project_id: line.id for line in getattr(previous, "lines", [])}
        for line in record.lines:
            line.id = old_lines.get(line.project_id) or _new_id()


class MasterData:
    """The master-data application service."""

    def __init__(
        self,
        uow_factory: Callable[[], MasterDataUnitOfWork],
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._uow = uow_factory
        self._clock = clock

    # -- create / get / list ------------------------------------------------------------

    async def create(self, kind: Kind, resource: Message) -> Message:
        """Create one record; every violation is reported and nothing is written on error."""
        record = _prepare(kind, resource)
        violations = Violations(prefix=kind.name)
        kind.validate(record, violations)
        violations.raise_if_any(f"the {kind.name.replace('_', ' ')} is invalid")
        async with self._uow() as uow:
            await self._check_database_rules(uow, kind, [record], [violations], existing_ids=[None])
            taken = [v for v in violations.items if v.code in _CONFLICTS]
            if taken and len(taken) == len(violations.items):
                raise AlreadyExists("; ".join(v.message for v in taken), taken, reason=taken[0].code)
            violations.raise_if_any(f"the {kind.name.replace('_', ' ')} is invalid")
            ref = record.external_ref  # type: ignore[attr-defined]
            if ref.system or ref.id:
                found = await uow.records.by_external_refs(kind, [(ref.system, ref.id)])
                if found:
                    existing = next(iter(found.values()))[0]
                    raise AlreadyExists(
                        f"a {kind.name.replace('_', ' ')} with external_ref {ref.system}/{ref.id} exists: "
                        f"{existing.id}",  # type: ignore[attr-defined]
                        reason="EXTERNAL_REF_EXISTS",
                    )
            record.id = _new_id()  # type: ignore[attr-defined]
            _assign_child_ids(record, None)
            await uow.records.insert(kind, [record], self._clock())
            uow.events.add(Event(kind.event_type, record.id, kind.event(**{kind.name: record})))  # type: ignore[attr-defined]
            await uow.commit()
        return record

    async def get(self, kind: Kind, record_id: str) -> Message:
        """One record, or NOT_FOUND."""
        async with self._uow() as uow:
            record = await uow.records.get(kind, record_id)
        if record is None:
            raise NotFound(f"no {kind.name.replace('_', ' ')} with id {record_id!r}", reason="NOT_FOUND")
        return record

    async def list_records(
        self, kind: Kind, filters: Mapping[str, Any], page_size: int, page_token: str
    ) -> tuple[list[Message], str]:
        """A page of records and the token of the next page ("" on the last)."""
        if page_size < 0:
            raise InvalidArgument(
                "page_size must not be negative",
                [Violation("page_size", "OUT_OF_RANGE", "page_size must not be negative")],
            )
        size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        after = None
        if page_token:
            after = decode_page_token(page_token)
            if after is None:
                raise InvalidArgument(
                    "page_token is not valid",
                    [Violation("page_token", "INVALID_PAGE_TOKEN", "page_token is not one we issued")],
                )
        async with self._uow() as uow:
            records = await uow.records.page(kind, filters, size + 1, after)
        if len(records) <= size:
            return records, ""
        records = records[:size]
        last = records[-1]
        return records, encode_page_token(getattr(last, "code", "") or "", last.id)  # type: ignore[attr-defined]

    # -- batch upsert ---------------------------------------------------------------------

    async def batch_upsert(self, kind: Kind, rows: Sequence[Message]) -> list[UpsertResult]:
        """Create or update rows keyed by external_ref; valid rows commit, invalid are reported.

        Re-sending the same batch changes nothing and publishes nothing (UNCHANGED).
        """
        if len(rows) > MAX_BATCH:
            raise InvalidArgument(
                f"a batch holds at most {MAX_BATCH} rows, got {len(rows)}",
                [Violation(kind.plural, "BATCH_TOO_LARGE", f"at most {MAX_BATCH} rows")],
            )
        records = [_prepare(kind, row) for row in rows]
        checks = [Violations() for _ in records]
        results: list[UpsertResult | None] = [None] * len(records)
        seen_refs: dict[tuple[str, str], int] = {}
        for i, (record, v) in enumerate(zip(records, checks, strict=True)):
            ref = record.external_ref  # type: ignore[attr-defined]
            if not ref.system or not ref.id:
                v.add(
                    "external_ref",
                    "REQUIRED",
                    "external_ref.system and external_ref.id are required to upsert",
                )
            elif (ref.system, ref.id) in seen_refs:
                v.add(
                    "external_ref",
                    "DUPLICATE_IN_BATCH",
                    f"the same external_ref is on row {seen_refs[(ref.system, ref.id)]}",
                )
            else:
                seen_refs[(ref.system, ref.id)] = i
            kind.validate(record, v)

        now = self._clock()
        async with self._uow() as uow:
            existing = await uow.records.by_external_refs(kind, seen_refs)
            previous = [existing.get(_ref(r)) for r in records]
            await self._check_database_rules(
                uow,
                kind,
                records,
                checks,
                existing_ids=[p[0].id if p else None for p in previous],  # type: ignore[attr-defined]
            )
            inserts: list[Message] = []
            for i, (record, v, prev) in enumerate(zip(records, checks, previous, strict=True)):
                if v:
                    results[i] = UpsertResult(Outcome.REJECTED, reasons=list(v.items))
                    continue
                if prev is None:
                    record.id = _new_id()  # type: ignore[attr-defined]
                    _assign_child_ids(record, None)
                    inserts.append(record)
                    results[i] = UpsertResult(Outcome.CREATED, record)
                    continue
                old_record, old_body, version = prev
                record.id = old_record.id  # type: ignore[attr-defined]
                _assign_child_ids(record, old_record)
                if body_of(record) == old_body:
                    results[i] = UpsertResult(Outcome.UNCHANGED, old_record)
                    continue
                if not await uow.records.update(kind, record, version, now):
                    results[i] = UpsertResult(
                        Outcome.REJECTED,
                        reasons=[
                            Violation("", "CONCURRENT_UPDATE", "the record changed during the batch; resend")
                        ],
                    )
                    continue
                results[i] = UpsertResult(Outcome.UPDATED, record)
            await uow.records.insert(kind, inserts, now)
            for result in results:
                if result is not None and result.outcome in (Outcome.CREATED, Outcome.UPDATED):
                    assert result.record is not None
                    record_id = result.record.id  # type: ignore[attr-defined]
                    uow.events.add(
                        Event(kind.event_type, record_id, kind.event(**{kind.name: result.record}))
                    )
            await uow.commit()
        return [r for r in results if r is not None]

    # -- rules that need the database ------------------------------------------------------

    async def _check_database_rules(
        self,
        uow: MasterDataUnitOfWork,
        kind: Kind,
        records: Sequence[Message],
        checks: Sequence[Violations],
        existing_ids: Sequence[str | None],
    ) -> None:
        """References must exist; codes must be unique; a project is on one contract line."""
        wanted: dict[str, set[str]] = {}
        per_record = [list(kind.references(r)) for r in records]
        for refs in per_record:
            for _, target, ref_id in refs:
                wanted.setdefault(target, set()).add(ref_id)
        found = {
            target: await uow.records.existing_ids(_REF_TABLE[target], ids) for target, ids in wanted.items()
        }
        for refs, v in zip(per_record, checks, strict=True):
            for path, target, ref_id in refs:
                if ref_id not in found[target]:
                    v.add(path, "REFERENCE_NOT_FOUND", f"no {target.replace('_', ' ')} with id {ref_id!r}")

        codes = [getattr(r, "code", "") for r in records]
        owners = await uow.records.code_owners(kind, codes)
        for code, own_id, v in zip(codes, existing_ids, checks, strict=True):
            if code and code in owners and owners[code] != own_id:
                v.add(
                    "code",
                    "CODE_TAKEN",
                    f"code {code!r} belongs to {kind.name.replace('_', ' ')} {owners[code]}",
                )

        if kind.name == "contract":
            project_ids = [line.project_id for r in records for line in r.lines]  # type: ignore[attr-defined]
            on_lines = await uow.records.project_lines(project_ids)
            for record, own_id, v in zip(records, existing_ids, checks, strict=True):
                for i, line in enumerate(record.lines):  # type: ignore[attr-defined]
                    other = on_lines.get(line.project_id)
                    if other is not None and other != own_id:
                        v.add(
                            f"lines[{i}].project_id",
                            "PROJECT_ON_OTHER_CONTRACT",
                            f"the project is already billed under contract {other}",
                        )

    # -- rates -----------------------------------------------------------------------------

    async def resolve_rate(
        self, project_id: str, consultant_id: str, labor_category_id: str, date: str
    ) -> RateResolution:
        """The rate that prices this consultant's hour on the project on the date."""
        v = Violations()
        v.required("project_id", project_id)
        v.required("consultant_id", consultant_id)
        v.required("labor_category_id", labor_category_id)
        day = v.date("date", date)
        v.raise_if_any("cannot resolve a rate")
        assert day is not None
        async with self._uow() as uow:
            if await uow.records.get(KINDS["project"], project_id) is None:
                raise NotFound(f"no project with id {project_id!r}", reason="PROJECT_NOT_FOUND")
            found = await uow.records.contract_line_for_project(project_id)
            if found is None:
                raise NotFound("the project is not on any contract line", reason="NO_CONTRACT_LINE")
            contract, line = found
            if not line.rate_card_id:
                model = md.BillingModel.Name(line.billing_model)
                raise NotFound(
                    f"the project's contract line is {model} and has no rate card",
                    reason="NO_RATE_CARD",
                )
            card = await uow.records.get(KINDS["rate_card"], line.rate_card_id)
        assert isinstance(card, md.RateCard)
        entry = resolve_rate(
            (rate_entry(e) for e in card.rates),
            consultant_id=consultant_id,
            labor_category_id=labor_category_id,
            day=day,
        )
        if entry is None:
            raise NotFound(
                f"rate card {card.code} has no rate for labor category {labor_category_id} on {date}",
                reason="NO_RATE",
            )
        return RateResolution(entry, card.currency, card.id, contract, line)


def rate_entry(entry: md.RateCardEntry) -> RateEntry:
    """The pricing rule's view of a rate-card entry (stored entries are already validated)."""
    return RateEntry(
        id=entry.id,
        labor_category_id=entry.labor_category_id,
        consultant_id=entry.consultant_id or None,
        rate=parse_decimal(entry.rate),
        effective_from=dt.date.fromisoformat(entry.effective_from),
        effective_to=dt.date.fromisoformat(entry.effective_to) if entry.effective_to else None,
    )
