"""Durable, idempotent event consumers with backoff and a dead-letter stream.

For each message: decode the body by its event type, then in one unit of work record the event
id in the inbox (a redelivered event finds its id there and has no second effect), apply the
handler and commit; only then ack. A failure naks with a growing delay; after `max_deliver`
attempts, or at once for a body that cannot be decoded, the message goes to the DLQ stream with
the error in its headers and is terminated.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import sqlalchemy as sa
from google.protobuf.message import DecodeError, Message
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import FetchTimeoutError
from opentelemetry.trace import SpanKind
from prometheus_client import Counter, Histogram
from sqlalchemy.dialects.postgresql import insert

from accrue.db.unit_of_work import UnitOfWork
from accrue.eventbus.envelope import Headers
from accrue.eventbus.streams import ensure_consumer
from accrue.runtime.clock import Clock, system_clock
from accrue.telemetry import extract_context, get_logger, tracer

log = get_logger(__name__)
_tracer = tracer(__name__)

PROCESSED = Counter(
    "accrue_events_processed_total",
    "Events a consumer finished with, by outcome (applied, duplicate, skipped, retried, dead_lettered).",
    ["consumer", "outcome"],
)
HANDLING = Histogram(
    "accrue_event_handling_seconds",
    "Time to apply one event, inbox and commit included.",
    ["consumer"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
LAG = Histogram(
    "accrue_event_lag_seconds",
    "From an event occurring to a consumer committing its effect.",
    ["consumer"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)

# How long one pull request waits on the server for messages.
FETCH_EXPIRES = 1.0

M = TypeVar("M", bound=Message)
U = TypeVar("U", bound=UnitOfWork)


@dataclass(frozen=True)
class Received(Generic[M]):
    """A decoded event as a handler sees it."""

    event_id: str
    event_type: str
    subject: str
    message: M
    occurred_at: dt.datetime | None
    stream_sequence: int
    headers: Mapping[str, str]


@dataclass(frozen=True)
class Handler(Generic[U, M]):
    """How to decode and apply one event type."""

    message_type: type[M]
    apply: Callable[[U, Received[M]], Awaitable[None]]


@dataclass(frozen=True)
class Subscription:
    """One durable consumer: which events it takes and what it does with each."""

    durable: str
    stream: str
    filter_subjects: tuple[str, ...]
    handlers: Mapping[str, Handler[Any, Any]]
    max_deliver: int = 6
    backoff: tuple[float, ...] = (0.5, 2.0, 5.0, 15.0, 60.0)
    ack_wait: float = 30.0
    batch: int = 64
    # Apply each fetched batch in one unit of work (one inbox insert, one commit), then ack it;
    # if that transaction fails, fall back to one message at a time (retry, DLQ as usual).
    # For high-rate consumers whose handlers are cheap next to a commit.
    apply_batches: bool = False


@dataclass
class ConsumerRunner:
    """Runs one Subscription until cancelled."""

    js: JetStreamContext
    uow_factory: Callable[[], UnitOfWork]
    inbox: sa.Table
    subscription: Subscription
    dlq_prefix: str = "dlq"
    # Lag is measured against the clock the events were stamped with.
    clock: Clock = system_clock

    async def run(self) -> None:
        """Fetch and apply messages forever; survives NATS and PostgreSQL outages."""
        sub = self.subscription
        while True:
            try:
                await ensure_consumer(
                    self.js,
                    stream=sub.stream,
                    durable=sub.durable,
                    filter_subjects=sub.filter_subjects,
                    ack_wait=sub.ack_wait,
                )
                psub = await self.js.pull_subscribe_bind(sub.durable, sub.stream)
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("consumer_bind_retry", consumer=sub.durable, error=repr(exc))
                await asyncio.sleep(1.0)
        log.info(
            "consumer_started", consumer=sub.durable, stream=sub.stream, subjects=list(sub.filter_subjects)
        )
        # Behind, ask for a whole batch: the server hands over what is waiting at once. Caught
        # up, ask for one message: a lingering pull for a whole batch would hold the first
        # message until the batch fills or the request expires (up to FETCH_EXPIRES of lag).
        size = 1
        try:
            while True:
                try:
                    messages = await psub.fetch(size, timeout=FETCH_EXPIRES)
                except (FetchTimeoutError, TimeoutError):
                    continue
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("consumer_fetch_retry", consumer=sub.durable, error=repr(exc))
                    await asyncio.sleep(1.0)
                    continue
                if sub.apply_batches and len(messages) > 1:
                    await self.process_batch(messages)
                else:
                    for msg in messages:
                        await self.process(msg)
                size = sub.batch if messages and _pending(messages[-1]) else 1
        finally:
            # A pull request still open on the server may take a message in its last
            # FETCH_EXPIRES seconds; unacknowledged, it is redelivered after ack_wait.
            try:
                await psub.unsubscribe()
            except Exception as exc:
                log.debug("consumer_unsubscribe_failed", consumer=sub.durable, error=repr(exc))

    async def process(self, msg: Msg) -> None:
        """Apply one message and settle it (ack, nak with delay, or dead-letter)."""
        sub = self.subscription
        headers = dict(msg.headers or {})
        event_type = headers.get(Headers.EVENT_TYPE, "")
        handler = sub.handlers.get(event_type)
        if handler is None:
            # Another consumer's business (the filter is broader than the handlers).
            await msg.ack()
            PROCESSED.labels(sub.durable, "skipped").inc()
            return
        event_id = headers.get(Headers.MSG_ID)
        try:
            if not event_id:
                raise DecodeError(f"no {Headers.MSG_ID} header")
            message = handler.message_type.FromString(msg.data)
        except DecodeError as exc:
            # Poison: retrying cannot fix a body that does not parse.
            await self._dead_letter(msg, f"undecodable {event_type}: {exc}")
            return
        occurred_at = _parse_time(headers.get(Headers.OCCURRED_AT))
        received = Received(
            event_id=event_id,
            event_type=event_type,
            subject=msg.subject,
            message=message,
            occurred_at=occurred_at,
            stream_sequence=msg.metadata.sequence.stream,
            headers=headers,
        )
        start = time.perf_counter()
        with _tracer.start_as_current_span(
            f"consume {event_type}",
            context=extract_context(headers),
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": "nats",
                "messaging.destination.name": msg.subject,
                "messaging.message.id": event_id,
                "messaging.consumer.group.name": sub.durable,
            },
        ):
            try:
                applied = await self._apply(handler, received)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await self._failed(msg, exc)
                return
        await msg.ack()
        HANDLING.labels(sub.durable).observe(time.perf_counter() - start)
        if occurred_at is not None:
            LAG.labels(sub.durable).observe(max(0.0, (self.clock() - occurred_at).total_seconds()))
        PROCESSED.labels(sub.durable, "applied" if applied else "duplicate").inc()

    async def process_batch(self, messages: list[Msg]) -> None:
        """Apply a batch in one unit of work and ack it; on failure, fall back to `process`."""
        sub = self.subscription
        batch: list[tuple[Msg, Handler[Any, Any], Received[Any]]] = []
        for msg in messages:
            headers = dict(msg.headers or {})
            handler = sub.handlers.get(headers.get(Headers.EVENT_TYPE, ""))
            event_id = headers.get(Headers.MSG_ID)
            try:
                if handler is None or not event_id:
                    raise DecodeError("not for a batch")
                message = handler.message_type.FromString(msg.data)
            except DecodeError:
                await self.process(msg)  # skipped or dead-lettered the usual way
                continue
            received = Received(
                event_id=event_id,
                event_type=headers[Headers.EVENT_TYPE],
                subject=msg.subject,
                message=message,
                occurred_at=_parse_time(headers.get(Headers.OCCURRED_AT)),
                stream_sequence=msg.metadata.sequence.stream,
                headers=headers,
            )
            batch.append((msg, handler, received))
        if not batch:
            return
        start = time.perf_counter()
        try:
            with _tracer.start_as_current_span(
                f"consume batch {sub.durable}",
                kind=SpanKind.CONSUMER,
                attributes={"messaging.system": "nats", "messaging.batch.message_count": len(batch)},
            ):
                applied = await self._apply_batch(batch)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("batch_fallback", consumer=sub.durable, size=len(batch), error=repr(exc))
            for msg, _, _ in batch:
                await self.process(msg)
            return
        elapsed = time.perf_counter() - start
        now = self.clock()
        for msg, _, received in batch:
            await msg.ack()
            HANDLING.labels(sub.durable).observe(elapsed / len(batch))
            if received.occurred_at is not None:
                LAG.labels(sub.durable).observe(max(0.0, (now - received.occurred_at).total_seconds()))
            PROCESSED.labels(sub.durable, "applied" if received.event_id in applied else "duplicate").inc()

    async def _apply_batch(self, batch: list[tuple[Msg, Handler[Any, Any], Received[Any]]]) -> set[str]:
        """Inbox and handlers for every message in one transaction; the event ids applied."""
        async with self.uow_factory() as uow:
            ids = list(dict.fromkeys(r.event_id for _, _, r in batch))
            # Parameters as a list (executemany): the statement compiles once, whatever the size.
            inserted = await uow.connection.execute(
                insert(self.inbox).on_conflict_do_nothing().returning(self.inbox.c.event_id),
                [{"consumer": self.subscription.durable, "event_id": i} for i in ids],
            )
            fresh = set(inserted.scalars())
            applied: set[str] = set()
            for msg, handler, received in batch:
                # An id twice in one batch (a redelivery) applies once.
                if received.event_id in fresh and received.event_id not in applied:
                    # Each event keeps its own span in its producer's trace, as one at a time.
                    with _tracer.start_as_current_span(
                        f"consume {received.event_type}",
                        context=extract_context(received.headers),
                        kind=SpanKind.CONSUMER,
                        attributes={
                            "messaging.system": "nats",
                            "messaging.destination.name": msg.subject,
                            "messaging.message.id": received.event_id,
                            "messaging.consumer.group.name": self.subscription.durable,
                        },
                    ):
                        await handler.apply(uow, received)
                    applied.add(received.event_id)
            await uow.commit()
        return applied

    async def _apply(self, handler: Handler[Any, Any], received: Received[Any]) -> bool:
        async with self.uow_factory() as uow:
            first_time = await uow.connection.scalar(
                insert(self.inbox)
                .values(consumer=self.subscription.durable, event_id=received.event_id)
                .on_conflict_do_nothing()
                .returning(self.inbox.c.event_id)
            )
            if first_time is None:
                return False
            await handler.apply(uow, received)
            await uow.commit()
        return True

    async def _failed(self, msg: Msg, exc: Exception) -> None:
        sub = self.subscription
        deliveries = msg.metadata.num_delivered
        if deliveries >= sub.max_deliver:
            await self._dead_letter(msg, f"{type(exc).__name__}: {exc}")
            return
        delay = sub.backoff[min(deliveries - 1, len(sub.backoff) - 1)]
        log.warning(
            "event_retry",
            consumer=sub.durable,
            subject=msg.subject,
            deliveries=deliveries,
            retry_in=delay,
            error=repr(exc),
        )
        PROCESSED.labels(sub.durable, "retried").inc()
        await msg.nak(delay=delay)

    async def _dead_letter(self, msg: Msg, reason: str) -> None:
        sub = self.subscription
        headers = dict(msg.headers or {})
        original_id = headers.get(Headers.MSG_ID, f"seq-{msg.metadata.sequence.stream}")
        headers.update(
            {
                Headers.MSG_ID: f"dlq:{sub.durable}:{original_id}",
                Headers.DLQ_REASON: reason[:2000],
                Headers.DLQ_CONSUMER: sub.durable,
                Headers.DLQ_SUBJECT: msg.subject,
                Headers.DLQ_STREAM: sub.stream,
                Headers.DLQ_SEQUENCE: str(msg.metadata.sequence.stream),
                Headers.DLQ_DELIVERIES: str(msg.metadata.num_delivered),
            }
        )
        try:
            await self.js.publish(f"{self.dlq_prefix}.{sub.durable}.{msg.subject}", msg.data, headers=headers)
        except Exception as exc:
            # Keep the message in the stream rather than lose it; try again later.
            log.error("dead_letter_failed", consumer=sub.durable, subject=msg.subject, error=repr(exc))
            await msg.nak(delay=sub.backoff[-1])
            return
        await msg.term()
        PROCESSED.labels(sub.durable, "dead_lettered").inc()
        log.error("event_dead_lettered", consumer=sub.durable, subject=msg.subject, reason=reason)


def _pending(msg: Msg) -> int:
    """Messages the consumer had left to deliver after this one (0 when unknown)."""
    try:
        return int(msg.metadata.num_pending or 0)
    except Exception:  # a message without JetStream metadata (tests, direct replies)
        return 0


def _parse_time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        return dt.datetime.fromisoformat(value)
    except ValueError:
        return None
