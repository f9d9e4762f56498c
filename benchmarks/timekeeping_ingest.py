"""Batch ingest of time entries through the REST gateway, with every service up.

    .venv/bin/python benchmarks/timekeeping_ingest.py [--entries 20000] [--batch 1000]
        [--clients 2] [--consultants 200]

Each entry goes the whole way: HTTP JSON -> gateway -> gRPC -> timekeeping, which validates it
against its master-data projection, stores it PENDING_APPROVAL and writes its
time.entry.submitted event to the outbox, all in one transaction per batch. Target: at least
5,000 entries/s on 2 cores. Printed beside it, measured in the same run on the same database:
plain asyncpg executemany into an unindexed copy of the entries table, and the ratio.

Afterwards the run checks what it claims: every entry stored, PENDING_APPROVAL, with one
outbox row each.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
import httpx

from accrue.testing.stack import Stack

sys.path.insert(0, str(Path(__file__).resolve().parent))

from timekeeping_common import (
    CpuMeter,
    Servers,
    build_firm,
    cpu_report,
    entries,
    others_share,
    raw_executemany_rate,
    say,
    servers,
    stack_share,
    start_stack,
    summary_ms,
    wait_for_projection,
)

TARGET = 5000.0


async def ingest(s: Servers, stack: Stack, args: argparse.Namespace) -> None:
    gateway, database_url = stack.gateway_url, s.database_url
    async with httpx.AsyncClient(base_url=gateway, timeout=120) as client:
        firm = await build_firm(client, args.consultants)
        await wait_for_projection(database_url, firm)
        # Warm-up (connections, caches, JIT of the gateway's routes): not counted.
        warm = entries(firm, args.batch, offset=0, tag="warm-")
        await client.post("/v1/time-entries:batchSubmit", json={"timeEntries": warm})

    offset = args.batch
    bodies = [
        {"timeEntries": entries(firm, args.batch, offset=offset + i * args.batch, tag="run-")}
        for i in range(args.entries // args.batch)
    ]
    queue: asyncio.Queue[dict[str, object]] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    latencies: list[float] = []
    statuses: dict[str, int] = {}

    async def client_loop() -> None:
        async with httpx.AsyncClient(base_url=gateway, timeout=120) as client:
            while not queue.empty():
                body = queue.get_nowait()
                start = time.perf_counter()
                response = await client.post("/v1/time-entries:batchSubmit", json=body)
                latencies.append(time.perf_counter() - start)
                if response.status_code != 200:
                    raise RuntimeError(f"batch failed: {response.status_code} {response.text[:300]}")
                for result in response.json()["results"]:
                    status = result["timeEntry"]["status"]
                    statuses[status] = statuses.get(status, 0) + 1

    meter = CpuMeter(s, stack)
    meter.start()
    start = time.perf_counter()
    await asyncio.gather(*(client_loop() for _ in range(args.clients)))
    elapsed = time.perf_counter() - start
    cpu = meter.stop()
    sent = len(bodies) * args.batch
    rate = sent / elapsed

    conn = await asyncpg.connect(database_url)
    try:
        stored = await conn.fetchval(
            "SELECT count(*) FROM timekeeping.time_entries WHERE status = 'PENDING_APPROVAL' "
            "AND external_ref_id LIKE 'run-%'"
        )
        events = await conn.fetchval(
            "SELECT count(*) FROM timekeeping.outbox WHERE event_type = 'time.entry.submitted'"
        )
    finally:
        await conn.close()
    raw = await raw_executemany_rate(database_url, 20000)

    say(f"\n== timekeeping batch ingest via REST ({dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC) ==")
    say(f"machine: {os.cpu_count()} cores")
    say(
        f"entries: {sent} in {len(bodies)} batches of {args.batch}, {args.clients} concurrent client(s), "
        f"{args.consultants} consultants x {len(firm.project_ids)} projects"
    )
    say(f"outcome: {statuses}; stored PENDING_APPROVAL: {stored}; submitted events in the outbox: {events}")
    say(f"batch latency: {summary_ms(latencies)}")
    say(cpu_report(cpu, elapsed))
    say(
        f"ingest rate: {rate:,.0f} entries/s (target >= {TARGET:,.0f}) -> "
        f"{'PASS' if rate >= TARGET else 'FAIL'}"
    )
    cores, others = stack_share(cpu, elapsed), others_share(cpu, elapsed)
    say(
        f"machine share: the system under test used {cores:.2f} cores on average, other users' work "
        f"{others:.2f}; at the same CPU cost per entry, 2 idle cores would give "
        f"~{rate * 2 / cores:,.0f} entries/s (a projection, not a measurement)"
    )
    say(f"raw limit: asyncpg executemany {raw:,.0f} rows/s into an unindexed copy of time_entries")
    say(f"ratio: ingest is {rate / raw:.1%} of the raw insert rate ({raw / rate:.1f}x slower)")
    if statuses.get("TIME_ENTRY_STATUS_PENDING_APPROVAL", 0) != sent or stored != sent:
        raise SystemExit("some entries were not stored as PENDING_APPROVAL: the figures above do not count")
    if events != sent + args.batch:
        raise SystemExit(f"expected {sent + args.batch} submitted events in the outbox, found {events}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--consultants", type=int, default=200)
    args = parser.parse_args()
    with servers() as s, tempfile.TemporaryDirectory(prefix="bench-logs-") as logs:
        say(f"servers: {s.description}; starting the stack (logs in {logs}) ...")
        stack = start_stack(s, Path(logs))
        try:
            asyncio.run(ingest(s, stack, args))
        except BaseException:
            sys.stderr.write(stack.report(20) + "\n")
            raise
        finally:
            stack.down()


if __name__ == "__main__":
    main()
