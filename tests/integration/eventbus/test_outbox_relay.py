"""The outbox: events leave only with their commit, in order, once, even with several relays."""

import asyncio
import datetime as dt
import time

import nats
import pytest
import sqlalchemy as sa
from nats.js import JetStreamContext
from sqlalchemy.ext.asyncio import AsyncEngine

from accrue.db import UnitOfWork, create_engine
from accrue.db.unit_of_work import ambient_connection
from accrue.eventbus import Event, Headers, Outbox, OutboxRelay, ensure_streams, inbox_table, outbox_table
from accrue.events.v1 import time_events_pb2 as tev
from accrue.telemetry import configure_tracing, tracer
from accrue.timekeeping.v1 import resources_pb2 as tk

pytestmark = pytest.mark.integration

SCHEMA = "bus_test"
metadata = sa.MetaData(schema=SCHEMA)
outbox = outbox_table(metadata)
inbox = inbox_table(metadata)
widgets = sa.Table("widgets", metadata, sa.Column("id", sa.Text, primary_key=True))


async def prepare(database_url: str) -> AsyncEngine:
    engine = create_engine(database_url)
    async with engine.begin() as conn:
        await conn.execute(sa.text(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
        await conn.run_sync(metadata.create_all)
    return engine


class WidgetUow(UnitOfWork):
    def on_enter(self) -> None:
        self.events = Outbox(self, outbox)


# When the events happened does not matter here, only that the relay carries it.
OCCURRED = dt.datetime(2026, 11, 2, 9, 30, tzinfo=dt.UTC)


def approved(entry_id: str, project: str = "p1") -> Event:
    return Event(
        "time.entry.approved",
        project,
        tev.TimeEntryApproved(time_entry=tk.TimeEntry(id=entry_id)),
        occurred_at=OCCURRED,
    )


@pytest.fixture
async def bus(database_url: str, nats_url: str):  # type: ignore[no-untyped-def]
    engine = await prepare(database_url)
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_streams(js)
    yield engine, js
    await nc.close()
    await engine.dispose()


async def stream_messages(js: JetStreamContext, stream: str = "TIME") -> int:
    return int((await js.stream_info(stream)).state.messages)


async def test_an_event_leaves_only_when_its_transaction_commits(
    bus: tuple[AsyncEngine, JetStreamContext],
) -> None:
    engine, js = bus
    async with WidgetUow(engine) as uow:
        await uow.connection.execute(sa.insert(widgets).values(id="w1"))
        uow.events.add(approved("rolled-back"))
        # leaving without commit rolls back the widget and its event
    async with WidgetUow(engine) as uow:
        await uow.connection.execute(sa.insert(widgets).values(id="w2"))
        event = approved("committed")
        uow.events.add(event)
        await uow.commit()
    relay = OutboxRelay(engine, outbox, js)
    assert await relay.publish_batch() == 1
    assert await stream_messages(js) == 1
    msg = await js.get_last_msg("TIME", "time.entry.approved.p1")
    assert msg.headers is not None
    assert msg.headers[Headers.MSG_ID] == event.event_id
    assert msg.headers[Headers.EVENT_TYPE] == "time.entry.approved"
    assert msg.headers[Headers.SCHEMA] == "accrue.events.v1.TimeEntryApproved"
    assert msg.headers[Headers.OCCURRED_AT].startswith(str(event.occurred_at.year))
    assert tev.TimeEntryApproved.FromString(msg.data).time_entry.id == "committed"
    async with engine.connect() as conn:
        assert (await conn.execute(sa.select(widgets.c.id))).scalars().all() == ["w2"]


async def test_the_trace_context_travels_in_the_headers(bus: tuple[AsyncEngine, JetStreamContext]) -> None:
    engine, js = bus
    configure_tracing("test")
    with tracer("test").start_as_current_span("request") as span:
        async with WidgetUow(engine) as uow:
            uow.events.add(approved("traced"))
            await uow.commit()
        trace_id = format(span.get_span_context().trace_id, "032x")
    await OutboxRelay(engine, outbox, js).publish_batch()
    msg = await js.get_last_msg("TIME", "time.entry.approved.p1")
    assert msg.headers is not None
    assert trace_id in msg.headers[Headers.TRACEPARENT]


async def test_two_relays_publish_every_event_exactly_once_in_order(
    bus: tuple[AsyncEngine, JetStreamContext],
) -> None:
    engine, js = bus
    async with WidgetUow(engine) as uow:
        for i in range(1000):
            uow.events.add(approved(f"e{i:04d}", project="p1"))
        await uow.commit()
    relays = [OutboxRelay(engine, outbox, js, batch_size=100) for _ in range(2)]

    async def drain(relay: OutboxRelay) -> int:
        total = 0
        while n := await relay.publish_batch():
            total += n
        return total

    counts = await asyncio.gather(*(drain(r) for r in relays))
    assert sum(counts) == 1000
    assert await stream_messages(js) == 1000
    async with engine.connect() as conn:
        assert await conn.scalar(sa.select(sa.func.count()).where(outbox.c.published_at.is_(None))) == 0


async def test_a_republished_event_is_dropped_by_the_broker(
    bus: tuple[AsyncEngine, JetStreamContext],
) -> None:
    engine, js = bus
    async with WidgetUow(engine) as uow:
        uow.events.add(approved("once"))
        await uow.commit()
    relay = OutboxRelay(engine, outbox, js)
    await relay.publish_batch()
    # A relay that died after publishing but before marking publishes the same rows again.
    async with engine.begin() as conn:
        await conn.execute(sa.update(outbox).values(published_at=None))
    assert await relay.publish_batch() == 1
    assert await stream_messages(js) == 1


async def test_a_commit_that_wrote_events_wakes_the_relay_without_waiting_for_the_poll(
    bus: tuple[AsyncEngine, JetStreamContext],
) -> None:
    engine, js = bus
    relay = OutboxRelay(engine, outbox, js, poll_interval=30)
    task = asyncio.create_task(relay.run())
    await asyncio.sleep(0.5)  # let it go idle
    start = time.perf_counter()
    async with WidgetUow(engine) as uow:
        uow.events.add(approved("fast"))
        await uow.commit()
    while await stream_messages(js) == 0:
        assert time.perf_counter() - start < 2, "the relay did not wake on the commit"
        await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert time.perf_counter() - start < 2


async def test_events_of_a_unit_of_work_inside_a_request_transaction_wake_the_relay_at_its_commit(
    bus: tuple[AsyncEngine, JetStreamContext],
) -> None:
    # Under an idempotency key the unit of work is a savepoint of the request's transaction: its
    # events are visible, and worth waking the relay for, only when that transaction commits.
    engine, js = bus
    relay = OutboxRelay(engine, outbox, js, poll_interval=30)
    task = asyncio.create_task(relay.run())
    await asyncio.sleep(0.5)
    async with engine.connect() as request, request.begin() as transaction:
        token = ambient_connection.set(request)
        try:
            async with WidgetUow(engine) as uow:
                uow.events.add(approved("in-a-request"))
                await uow.commit()  # releases the savepoint only
        finally:
            ambient_connection.reset(token)
        await asyncio.sleep(0.3)
        assert await stream_messages(js) == 0
        await transaction.commit()
    start = time.perf_counter()
    while await stream_messages(js) == 0:
        assert time.perf_counter() - start < 2, "the relay did not wake on the request's commit"
        await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_stream_provisioning_is_idempotent(bus: tuple[AsyncEngine, JetStreamContext]) -> None:
    _, js = bus
    await ensure_streams(js)
    await ensure_streams(js)
    info = await js.stream_info("TIME")
    assert info.config.subjects == ["time.>"]
    assert info.config.duplicate_window == 300


async def test_a_coalescing_relay_sends_a_burst_of_commits_in_one_batch(
    bus: tuple[AsyncEngine, JetStreamContext],
) -> None:
    engine, js = bus
    relay = OutboxRelay(engine, outbox, js, poll_interval=30, coalesce=0.5)
    batches: list[int] = []
    publish = relay.publish_batch

    async def counted() -> int:
        n = await publish()
        if n:
            batches.append(n)
        return n

    relay.publish_batch = counted  # type: ignore[method-assign]
    task = asyncio.create_task(relay.run())
    await asyncio.sleep(0.5)  # let it go idle
    for i in range(5):  # five transactions 50 ms apart, five wake-ups, all within the window
        async with WidgetUow(engine) as uow:
            uow.events.add(approved(f"burst-{i}"))
            await uow.commit()
        await asyncio.sleep(0.05)
    # Wait for publish_batch to return, not for the stream: the messages reach the stream before
    # the batch marks them published and returns, and a cancel in between would lose the count.
    async with asyncio.timeout(10):
        while not batches:  # noqa: ASYNC110 - waiting for the relay
            await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert batches == [5]
    assert await stream_messages(js) == 5


async def test_a_connection_lost_mid_transaction_rolls_back_cleanly_beside_a_running_relay(
    bus: tuple[AsyncEngine, JetStreamContext],
) -> None:
    # The relay listens to every commit and rollback of its engine; a connection whose DBAPI
    # connection was lost (a cancelled query, a dropped socket) must still roll back cleanly.
    engine, js = bus
    relay = OutboxRelay(engine, outbox, js, poll_interval=30)
    task = asyncio.create_task(relay.run())
    await asyncio.sleep(0.2)
    try:
        async with engine.connect() as conn:
            await conn.begin()
            await conn.execute(sa.select(1))
            await conn.invalidate()
            await conn.rollback()
        async with WidgetUow(engine) as uow:
            uow.events.add(approved("after-a-lost-connection"))
            await uow.commit()
        async with asyncio.timeout(2):
            while await stream_messages(js) == 0:  # noqa: ASYNC110 - polling the stream is the point
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
