"""Benchmark: what the audit trail costs a state-changing transaction, on the database alone.

    .venv/bin/python benchmarks/audit_append.py [--transactions 500] [--concurrency 1,8]

Starts an embedded PostgreSQL (or uses ACCRUE_DATABASE_URL) and times `--transactions`
transactions, one after another and from several connections at once, all on ONE legal entity
(the worst case for a per-entity chain, and the submit benchmark's firm):

- plain:  INSERT a row + COMMIT (the change without any audit);
- sealed: the same + `AuditLog.append` as it is now (a plain INSERT; the sealer links later);
- sealed+sealer: "sealed" while the service's sealer runs in the same process (as it does in a
  service), linking as it goes;
- locked: the same + the append as it was before the sealer (the chain's advisory lock, then an
  INSERT that reads the chain's head and hashes, held until COMMIT), kept here verbatim as SQL.

Then it times the sealer linking everything the "sealed" runs appended, and verifies the chain.
Latencies are per transaction (BEGIN to COMMIT returned), from the client's side.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from accrue.db import create_engine
from accrue.db.audit import GENESIS, AuditLog, AuditRecord, AuditSealer, audit_table, verify

SCHEMA = "bench_audit"
V1 = "bench_audit_v1"
AT = dt.datetime(2027, 2, 1, 9, 0, tzinfo=dt.UTC)

metadata = sa.MetaData(schema=SCHEMA)
audit = audit_table(metadata)
changes = sa.Table(
    "changes",
    metadata,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("payload", sa.Text, nullable=False),
)


def say(text: str) -> None:
    """A line of the report on stdout."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def record(n: int) -> AuditRecord:
    return AuditRecord(
        operation="accrue.timekeeping.v1.TimekeepingService/SubmitTimeEntry",
        resource_type="time_entry",
        resource_id=str(uuid.uuid4()),
        outcome="OK",
        occurred_at=AT,
        principal_subject=f"consultant-{n % 50}",
        principal_roles=("consultant",),
        legal_entity_id="le-uk",
        request_id=f"req-{n}",
        changes={"status": {"before": None, "after": "PENDING_APPROVAL"}, "hours": {"after": "7.50"}},
    )


async def _change(conn: AsyncConnection) -> None:
    await conn.execute(sa.insert(changes).values(id=uuid.uuid4(), payload="x" * 200))


async def plain(conn: AsyncConnection, n: int) -> None:
    await _change(conn)


async def sealed(conn: AsyncConnection, n: int) -> None:
    await _change(conn)
    await AuditLog(conn, audit).append(record(n))


LOCKED_SQL = sa.text(
    f"""INSERT INTO {V1}.audit_events (legal_entity_id, principal_subject, principal_roles,
            principal_client, operation, resource_type, resource_id, request_id, idempotency_key,
            outcome, changes, occurred_at, prev_hash, hash)
        SELECT :le, :subject, :roles, '', :operation, :rtype, :rid, :req, '', :outcome,
               CAST(:changes AS jsonb), :at, h.prev, sha256(h.prev || :canonical)
        FROM (SELECT coalesce((SELECT hash FROM {V1}.audit_events WHERE legal_entity_id = :le
                               ORDER BY seq DESC LIMIT 1), :genesis) AS prev) h"""
)


async def locked(conn: AsyncConnection, n: int) -> None:
    # The pre-sealer append (commit 295ad4d's AuditLog.append): lock, then head + hash + insert.
    await _change(conn)
    r = record(n)
    await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(12345, 678)))
    await conn.execute(
        LOCKED_SQL,
        {
            "le": r.legal_entity_id,
            "subject": r.principal_subject,
            "roles": list(r.principal_roles),
            "operation": r.operation,
            "rtype": r.resource_type,
            "rid": r.resource_id,
            "req": r.request_id,
            "outcome": r.outcome,
            "changes": json.dumps(r.changes),
            "at": r.occurred_at,
            "canonical": r.canonical(),
            "genesis": GENESIS,
        },
    )


Body = Callable[[AsyncConnection, int], Awaitable[None]]


async def timed(engine: AsyncEngine, body: Body, total: int, concurrency: int) -> tuple[list[float], float]:
    latencies: list[float] = []
    counter = iter(range(total))

    async def worker() -> None:
        async with engine.connect() as conn:
            for n in counter:
                start = time.perf_counter()
                async with conn.begin():
                    await body(conn, n)
                latencies.append((time.perf_counter() - start) * 1000)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, time.perf_counter() - start


def line(name: str, concurrency: int, latencies: list[float], elapsed: float) -> str:
    q = statistics.quantiles(latencies, n=100)
    return (
        f"{name:13} x{concurrency:<3} {len(latencies) / elapsed:8.0f} tx/s   "
        f"p50 {statistics.median(latencies):6.2f} ms   p99 {q[98]:7.2f} ms   max {max(latencies):7.2f} ms"
    )


async def run(url: str, transactions: int, concurrencies: list[int], rounds: int) -> None:
    engine = create_engine(url, pool_size=max(concurrencies) + 2)
    async with engine.begin() as conn:
        for schema in (SCHEMA, V1):
            await conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
            await conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
        await conn.run_sync(metadata.create_all)
        await conn.execute(
            sa.text(
                f"""CREATE TABLE {V1}.audit_events (seq bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
                    legal_entity_id text NOT NULL, principal_subject text NOT NULL,
                    principal_roles text[] NOT NULL, principal_client text NOT NULL,
                    operation text NOT NULL, resource_type text NOT NULL, resource_id text NOT NULL,
                    request_id text NOT NULL, idempotency_key text NOT NULL, outcome text NOT NULL,
                    changes jsonb NOT NULL, occurred_at timestamptz NOT NULL,
                    prev_hash bytea NOT NULL, hash bytea NOT NULL)"""
            )
        )
        await conn.execute(sa.text(f"CREATE UNIQUE INDEX ON {V1}.audit_events (legal_entity_id, seq)"))
        await conn.execute(sa.text(f"CREATE UNIQUE INDEX ON {V1}.audit_events (legal_entity_id, prev_hash)"))
    # Warm the pool and the statement caches.
    for warm in (plain, sealed, locked):
        await timed(engine, warm, 50, max(concurrencies))
    say(f"{transactions} transactions each, one legal entity; latency per transaction (BEGIN..COMMIT)")
    say(f"modes interleaved, {rounds} rounds; the summary is each figure's median over the rounds")
    results: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
    for round_ in range(1, rounds + 1):
        for concurrency in concurrencies:
            modes: list[tuple[str, Body]] = [
                ("plain", plain),
                ("sealed", sealed),
                ("locked", locked),
                ("sealed+sealer", sealed),
            ]
            for name, body in modes:
                running: asyncio.Task[None] | None = None
                if name == "sealed+sealer":  # the sealer runs in the same process, linking as it goes
                    running = asyncio.create_task(AuditSealer(engine, audit).run())
                try:
                    latencies, elapsed = await timed(engine, body, transactions, concurrency)
                finally:
                    if running is not None:
                        running.cancel()
                        await asyncio.gather(running, return_exceptions=True)
                say(f"round {round_}: " + line(name, concurrency, latencies, elapsed))
                q = statistics.quantiles(latencies, n=100)
                results.setdefault((name, concurrency), []).append(
                    (len(latencies) / elapsed, statistics.median(latencies), q[98])
                )
    say("summary (medians over the rounds):")
    for (name, concurrency), figures in results.items():
        rate, p50, p99 = (statistics.median(f[i] for f in figures) for i in range(3))
        say(f"{name:13} x{concurrency:<3} {rate:8.0f} tx/s   p50 {p50:6.2f} ms   p99 {p99:7.2f} ms")
    sealer = AuditSealer(engine, audit, batch_size=1000)
    start = time.perf_counter()
    linked = 0
    while (n := await sealer.seal()) > 0:
        linked += n
    elapsed = time.perf_counter() - start
    result = await verify(engine, audit)
    say(
        f"sealer, the rest at once: {linked} events linked in {elapsed * 1000:.0f} ms "
        f"({linked / max(elapsed, 1e-9):.0f}/s); "
        f"verify: ok={result.ok}, {result.rows} links, {result.pending} unsealed"
    )
    await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transactions", type=int, default=500)
    parser.add_argument("--concurrency", default="1,8", help="comma-separated connection counts")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    url = os.environ.get("ACCRUE_DATABASE_URL")
    if url:
        asyncio.run(run(url, args.transactions, concurrencies, args.rounds))
        return
    from accrue.embedded import EmbeddedPostgres

    with (
        tempfile.TemporaryDirectory(prefix="bench-pg-") as tmp,
        EmbeddedPostgres(Path(tmp) / "pg", cleanup="delete") as pg,
    ):
        asyncio.run(run(pg.url, args.transactions, concurrencies, args.rounds))


if __name__ == "__main__":
    main()
