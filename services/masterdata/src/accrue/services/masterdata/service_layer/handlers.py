"""Master-data use cases: create, get, list, update, deactivate, batch upsert, history, resolution.

Each use case is one transaction. Validation of a record's own fields is the domain's
(`domain.kinds`); this layer adds what needs the database — external references resolved to
ids, references that must exist and not be deactivated, codes and natural keys that must be
unique, the system of record that owns the kind — and "unchanged" detection, so an idempotent
re-sync writes nothing and publishes nothing. Every change is written to the history and
published through the outbox in the same transaction.

Create, update and batch upsert share one pipeline (`_check`, then `_persist`) and so the same
rules: a row that is valid for one is valid for the others.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from google.protobuf import json_format, timestamp_pb2
from google.protobuf.message import Message

from accrue.eventbus import Event
from accrue.events.v1 import masterdata_events_pb2 as ev
from accrue.masterdata.v1 import resources_pb2 as md
from accrue.money import parse_decimal
from accrue.pricing import RateEntry, resolve_rate
from accrue.runtime import (
    Aborted,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Violation,
    audit,
)
from accrue.runtime.clock import UTC_ZONE, Clock
from accrue.runtime.identity import current_principal
from accrue.runtime.validation import Violations
from accrue.services.masterdata.adapters.repository import (
    ChangeRow,
    Stored,
    Target,
    Write,
    body_of,
    decode_page_token,
    encode_page_token,
    set_server_fields,
    to_json,
)
from accrue.services.masterdata.adapters.tables import COLUMNS
from accrue.services.masterdata.adapters.unit_of_work import MasterDataUnitOfWork
from accrue.services.masterdata.domain import access, resolution
from accrue.services.masterdata.domain.history import changed_fields
from accrue.services.masterdata.domain.kinds import (
    CONTRACT_LINE_LEGAL_ENTITY_PATH,
    KINDS,
    SERVER_FIELDS,
    Kind,
    Reference,
)
from accrue.services.masterdata.domain.masks import apply_mask, mask_paths
from accrue.services.masterdata.domain.ownership import API_SOURCE, Ownership

# Violations that mean "another record already holds this" (ALREADY_EXISTS on create/update).
_CONFLICTS = frozenset({"CODE_TAKEN", "RATE_EXISTS", "PROJECT_ON_OTHER_CONTRACT", "EXTERNAL_REF_TAKEN"})
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
MAX_BATCH = 1000
# How far up a management chain the cycle check walks before giving up (no real firm is deeper).
_MAX_CHAIN = 1000
ANONYMOUS = "anonymous"


class Outcome:
    """Batch-upsert outcomes; the entrypoint maps them to the UpsertOutcome enum."""

    CREATED = "CREATED"
    UPDATED = "UPDATED"
    UNCHANGED = "UNCHANGED"
    REJECTED = "REJECTED"


# Milestone statuses as the stored JSON body spells them.
_COMPLETED = "MILESTONE_STATUS_COMPLETED"
_INVOICED = "MILESTONE_STATUS_INVOICED"
# The source (and actor) history names for status changes that billing's events make.
BILLING_SOURCE = "billing"


class ChangeKind:
    """What a history entry records."""

    CREATED = "CREATED"
    UPDATED = "UPDATED"
    DEACTIVATED = "DEACTIVATED"
    COMPLETED = "COMPLETED"


@dataclass(frozen=True)
class Writer:
    """Who writes and from where: the history records both, ownership checks the source.

    Both come from the verified principal (entrypoints.grpc_api.writer, domain.access): actor is
    its subject, source the system of record an integration client is, or "api" for a person.
    A batch row's external_ref.system keys the row and claims nothing (system-of-record).
    """

    actor: str | None = None
    source: str = API_SOURCE
    request_id: str = ""
    reason: str = ""

    def source_of(self) -> str:
        """The source of every write of this call."""
        return self.source or API_SOURCE

    def actor_for(self, source: str) -> str:
        """Who the history names: the actor, else the source system, else anonymous."""
        return self.actor or (source if source != API_SOURCE else ANONYMOUS)


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
    entry_message: md.RateCardEntry
    currency: str
    rate_card_id: str
    contract: md.Contract
    line: md.ContractLine


@dataclass(frozen=True)
class Conversion:
    """An amount converted at the FX rate in effect on a day."""

    amount: Decimal
    exact_amount: Decimal
    currency: str
    rate: Decimal
    fx_rate: md.FxRate | None


@dataclass(frozen=True)
class TaxResolution:
    """The tax rate in effect on a day, and the tax on an amount when one was given."""

    rate: Decimal
    tax_rate: md.TaxRate
    tax_amount: Decimal | None


@dataclass(frozen=True)
class HistoryEntry:
    """One change of a resource, with the resource before and after it."""

    version: int
    kind: str
    actor: str
    source: str
    reason: str
    request_id: str
    change_time: dt.datetime
    before: Message | None
    after: Message
    changed_fields: list[str]


@dataclass
class _Row:
    """One record going through the write pipeline."""

    record: Any
    v: Violations
    source: str
    previous: Stored | None = None
    result: UpsertResult | None = None
    _refs: list[Reference] | None = None

    def refs(self, kind: Kind) -> list[Reference]:
        """The record's references, found once (resolution updates them in place)."""
        if self._refs is None:
            self._refs = list(kind.references(self.record))
        return self._refs

    @property
    def ok(self) -> bool:
        return not self.v and self.result is None


def _new_id() -> str:
    return str(uuid.uuid4())


def _new_ids(n: int) -> list[str]:
    """n random (version 4) UUIDs from one read of the system's random source."""
    raw = os.urandom(16 * n)
    return [str(uuid.UUID(bytes=raw[i : i + 16], version=4)) for i in range(0, 16 * n, 16)]


def _with_fields(body_json: str, extra: dict[str, Any]) -> str:
    """The JSON object body_json with extra's keys added (none of them is in the body)."""
    more = to_json(extra)[1:-1]
    return "{" + more + "}" if body_json == "{}" else body_json[:-1] + "," + more + "}"


def _json_time(value: dt.datetime) -> str:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts.ToJsonString()


def _prepare(kind: Kind, resource: Message, *, defaults: bool = True) -> Any:
    """A copy with server fields cleared (and defaults applied, for a whole record)."""
    record: Any = kind.message()
    record.CopyFrom(resource)
    for name in (*SERVER_FIELDS, *kind.server_managed):
        record.ClearField(name)
    if defaults and isinstance(record, md.Assignment) and not record.HasField("billable"):
        record.billable = True
    if defaults and isinstance(record, md.LegalEntity) and not record.time_zone:
        record.time_zone = UTC_ZONE
    return record


def _clear_refs(kind: Kind, record: Any) -> None:
    """Drop the input-only *_ref fields once resolved: they are never stored or returned."""
    for f in kind.refs:
        record.ClearField(f.ref_field)
    for repeated, fields in kind.nested_refs:
        for child in getattr(record, repeated):
            for f in fields:
                child.ClearField(f.ref_field)


def _assign_child_ids(record: Any, previous: dict[str, Any] | None) -> None:
    """Give rate entries and contract lines ids, keeping those of unchanged children."""
    if isinstance(record, md.RateCard):
        old = {
            (e.get("labor_category_id", ""), e.get("consultant_id", ""), e.get("effective_from", "")): e["id"]
            for e in (previous or {}).get("rates", ())
        }
        for entry in record.rates:
            entry.id = (
                old.get((entry.labor_category_id, entry.consultant_id, entry.effective_from)) or _new_id()
            )
    elif isinstance(record, md.Contract):
        old_lines = {line.get("project_id", ""): line["id"] for line in (previous or {}).get("lines", ())}
        for line in record.lines:
            line.id = old_lines.get(line.project_id) or _new_id()


def _written(kind: Kind, row: _Row) -> Message:
    """The record a single write stored, or the error that stopped it."""
    if row.result is None or row.result.record is None:
        _raise_for(kind, row.v.items, f"the {kind.title} was not written")
        raise AssertionError("a write without a result has violations")  # pragma: no cover
    return row.result.record


def _raise_for(kind: Kind, violations: Sequence[Violation], message: str) -> None:
    """The error for a single write: permission, conflict, lost race or invalid input."""
    if not violations:
        return
    if any(v.code == "CONCURRENT_CHANGE" for v in violations):
        raise Aborted(
            "a concurrent change conflicted with this write; nothing was written, send it again",
            reason="CONCURRENT_CHANGE",
        )
    denied = [v for v in violations if v.code == "NOT_SYSTEM_OF_RECORD"]
    if denied:
        raise PermissionDenied(denied[0].message, denied, reason="NOT_SYSTEM_OF_RECORD")
    taken = [v for v in violations if v.code in _CONFLICTS]
    if taken and len(taken) == len(violations):
        raise AlreadyExists("; ".join(v.message for v in taken), taken, reason=taken[0].code)
    detail = "; ".join(f"{v.field}: {v.message}" for v in violations[:5])
    more = f" (and {len(violations) - 5} more)" if len(violations) > 5 else ""
    raise InvalidArgument(f"{message}: {detail}{more}", violations)


@contextlib.asynccontextmanager
async def _conflicts_abort() -> AsyncIterator[None]:
    """A constraint or deadlock hit by a concurrent writer is ABORTED: retrying will work."""
    try:
        yield
    except sa.exc.IntegrityError as exc:
        raise Aborted(
            "a concurrent change conflicted with this write; nothing was written, send it again",
            reason="CONCURRENT_CHANGE",
        ) from exc
    except sa.exc.DBAPIError as exc:
        if "deadlock" in str(exc).lower() or "could not serialize" in str(exc).lower():
            raise Aborted(
                "a concurrent change conflicted with this write; nothing was written, send it again",
                reason="CONCURRENT_CHANGE",
            ) from exc
        raise


class MasterData:
    """The master-data application service."""

    def __init__(
        self,
        uow_factory: Callable[[], MasterDataUnitOfWork],
        ownership: Ownership | None = None,
        *,
        clock: Clock,
    ) -> None:
        self._uow = uow_factory
        self._ownership = ownership or Ownership()
        self._clock = clock

    # -- create / get / list ------------------------------------------------------------

    async def create(self, kind: Kind, resource: Message, writer: Writer = Writer()) -> Message:
        """Create one record; every violation is reported and nothing is written on error."""
        record = _prepare(kind, resource)
        row = _Row(record, Violations(prefix=kind.name), writer.source_of())
        denied = self._ownership.check(kind.name, kind.plural, row.source)
        _raise_for(kind, [denied] if denied else [], "")
        scope = _scope()
        if scope is not None and access.reaches_beyond_scope(kind, creating=True):
            raise access.refuse_beyond_scope(kind)
        kind.validate(record, row.v)
        async with _conflicts_abort(), self._uow() as uow:
            ref = record.external_ref
            if ref.system or ref.id:
                found = await uow.records.by_external_refs(kind, [(ref.system, ref.id)])
                if found:
                    existing = next(iter(found.values()))
                    raise AlreadyExists(
                        f"a {kind.title} with external_ref {ref.system}/{ref.id} exists: {existing.id}",
                        reason="EXTERNAL_REF_EXISTS",
                    )
            record.id = _new_id()
            await self._check(uow, kind, [row], scope)
            _raise_for(kind, row.v.items, f"the {kind.title} is invalid")
            await self._persist(uow, kind, [row], writer)
            await uow.commit()
        return _written(kind, row)

    async def get(self, kind: Kind, record_id: str) -> Message:
        """One record, deactivated or not, or NOT_FOUND (another legal entity's too)."""
        scope = _scope()
        async with self._uow() as uow:
            record = await uow.records.get(kind, record_id)
            if record is not None and not await _visible(uow, kind, record_id, scope):
                record = None
        if record is None:
            raise access.not_found(kind, record_id)
        return record

    async def list_records(
        self,
        kind: Kind,
        filters: Mapping[str, Any],
        page_size: int,
        page_token: str,
        show_deactivated: bool = False,
    ) -> tuple[list[Message], str]:
        """A page of records and the token of the next page ("" on the last)."""
        size = _page_size(page_size)
        after = None
        if page_token:
            after = decode_page_token(page_token)
            if after is None:
                raise InvalidArgument(
                    "page_token is not valid",
                    [Violation("page_token", "INVALID_PAGE_TOKEN", "page_token is not one we issued")],
                )
        async with self._uow() as uow:
            records = await uow.records.page(
                kind, filters, size + 1, after, show_deactivated=show_deactivated, scope=_scope()
            )
        if len(records) <= size:
            return records, ""
        records = records[:size]
        last = records[-1]
        return records, encode_page_token(getattr(last, "code", "") or "", last.id)  # type: ignore[attr-defined]

    # -- update / deactivate / complete -------------------------------------------------------

    async def update(
        self, kind: Kind, record_id: str, patch: Message, paths: Sequence[str], writer: Writer = Writer()
    ) -> Message:
        """Change the fields the mask names; a stale etag is ABORTED, an unchanged record stays."""
        source = writer.source_of()
        denied = self._ownership.check(kind.name, kind.plural, source)
        _raise_for(kind, [denied] if denied else [], "")
        scope = _scope()
        if scope is not None and access.reaches_beyond_scope(kind, creating=False):
            raise access.refuse_beyond_scope(kind)
        v = Violations()
        fields = mask_paths(kind, patch, paths, v)
        v.raise_if_any("the update_mask is invalid")
        expected = str(getattr(patch, "etag", ""))
        async with _conflicts_abort(), self._uow() as uow:
            stored = (await uow.records.load_many(kind, [record_id], lock=True)).get(record_id)
            if stored is None or not await _visible(uow, kind, record_id, scope):
                raise access.not_found(kind, record_id)
            if expected and expected != str(stored.version):
                raise Aborted(
                    f"the {kind.title} changed since it was read (etag {expected}, now {stored.version}); "
                    "read it again and reapply the change",
                    reason="STALE_ETAG",
                )
            current = stored.record(kind)
            record = apply_mask(kind, current, _prepare(kind, patch, defaults=False), fields)
            for name in SERVER_FIELDS:
                record.ClearField(name)
            record.id = record_id  # type: ignore[attr-defined]
            row = _Row(record, Violations(prefix=kind.name), source, previous=stored)
            kind.validate(record, row.v)
            ref = row.record.external_ref
            if (
                ref.system
                and ref.id
                and stored.body.get("external_ref") != {"system": ref.system, "id": ref.id}
            ):
                holder = (await uow.records.by_external_refs(kind, [(ref.system, ref.id)])).get(
                    (ref.system, ref.id)
                )
                if holder is not None and holder.id != record_id:
                    row.v.add(
                        "external_ref",
                        "EXTERNAL_REF_TAKEN",
                        f"external_ref {ref.system}/{ref.id} belongs to {kind.title} {holder.id}",
                    )
            await self._check(uow, kind, [row], scope)
            _raise_for(kind, row.v.items, f"the {kind.title} is invalid")
            await self._persist(uow, kind, [row], writer)
            await uow.commit()
        return _written(kind, row)

    async def deactivate(self, kind: Kind, record_id: str, etag: str, writer: Writer = Writer()) -> Message:
        """Deactivate a record (idempotent): it stays readable and leaves lists."""
        source = writer.source_of()
        async with _conflicts_abort(), self._uow() as uow:
            stored = await self._load_for_change(uow, kind, record_id, etag, source)
            if stored.deactivate_time is not None:
                return stored.record(kind)
            now = self._clock()
            record = await self._save_state(
                uow, kind, stored, stored.body, writer, source, now, ChangeKind.DEACTIVATED
            )
            uow.events.add(
                Event(
                    kind.deactivated_event_type, stored.id, kind.event(**{kind.name: record}), occurred_at=now
                )
            )
            await uow.commit()
        return record

    async def complete_milestone(self, record_id: str, etag: str, writer: Writer = Writer()) -> md.Milestone:
        """Mark a pending milestone complete (billable); completing it again changes nothing."""
        kind = KINDS["milestone"]
        source = writer.source_of()
        async with _conflicts_abort(), self._uow() as uow:
            stored = await self._load_for_change(uow, kind, record_id, etag, source)
            status = stored.body.get("status", "MILESTONE_STATUS_PENDING")
            if status == "MILESTONE_STATUS_COMPLETED":
                record = stored.record(kind)
                assert isinstance(record, md.Milestone)
                return record
            if stored.deactivate_time is not None:
                raise FailedPrecondition("the milestone is deactivated", reason="MILESTONE_DEACTIVATED")
            if status != "MILESTONE_STATUS_PENDING":
                raise FailedPrecondition(
                    f"only a pending milestone can be completed; this one is {status}",
                    reason="MILESTONE_NOT_PENDING",
                )
            now = self._clock()
            body = {**stored.body, "status": "MILESTONE_STATUS_COMPLETED", "complete_time": _json_time(now)}
            record = await self._save_state(
                uow, kind, stored, body, writer, source, now, ChangeKind.COMPLETED
            )
            assert isinstance(record, md.Milestone)
            contract_id, project_id = await uow.records.line_owner(record.contract_line_id)
            uow.events.add(
                Event(
                    "md.milestone.completed",
                    record.id,
                    ev.MilestoneCompleted(milestone=record, contract_id=contract_id, project_id=project_id),
                    occurred_at=now,
                )
            )
            uow.events.add(Event(kind.event_type, record.id, kind.event(milestone=record), occurred_at=now))
            await uow.commit()
        return record

    async def record_milestones_billed(
        self, uow: MasterDataUnitOfWork, milestone_ids: Iterable[str], invoice_id: str, *, invoiced: bool
    ) -> int:
        """Billing drafted (invoiced=True) or voided an invoice with these milestones on it.

        A COMPLETED milestone on a draft becomes INVOICED; a voided invoice puts its INVOICED
        milestones back to COMPLETED, billable again. Any other status is left alone (a repeat, or
        a milestone deactivated since). The change is billing's, not the system of record's, so
        ownership does not apply: the history names billing and the invoice. It publishes
        md.milestone.upserted only — never md.milestone.completed again, which would bill it
        twice. The caller's unit of work commits (an event consumer's, with its inbox).
        """
        kind = KINDS["milestone"]
        before, after = (_COMPLETED, _INVOICED) if invoiced else (_INVOICED, _COMPLETED)
        writer = Writer(
            actor=BILLING_SOURCE,
            source=BILLING_SOURCE,
            reason=f"invoice {invoice_id} {'drafted' if invoiced else 'voided'}",
        )
        changed = 0
        now = self._clock()
        stored_by_id = await uow.records.load_many(kind, sorted(set(milestone_ids)), lock=True)
        for stored in stored_by_id.values():
            if stored.body.get("status") != before:
                continue
            body = {**stored.body, "status": after}
            record = await self._save_state(
                uow, kind, stored, body, writer, BILLING_SOURCE, now, ChangeKind.UPDATED
            )
            uow.events.add(Event(kind.event_type, stored.id, kind.event(milestone=record), occurred_at=now))
            changed += 1
        return changed

    async def _load_for_change(
        self, uow: MasterDataUnitOfWork, kind: Kind, record_id: str, etag: str, source: str
    ) -> Stored:
        denied = self._ownership.check(kind.name, kind.plural, source)
        _raise_for(kind, [denied] if denied else [], "")
        scope = _scope()
        if scope is not None and access.reaches_beyond_scope(kind, creating=False):
            raise access.refuse_beyond_scope(kind)
        stored = (await uow.records.load_many(kind, [record_id], lock=True)).get(record_id)
        if stored is None or not await _visible(uow, kind, record_id, scope):
            raise access.not_found(kind, record_id)
        if etag and etag != str(stored.version):
            raise Aborted(
                f"the {kind.title} changed since it was read (etag {etag}, now {stored.version})",
                reason="STALE_ETAG",
            )
        return stored

    async def _save_state(
        self,
        uow: MasterDataUnitOfWork,
        kind: Kind,
        stored: Stored,
        body: dict[str, Any],
        writer: Writer,
        source: str,
        now: dt.datetime,
        change: str,
    ) -> Message:
        """Write a server-side state change (deactivation, completion): new version, history."""
        before = _state(stored.body, stored)
        if change == ChangeKind.DEACTIVATED:
            stored.deactivate_time = now
        stored.version += 1
        stored.update_time = now
        stored.body = body
        record = stored.record(kind)
        await uow.records.update(
            kind, [Write(record, body, stored.version, stored.create_time, now, stored.deactivate_time)]
        )
        await uow.records.add_changes(
            [
                ChangeRow(
                    kind.name,
                    stored.id,
                    stored.version,
                    change,
                    writer.actor_for(source),
                    source,
                    now,
                    _state(body, stored),
                    writer.reason,
                    writer.request_id,
                )
            ]
        )
        legal_entity = (await _legal_entities(uow, kind, [(stored.id, body)])).get(stored.id, "")
        audit.note(kind.name, stored.id, legal_entity, before, _state(body, stored))
        return record

    # -- batch upsert ---------------------------------------------------------------------

    async def batch_upsert(
        self, kind: Kind, rows: Sequence[Message], writer: Writer = Writer()
    ) -> list[UpsertResult]:
        """Create or update rows keyed by external_ref; valid rows commit, invalid are reported.

        Re-sending the same batch changes nothing and publishes nothing (UNCHANGED). A row is
        written whole or not at all.
        """
        if len(rows) > MAX_BATCH:
            raise InvalidArgument(
                f"a batch holds at most {MAX_BATCH} rows, got {len(rows)}",
                [Violation(kind.plural, "BATCH_TOO_LARGE", f"at most {MAX_BATCH} rows")],
            )
        scope = _scope()
        batch: list[_Row] = []
        etags: list[str] = []
        seen_refs: dict[tuple[str, str], int] = {}
        for i, resource in enumerate(rows):
            etags.append(str(getattr(resource, "etag", "")))
            record = _prepare(kind, resource)
            # The source is the caller's, whatever system the row's external_ref names.
            row = _Row(record, Violations(), writer.source_of())
            batch.append(row)
            ref = record.external_ref
            if not ref.system or not ref.id:
                row.v.add(
                    "external_ref",
                    "REQUIRED",
                    "external_ref.system and external_ref.id are required to upsert",
                )
            elif (ref.system, ref.id) in seen_refs:
                row.v.add(
                    "external_ref",
                    "DUPLICATE_IN_BATCH",
                    f"the same external_ref is on row {seen_refs[(ref.system, ref.id)]}",
                )
            else:
                seen_refs[(ref.system, ref.id)] = i
            kind.validate(record, row.v)

        async with _conflicts_abort(), self._uow() as uow:
            # Locked, in id order, so concurrent batches touching the same records take turns.
            existing = await uow.records.by_external_refs(kind, seen_refs, lock=True)
            hidden = await _hidden(uow, kind, [s.id for s in existing.values()], scope)
            fresh = iter(_new_ids(len(batch)))
            for row, etag in zip(batch, etags, strict=True):
                ref = row.record.external_ref
                row.previous = existing.get((ref.system, ref.id))
                if row.previous is not None and row.previous.id in hidden:
                    # Another legal entity's record is written to as a missing one would be:
                    # refused, without its id.
                    row.previous = None
                    row.v.add(
                        "external_ref",
                        "NOT_FOUND",
                        f"no {kind.title} the caller may change has external_ref {ref.system}/{ref.id}",
                    )
                if scope is not None and access.reaches_beyond_scope(kind, row.previous is None):
                    row.v.items.append(access.beyond_scope(kind))
                if row.previous is None:
                    row.record.id = next(fresh)
                    continue
                row.record.id = row.previous.id
                if etag and etag != str(row.previous.version):
                    row.v.add(
                        "etag",
                        "STALE_ETAG",
                        f"the record is at etag {row.previous.version}, the row says {etag}",
                    )
            await self._check(uow, kind, batch, scope)
            await self._persist(uow, kind, batch, writer)
            await uow.commit()
        return [row.result or UpsertResult(Outcome.REJECTED, reasons=list(row.v.items)) for row in batch]

    # -- the write pipeline ------------------------------------------------------------------

    async def _check(
        self, uow: MasterDataUnitOfWork, kind: Kind, rows: Sequence[_Row], scope: frozenset[str] | None
    ) -> None:
        """Every rule that needs the database, adding violations to each row (ids assigned).

        References are resolved within scope: a record of another legal entity is not found,
        unless the record already referred to it (a write keeps what it does not change).
        """
        # What resolving external refs learns about the targets spares the target check a query.
        known: dict[str, dict[str, Target]] = {}
        await self._resolve_external_refs(uow, kind, rows, known, scope)
        await self._check_targets(uow, kind, rows, known, scope)
        for row in rows:
            _assign_child_ids(row.record, row.previous.body if row.previous else None)
            denied = self._ownership.check(kind.name, kind.plural, row.source)
            if denied is not None:
                row.v.items.append(denied)
        valid = [r for r in rows if not r.v]
        await self._check_unique(uow, kind, valid)
        if kind.name == "contract":
            await self._check_contract_lines(uow, [r for r in valid if not r.v])
        if kind.name == "consultant":
            await self._check_manager_cycles(uow, [r for r in valid if not r.v])
        _reject_dependents(kind, rows)

    async def _resolve_external_refs(
        self,
        uow: MasterDataUnitOfWork,
        kind: Kind,
        rows: Sequence[_Row],
        known: dict[str, dict[str, Target]],
        scope: frozenset[str] | None,
    ) -> None:
        wanted: dict[str, set[tuple[str, str]]] = {}
        per_row = [[r for r in row.refs(kind) if r.external] for row in rows]
        for refs in per_row:
            for ref in refs:
                assert ref.external is not None
                if all(ref.external):
                    wanted.setdefault(ref.field.lookup, set()).add(ref.external)
        found = {
            lookup: await uow.records.ids_by_external_refs(lookup, refs) for lookup, refs in wanted.items()
        }
        hidden = {
            lookup: await _hidden(uow, KINDS[lookup], [i for i, _ in hits.values()], scope)
            for lookup, hits in found.items()
        }
        # A row may name another row of the same batch (a consultant's manager).
        in_batch = {
            (row.record.external_ref.system, row.record.external_ref.id): row.record.id
            for row in rows
            if row.record.external_ref.id
        }
        lines: dict[str, tuple[str, str]] = {}
        if "project" in wanted and any(f.via for f in kind.refs):
            lines = await uow.records.project_lines(i for i, _ in found["project"].values())
        for row, refs in zip(rows, per_row, strict=True):
            before = kind.referenced_ids(row.previous.body) if row.previous else set()
            for ref in refs:
                assert ref.external is not None
                if not all(ref.external):
                    continue  # the domain already said the ref is incomplete
                lookup = ref.field.lookup
                hit = found.get(lookup, {}).get(ref.external)
                if hit and hit[0] in hidden.get(lookup, ()) and (lookup, hit[0]) not in before:
                    hit = None  # another legal entity's record: not found, its id not told
                resolved = hit[0] if hit else None
                if hit and not ref.field.via:
                    known.setdefault(lookup, {})[hit[0]] = hit[1]
                if resolved is None and lookup == kind.name:
                    resolved = in_batch.get(ref.external)
                system, ext_id = ref.external
                if resolved is None:
                    row.v.add(
                        ref.ref_path,
                        "REFERENCE_NOT_FOUND",
                        f"no {lookup.replace('_', ' ')} with external_ref {system}/{ext_id}",
                    )
                    continue
                if ref.field.via:
                    line = lines.get(resolved)
                    if line is None:
                        row.v.add(
                            ref.ref_path,
                            "NO_CONTRACT_LINE",
                            f"project {system}/{ext_id} is not on any contract line",
                        )
                        continue
                    resolved = line[1]
                if ref.id and ref.id != resolved:
                    row.v.add(
                        ref.ref_path,
                        "REFERENCE_MISMATCH",
                        f"{ref.ref_path} names {resolved} but {ref.path} is {ref.id}",
                    )
                    continue
                ref.set_id(resolved)
        for row in rows:
            _clear_refs(kind, row.record)

    async def _check_targets(
        self,
        uow: MasterDataUnitOfWork,
        kind: Kind,
        rows: Sequence[_Row],
        known: dict[str, dict[str, Target]],
        scope: frozenset[str] | None,
    ) -> None:
        """Referenced records exist; a deactivated one may be kept but not newly referenced."""
        per_row = [row.refs(kind) for row in rows]
        wanted: dict[str, set[str]] = {}
        for refs in per_row:
            for ref in refs:
                if ref.id and ref.id not in known.get(ref.field.target, ()):
                    wanted.setdefault(ref.field.target, set()).add(ref.id)
        found = {name: dict(ids) for name, ids in known.items()}
        for name, ids in wanted.items():
            found.setdefault(name, {}).update(await uow.records.targets(name, ids))
        hidden = {name: await _hidden_targets(uow, name, list(ids), scope) for name, ids in found.items()}
        in_batch = {row.record.id for row in rows if row.previous is None}
        for row, refs in zip(rows, per_row, strict=True):
            before = kind.referenced_ids(row.previous.body) if row.previous else set()
            for ref in refs:
                target_kind = ref.field.target
                if not ref.id:
                    continue
                target = found.get(target_kind, {}).get(ref.id)
                if ref.id in hidden.get(target_kind, ()) and (target_kind, ref.id) not in before:
                    target = None  # another legal entity's record reads as a missing one
                if target is None:
                    if target_kind == kind.name and ref.id in in_batch:
                        continue
                    row.v.add(
                        ref.path,
                        "REFERENCE_NOT_FOUND",
                        f"no {target_kind.replace('_', ' ')} with id {ref.id!r}",
                    )
                    continue
                if target.deactivated and (target_kind, ref.id) not in before:
                    row.v.add(
                        ref.path,
                        "REFERENCE_DEACTIVATED",
                        f"{target_kind.replace('_', ' ')} {ref.id} is deactivated; it cannot be newly "
                        "referenced",
                    )
                if target_kind == "contract_line" and target.billing_model != "BILLING_MODEL_FIXED_FEE":
                    row.v.add(
                        ref.path,
                        "NOT_FIXED_FEE",
                        f"milestones belong to FIXED_FEE contract lines; this line is {target.billing_model}",
                    )

    async def _check_unique(self, uow: MasterDataUnitOfWork, kind: Kind, rows: Sequence[_Row]) -> None:
        """Codes and natural keys are unique, in the database and within the batch."""
        if not kind.unique or not rows:
            return
        columns = [COLUMNS[kind.name](row.record) for row in rows]
        for key in kind.unique:
            values = [tuple(c[name] for name in key.columns) for c in columns]
            holders = await uow.records.unique_holders(kind, key.columns, values)
            first: dict[tuple[Any, ...], int] = {}
            for i, (row, value) in enumerate(zip(rows, values, strict=True)):
                holder = holders.get(value)
                shown = ", ".join(str(x) for x in value)
                if holder is not None and holder != row.record.id:
                    row.v.add(
                        key.field, key.code, f"the {key.describe} {shown} belongs to {kind.title} {holder}"
                    )
                elif value in first:
                    row.v.add(
                        key.field,
                        "DUPLICATE_IN_BATCH",
                        f"the {key.describe} {shown} is also on row {first[value]}",
                    )
                else:
                    first[value] = i

    async def _check_contract_lines(self, uow: MasterDataUnitOfWork, rows: Sequence[_Row]) -> None:
        """A project is billed on one contract line; a line with milestones cannot go."""
        project_ids = [line.project_id for row in rows for line in row.record.lines]
        on_lines = await uow.records.project_lines(project_ids)
        removed: dict[str, tuple[_Row, str]] = {}
        for row in rows:
            kept = {line.id for line in row.record.lines}
            for old in (row.previous.body if row.previous else {}).get("lines", ()):
                if old["id"] not in kept:
                    removed[old["id"]] = (row, old.get("project_id", ""))
        with_milestones = await uow.records.lines_with_milestones(removed)
        for line_id in with_milestones:
            row, project_id = removed[line_id]
            row.v.add(
                "lines",
                "LINE_HAS_MILESTONES",
                f"the line for project {project_id} has milestones and cannot be removed",
            )
        claimed: dict[str, str] = {}
        for row in rows:
            for i, line in enumerate(row.record.lines):
                other = on_lines.get(line.project_id, (None, None))[0]
                if other is not None and other != row.record.id:
                    row.v.add(
                        f"lines[{i}].project_id",
                        "PROJECT_ON_OTHER_CONTRACT",
                        f"the project is already billed under contract {other}",
                    )
                elif claimed.setdefault(line.project_id, row.record.id) != row.record.id:
                    row.v.add(
                        f"lines[{i}].project_id",
                        "DUPLICATE_IN_BATCH",
                        "another contract in this batch bills the same project",
                    )

    async def _check_manager_cycles(self, uow: MasterDataUnitOfWork, rows: Sequence[_Row]) -> None:
        """A new or changed manager must not make anyone their own (indirect) manager."""
        known: dict[str, str | None] = {row.record.id: row.record.manager_id or None for row in rows}
        walkers = {
            row.record.id: (row, row.record.manager_id)
            for row in rows
            if row.record.manager_id
            and (row.previous is None or row.previous.body.get("manager_id") != row.record.manager_id)
        }
        if walkers:
            await uow.records.lock_management_chains()
        for _ in range(_MAX_CHAIN):
            if not walkers:
                return
            missing = {cur for _, cur in walkers.values() if cur not in known}
            if missing:
                found = await uow.records.managers(missing)
                known.update({m: found.get(m) for m in missing})
            following: dict[str, tuple[_Row, str]] = {}
            for start, (row, cur) in walkers.items():
                if cur == start:
                    row.v.add(
                        "manager_id",
                        "MANAGER_CYCLE",
                        "the manager chain would lead back to this consultant",
                    )
                    continue
                up = known.get(cur)
                if up is not None:
                    following[start] = (row, up)
            walkers = following

    async def _persist(
        self, uow: MasterDataUnitOfWork, kind: Kind, rows: Sequence[_Row], writer: Writer
    ) -> None:
        """Insert new rows, update changed ones, leave unchanged ones; history and events for each."""
        now = self._clock()
        now_json = _json_time(now)
        inserts: list[tuple[_Row, Write]] = []
        updates: list[tuple[_Row, Write]] = []
        for row in _insert_order(kind, [r for r in rows if r.ok]):
            record = row.record
            prev = row.previous
            if prev is None:
                if isinstance(record, md.Milestone):
                    record.status = md.MILESTONE_STATUS_PENDING
                body = body_of(record)
                set_server_fields(
                    record, id=record.id, version=1, create_time=now, update_time=now, deactivate_time=None
                )
                inserts.append((row, Write(record, body, 1, now, now, None)))
                continue
            if kind.server_managed:
                json_format.ParseDict(
                    {f: prev.body[f] for f in kind.server_managed if f in prev.body}, record
                )
            body = body_of(record)
            if body == prev.body:
                set_server_fields(
                    record,
                    id=prev.id,
                    version=prev.version,
                    create_time=prev.create_time,
                    update_time=prev.update_time,
                    deactivate_time=prev.deactivate_time,
                )
                row.result = UpsertResult(Outcome.UNCHANGED, record)
                continue
            version = prev.version + 1
            set_server_fields(
                record,
                id=prev.id,
                version=version,
                create_time=prev.create_time,
                update_time=now,
                deactivate_time=prev.deactivate_time,
            )
            updates.append((row, Write(record, body, version, prev.create_time, now, prev.deactivate_time)))
        inserted = await uow.records.insert(kind, [w for _, w in inserts])
        await uow.records.update(kind, [w for _, w in updates])
        history: list[ChangeRow] = []
        event_ids = iter(_new_ids(len(inserts) + len(updates)))
        for rows_written, outcome, change in (
            (inserts, Outcome.CREATED, ChangeKind.CREATED),
            (updates, Outcome.UPDATED, ChangeKind.UPDATED),
        ):
            for row, w in rows_written:
                record_id = w.record.id  # type: ignore[attr-defined]
                if outcome == Outcome.CREATED and record_id not in inserted:
                    row.v.add(
                        "external_ref",
                        "CONCURRENT_CHANGE",
                        "another request created the same record at the same time; send the row again",
                    )
                    continue
                row.result = UpsertResult(outcome, w.record)
                extra = {"id": record_id, "etag": str(w.version), "update_time": now_json}
                extra["create_time"] = now_json if outcome == Outcome.CREATED else _json_time(w.create_time)
                if w.deactivate_time is not None:
                    extra["deactivate_time"] = _json_time(w.deactivate_time)
                state = _with_fields(w.body_json, extra)
                history.append(
                    ChangeRow(
                        kind.name,
                        record_id,
                        w.version,
                        change,
                        writer.actor_for(row.source),
                        row.source,
                        now,
                        state,
                        writer.reason,
                        writer.request_id,
                    )
                )
                message = kind.event(**{kind.name: w.record})
                uow.events.add(Event(kind.event_type, record_id, message, next(event_ids), occurred_at=now))
        await uow.records.add_changes(history)
        written = [(row, w) for row, w in (*inserts, *updates) if row.result is not None]
        legal_entities = await _legal_entities(
            uow,
            kind,
            [(w.record.id, w.body) for _, w in written],  # type: ignore[attr-defined]
        )
        for row, w in written:
            record_id = w.record.id  # type: ignore[attr-defined]
            before = row.previous.body if row.previous is not None else None
            audit.note(kind.name, record_id, legal_entities.get(record_id, ""), before, w.body)

    # -- history ----------------------------------------------------------------------------

    async def changes(
        self, kind: Kind, record_id: str, page_size: int, page_token: str
    ) -> tuple[list[HistoryEntry], str]:
        """A record's history, oldest first, one page at a time."""
        size = _page_size(page_size)
        after = 0
        if page_token:
            try:
                after = int(base64.urlsafe_b64decode(page_token.encode()).decode().removeprefix("v"))
            except ValueError:
                raise InvalidArgument(
                    "page_token is not valid",
                    [Violation("page_token", "INVALID_PAGE_TOKEN", "page_token is not one we issued")],
                ) from None
        scope = _scope()
        async with self._uow() as uow:
            if not await _visible(uow, kind, record_id, scope):
                raise access.not_found(kind, record_id)
            rows = await uow.records.changes_of(kind.name, record_id, after, size + 1)
            if not rows and not after and await uow.records.get(kind, record_id) is None:
                raise access.not_found(kind, record_id)
        entries = [
            HistoryEntry(
                r.version,
                r.kind,
                r.actor,
                r.source,
                r.reason,
                r.request_id,
                r.change_time,
                _state_record(kind, r.before) if r.before is not None else None,
                _state_record(kind, r.state),
                changed_fields(r.before, r.state),
            )
            for r in rows[:size]
        ]
        token = ""
        if len(rows) > size:
            token = base64.urlsafe_b64encode(f"v{entries[-1].version}".encode()).decode()
        return entries, token

    # -- rates, FX and tax ----------------------------------------------------------------

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
        scope = _scope()
        async with self._uow() as uow:
            project = await uow.records.get(KINDS["project"], project_id)
            if project is not None and not await _visible(uow, KINDS["project"], project_id, scope):
                project = None  # another legal entity's project reads as a missing one
            if project is None:
                raise NotFound(f"no project with id {project_id!r}", reason="PROJECT_NOT_FOUND")
            found = await uow.records.contract_line_for_project(project_id)
            if found is None:
                raise NotFound("the project is not on any contract line", reason="NO_CONTRACT_LINE")
            contract, line = found
            if contract.HasField("deactivate_time"):
                raise NotFound(
                    f"the project's contract {contract.code} is deactivated", reason="CONTRACT_DEACTIVATED"
                )
            if not line.rate_card_id:
                model = md.BillingModel.Name(line.billing_model)
                raise NotFound(
                    f"the project's contract line is {model} and has no rate card",
                    reason="NO_RATE_CARD",
                )
            card = await uow.records.get(KINDS["rate_card"], line.rate_card_id)
        assert isinstance(card, md.RateCard)
        if card.HasField("deactivate_time"):
            raise NotFound(f"rate card {card.code} is deactivated", reason="RATE_CARD_DEACTIVATED")
        entry = resolve_rate(
            (RateEntry.of(e) for e in card.rates),
            consultant_id=consultant_id,
            labor_category_id=labor_category_id,
            day=day,
        )
        if entry is None:
            raise NotFound(
                f"rate card {card.code} has no rate for labor category {labor_category_id} on {date}",
                reason="NO_RATE",
            )
        message = next(e for e in card.rates if e.id == entry.id)
        return RateResolution(entry, message, card.currency, card.id, contract, line)

    async def convert_amount(
        self, amount: str, from_currency: str, to_currency: str, date: str
    ) -> Conversion:
        """amount in from_currency, converted to to_currency at the rate in effect on date."""
        v = Violations()
        value = v.decimal("amount", amount)
        base = v.currency("from_currency", from_currency)
        quote = v.currency("to_currency", to_currency)
        day = v.date("date", date)
        v.raise_if_any("cannot convert")
        assert value is not None
        assert base is not None
        assert quote is not None
        assert day is not None
        if base == quote:
            rounded, exact = resolution.convert(value, Decimal(1), quote)
            return Conversion(rounded, exact, quote, Decimal(1), None)
        kind = KINDS["fx_rate"]
        async with self._uow() as uow:
            stored = await uow.records.effective_rows(
                kind, {"base": base, "quote": quote}, "effective_date", day
            )
            if stored is None:
                hint = ""
                if await uow.records.has_any(kind, {"base": base, "quote": quote}):
                    hint = f"; the first {base}→{quote} rate takes effect after {day}"
                elif await uow.records.has_any(kind, {"base": quote, "quote": base}):
                    hint = f"; only {quote}→{base} rates exist, and rates are not inverted"
                raise NotFound(f"no {base}→{quote} FX rate in effect on {day}{hint}", reason="NO_FX_RATE")
        fx = stored.record(kind)
        assert isinstance(fx, md.FxRate)
        rate = parse_decimal(fx.rate)
        rounded, exact = resolution.convert(value, rate, quote)
        return Conversion(rounded, exact, quote, rate, fx)

    async def resolve_tax_rate(self, tax_code: str, date: str, amount: str, currency: str) -> TaxResolution:
        """The rate of tax_code in effect on date, and the tax on amount when one is given."""
        v = Violations()
        v.required("tax_code", tax_code)
        day = v.date("date", date)
        value = v.decimal("amount", amount, required=False)
        if amount:
            v.currency("currency", currency)
        v.raise_if_any("cannot resolve a tax rate")
        assert day is not None
        kind = KINDS["tax_rate"]
        async with self._uow() as uow:
            stored = await uow.records.effective_rows(kind, {"tax_code": tax_code}, "effective_from", day)
            if stored is None:
                known = await uow.records.has_any(kind, {"tax_code": tax_code})
                detail = f"its first rate takes effect after {day}" if known else "no rate has that tax code"
                raise NotFound(
                    f"tax code {tax_code} has no rate in effect on {day}: {detail}", reason="NO_TAX_RATE"
                )
        tax = stored.record(kind)
        assert isinstance(tax, md.TaxRate)
        rate = parse_decimal(tax.rate)
        tax_amount = resolution.tax_on(value, rate, currency) if value is not None else None
        return TaxResolution(rate, tax, tax_amount)


def _scope() -> frozenset[str] | None:
    """The legal entities the caller sees (legal-entity-scope); None for every one."""
    return access.scope_of(current_principal())


def _path(kind_name: str) -> tuple[str, ...]:
    if kind_name == "contract_line":
        return CONTRACT_LINE_LEGAL_ENTITY_PATH
    return KINDS[kind_name].legal_entity_path


async def _hidden_targets(
    uow: MasterDataUnitOfWork, kind_name: str, ids: Sequence[str], scope: frozenset[str] | None
) -> set[str]:
    """Which of these records (of kind_name, or contract lines) belong outside scope."""
    path = _path(kind_name)
    if scope is None or not path or not ids:
        return set()
    owners = await uow.records.legal_entities_of(kind_name, path, ids)
    return {i for i, le in owners.items() if le not in scope}


async def _hidden(
    uow: MasterDataUnitOfWork, kind: Kind, ids: Sequence[str], scope: frozenset[str] | None
) -> set[str]:
    return await _hidden_targets(uow, kind.name, ids, scope)


async def _visible(
    uow: MasterDataUnitOfWork, kind: Kind, record_id: str, scope: frozenset[str] | None
) -> bool:
    """Whether the caller sees this record (an unknown id too: it is reported missing anyway)."""
    return record_id not in await _hidden(uow, kind, [record_id], scope)


async def _legal_entities(
    uow: MasterDataUnitOfWork, kind: Kind, records: Sequence[tuple[str, Mapping[str, Any]]]
) -> dict[str, str]:
    """The legal entity of each written record (id, body), for the audit trail ("" firm-wide)."""
    path = kind.legal_entity_path
    if path == ("id",):
        return {i: i for i, _ in records}
    if len(path) == 1:
        return {i: str(body.get(path[0], "")) for i, body in records}
    return await uow.records.legal_entities_of(kind.name, path, [i for i, _ in records])


def _page_size(page_size: int) -> int:
    if page_size < 0:
        raise InvalidArgument(
            "page_size must not be negative",
            [Violation("page_size", "OUT_OF_RANGE", "page_size must not be negative")],
        )
    return min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def _state(body: dict[str, Any], stored: Stored) -> dict[str, Any]:
    """The whole record at a version, as the history keeps it."""
    state = {
        **body,
        "id": stored.id,
        "etag": str(stored.version),
        "create_time": _json_time(stored.create_time),
        "update_time": _json_time(stored.update_time),
    }
    if stored.deactivate_time is not None:
        state["deactivate_time"] = _json_time(stored.deactivate_time)
    return state


def _state_record(kind: Kind, state: dict[str, Any]) -> Message:
    return json_format.ParseDict(state, kind.message(), ignore_unknown_fields=True)


def _reject_dependents(kind: Kind, rows: Sequence[_Row]) -> None:
    """A row that refers to a new row of the same batch fails with it (the target is not written)."""
    if not any(f.target == kind.name for f in kind.refs):
        return
    while True:
        failed = {row.record.id for row in rows if row.previous is None and row.v}
        changed = False
        for row in rows:
            if row.v:
                continue
            for ref in row.refs(kind):
                if ref.field.target == kind.name and ref.id in failed:
                    row.v.add(
                        ref.path, "REFERENCE_REJECTED", f"the {kind.title} it names is rejected in this batch"
                    )
                    changed = True
        if not changed:
            return


def _insert_order(kind: Kind, rows: list[_Row]) -> list[_Row]:
    """New rows that reference other new rows of the batch come after them (managers first)."""
    self_refs = [f for f in kind.refs if f.target == kind.name]
    if not self_refs:
        return rows
    new = {row.record.id: row for row in rows if row.previous is None}
    ordered: list[_Row] = []
    placed: set[str] = set()

    def place(row: _Row, depth: int = 0) -> None:
        if row.record.id in placed or depth > _MAX_CHAIN:
            return
        placed.add(row.record.id)
        for f in self_refs:
            target = new.get(getattr(row.record, f.id_field))
            if target is not None:
                place(target, depth + 1)
        ordered.append(row)

    for row in rows:
        place(row)
    return ordered
