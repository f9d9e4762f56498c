"""Benchmark: observability's event ingestion, KPI computation and reconciliation at volume.

    .venv/bin/python benchmarks/observability_ingest.py [--events 20000]

Starts an embedded PostgreSQL and NATS JetStream (or uses ACCRUE_DATABASE_URL / ACCRUE_NATS_URL),
then, in one run:

1. publishes `--events` time.entry.approved events to the TIME stream (spread over legal
   entities, projects and the last 120 days);
2. measures the machine's raw limits on the same servers: JetStream pull + ack of the same
   messages with no work (a scratch durable), asyncpg executemany of ledger-shaped rows into a
   scratch table, and the same rows one committed transaction each (what a consumer that
   commits per event meets);
3. runs observability's own consumer (ConsumerRunner: inbox, ledger upsert, commit, ack per
   event) until the ledger holds every entry, and reports events/s against both limits;
4. times the KPI computation (`Observability.kpis`, what the gauges are recomputed from every
   10 s) over that much unbilled work, and the reconciliation comparison (`reconcile`) of the
   same number of entries in three stages.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import sys
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

LEGAL_ENTITIES = 5
PROJECTS = 200


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _headers(event_type: str, schema: str) -> dict[str, str]:
    return {
        "Nats-Msg-Id": str(uuid.uuid4()),
        "Accrue-Event-Type": event_type,
        "Accrue-Schema": schema,
        "Accrue-Occurred-At": dt.datetime.now(dt.UTC).isoformat(),
    }


async def publish(js: Any, events: int) -> None:
    from accrue.events.v1 import time_events_pb2 as tev
    from accrue.timekeeping.v1 import resources_pb2 as tk
    from accrue.type.v1 import types_pb2

    now = dt.datetime.now(dt.UTC)
    rng = random.Random(7)
    pending = []
    for i in range(events):
        approved = now - dt.timedelta(days=rng.randrange(120), minutes=rng.randrange(1440))
        entry = tk.TimeEntry(
            id=str(uuid.uuid4()),
            project_id=f"project-{i % PROJECTS}",
            legal_entity_id=f"le-{i % LEGAL_ENTITIES}",
            work_date=approved.date().isoformat(),
            hours=str(Decimal(rng.randrange(1, 33)) / 4),
            billable=True,
            indicative_rate=types_pb2.Money(currency="GBP", amount="150.00"),
        )
        entry.approve_time.FromDatetime(approved)
        entry.create_time.FromDatetime(approved - dt.timedelta(hours=rng.randrange(1, 72)))
        body = tev.TimeEntryApproved(time_entry=entry).SerializeToString()
        pending.append(
            js.publish(
                f"time.entry.approved.{entry.project_id}",
                body,
                headers=_headers("time.entry.approved", "accrue.events.v1.TimeEntryApproved"),
            )
        )
        if len(pending) >= 500:
            await asyncio.gather(*pending)
            pending = []
    await asyncio.gather(*pending)


async def raw_jetstream(js: Any, events: int) -> float:
    """Pull + ack every message with no work, on a scratch durable: the backbone's own limit."""
    from nats.js.api import AckPolicy, ConsumerConfig

    await js.add_consumer(
        "TIME",
        ConsumerConfig(
            durable_name="bench-raw", ack_policy=AckPolicy.EXPLICIT, filter_subject="time.entry.approved.>"
        ),
    )
    sub = await js.pull_subscribe_bind("bench-raw", "TIME")
    start, seen = time.perf_counter(), 0
    while seen < events:
        for msg in await sub.fetch(64, timeout=5):
            await msg.ack()
            seen += 1
    elapsed = time.perf_counter() - start
    await sub.unsubscribe()
    await js.delete_consumer("TIME", "bench-raw")
    return events / elapsed


async def raw_postgres(url: str, events: int) -> tuple[float, float]:
    """asyncpg executemany of ledger-shaped rows into a scratch table."""
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute(
            "CREATE TEMP TABLE raw_ledger (time_entry_id text PRIMARY KEY, legal_entity_id text,"
            " project_id text, hours numeric(8,2), billable bool, rate numeric(18,6), currency text,"
            " approve_time timestamptz, work_date date, submit_time timestamptz)"
        )
        now = dt.datetime.now(dt.UTC)
        rows = [
            (str(uuid.uuid4()), "le", "p", Decimal("7.5"), True, Decimal(150), "GBP", now, now.date(), now)
            for _ in range(events)
        ]
        start = time.perf_counter()
        await conn.executemany("INSERT INTO raw_ledger VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)", rows)
        batched = events / (time.perf_counter() - start)
        # A consumer commits once per event (inbox + effect, then ack): one committed
        # transaction per row, sequentially, is the limit that pattern meets.
        await conn.execute("TRUNCATE raw_ledger")
        sample = rows[: min(len(rows), 2000)]
        start = time.perf_counter()
        for row in sample:
            async with conn.transaction():
                await conn.execute("INSERT INTO raw_ledger VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)", *row)
        per_commit = len(sample) / (time.perf_counter() - start)
        return batched, per_commit
    finally:
        await conn.close()


async def run(database_url: str, nats_url: str, events: int) -> dict[str, Any]:
    import sqlalchemy as sa

    from accrue.db import create_engine
    from accrue.eventbus import Backbone, ConsumerRunner
    from accrue.runtime.clock import system_clock
    from accrue.services.observability.adapters import tables
    from accrue.services.observability.adapters.jetstream import StreamState
    from accrue.services.observability.adapters.unit_of_work import ObservabilityUnitOfWork
    from accrue.services.observability.bootstrap import migrate
    from accrue.services.observability.domain.reconciliation import (
        ApprovedEntry,
        BilledEntry,
        ConfirmedLine,
        Valuation,
        reconcile,
    )
    from accrue.services.observability.entrypoints.consumers import subscriptions
    from accrue.services.observability.service_layer.handlers import Observability
    from accrue.services.observability.settings import ObservabilitySettings

    await migrate(ObservabilitySettings(database_url=database_url, nats_url=nats_url))
    backbone = await Backbone.connect(nats_url, "bench")
    engine = create_engine(database_url)
    result: dict[str, Any] = {"events": events}
    try:
        say(f"publishing {events} time.entry.approved events")
        await publish(backbone.js, events)
        result["raw_jetstream_pull_ack_per_s"] = round(await raw_jetstream(backbone.js, events))
        batched, per_commit = await raw_postgres(database_url, events)
        result["raw_asyncpg_executemany_rows_per_s"] = round(batched)
        result["raw_asyncpg_one_row_transactions_per_s"] = round(per_commit)

        def uow() -> ObservabilityUnitOfWork:
            return ObservabilityUnitOfWork(engine)

        # The machine's clock: the events above are stamped with it, and ages count from it.
        app = Observability(uow, StreamState(backbone.js), clock=system_clock)
        (time_sub,) = [s for s in subscriptions(app) if s.stream == "TIME"]
        runner = ConsumerRunner(backbone.js, uow, tables.inbox, time_sub, clock=system_clock)
        say("consuming with observability's TIME consumer")
        start = time.perf_counter()
        task = asyncio.create_task(runner.run())
        async with engine.connect() as conn:
            while await conn.scalar(sa.select(sa.func.count()).select_from(tables.work_ledger)) < events:
                await asyncio.sleep(0.1)
                await conn.rollback()
        elapsed = time.perf_counter() - start
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        result["ingest_events_per_s"] = round(events / elapsed)
        result["ingest_vs_jetstream_raw"] = round(
            result["ingest_events_per_s"] / result["raw_jetstream_pull_ack_per_s"], 3
        )
        result["ingest_vs_asyncpg_raw"] = round(
            result["ingest_events_per_s"] / result["raw_asyncpg_executemany_rows_per_s"], 3
        )

        from accrue.runtime.identity import bound_principal
        from accrue.testing.identity import admin

        timings = []
        for _ in range(5):
            start = time.perf_counter()
            # As the gRPC interceptor would bind a verified caller: a local administrator, who
            # sees every legal entity, so the KPIs cover all the work ingested.
            with bound_principal(admin()):
                kpis = await app.kpis()
            timings.append(time.perf_counter() - start)
        result["kpis_seconds_median"] = round(sorted(timings)[2], 4)
        result["kpis_unbilled_hours"] = str(kpis.figures.hours)

        rng = random.Random(3)
        ids = [str(uuid.uuid4()) for _ in range(events)]
        approved = [
            ApprovedEntry(i, f"p{n % PROJECTS}", f"le-{n % LEGAL_ENTITIES}", Decimal(8), True)
            for n, i in enumerate(ids)
        ]
        billed = [
            BilledEntry(
                i, f"p{n % PROJECTS}", f"le-{n % LEGAL_ENTITIES}", Decimal(8), True, rng.random() < 0.5
            )
            for n, i in enumerate(ids)
            if rng.random() > 0.001  # a few missing in billing
        ]
        lines = [ConfirmedLine(Decimal(1200), "GBP", (b.time_entry_id,)) for b in billed if b.posted]
        valuations = {i: Valuation(Decimal(150), "GBP") for i in ids}
        start = time.perf_counter()
        results = reconcile(approved, billed, lines, valuations)
        result["reconcile_seconds"] = round(time.perf_counter() - start, 4)
        result["reconcile_differences"] = sum(r.difference_count for r in results)
    finally:
        await engine.dispose()
        await backbone.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20000)
    args = parser.parse_args()
    database_url, nats_url = os.environ.get("ACCRUE_DATABASE_URL"), os.environ.get("ACCRUE_NATS_URL")
    from accrue.embedded import EmbeddedNats, EmbeddedPostgres

    with tempfile.TemporaryDirectory(prefix="obs-bench") as tmp:
        pg = EmbeddedPostgres(Path(tmp) / "pg", cleanup="delete") if not database_url else None
        nats_server = EmbeddedNats(Path(tmp) / "nats") if not nats_url else None
        try:
            if pg is not None:
                pg.start()
                database_url = pg.url
            if nats_server is not None:
                nats_server.start()
                nats_url = nats_server.url
            assert database_url is not None
            assert nats_url is not None
            say(json.dumps(asyncio.run(run(database_url, nats_url, args.events)), indent=2))
        finally:
            if nats_server is not None:
                nats_server.stop()
            if pg is not None:
                pg.stop()


if __name__ == "__main__":
    main()
