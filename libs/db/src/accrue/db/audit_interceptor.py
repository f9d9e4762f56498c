"""Every state-changing call, recorded in the same transaction as the change it made.

One interceptor per service (after the authentication interceptor, which binds the principal)
does what the idempotency interceptor did and more, so a call has exactly ONE transaction:

- A read (a method marked `option idempotency_level = NO_SIDE_EFFECTS` in its proto) runs as it
  is; an Idempotency-Key on it still works as before.
- Any other method runs in a transaction the interceptor opens and makes ambient (the use case's
  unit of work joins it as a savepoint). What the use case noted (`accrue.runtime.audit.note`)
  becomes one audit record per change; when it noted nothing, one record for the call names the
  resource from the request's (or the reply's) `id` and `legal_entity_id`. The records, the
  change, its events and, with an Idempotency-Key, the stored reply commit together.
- A call that fails (a DomainError, an abort, a bug) leaves no change: its transaction rolls
  back, and one record with outcome FAILED and the error is appended in a transaction of its own.
- A call the authentication interceptor refuses (401/403) is recorded by `AuditTrail.refused`,
  its `on_refused` hook: who (when known), what, why; never the token.

A replayed Idempotency-Key returns the stored reply and records nothing: it changes nothing.
Per call the trail costs one plain INSERT (`AuditLog.append`): no lock, no chain read, no hash.
The service's `AuditSealer` (`AuditTrail.sealer`, a background task) links committed records
into their legal entity's hash chain a moment later, so no request waits on another's chain.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

import grpc
import sqlalchemy as sa
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.message import Message
from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from accrue.audit.v1 import audit_service_pb2_grpc
from accrue.db.audit import AuditLog, AuditRecord, AuditSealer, Outcome, diff
from accrue.db.audit_api import SERVICE_NAME, AuditTrailServicer, LocalAuditSource
from accrue.db.idempotency import MAX_KEY_LENGTH, claim_key, request_hash, store_response
from accrue.db.unit_of_work import ambient_connection
from accrue.runtime.audit import Change, collecting
from accrue.runtime.clock import Clock
from accrue.runtime.errors import DomainError, InvalidArgument, Unauthenticated
from accrue.runtime.grpc_types import Context, Handler
from accrue.runtime.identity import Principal, current_principal
from accrue.runtime.ratelimit import TokenBucket
from accrue.telemetry import get_logger

log = get_logger(__name__)

__all__ = ["FAILED", "SERVICE_NAME", "AuditInterceptor", "AuditTrail", "is_read_only", "resource_type_of"]

FAILED = "FAILED"
IDEMPOTENCY_KEY = "idempotency-key"
REQUEST_ID = "x-request-id"
ANONYMOUS = "anonymous"

Behavior = Callable[[Any, Context], Awaitable[Any]]
Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]]


@functools.cache
def is_read_only(method: str) -> bool:
    """True for a method marked NO_SIDE_EFFECTS in its proto ("/pkg.Service/Method" or without
    the slash). Unknown methods count as writes: recording too much is the safe mistake."""
    service, _, name = method.lstrip("/").partition("/")
    try:
        found = descriptor_pool.Default().FindMethodByName(f"{service}.{name}")
    except KeyError:
        return False
    level = found.GetOptions().idempotency_level
    return bool(level == descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS)


_VERBS_OF_TWO = ("Batch",)


@functools.cache
def resource_type_of(method: str) -> str:
    """The resource a method acts on, from its name: ApproveTimeEntry -> "time_entry",
    BatchUpsertConsultants -> "consultants", RebuildMasterDataProjection -> "master_data_projection"."""
    name = method.rpartition("/")[2]
    words = re.findall(r"[A-Z][a-z0-9]*", name)
    drop = 2 if words and words[0] in _VERBS_OF_TWO else 1
    rest = words[drop:] or words
    return "_".join(w.lower() for w in rest) or name


def _metadata(context: Context, key: str) -> str:
    for name, value in context.invocation_metadata() or ():
        if name == key:
            return value.decode() if isinstance(value, bytes) else str(value)
    return ""


def _has_key(context: Context) -> bool:
    return any(name == IDEMPOTENCY_KEY for name, _ in context.invocation_metadata() or ())


def _string_field(message: Message, name: str) -> str:
    field = message.DESCRIPTOR.fields_by_name.get(name)
    if field is None or field.type != field.TYPE_STRING or field.is_repeated:
        return ""
    return str(getattr(message, name))


def _find(messages: Sequence[Message | None], name: str) -> str:
    """A string field `name` of the first message that has one set, at the top or one level down."""
    for message in messages:
        if message is None or not isinstance(message, Message):
            continue
        value = _string_field(message, name)
        if value:
            return value
        for field in message.DESCRIPTOR.fields:
            nested = field.type == field.TYPE_MESSAGE and not field.is_repeated
            if nested and message.HasField(field.name):
                value = _string_field(getattr(message, field.name), name)
                if value:
                    return value
    return ""


def _principal() -> Principal | None:
    try:
        return current_principal()
    except Unauthenticated:
        return None  # only outside a server (the auth interceptor binds one for every call)


def _clean(value: str, limit: int = 200) -> str:
    # Request-supplied strings end up in the record: PostgreSQL text holds no NUL, and a
    # caller must not be able to bloat the trail (or open a chain per junk value) at will.
    return value.replace("\x00", "")[:limit]


def _who(principal: Principal | None) -> dict[str, Any]:
    if principal is None:
        return {"principal_subject": ANONYMOUS}
    return {
        "principal_subject": principal.subject,
        "principal_roles": tuple(principal.roles),
        "principal_client": principal.client_id or "",
    }


def _error(exc: BaseException) -> dict[str, Any]:
    # Stored in `changes` under "error": what was refused and why, in the words the caller got.
    if isinstance(exc, DomainError):
        detail: dict[str, Any] = {"code": exc.grpc_code, "reason": exc.reason, "message": exc.message}
        if exc.violations:
            detail["fields"] = sorted({v.field for v in exc.violations})
        return detail
    if isinstance(exc, grpc.aio.AbortError):
        return {"code": "ABORTED_BY_HANDLER", "reason": "", "message": str(exc)}
    return {"code": "INTERNAL", "reason": "", "message": type(exc).__name__}


# Refused calls recorded one by one per process; beyond this they are counted (see `refused`).
REFUSALS_PER_SECOND = 20.0
REFUSAL_BURST = 50
REFUSALS_NOT_RECORDED = Counter(
    "accrue_audit_refusals_not_recorded_total",
    "Refused calls over the recording rate: counted here and in the next refusal's record.",
    ["service"],
)


class AuditTrail:
    """One service's audit trail: records calls (`interceptor`) and refusals (`refused`)."""

    def __init__(
        self,
        service: str,
        engine: AsyncEngine,
        audit_table: sa.Table,
        idempotency_table: sa.Table,
        clock: Clock,
    ) -> None:
        self.service = service
        self.engine = engine
        self.table = audit_table
        self.idempotency_table = idempotency_table
        self.clock = clock
        self._refusals = TokenBucket(REFUSALS_PER_SECOND, REFUSAL_BURST, clock)
        self._unrecorded = 0

    def interceptor(self) -> AuditInterceptor:
        """For Service(interceptors=[...]): instead of the IdempotencyInterceptor, which it includes."""
        return AuditInterceptor(self)

    def local_source(self) -> LocalAuditSource:
        """This trail as an AuditAggregator source, read in-process (observability's own)."""
        return LocalAuditSource(
            AuditTrailServicer(self.engine, self.table, self.service, self.clock), self.service
        )

    def sealer(self) -> AuditSealer:
        """Links this trail's committed records into their chains: add `.run` to Service.background."""
        return AuditSealer(self.engine, self.table)

    def register(self, server: grpc.aio.Server) -> None:
        """Serve this trail's read API (accrue.audit.v1.AuditTrailService, `SERVICE_NAME`)."""
        audit_service_pb2_grpc.add_AuditTrailServiceServicer_to_server(
            AuditTrailServicer(self.engine, self.table, self.service, self.clock), server
        )

    def record(
        self,
        operation: str,
        outcome: str,
        principal: Principal | None,
        context: Context | None,
        *,
        resource_type: str,
        resource_id: str = "",
        legal_entity_id: str = "",
        changes: dict[str, Any] | None = None,
    ) -> AuditRecord:
        return AuditRecord(
            operation=operation,
            resource_type=resource_type,
            resource_id=_clean(resource_id),
            legal_entity_id=_clean(legal_entity_id, 100),
            outcome=outcome,
            occurred_at=self.clock(),
            request_id=_clean(_metadata(context, REQUEST_ID)) if context is not None else "",
            idempotency_key=_clean(_metadata(context, IDEMPOTENCY_KEY), MAX_KEY_LENGTH) if context else "",
            changes=changes or {},
            **_who(principal),
        )

    async def append_alone(self, records: Sequence[AuditRecord]) -> None:
        """Append in a transaction of its own (failed and refused calls)."""
        async with self.engine.connect() as conn, conn.begin():
            await _append(AuditLog(conn, self.table), records)

    async def refused(self, method: str, principal: Principal | None, reason: str, context: Context) -> None:
        """The AuthInterceptor's on_refused hook: record a 401 or 403, never the token.

        Rate-limited: a caller who fails on purpose must not make every refusal a write. Beyond
        the rate they are counted, and the next record says how many went unrecorded.
        """
        if not self._refusals.take():
            self._unrecorded += 1
            REFUSALS_NOT_RECORDED.labels(self.service).inc()
            return
        unrecorded, self._unrecorded = self._unrecorded, 0
        outcome = Outcome.UNAUTHENTICATED if principal is None else Outcome.DENIED
        try:
            record = self.record(
                method.lstrip("/"),
                outcome,
                principal,
                context,
                resource_type=resource_type_of(method),
                changes={"error": {"reason": reason}, "unrecorded_before": unrecorded},
            )
            await self.append_alone([record])
        except Exception:
            # The refusal stands either way; a trail that cannot be written is logged, loudly.
            log.exception("audit_refusal_not_recorded", method=method, reason=reason)


async def _append(audit: AuditLog, records: Sequence[AuditRecord]) -> None:
    if len(records) == 1:
        await audit.append(records[0])  # one plain INSERT: the sealer links it after commit
    else:
        await audit.append_many(records)


class AuditInterceptor(grpc.aio.ServerInterceptor):
    """Runs each state-changing unary RPC in one transaction with its audit records."""

    def __init__(self, trail: AuditTrail) -> None:
        self._trail = trail

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = handler_call_details.method
        behavior = cast(Behavior, handler.unary_unary)
        serialize = handler.response_serializer
        operation = method.lstrip("/")
        if operation.partition("/")[0].startswith("grpc."):
            return handler  # health and reflection: neither changes anything
        read_only = is_read_only(method)

        async def wrapped(request: Any, context: Context) -> Any:
            if read_only and not _has_key(context):
                return await behavior(request, context)
            key = _metadata(context, IDEMPOTENCY_KEY) if _has_key(context) else None
            if key is not None and (not key or len(key) > MAX_KEY_LENGTH):
                raise InvalidArgument(f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters")
            return await self._run(operation, read_only, key, request, context, behavior, serialize)

        def serialize_or_pass(response: Any) -> bytes:
            # A replayed response is already bytes; a fresh one is a message.
            if isinstance(response, bytes):
                return response
            return serialize(response) if serialize else bytes(response.SerializeToString())

        return grpc.unary_unary_rpc_method_handler(
            wrapped, request_deserializer=handler.request_deserializer, response_serializer=serialize_or_pass
        )

    async def _run(
        self,
        operation: str,
        read_only: bool,
        key: str | None,
        request: Any,
        context: Context,
        behavior: Behavior,
        serialize: Callable[[Any], bytes] | None,
    ) -> Any:
        trail = self._trail
        principal = _principal()
        try:
            async with trail.engine.connect() as conn, conn.begin():
                if key is not None:
                    stored = await claim_key(
                        conn, trail.idempotency_table, key, operation, request_hash(operation, request)
                    )
                    if stored is not None:
                        return stored
                response, changes = await self._handle(conn, request, context, behavior)
                if not read_only:
                    records = self._records(operation, principal, context, request, response, changes)
                    await _append(AuditLog(conn, trail.table), records)
                if key is not None:
                    payload = serialize(response) if serialize else response.SerializeToString()
                    await store_response(conn, trail.idempotency_table, key, payload)
            return response
        except Exception as exc:
            if not read_only:
                await self._failed(operation, principal, context, request, exc)
            raise

    @staticmethod
    async def _handle(
        conn: AsyncConnection, request: Any, context: Context, behavior: Behavior
    ) -> tuple[Any, list[Change]]:
        token = ambient_connection.set(conn)
        try:
            with collecting() as changes:
                response = await behavior(request, context)
        finally:
            ambient_connection.reset(token)
        return response, changes

    def _records(
        self,
        operation: str,
        principal: Principal | None,
        context: Context,
        request: Any,
        response: Any,
        changes: list[Change],
    ) -> list[AuditRecord]:
        trail = self._trail
        if changes:
            return [
                trail.record(
                    operation,
                    Outcome.OK,
                    principal,
                    context,
                    resource_type=c.resource_type,
                    resource_id=c.resource_id,
                    legal_entity_id=c.legal_entity_id,
                    changes=diff(c.before, c.after),
                )
                for c in changes
            ]
        return [
            trail.record(
                operation,
                Outcome.OK,
                principal,
                context,
                resource_type=resource_type_of(operation),
                resource_id=_find([request, response], "id"),
                legal_entity_id=_find([request, response], "legal_entity_id"),
            )
        ]

    async def _failed(
        self, operation: str, principal: Principal | None, context: Context, request: Any, exc: Exception
    ) -> None:
        try:
            record = self._trail.record(
                operation,
                FAILED,
                principal,
                context,
                resource_type=resource_type_of(operation),
                resource_id=_find([request], "id"),
                legal_entity_id=_find([request], "legal_entity_id"),
                changes={"error": _error(exc)},
            )
            await self._trail.append_alone([record])
        except Exception:
            # The caller gets the original error; the lost record is logged, loudly.
            log.exception("audit_failure_not_recorded", operation=operation)
