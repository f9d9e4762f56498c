"""Benchmark: master-data sync through the REST gateway, beside the machine's raw limit.

    .venv/bin/python benchmarks/masterdata_batch_upsert.py [--consultants 10000] [--assignments 100000]
                                                          [--batch 500] [--concurrency 4]

What it measures (the target of issue 3: >= 3,000 rows/s on 2 cores):

1. `POST /v1/consultants:batchUpsert` of 10,000 consultants, then
   `POST /v1/assignments:batchUpsert` of 100,000 assignments, in batches of 500, over REST
   through the gateway into master data, on a real PostgreSQL and NATS JetStream. Rows name
   their references the way a system of record does, by external_ref (legal entity, labor
   category, manager, project, consultant), so resolution is part of the cost. Every row is
   checked, stored with its history row and its event in the outbox, and relayed to JetStream
   by the outbox relay while the benchmark runs.
2. The same batches sent again: every row UNCHANGED, nothing written (the idempotent re-sync).
3. The raw limits, in the same run on the same servers: asyncpg `executemany` of the same number
   of rows of a similar shape (uuid, text, date and JSONB columns) into a scratch table, and
   JetStream publishing (500 in flight, as the relay does) into a scratch stream. The second
   bounds how fast events can leave the outbox: the embedded NATS fsyncs every write
   (`sync_interval: always`, see docs/events.md).

The machine is shared and noisy, so the figure that travels is the ratio to the raw limit.
Master data and the gateway run as their own processes (as in production); the other services
are not started, so their consumers do not compete for the two cores.

Servers: ACCRUE_DATABASE_URL / ACCRUE_NATS_URL when set, else embedded ones in a temp dir.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import secrets
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import nats
import psutil

from accrue.db.engine import asyncpg_dsn
from accrue.embedded import EmbeddedNats, EmbeddedPostgres
from accrue.embedded.stack import (
    GATEWAY,
    PortAssignment,
    generate_nats_passwords,
    internal_keys_dir,
    stack_processes,
)
from accrue.eventbus.permissions import ADMIN_USER, render_authorization
from accrue.testing.identity import make_keys
from accrue.testing.stack import Stack

sys.path.insert(0, str(Path(__file__).resolve().parent))

from identity_common import admin_headers

SYSTEM = "bench-hr"


def say(text: str = "") -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


@dataclass
class Servers:
    database_url: str
    nats_url: str
    # Process ids of the embedded servers, for the CPU account (None for servers from the env).
    postgres_pid: int | None = None
    nats_pid: int | None = None
    # Each service's NATS password (embedded NATS only); nats_url then carries the admin user's.
    nats_passwords: dict[str, str] | None = None


@contextlib.contextmanager
def servers() -> Iterator[Servers]:
    """The environment's servers, or embedded ones that live for the run."""
    db, nats_url = os.environ.get("ACCRUE_DATABASE_URL"), os.environ.get("ACCRUE_NATS_URL")
    with contextlib.ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="accrue-bench-")))
        found = Servers(db or "", nats_url or "")
        if not db:
            # Durable (fsync on), as `accrue run` runs it: the raw limit below pays the same.
            pg = stack.enter_context(EmbeddedPostgres(root / "pg", cleanup="delete"))
            found.database_url, found.postgres_pid = pg.url, pg.pid
        if not nats_url:
            # A user per service and no anonymous clients, as `accrue run`'s NATS.
            passwords = generate_nats_passwords()
            admin = secrets.token_urlsafe(24)
            authorization = render_authorization(passwords, admin_password=admin)
            server = stack.enter_context(EmbeddedNats(root / "nats", authorization=authorization))
            found.nats_url = f"nats://{ADMIN_USER}:{admin}@{server.host}:{server.port}"
            found.nats_pid, found.nats_passwords = server.pid, passwords
        yield found


class CpuMeter:
    """CPU seconds (user + system) used by each named process and its children.

    The benchmark's own process ("client") is counted alone: the servers are its children.
    """

    def __init__(self, roots: dict[str, int | None]) -> None:
        self._roots = {name: pid for name, pid in roots.items() if pid}

    def snapshot(self) -> dict[str, float]:
        used: dict[str, float] = {}
        for name, pid in self._roots.items():
            try:
                root = psutil.Process(pid)
                total = 0.0
                family = [root] if pid == os.getpid() else [root, *root.children(recursive=True)]
                for proc in family:
                    with contextlib.suppress(psutil.Error):
                        times = proc.cpu_times()
                        total += times.user + times.system
                used[name] = total
            except psutil.Error:
                continue
        return used


@contextlib.contextmanager
def masterdata_and_gateway(
    database_url: str, nats_url: str, log_dir: Path, nats_passwords: dict[str, str] | None = None
) -> Iterator[Stack]:
    """Master data and the gateway as processes on free ports, migrated and ready; the gateway
    verifies tokens from its local issuer and signs internal ones, as in `accrue run`."""
    ports = PortAssignment.free()
    identity_dir = log_dir / "identity"
    make_keys(internal_keys_dir(identity_dir))
    processes = [
        p
        for p in stack_processes(
            database_url=database_url,
            nats_url=nats_url,
            ports=ports,
            log_level="WARNING",
            identity_dir=identity_dir,
            nats_passwords=nats_passwords,
        )
        if p.name in ("masterdata", GATEWAY.name)
    ]
    backends = {"accrue.masterdata.v1.MasterDataService": ports.grpc_address("masterdata")}
    for p in processes:
        if p.name == GATEWAY.name:
            p.env["ACCRUE_GATEWAY_BACKENDS"] = json.dumps(backends)  # type: ignore[index]
    with Stack(
        processes,
        log_dir,
        ports=ports,
        database_url=database_url,
        nats_url=nats_url,
        identity_dir=identity_dir,
    ) as stack:
        yield stack


@dataclass
class Phase:
    name: str
    rows: int
    seconds: float
    outcomes: dict[str, int]

    @property
    def rate(self) -> float:
        return self.rows / self.seconds


def chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def ref(ext_id: str) -> dict[str, str]:
    return {"system": SYSTEM, "id": ext_id}


def consultant_rows(n: int, legal_entities: int, categories: int) -> list[dict[str, Any]]:
    """n consultants; the first 500 are managers, everyone else reports to one of them."""
    rows = []
    for i in range(n):
        row: dict[str, Any] = {
            "externalRef": ref(f"E{i:06d}"),
            "code": f"E{i:06d}",
            "name": f"Consultant {i}",
            "email": f"c{i}@example.com",
            "legalEntityRef": ref(f"LE{i % legal_entities}"),
            "laborCategoryRef": ref(f"LC{i % categories}"),
            "weeklyCapacityHours": "40",
            "costRate": f"{60 + i % 40}.00",
            "activeFrom": "2020-01-01",
        }
        if i >= 500:
            row["managerRef"] = ref(f"E{i % 500:06d}")
        rows.append(row)
    return rows


def assignment_rows(n: int, consultants: int, projects: int, categories: int) -> list[dict[str, Any]]:
    """n assignments spread over the projects and consultants, each by external ref."""
    return [
        {
            "externalRef": ref(f"A{i:07d}"),
            "projectRef": ref(f"P{i % projects:05d}"),
            "consultantRef": ref(f"E{(i * 7) % consultants:06d}"),
            "laborCategoryRef": ref(f"LC{i % categories}"),
            "startDate": "2026-01-01",
            "endDate": "2026-12-31",
            "allocationPercent": str(10 + i % 90),
            "billable": i % 10 != 0,
        }
        for i in range(n)
    ]


async def upsert(
    client: httpx.AsyncClient,
    collection: str,
    field: str,
    rows: Sequence[dict[str, Any]],
    batch: int,
    concurrency: int,
) -> Phase:
    """Send rows in batches, `concurrency` in flight; every reply is checked."""
    bodies = [json.dumps({field: list(chunk)}).encode() for chunk in chunks(rows, batch)]
    outcomes: dict[str, int] = {}
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)

    async def worker() -> None:
        while not queue.empty():
            body = queue.get_nowait()
            response = await client.post(
                f"/v1/{collection}:batchUpsert", content=body, headers={"content-type": "application/json"}
            )
            if response.status_code != 200:
                raise RuntimeError(f"{collection}: HTTP {response.status_code}: {response.text[:500]}")
            for result in response.json()["results"]:
                outcome = result["outcome"].removeprefix("UPSERT_OUTCOME_")
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
                if outcome == "REJECTED":
                    raise RuntimeError(f"{collection}: a row was rejected: {result['reasons']}")

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Phase(collection, len(rows), time.perf_counter() - start, outcomes)


async def setup(client: httpx.AsyncClient, legal_entities: int, categories: int, projects: int) -> None:
    """The firm the synced rows refer to: legal entities, roles, a customer, projects."""
    await upsert(
        client,
        "legal-entities",
        "legalEntities",
        [
            {"externalRef": ref(f"LE{i}"), "code": f"LE{i}", "name": f"Entity {i}", "baseCurrency": c}
            for i, c in enumerate(["GBP", "EUR", "USD"][:legal_entities])
        ],
        500,
        1,
    )
    await upsert(
        client,
        "labor-categories",
        "laborCategories",
        [{"externalRef": ref(f"LC{i}"), "code": f"LC{i}", "name": f"Role {i}"} for i in range(categories)],
        500,
        1,
    )
    await upsert(
        client,
        "customers",
        "customers",
        [
            {
                "externalRef": ref("CU0"),
                "code": "CU0",
                "name": "Customer",
                "legalEntityRef": ref("LE0"),
                "currency": "GBP",
            }
        ],
        500,
        1,
    )
    # Projects need a manager: the first consultant, created here and re-sent unchanged later.
    await upsert(client, "consultants", "consultants", consultant_rows(1, legal_entities, categories), 500, 1)
    await upsert(
        client,
        "projects",
        "projects",
        [
            {
                "externalRef": ref(f"P{i:05d}"),
                "code": f"P{i:05d}",
                "name": f"Project {i}",
                "customerRef": ref("CU0"),
                "legalEntityRef": ref("LE0"),
                "managerRef": ref("E000000"),
                "status": "PROJECT_STATUS_ACTIVE",
                "startDate": "2026-01-01",
            }
            for i in range(projects)
        ],
        500,
        2,
    )


async def raw_limit(database_url: str, rows: int) -> tuple[float, float]:
    """asyncpg executemany rows/s into a scratch table shaped like an entity table: committing
    every 500 rows (a batch's unit of work), and all rows in one transaction."""
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        await conn.execute(
            """CREATE TEMP TABLE bench_raw (
                   id uuid PRIMARY KEY, external_ref_system text, external_ref_id text, version int,
                   body jsonb, create_time timestamptz, project_id uuid, consultant_id uuid,
                   start_date date, end_date date, UNIQUE (external_ref_system, external_ref_id))"""
        )
        now = dt.datetime.now(dt.UTC)
        body = json.dumps(assignment_rows(1, 1, 1, 1)[0])
        records = [
            (
                uuid.uuid4(),
                SYSTEM,
                f"R{i:07d}",
                1,
                body,
                now,
                uuid.uuid4(),
                uuid.uuid4(),
                dt.date(2026, 1, 1),
                dt.date(2026, 12, 31),
            )
            for i in range(rows)
        ]
        insert = "INSERT INTO bench_raw VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        start = time.perf_counter()
        for chunk in chunks(records, 500):
            async with conn.transaction():
                await conn.executemany(insert, chunk)
        per_batch = rows / (time.perf_counter() - start)
        await conn.execute("TRUNCATE bench_raw")
        start = time.perf_counter()
        async with conn.transaction():
            await conn.executemany(insert, records)
        return per_batch, rows / (time.perf_counter() - start)
    finally:
        await conn.close()


async def raw_publish_limit(nats_url: str, messages: int) -> float:
    """JetStream publishes/s into a scratch file stream, 500 in flight, as the outbox relay sends."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await js.add_stream(name="BENCH_RAW", subjects=["bench.raw.>"])
        payload = b"x" * 400
        start = time.perf_counter()
        for base in range(0, messages, 500):
            futures = [
                await js.publish_async(f"bench.raw.{i}", payload, headers={"Nats-Msg-Id": f"m{i}"})
                for i in range(base, min(base + 500, messages))
            ]
            await asyncio.gather(*futures)
        rate = messages / (time.perf_counter() - start)
        await js.delete_stream("BENCH_RAW")
        return rate
    finally:
        await nc.close()


async def pending_events(database_url: str) -> int:
    """Committed events the relay has not published yet."""
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        return int(await conn.fetchval("SELECT count(*) FROM masterdata.outbox WHERE published_at IS NULL"))
    finally:
        await conn.close()


async def wait_for_relay(database_url: str, limit: float = 600.0) -> float:
    """Seconds until the outbox relay has published everything to JetStream."""
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    start = time.perf_counter()
    try:
        while time.perf_counter() - start < limit:
            pending = await conn.fetchval("SELECT count(*) FROM masterdata.outbox WHERE published_at IS NULL")
            if pending == 0:
                return time.perf_counter() - start
            await asyncio.sleep(0.5)
        raise RuntimeError("the outbox relay did not catch up")
    finally:
        await conn.close()


async def counts(database_url: str) -> dict[str, int]:
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        return {
            table: int(await conn.fetchval(f"SELECT count(*) FROM masterdata.{table}"))
            for table in ("consultants", "assignments", "changes", "outbox")
        }
    finally:
        await conn.close()


async def run(
    args: argparse.Namespace,
    database_url: str,
    nats_url: str,
    gateway_url: str,
    headers: dict[str, str],
    meter: CpuMeter,
) -> None:
    # The machine is shared: the load average before the run says how much of it others used.
    load_before = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    legal_entities, categories, projects = 3, 8, 2000
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
    async with httpx.AsyncClient(base_url=gateway_url, headers=headers, timeout=120, limits=limits) as client:
        await setup(client, legal_entities, categories, projects)
        consultants = consultant_rows(args.consultants, legal_entities, categories)
        assignments = assignment_rows(args.assignments, args.consultants, projects, categories)

        # The managers first (everyone else names one of them), then the rest in parallel.
        cpu_before = meter.snapshot()
        start = time.perf_counter()
        first = await upsert(client, "consultants", "consultants", consultants[:500], args.batch, 1)
        rest = await upsert(
            client, "consultants", "consultants", consultants[500:], args.batch, args.concurrency
        )
        people = Phase(
            "consultants",
            args.consultants,
            time.perf_counter() - start,
            {
                k: first.outcomes.get(k, 0) + rest.outcomes.get(k, 0)
                for k in {*first.outcomes, *rest.outcomes}
            },
        )
        work = await upsert(client, "assignments", "assignments", assignments, args.batch, args.concurrency)
        cpu_after = meter.snapshot()
        pending_after_sync = await pending_events(database_url)
        relay_tail = await wait_for_relay(database_url)
        cpu_relayed = meter.snapshot()
        relayed = people.seconds + work.seconds + relay_tail

        resent = await upsert(client, "assignments", "assignments", assignments, args.batch, args.concurrency)
    stored = await counts(database_url)
    raw, raw_one_transaction = await raw_limit(database_url, args.assignments)
    raw_js = await raw_publish_limit(nats_url, 20_000)

    total_rows = people.rows + work.rows
    total_seconds = people.seconds + work.seconds
    rate = total_rows / total_seconds
    report = [
        ("date", f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, load {load_before}"),
        ("batch / in flight", f"{args.batch} rows / {args.concurrency} requests"),
        *((phase.name, _phase(phase)) for phase in (people, work)),
        ("sync total", f"{_phase(Phase('', total_rows, total_seconds, {}))} (target >= 3000)"),
        ("re-sync (unchanged)", _phase(resent)),
        ("raw asyncpg limit", f"{raw:7.0f} rows/s (executemany, 500 per transaction, same database)"),
        ("  in one transaction", f"{raw_one_transaction:7.0f} rows/s (executemany of every row, one commit)"),
        ("ratio sync / raw", f"{rate / raw:.3f}"),
        ("relay tail", f"{relay_tail:6.1f} s after the last reply until every event was on JetStream"),
        (
            "events relayed",
            f"{total_rows / relayed:7.0f} events/s from the first request to the last publish",
        ),
        ("raw JetStream limit", f"{raw_js:7.0f} msg/s (500 in flight, same NATS server)"),
        ("ratio relay / raw", f"{total_rows / relayed / raw_js:.2f}"),
        ("stored", str(stored)),
    ]
    cpu = {name: cpu_after[name] - cpu_before.get(name, 0.0) for name in cpu_after}
    if cpu:
        share = ", ".join(f"{name} {seconds * 1e6 / total_rows:.0f}" for name, seconds in cpu.items())
        report.append(
            (
                "CPU during the sync",
                f"{sum(cpu.values()):.1f} s of {total_seconds * (os.cpu_count() or 1):.1f} s available; "
                f"µs per row: {share}",
            )
        )
    relay_cpu = cpu_relayed.get("masterdata", 0.0) - cpu_after.get("masterdata", 0.0)
    if pending_after_sync:
        report.append(
            (
                "relay CPU",
                f"{relay_cpu * 1e6 / pending_after_sync:.0f} µs of master data's CPU per event published "
                f"(measured over the {pending_after_sync} events left after the sync)",
            )
        )
    for label, text in report:
        say(f"{label:<21}{text}")
    if rate < 3000:
        say("BELOW TARGET")


def _phase(phase: Phase) -> str:
    return f"{phase.rows:>7} rows in {phase.seconds:6.1f} s = {phase.rate:7.0f} rows/s {phase.outcomes or ''}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--consultants", type=int, default=10_000)
    parser.add_argument("--assignments", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    if args.consultants < 500:
        parser.error("--consultants must be at least 500 (the first 500 are the managers)")
    with contextlib.ExitStack() as resources:
        found = resources.enter_context(servers())
        logs = resources.enter_context(tempfile.TemporaryDirectory(prefix="accrue-bench-logs-"))
        stack = resources.enter_context(
            masterdata_and_gateway(found.database_url, found.nats_url, Path(logs), found.nats_passwords)
        )
        say(f"master data and gateway up at {stack.gateway_url}; logs in {logs}")
        meter = CpuMeter(
            {
                "client": os.getpid(),
                "gateway": stack.pid(GATEWAY.name),
                "masterdata": stack.pid("masterdata"),
                "postgres": found.postgres_pid,
                "nats": found.nats_pid,
            }
        )
        headers = admin_headers(stack)  # a local administrator's token from the gateway's issuer
        asyncio.run(run(args, found.database_url, found.nats_url, stack.gateway_url, headers, meter))


if __name__ == "__main__":
    main()
