"""Idempotency keys: the same key and request give the same result, once.

The gateway forwards the HTTP `Idempotency-Key` header as gRPC metadata. For a request that
carries one, this interceptor opens the transaction itself, records the key, runs the handler
with that transaction as the ambient one (its unit of work joins as a savepoint), stores the
serialized response and commits — all at once. So a crash at any point either leaves no trace
(the retry runs afresh) or leaves the effect together with its response (the retry gets that
response back). A concurrent duplicate blocks on the key's row until the first commits.

Reusing a key for a different request is refused with reason IDEMPOTENCY_KEY_REUSED
(HTTP 422), as the IETF Idempotency-Key draft recommends.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import Any, cast

import grpc
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from accrue.db.unit_of_work import ambient_connection
from accrue.runtime.errors import FailedPrecondition, InvalidArgument
from accrue.runtime.grpc_types import Context, Handler

Behavior = Callable[[Any, Context], Awaitable[Any]]

METADATA_KEY = "idempotency-key"
MAX_KEY_LENGTH = 255


def idempotency_table(metadata: sa.MetaData) -> sa.Table:
    """The per-schema table of keys and stored responses."""
    return sa.Table(
        "idempotency_keys",
        metadata,
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("method", sa.Text, nullable=False),
        sa.Column("request_hash", sa.LargeBinary, nullable=False),
        sa.Column("response", sa.LargeBinary, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )


def _key_from(context: Context) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == METADATA_KEY:
            return value.decode() if isinstance(value, bytes) else value
    return None


class IdempotencyInterceptor(grpc.aio.ServerInterceptor):
    """Makes any unary RPC that carries an idempotency key exactly-once."""

    def __init__(self, engine: AsyncEngine, table: sa.Table) -> None:
        self._engine = engine
        self._table = table

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = handler_call_details.method
        behavior = cast(Behavior, handler.unary_unary)
        serialize = handler.response_serializer

        async def wrapped(request: Any, context: Context) -> Any:
            key = _key_from(context)
            if key is None:
                return await behavior(request, context)
            if not key or len(key) > MAX_KEY_LENGTH:
                raise InvalidArgument(f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} characters")
            return await self._once(key, method, request, context, behavior, serialize)

        def serialize_or_pass(response: Any) -> bytes:
            # A replayed response is already bytes; a fresh one is a message.
            if isinstance(response, bytes):
                return response
            return serialize(response) if serialize else bytes(response.SerializeToString())

        return grpc.unary_unary_rpc_method_handler(
            wrapped, request_deserializer=handler.request_deserializer, response_serializer=serialize_or_pass
        )

    async def _once(
        self,
        key: str,
        method: str,
        request: Any,
        context: Context,
        behavior: Behavior,
        serialize: Callable[[Any], bytes] | None,
    ) -> Any:
        table = self._table
        async with self._engine.connect() as conn, conn.begin():
            stored = await claim_key(conn, table, key, method, request_hash(method, request))
            if stored is not None:
                return stored
            token = ambient_connection.set(conn)
            try:
                response = await behavior(request, context)
            finally:
                ambient_connection.reset(token)
            payload = serialize(response) if serialize else response.SerializeToString()
            await store_response(conn, table, key, payload)
        return response


def request_hash(method: str, request: Any) -> bytes:
    """What a key is bound to: the method and the request's deterministic bytes."""
    return hashlib.sha256(method.encode() + b"\0" + request.SerializeToString(deterministic=True)).digest()


async def claim_key(
    conn: AsyncConnection, table: sa.Table, key: str, method: str, request_hash: bytes
) -> bytes | None:
    """Claim key in conn's transaction: None when it is new (run the request), else the stored
    reply of the same request. A concurrent duplicate blocks here until the first commits."""
    claimed = await conn.scalar(
        insert(table)
        .values(key=key, method=method, request_hash=request_hash)
        .on_conflict_do_nothing(index_elements=["key"])
        .returning(table.c.key)
    )
    if claimed is not None:
        return None
    stored = (
        await conn.execute(
            sa.select(table.c.method, table.c.request_hash, table.c.response).where(table.c.key == key)
        )
    ).one()
    if stored.method != method or stored.request_hash != request_hash:
        raise FailedPrecondition(
            "this Idempotency-Key was already used for a different request",
            reason="IDEMPOTENCY_KEY_REUSED",
        )
    return bytes(stored.response)


async def store_response(conn: AsyncConnection, table: sa.Table, key: str, payload: bytes) -> None:
    """Keep the reply with its key, in the same transaction as the effect."""
    await conn.execute(sa.update(table).where(table.c.key == key).values(response=payload))
