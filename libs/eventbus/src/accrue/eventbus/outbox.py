"""The transactional outbox and its relay, plus the consumers' inbox table.

Outbox: `Outbox.add(event)` inside a unit of work writes the event into `<schema>.outbox` in
the same transaction as the state change, and marks the connection; when that transaction
commits, the relay of the same engine (the service's own process) wakes at once. Rows another
process wrote are found by the relay's poll.

Why not LISTEN/NOTIFY: PostgreSQL serializes the commits of every transaction that NOTIFYs,
across the whole server, on one lock held through the commit's WAL flush. At a few hundred
commits a second that queue turned any slow flush (20-40 ms) into a stall of 100-300 ms for
every request in flight (timekeeping's submit latency benchmark, 2026-11-26).

Relay: takes the oldest unpublished rows with FOR UPDATE SKIP LOCKED (so any number of relays
can run), publishes them in order with Nats-Msg-Id = event id, waits for JetStream's acks and
marks them published in the same transaction. If it dies between publishing and marking, the
next attempt republishes; the broker's duplicate window drops the copy, and consumers' inboxes
drop anything older.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from typing import Any

import sqlalchemy as sa
from nats.js import JetStreamContext
from prometheus_client import Counter, Gauge
from sqlalchemy import event
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from accrue.db.unit_of_work import UnitOfWork
from accrue.eventbus.envelope import Event, Headers
from accrue.runtime.clock import Clock, system_clock
from accrue.telemetry import get_logger, inject_context

log = get_logger(__name__)

PUBLISHED = Counter("accrue_outbox_published_total", "Events moved from the outbox to JetStream.", ["schema"])
PENDING = Gauge("accrue_outbox_pending_events", "Committed events not yet published.", ["schema"])
OLDEST = Gauge(
    "accrue_outbox_oldest_pending_age_seconds",
    "Age of the oldest unpublished event (0 when none).",
    ["schema"],
)
RELAY_ERRORS = Counter(
    "accrue_outbox_relay_errors_total", "Relay attempts that failed and will be retried.", ["schema"]
)


def outbox_table(metadata: sa.MetaData) -> sa.Table:
    """The per-schema outbox."""
    return sa.Table(
        "outbox",
        metadata,
        sa.Column("seq", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("event_id", sa.Text, nullable=False, unique=True),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("event_type", sa.Text, nullable=False),
        sa.Column("schema_name", sa.Text, nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("headers", JSONB, nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.Index("outbox_unpublished", "seq", postgresql_where=sa.text("published_at IS NULL")),
    )


def inbox_table(metadata: sa.MetaData) -> sa.Table:
    """The per-schema inbox: which events each consumer has applied."""
    return sa.Table(
        "inbox",
        metadata,
        sa.Column("consumer", sa.Text, primary_key=True),
        sa.Column("event_id", sa.Text, primary_key=True),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    )


# Set on a connection's info when its transaction wrote outbox rows; read by the relay's commit hook.
WROTE_OUTBOX = "accrue_outbox_written"


class Outbox:
    """Collects a unit of work's events and writes them just before it commits."""

    def __init__(self, uow: UnitOfWork, table: sa.Table) -> None:
        self._table = table
        self._events: list[Event] = []
        uow.before_commit(self._flush)

    def add(self, event: Event) -> None:
        """Publish event if, and only if, the unit of work commits."""
        self._events.append(event)

    async def _flush(self, connection: AsyncConnection) -> None:
        if not self._events:
            return
        trace: dict[str, str] = {}
        inject_context(trace)
        rows = [
            {
                "event_id": e.event_id,
                "subject": e.subject,
                "event_type": e.event_type,
                "schema_name": e.schema,
                "payload": e.message.SerializeToString(deterministic=True),
                "headers": trace,
                "occurred_at": e.occurred_at,
            }
            for e in self._events
        ]
        await connection.execute(sa.insert(self._table), rows)
        connection.sync_connection.info[WROTE_OUTBOX] = True  # type: ignore[union-attr]
        self._events.clear()


def _headers(row: Any) -> dict[str, str]:
    headers = {
        Headers.MSG_ID: row.event_id,
        Headers.EVENT_TYPE: row.event_type,
        Headers.SCHEMA: row.schema_name,
        Headers.OCCURRED_AT: row.occurred_at.isoformat(),
    }
    trace = row.headers if isinstance(row.headers, dict) else json.loads(row.headers or "{}")
    headers.update({k: v for k, v in trace.items() if k in (Headers.TRACEPARENT, Headers.TRACESTATE)})
    return headers


class OutboxRelay:
    """Moves committed outbox rows to JetStream, in order, at least once."""

    def __init__(
        self,
        engine: AsyncEngine,
        table: sa.Table,
        js: JetStreamContext,
        *,
        batch_size: int = 500,
        poll_interval: float = 1.0,
        publish_timeout: float = 10.0,
        retention: dt.timedelta = dt.timedelta(days=7),
        gauge_interval: float = 1.0,
        coalesce: float = 0.0,
        clock: Clock = system_clock,
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._table = table
        self._js = js
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._publish_timeout = publish_timeout
        self._retention = retention
        self._schema = table.schema or "public"
        self._wake = asyncio.Event()
        # The backlog gauges cost a query of their own: refreshed at most this often, not after
        # every batch (Prometheus scrapes every few seconds anyway).
        self._gauge_interval = gauge_interval
        # After a wake-up, wait this long so a burst of commits leaves in one batch rather than a
        # transaction each (0: publish at once).
        self._coalesce = coalesce

    async def run(self) -> None:
        """Relay until cancelled. Failures are logged and retried with backoff."""
        target = self._engine.sync_engine
        event.listen(target, "commit", self._committed)
        event.listen(target, "rollback", self._rolled_back)
        backoff = 0.1
        last_purge = 0.0
        last_gauges = 0.0
        try:
            while True:
                try:
                    published = await self.publish_batch()
                    if time.monotonic() - last_gauges >= self._gauge_interval:
                        await self._update_gauges()
                        last_gauges = time.monotonic()
                    if time.monotonic() - last_purge > 3600:
                        await self.purge_published()
                        last_purge = time.monotonic()
                    backoff = 0.1
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    RELAY_ERRORS.labels(self._schema).inc()
                    log.warning("outbox_relay_retry", schema=self._schema, error=repr(exc), retry_in=backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                if published >= self._batch_size:
                    continue
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=self._poll_interval)
                except TimeoutError:
                    pass
                else:
                    if self._coalesce > 0:
                        await asyncio.sleep(self._coalesce)
        finally:
            event.remove(target, "commit", self._committed)
            event.remove(target, "rollback", self._rolled_back)

    def _committed(self, conn: Connection) -> None:
        # The outermost commit only (a savepoint's release is another event), so a unit of work
        # inside an idempotent request wakes the relay when the request's transaction commits.
        if not conn.invalidated and conn.info.pop(WROTE_OUTBOX, False):
            self._wake.set()

    def _rolled_back(self, conn: Connection) -> None:
        # An invalidated connection (its DBAPI connection lost, e.g. a cancelled query) has no info
        # left to clear, and reading conn.info would try to reconnect inside the failed
        # transaction: PendingRollbackError out of the rollback itself, for whoever rolled back.
        if not conn.invalidated:
            conn.info.pop(WROTE_OUTBOX, None)

    async def publish_batch(self) -> int:
        """Publish one batch of the oldest unpublished events; returns how many."""
        t = self._table
        async with self._engine.connect() as conn, conn.begin():
            rows = (
                await conn.execute(
                    sa.select(
                        t.c.seq,
                        t.c.event_id,
                        t.c.subject,
                        t.c.event_type,
                        t.c.schema_name,
                        t.c.payload,
                        t.c.headers,
                        t.c.occurred_at,
                    )
                    .where(t.c.published_at.is_(None))
                    .order_by(t.c.seq)
                    .limit(self._batch_size)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            if not rows:
                return 0
            # publish_async sends in order on one connection and collects acks concurrently.
            futures = [
                await self._js.publish_async(row.subject, bytes(row.payload), headers=_headers(row))
                for row in rows
            ]
            await asyncio.wait_for(asyncio.gather(*futures), timeout=self._publish_timeout)
            await conn.execute(
                sa.update(t).where(t.c.seq.in_([row.seq for row in rows])).values(published_at=self._clock())
            )
        PUBLISHED.labels(self._schema).inc(len(rows))
        return len(rows)

    async def _update_gauges(self) -> None:
        t = self._table
        async with self._engine.connect() as conn:
            count, oldest = (
                await conn.execute(
                    sa.select(sa.func.count(), sa.func.min(t.c.occurred_at)).where(t.c.published_at.is_(None))
                )
            ).one()
        PENDING.labels(self._schema).set(count)
        OLDEST.labels(self._schema).set((self._clock() - oldest).total_seconds() if oldest else 0)

    async def purge_published(self) -> int:
        """Delete published rows older than the retention; JetStream keeps the history."""
        t = self._table
        cutoff = self._clock() - self._retention
        async with self._engine.begin() as conn:
            result = await conn.execute(sa.delete(t).where(t.c.published_at < cutoff))
        return int(result.rowcount or 0)
