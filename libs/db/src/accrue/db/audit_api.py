"""accrue.audit.v1.AuditTrailService for one service's trail: every service registers it.

Scope: a caller limited to some legal entities reads and verifies only their chains (the
firm-wide chain, "", holds refusals and firm-wide master data, and is for callers of every
legal entity). A service (observability, aggregating for the public API) sees every chain and
narrows the request itself to its own caller's legal entities.

Paging: newest first by seq; the page token is the last seq returned (opaque to callers).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
from collections.abc import Awaitable, Iterable, Mapping
from typing import Any, Protocol

import grpc
import sqlalchemy as sa
from google.protobuf import json_format, struct_pb2, timestamp_pb2
from sqlalchemy.ext.asyncio import AsyncEngine

from accrue.audit.v1 import audit_service_pb2 as pb
from accrue.audit.v1 import audit_service_pb2_grpc as pb_grpc
from accrue.db.audit import chain_table_of, verify
from accrue.runtime import audit
from accrue.runtime.clock import Clock
from accrue.runtime.errors import InvalidArgument, Unavailable, Violation
from accrue.runtime.grpc_types import Context
from accrue.runtime.identity import bound_principal, current_principal, service_principal

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "SERVICE_NAME",
    "AuditAggregator",
    "AuditSource",
    "AuditTrailServicer",
    "LocalAuditSource",
    "Query",
    "narrowed",
]

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
SERVICE_NAME = "accrue.audit.v1.AuditTrailService"


def _visible(requested: Iterable[str]) -> list[str] | None:
    """The legal entities to read: None for every one; the caller's scope narrows any request."""
    wanted = sorted(set(requested))
    scope = current_principal().legal_entity_scope
    if scope is None:
        return wanted or None
    if not wanted:
        return sorted(scope)
    return [le for le in wanted if le in scope]


def encode_token(seq: int) -> str:
    return base64.urlsafe_b64encode(str(seq).encode()).decode()


def decode_token(token: str) -> int:
    try:
        return int(base64.urlsafe_b64decode(token.encode()).decode())
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgument(
            "page_token is not one this service issued",
            [Violation("page_token", "INVALID", "pass back a next_page_token unchanged")],
        ) from exc


def page_size_of(requested: int) -> int:
    if requested < 0:
        raise InvalidArgument(
            "page_size may not be negative", [Violation("page_size", "NEGATIVE", "give 0 to 1000")]
        )
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


class AuditTrailServicer(pb_grpc.AuditTrailServiceServicer):
    """Lists and verifies the audit table of the service that registers it."""

    def __init__(self, engine: AsyncEngine, table: sa.Table, service: str, clock: Clock) -> None:
        self._engine = engine
        self._table = table
        self._chain = chain_table_of(table)
        self._service = service
        self._clock = clock  # "now" for verify: how long an unsealed event has waited

    async def ListAuditEvents(
        self, request: pb.ListAuditEventsRequest, context: Context | None
    ) -> pb.ListAuditEventsResponse:
        t, c = self._table, self._chain
        size = page_size_of(request.page_size)
        entities = _visible(request.legal_entity_ids)
        # Sealed events carry their link's hashes; an event not sealed yet has none (empty).
        query = (
            sa.select(t, c.c.prev_hash, c.c.hash)
            .select_from(t.outerjoin(c, c.c.event_seq == t.c.seq))
            .order_by(t.c.seq.desc())
            .limit(size + 1)
        )
        if entities is not None:
            query = query.where(t.c.legal_entity_id.in_(entities))
        for column, value in (
            (t.c.resource_type, request.resource_type),
            (t.c.resource_id, request.resource_id),
            (t.c.principal_subject, request.actor),
            (t.c.outcome, request.outcome),
        ):
            if value:
                query = query.where(column == value)
        if request.HasField("start_time"):
            query = query.where(t.c.occurred_at >= request.start_time.ToDatetime(dt.UTC))
        if request.HasField("end_time"):
            query = query.where(t.c.occurred_at < request.end_time.ToDatetime(dt.UTC))
        if request.page_token:
            query = query.where(t.c.seq < decode_token(request.page_token))
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        reply = pb.ListAuditEventsResponse()
        for row in rows[:size]:
            event = reply.events.add(
                service=self._service,
                seq=row.seq,
                legal_entity_id=row.legal_entity_id,
                principal_subject=row.principal_subject,
                principal_roles=list(row.principal_roles),
                principal_client=row.principal_client,
                operation=row.operation,
                resource_type=row.resource_type,
                resource_id=row.resource_id,
                request_id=row.request_id,
                idempotency_key=row.idempotency_key,
                outcome=row.outcome,
                hash=bytes(row.hash).hex() if row.hash is not None else "",
                prev_hash=bytes(row.prev_hash).hex() if row.prev_hash is not None else "",
            )
            event.occur_time.FromDatetime(row.occurred_at)
            changes = struct_pb2.Struct()
            json_format.ParseDict(row.changes or {}, changes)
            event.changes.CopyFrom(changes)
        if len(rows) > size:
            reply.next_page_token = encode_token(rows[size - 1].seq)
        return reply

    async def RecordRefusal(
        self, request: pb.RecordRefusalRequest, context: Context | None
    ) -> pb.RecordRefusalResponse:
        # The audit interceptor writes the record: the caller (the gateway, as itself) and this
        # note of what it refused. The firm-wide chain: a refused caller names no legal entity.
        audit.note(
            "refusal",
            request.request_id,
            "",
            None,
            {
                "http_method": request.http_method,
                "path": request.path,
                "reason": request.reason,
                "operation": request.operation,
                "client_address": request.client_address,
                "unreported_before": request.unreported_before,
            },
        )
        return pb.RecordRefusalResponse()

    async def VerifyAuditTrail(
        self, request: pb.VerifyAuditTrailRequest, context: Context | None
    ) -> pb.VerifyAuditTrailResponse:
        entities = _visible(request.legal_entity_ids)
        result = await verify(self._engine, self._table, legal_entity_ids=entities, now=self._clock())
        reply = pb.VerifyAuditTrailResponse(ok=result.ok, events=result.rows, unsealed=result.pending)
        for entity in sorted(result.heads.keys() | result.unsealed.keys()):
            head = result.heads.get(entity)
            chain = reply.chains.add(service=self._service, legal_entity_id=entity)
            if head is not None:
                chain.length, chain.head_seq, chain.head_hash = head.length, head.seq, head.hash.hex()
            waiting = result.unsealed.get(entity)
            if waiting is not None:
                chain.unsealed = waiting.count
                chain.oldest_unsealed_seq = waiting.oldest_seq
                chain.oldest_unsealed_time.FromDatetime(waiting.oldest_at)
            broken = result.broken.get(entity)
            if broken is not None:
                chain.broken.CopyFrom(
                    pb.BrokenLink(
                        seq=broken.seq,
                        field=broken.field,
                        expected=broken.expected.hex(),
                        found=broken.found.hex(),
                        description=str(broken),
                        position=broken.position,
                    )
                )
        return reply


# -- aggregation (observability serves the public API from every service's trail) ---------------


class AuditSource(Protocol):
    """One service's AuditTrailService: a gRPC stub, or `LocalAuditSource` for the caller's own."""

    def ListAuditEvents(
        self, request: pb.ListAuditEventsRequest, *, timeout: float | None = None
    ) -> Awaitable[pb.ListAuditEventsResponse]: ...

    def VerifyAuditTrail(
        self, request: pb.VerifyAuditTrailRequest, *, timeout: float | None = None
    ) -> Awaitable[pb.VerifyAuditTrailResponse]: ...


class LocalAuditSource:
    """The aggregating service's own trail, read in-process as the service itself (the same
    scope a remote service applies to it), with no network hop."""

    def __init__(self, servicer: AuditTrailServicer, service: str) -> None:
        self._servicer = servicer
        self._principal = service_principal(service)

    async def ListAuditEvents(
        self,
        request: pb.ListAuditEventsRequest,
        *,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> pb.ListAuditEventsResponse:
        with bound_principal(self._principal):
            return await self._servicer.ListAuditEvents(request, None)

    async def VerifyAuditTrail(
        self,
        request: pb.VerifyAuditTrailRequest,
        *,
        timeout: float | None = None,  # noqa: ASYNC109
    ) -> pb.VerifyAuditTrailResponse:
        with bound_principal(self._principal):
            return await self._servicer.VerifyAuditTrail(request, None)


@dataclasses.dataclass(frozen=True)
class Query:
    """The public request's filters, already narrowed to the caller's legal entities."""

    legal_entity_ids: list[str] | None  # None: every chain
    resource_type: str = ""
    resource_id: str = ""
    actor: str = ""
    outcome: str = ""
    start_time: timestamp_pb2.Timestamp | None = None
    end_time: timestamp_pb2.Timestamp | None = None


def narrowed(legal_entity_id: str) -> list[str] | None:
    """The legal entities the current caller asks for and may see (None: every chain, "" included)."""
    scope = current_principal().legal_entity_scope
    if scope is None:
        return [legal_entity_id] if legal_entity_id else None
    if legal_entity_id:
        return [legal_entity_id] if legal_entity_id in scope else []
    return sorted(scope)


def _encode_cursors(cursors: Mapping[str, int | None]) -> str:
    return base64.urlsafe_b64encode(json.dumps(cursors, sort_keys=True).encode()).decode()


def _decode_cursors(token: str, services: Iterable[str]) -> dict[str, int | None]:
    """service -> the seq to read below (None: from the newest); a service missing is done."""
    if not token:
        return dict.fromkeys(services)
    try:
        raw = json.loads(base64.urlsafe_b64decode(token.encode()))
        if not isinstance(raw, dict):
            raise ValueError(token)
        return {str(k): (None if v is None else int(v)) for k, v in raw.items() if k in set(services)}
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        raise InvalidArgument(
            "page_token is not one this service issued",
            [Violation("page_token", "INVALID", "pass back a next_page_token unchanged")],
        ) from exc


class AuditAggregator:
    """Lists and verifies the trails of several services as one (observability's public API)."""

    TIMEOUT_SECONDS = 60.0

    def __init__(self, sources: Mapping[str, AuditSource]) -> None:
        self._sources = dict(sources)

    async def _call(self, service: str, call: Awaitable[Any]) -> Any:
        try:
            return await call
        except grpc.aio.AioRpcError as exc:
            raise Unavailable(
                f"the audit trail of {service} could not be read: {exc.code().name} {exc.details()}",
                reason="AUDIT_SOURCE_UNAVAILABLE",
            ) from exc

    async def list_events(
        self, query: Query, page_size: int, page_token: str, service: str = ""
    ) -> pb.ListAuditEventsResponse:
        """One page, newest first, across the services (or only `service`)."""
        size = page_size_of(page_size)
        reply = pb.ListAuditEventsResponse()
        if service and service not in self._sources:
            known = ", ".join(sorted(self._sources))
            raise InvalidArgument(
                f"service {service!r} is not one of {known}",
                [Violation("service", "UNKNOWN_SERVICE", f"one of {known}")],
            )
        if query.legal_entity_ids == []:
            return reply
        cursors = _decode_cursors(page_token, [service] if service else self._sources)
        pages: dict[str, pb.ListAuditEventsResponse] = {}
        for service, before in sorted(cursors.items()):
            request = pb.ListAuditEventsRequest(
                resource_type=query.resource_type,
                resource_id=query.resource_id,
                actor=query.actor,
                outcome=query.outcome,
                legal_entity_ids=query.legal_entity_ids or [],
                page_size=size,
                page_token=encode_token(before) if before is not None else "",
            )
            if query.start_time is not None:
                request.start_time.CopyFrom(query.start_time)
            if query.end_time is not None:
                request.end_time.CopyFrom(query.end_time)
            source = self._sources[service]
            pages[service] = await self._call(
                service, source.ListAuditEvents(request, timeout=self.TIMEOUT_SECONDS)
            )
        # Newest first across services (each service's clock), then a fixed order for ties.
        merged = sorted(
            ((e.occur_time.ToNanoseconds(), s, e.seq, e) for s, page in pages.items() for e in page.events),
            key=lambda t: (-t[0], t[1], -t[2]),
        )[:size]
        taken: dict[str, list[pb.AuditEvent]] = {}
        for _, service, _, event in merged:
            taken.setdefault(service, []).append(event)
            reply.events.append(event)
        following: dict[str, int | None] = {}
        for service, page in pages.items():
            mine = taken.get(service, [])
            more = len(mine) < len(page.events) or bool(page.next_page_token)
            if mine:
                if more:
                    following[service] = mine[-1].seq
            elif page.events:
                following[service] = cursors[service]
        if following:
            reply.next_page_token = _encode_cursors(following)
        return reply

    async def verify_chains(self, legal_entity_ids: list[str] | None) -> pb.VerifyAuditTrailResponse:
        reply = pb.VerifyAuditTrailResponse(ok=True)
        if legal_entity_ids == []:
            return reply
        request = pb.VerifyAuditTrailRequest(legal_entity_ids=legal_entity_ids or [])
        for service in sorted(self._sources):
            source = self._sources[service]
            result = await self._call(service, source.VerifyAuditTrail(request, timeout=self.TIMEOUT_SECONDS))
            reply.ok = reply.ok and result.ok
            reply.events += result.events
            reply.unsealed += result.unsealed
            reply.chains.extend(result.chains)
        return reply
