"""Batch ingest of time entries through the REST gateway, with every service up.

    .venv/bin/python benchmarks/timekeeping_ingest.py [--entries 20000] [--batch 1000]
        [--clients 2] [--consultants 200] [--auth both|on|off]

Each entry goes the whole way: HTTP JSON -> gateway -> gRPC -> timekeeping, which validates it
against its master-data projection, stores it PENDING_APPROVAL and writes its
time.entry.submitted event to the outbox, all in one transaction per batch. Target: at least
5,000 entries/s on 2 cores. Printed beside it, measured in the same run on the same database:
plain asyncpg executemany into an unindexed copy of the entries table, and the ratio.

Afterwards the run checks what it claims: every entry stored, PENDING_APPROVAL, with one
outbox row each.

Every request carries a bearer token from the stack's local issuer (a local administrator). By
default the run measures twice, each time on servers of its own: auth ON (the product as it
ships) and auth OFF (benchmarks/identity_off_common.py, a measurement device that replaces
verification with a pass-through), then prints them side by side.
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
from typing import Any

import asyncpg
import httpx

from accrue.embedded.stack import module_command
from accrue.testing.stack import Stack

sys.path.insert(0, str(Path(__file__).resolve().parent))

from identity_common import AUTH_VARIANTS, admin_headers, auth_off_command, check_auth
from timekeeping_common import (
    CpuMeter,
    Servers,
    build_firm,
    cpu_report,
    entries,
    others_share,
    percentile,
    raw_executemany_rate,
    say,
    servers,
    stack_share,
    start_stack,
    summary_ms,
    wait_for_projection,
)

TARGET = 5000.0


async def ingest(s: Servers, stack: Stack, args: argparse.Namespace, variant: str) -> dict[str, Any]:
    gateway, database_url = stack.gateway_url, s.database_url
    checked = check_auth(gateway, variant)
    headers = admin_headers(stack)
    async with httpx.AsyncClient(base_url=gateway, headers=headers, timeout=120) as client:
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
        async with httpx.AsyncClient(base_url=gateway, headers=headers, timeout=120) as client:
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

    say(
        f"\n== timekeeping batch ingest via REST, auth {variant.upper()} "
        f"({dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC) =="
    )
    say(f"machine: {os.cpu_count()} cores; {checked}")
    say(
        f"entries: {sent} in {len(bodies)} batches of {args.batch}, {args.clients} concurrent client(s), "
        f"{args.consultants} consultants x {len(firm.project_ids)} projects"
    )
    say(f"outcome: {statuses}; stored PENDING_APPROVAL: {stored}; submitted events in the outbox: {events}")
    say(f"batch latency: {summary_ms(latencies)}")
    say(cpu_report(cpu, elapsed))
    per_entry = {name: cpu.get(name, 0.0) / sent * 1e6 for name in ("gateway", "timekeeping", "postgres")}
    say("CPU per entry: " + ", ".join(f"{name} {us:.0f} µs" for name, us in per_entry.items()))
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
    problems = []
    if statuses.get("TIME_ENTRY_STATUS_PENDING_APPROVAL", 0) != sent or stored != sent:
        problems.append("some entries were not stored as PENDING_APPROVAL")
    if events != sent + args.batch:
        problems.append(f"expected {sent + args.batch} submitted events in the outbox, found {events}")
    return {
        "rate": rate,
        "ratio": rate / raw,
        "p50": percentile([x * 1000 for x in latencies], 50),
        "per_entry": per_entry,
        "others": others,
        "problems": problems,
    }


def compare(results: dict[str, dict[str, Any]]) -> None:
    """ON beside OFF; CPU per entry is the steadier figure on a shared machine."""
    on, off = results["on"], results["off"]
    rows = [f"{'':<30}{'auth ON':>12}{'auth OFF':>12}{'ON vs OFF':>12}"]
    rows.append(
        f"{'entries/s':<30}{on['rate']:>12,.0f}{off['rate']:>12,.0f}{on['rate'] / off['rate']:>12.1%}"
    )
    rows.append(f"{'ratio to raw executemany':<30}{on['ratio']:>12.1%}{off['ratio']:>12.1%}")
    rows.append(f"{'batch latency p50 (ms)':<30}{on['p50']:>12.1f}{off['p50']:>12.1f}")
    for name in ("gateway", "timekeeping", "postgres"):
        a, b = on["per_entry"][name], off["per_entry"][name]
        rows.append(f"{'CPU/entry ' + name + ' (µs)':<30}{a:>12.0f}{b:>12.0f}{a - b:>+12.0f}")
    rows.append(f"{'other work (cores)':<30}{on['others']:>12.2f}{off['others']:>12.2f}")
    say("\n== identity cost, batch ingest: auth ON beside OFF (same run, servers of their own) ==", *rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--consultants", type=int, default=200)
    parser.add_argument(
        "--auth",
        choices=("both", "on", "off"),
        default="both",
        help="identity ON (real tokens), OFF (benchmarks/identity_off_common.py), or both in turn",
    )
    args = parser.parse_args()
    results = {}
    for variant in AUTH_VARIANTS if args.auth == "both" else (args.auth,):
        command = auth_off_command if variant == "off" else module_command
        with servers() as s, tempfile.TemporaryDirectory(prefix="bench-logs-") as logs:
            say(f"[auth {variant.upper()}] servers: {s.description}; starting the stack (logs in {logs}) ...")
            stack = start_stack(s, Path(logs), command)
            try:
                results[variant] = asyncio.run(ingest(s, stack, args, variant))
            except BaseException:
                sys.stderr.write(stack.report(20) + "\n")
                raise
            finally:
                stack.down()
    if len(results) == 2:
        compare(results)
    problems = [f"auth {v}: {p}" for v, r in results.items() for p in r["problems"]]
    if problems:
        raise SystemExit("; ".join(problems) + ": the figures above do not count")


if __name__ == "__main__":
    main()
