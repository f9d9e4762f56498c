"""Consumers: ack after commit, an event applied once, retries with backoff, dead letters with the error."""

import asyncio
import uuid
from typing import Any

import nats
import pytest
import sqlalchemy as sa
from nats.js import JetStreamContext
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from accrue.db import UnitOfWork, create_engine
from accrue.eventbus import (
    ConsumerRunner,
    Handler,
    Headers,
    Received,
    Subscription,
    ensure_streams,
    inbox_table,
)
from accrue.eventbus.consumer import FETCH_EXPIRES
from accrue.eventbus.streams import reset_consumer
from accrue.events.v1 import time_events_pb2 as tev
from accrue.timekeeping.v1 import resources_pb2 as tk

pytestmark = pytest.mark.integration

SCHEMA = "consumer_test"
metadata = sa.MetaData(schema=SCHEMA)
inbox = inbox_table(metadata)
applied = sa.Table(
    "applied", metadata, sa.Column("entry_id", sa.Text, primary_key=True), sa.Column("times", sa.Integer)
)


@pytest.fixture
async def bus(database_url: str, nats_url: str):  # type: ignore[no-untyped-def]
    engine = create_engine(database_url)
    async with engine.begin() as conn:
        await conn.execute(sa.text(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
        await conn.run_sync(metadata.create_all)
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_streams(js)
    yield engine, js
    await nc.close()
    await engine.dispose()


async def publish(
    js: JetStreamContext, entry_id: str, *, event_id: str | None = None, data: bytes | None = None
) -> str:
    event_id = event_id or str(uuid.uuid4())
    body = (
        data
        if data is not None
        else tev.TimeEntryApproved(time_entry=tk.TimeEntry(id=entry_id)).SerializeToString()
    )
    await js.publish(
        "time.entry.approved.p1",
        body,
        headers={
            Headers.MSG_ID: event_id,
            Headers.EVENT_TYPE: "time.entry.approved",
            Headers.SCHEMA: "accrue.events.v1.TimeEntryApproved",
        },
    )
    return event_id


async def count_applied(engine: AsyncEngine) -> dict[str, int]:
    async with engine.connect() as conn:
        return {r.entry_id: r.times for r in await conn.execute(sa.select(applied))}


def runner(
    js: JetStreamContext, engine: AsyncEngine, fail_for: set[str] | None = None, **kw: Any
) -> ConsumerRunner:
    async def apply(uow: UnitOfWork, event: Received[Any]) -> None:
        entry_id = event.message.time_entry.id
        if fail_for and entry_id in fail_for:
            raise RuntimeError(f"cannot apply {entry_id}")
        stmt = insert(applied).values(entry_id=entry_id, times=1)
        await uow.connection.execute(
            stmt.on_conflict_do_update(
                index_elements=[applied.c.entry_id], set_={"times": applied.c.times + 1}
            )
        )

    sub = Subscription(
        durable="test-consumer",
        stream="TIME",
        filter_subjects=("time.entry.approved.>",),
        handlers={"time.entry.approved": Handler(tev.TimeEntryApproved, apply)},
        **kw,
    )
    return ConsumerRunner(js, lambda: UnitOfWork(engine), inbox, sub)


async def run_until(task_runner: ConsumerRunner, condition: Any, within: float = 10) -> None:
    task = asyncio.create_task(task_runner.run())
    try:
        async with asyncio.timeout(within):
            while not await condition():  # noqa: ASYNC110 - polling the database is the point
                await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        # Let the stopped runner's last pull request expire, as a restarted process would
        # (a message it caught would only come back after ack_wait).
        await asyncio.sleep(FETCH_EXPIRES + 0.2)


async def test_a_redelivered_event_has_no_second_effect(bus: tuple[AsyncEngine, JetStreamContext]) -> None:
    engine, js = bus
    event_id = await publish(js, "e1")
    await run_until(runner(js, engine), lambda: _has(engine, "e1"))
    # The same event again (e.g. after the broker's duplicate window): the inbox drops it.
    await js.purge_stream("TIME")
    await publish(js, "e1", event_id=event_id)
    await publish(js, "e2")
    await run_until(runner(js, engine), lambda: _has(engine, "e2"))
    assert await count_applied(engine) == {"e1": 1, "e2": 1}


async def _has(engine: AsyncEngine, entry_id: str) -> bool:
    return entry_id in await count_applied(engine)


async def test_a_failing_event_is_retried_then_dead_lettered_with_its_error(
    bus: tuple[AsyncEngine, JetStreamContext],
) -> None:
    engine, js = bus
    await publish(js, "bad")
    await publish(js, "good")
    consumer = runner(js, engine, fail_for={"bad"}, max_deliver=3, backoff=(0.05,), ack_wait=5)

    async def dead_lettered() -> bool:
        return int((await js.stream_info("DLQ")).state.messages) == 1

    await run_until(consumer, dead_lettered)
    assert await count_applied(engine) == {"good": 1}
    msg = await js.get_last_msg("DLQ", "dlq.test-consumer.>")
    assert msg.headers is not None
    assert "RuntimeError: cannot apply bad" in msg.headers[Headers.DLQ_REASON]
    assert msg.headers[Headers.DLQ_DELIVERIES] == "3"
    assert msg.headers[Headers.DLQ_SUBJECT] == "time.entry.approved.p1"
    assert tev.TimeEntryApproved.FromString(msg.data).time_entry.id == "bad"
    info = await js.consumer_info("TIME", "test-consumer")
    assert (info.num_pending, info.num_ack_pending) == (0, 0)


async def test_a_poison_message_goes_straight_to_the_dead_letters(
    bus: tuple[AsyncEngine, JetStreamContext],
) -> None:
    engine, js = bus
    await publish(js, "x", data=b"\xff\xff not a protobuf")

    async def dead_lettered() -> bool:
        return int((await js.stream_info("DLQ")).state.messages) == 1

    await run_until(runner(js, engine, max_deliver=10), dead_lettered)
    msg = await js.get_last_msg("DLQ", "dlq.test-consumer.>")
    assert msg.headers is not None
    assert msg.headers[Headers.DLQ_DELIVERIES] == "1"
    assert msg.headers[Headers.DLQ_REASON].startswith("undecodable")


async def test_replay_from_a_sequence_redelivers_and_the_inbox_decides(
    bus: tuple[AsyncEngine, JetStreamContext],
) -> None:
    engine, js = bus
    for i in range(3):
        await publish(js, f"r{i}")
    await run_until(runner(js, engine), lambda: _has(engine, "r2"))
    await reset_consumer(js, stream="TIME", durable="test-consumer", start_sequence=2)
    info = await js.consumer_info("TIME", "test-consumer")
    assert info.num_pending == 2
    # Clearing the consumer's inbox is what turns a replay into a re-application.
    async with engine.begin() as conn:
        await conn.execute(sa.delete(inbox))
    await run_until(runner(js, engine), lambda: _times(engine, "r2", 2))
    assert await count_applied(engine) == {"r0": 1, "r1": 2, "r2": 2}


async def _times(engine: AsyncEngine, entry_id: str, times: int) -> bool:
    return (await count_applied(engine)).get(entry_id) == times
