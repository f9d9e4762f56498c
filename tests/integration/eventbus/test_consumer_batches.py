"""Consumers with apply_batches: a fetched batch applies in one transaction, still once per
event, and a batch that fails falls back to one message at a time (retry, dead letter)."""

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
from accrue.events.v1 import time_events_pb2 as tev
from accrue.timekeeping.v1 import resources_pb2 as tk

pytestmark = pytest.mark.integration

SCHEMA = "consumer_batch_test"
metadata = sa.MetaData(schema=SCHEMA)
inbox = inbox_table(metadata)
applied = sa.Table(
    "applied", metadata, sa.Column("entry_id", sa.Text, primary_key=True), sa.Column("times", sa.Integer)
)
commits: list[int] = []


@pytest.fixture
async def bus(database_url: str, nats_url: str):  # type: ignore[no-untyped-def]
    engine = create_engine(database_url)
    async with engine.begin() as conn:
        await conn.execute(sa.text(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
        await conn.run_sync(metadata.create_all)
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await ensure_streams(js)
    commits.clear()
    yield engine, js
    await nc.close()
    await engine.dispose()


async def publish(
    js: JetStreamContext, entry_id: str, *, event_id: str = "", data: bytes | None = None
) -> None:
    body = (
        data
        if data is not None
        else tev.TimeEntryApproved(time_entry=tk.TimeEntry(id=entry_id)).SerializeToString()
    )
    await js.publish(
        "time.entry.approved.p1",
        body,
        headers={
            Headers.MSG_ID: event_id or str(uuid.uuid4()),
            Headers.EVENT_TYPE: "time.entry.approved",
            Headers.SCHEMA: "accrue.events.v1.TimeEntryApproved",
        },
    )


class CountingUnitOfWork(UnitOfWork):
    async def commit(self) -> None:
        await super().commit()
        commits.append(1)


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
        durable="test-batch-consumer",
        stream="TIME",
        filter_subjects=("time.entry.approved.>",),
        handlers={"time.entry.approved": Handler(tev.TimeEntryApproved, apply)},
        apply_batches=True,
        **kw,
    )
    return ConsumerRunner(js, lambda: CountingUnitOfWork(engine), inbox, sub)


async def count_applied(engine: AsyncEngine) -> dict[str, int]:
    async with engine.connect() as conn:
        return {r.entry_id: r.times for r in await conn.execute(sa.select(applied))}


async def run_until(consumer: ConsumerRunner, condition: Any, within: float = 10) -> None:
    task = asyncio.create_task(consumer.run())
    try:
        async with asyncio.timeout(within):
            while not await condition():  # noqa: ASYNC110 - polling the database is the point
                await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.sleep(FETCH_EXPIRES + 0.2)


async def test_a_batch_commits_once_and_applies_each_event_once(
    bus: tuple[AsyncEngine, JetStreamContext],
) -> None:
    engine, js = bus
    await publish(js, "dup", event_id="dup-1")

    async def first() -> bool:
        return "dup" in await count_applied(engine)

    await run_until(runner(js, engine), first)
    # The same event again (past the broker's duplicate window) inside a batch: the inbox drops it.
    await js.purge_stream("TIME")
    commits.clear()
    for i in range(10):
        await publish(js, f"e{i}")
    await publish(js, "dup", event_id="dup-1")
    for i in range(10, 20):
        await publish(js, f"e{i}")

    async def done() -> bool:
        return len(await count_applied(engine)) == 21

    await run_until(runner(js, engine), done)
    assert set((await count_applied(engine)).values()) == {1}
    assert len(commits) < 21  # fewer transactions than events


async def test_a_failing_event_falls_back_to_one_at_a_time_and_is_dead_lettered_alone(
    bus: tuple[AsyncEngine, JetStreamContext],
) -> None:
    engine, js = bus
    await publish(js, "ok-1")
    await publish(js, "bad")
    await publish(js, "ok-2")
    await publish(js, "x", data=b"\xff\xff not a protobuf")
    consumer = runner(js, engine, fail_for={"bad"}, max_deliver=2, backoff=(0.05,), ack_wait=5)

    async def dead_lettered() -> bool:
        return int((await js.stream_info("DLQ")).state.messages) == 2

    await run_until(consumer, dead_lettered)
    assert await count_applied(engine) == {"ok-1": 1, "ok-2": 1}
    info = await js.consumer_info("TIME", "test-batch-consumer")
    assert (info.num_pending, info.num_ack_pending) == (0, 0)
