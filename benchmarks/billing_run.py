"""Benchmark: one billing run over 1,000,000 approved entries (target ≥ 20,000 entries/s).

    .venv/bin/python benchmarks/billing_run.py [--entries 1000000] [--projects 1000]

Starts an embedded PostgreSQL unless ACCRUE_DATABASE_URL is set (the run needs no NATS: its
events go to the outbox, which is part of what is measured). Then:

1. migrates the billing schema, writes the master data a run reads into billing's projection
   (contracts with T&M, foreign-currency and CAPPED lines, a rate card with a mid-month rate
   change and consultant overrides, VAT and an FX rate) and seeds the ledger with COPY;
2. measures the machine's raw limit on the same database in the same run: asyncpg executemany
   of ledger-shaped rows into a scratch table (and COPY, for reference);
3. runs `Billing.run` for the month over every legal entity in a child process, so the peak
   RSS reported is the run's own, and checks the result (every entry billed or in an
   exception, invoices adding up).

It prints entries/s, the raw rate and their ratio, peak RSS and the counts.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

PERIOD = ("2026-11-01", "2026-11-30")
# The embedded server's settings for the benchmark (see main).
SERVER_SETTINGS = {"shared_buffers": "2GB", "max_wal_size": "8GB", "checkpoint_timeout": "30min"}


def say(text: str, **_: object) -> None:
    """A line of the report on stdout."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


CONSULTANTS = 200
ROLES = 4


def _ids(prefix: str, n: int) -> list[str]:
    return [str(uuid.UUID(int=hash((prefix, i)) & ((1 << 128) - 1))) for i in range(n)]


async def seed(url: str, entries: int, projects: int) -> dict[str, Any]:
    """Schema, master data in the projection, and the ledger by COPY."""
    import asyncpg

    from accrue.db import asyncpg_dsn, create_engine
    from accrue.masterdata.v1 import resources_pb2 as md
    from accrue.mdprojection import ProjectionStore
    from accrue.services.billing.adapters import tables
    from accrue.services.billing.bootstrap import migrate
    from accrue.services.billing.settings import BillingSettings

    await migrate(BillingSettings(database_url=url, nats_url="nats://unused:4222"))
    rng = random.Random(5)
    roles = _ids("role", ROLES)
    consultants = _ids("consultant", CONSULTANTS)
    legal_entities = _ids("le", 2)
    customer = "customer-1"
    rates = [
        md.RateCardEntry(
            id=f"rate-{r}-a",
            labor_category_id=role,
            rate=f"{120 + 10 * r}.00",
            effective_from="2026-01-01",
            effective_to="2026-11-14",
        )
        for r, role in enumerate(roles)
    ] + [
        md.RateCardEntry(
            id=f"rate-{r}-b", labor_category_id=role, rate=f"{125 + 10 * r}.50", effective_from="2026-11-15"
        )
        for r, role in enumerate(roles)
    ]
    rates += [
        md.RateCardEntry(
            id=f"override-{c}",
            labor_category_id=roles[0],
            consultant_id=consultants[c],
            rate="199.99",
            effective_from="2026-01-01",
        )
        for c in range(10)
    ]
    card = md.RateCard(id="card-gbp", code="RC", currency="GBP", rates=rates, etag="1")
    project_ids = _ids("project", projects)
    engine = create_engine(url)
    async with engine.begin() as conn:
        store = ProjectionStore(conn, tables.md_projection)
        await store.upsert("rate_card", card)
        await store.upsert(
            "tax_rate", md.TaxRate(id="vat", tax_code="VAT", rate="0.20", effective_from="2020-01-01")
        )
        await store.upsert(
            "fx_rate", md.FxRate(id="fx", base="GBP", quote="EUR", rate="1.1537", effective_date="2026-11-01")
        )
        for i, project_id in enumerate(project_ids):
            # 80 % T&M in GBP, 10 % T&M in EUR (priced through FX), 10 % CAPPED.
            kind = i % 10
            line = md.ContractLine(
                id=f"line-{i}",
                project_id=project_id,
                billing_model=md.BILLING_MODEL_CAPPED if kind == 9 else md.BILLING_MODEL_TIME_AND_MATERIALS,
                rate_card_id=card.id,
                cap_amount="1000000.00" if kind == 9 else "",
                tax_code="VAT",
            )
            contract = md.Contract(
                id=f"contract-{i}",
                code=f"K{i}",
                customer_id=customer,
                currency="EUR" if kind == 8 else "GBP",
                lines=[line],
                etag="1",
            )
            await store.upsert("contract", contract)
    await engine.dispose()

    days = [dt.date(2026, 11, d) for d in range(1, 31)]
    now = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)

    def rows() -> Any:
        for n in range(entries):
            p = n % projects
            yield (
                str(uuid.UUID(int=(n << 64) | 0x4000_8000_0000_0000)),  # ids look like production ones
                project_ids[p],
                consultants[rng.randrange(CONSULTANTS)],
                roles[rng.randrange(ROLES)],
                legal_entities[p % 2],
                customer,
                days[rng.randrange(len(days))],
                Decimal(rng.randrange(1, 33)) / 4,
                True,
                now,
            )

    conn = await asyncpg.connect(asyncpg_dsn(url))
    started = time.perf_counter()
    batch: list[Any] = []
    for row in rows():
        batch.append(row)
        if len(batch) == 100_000:
            await conn.copy_records_to_table(
                "wip_entries", schema_name="billing", records=batch, columns=COLUMNS
            )
            batch = []
    if batch:
        await conn.copy_records_to_table("wip_entries", schema_name="billing", records=batch, columns=COLUMNS)
    seeded = time.perf_counter() - started
    await conn.execute("VACUUM ANALYZE billing.wip_entries")
    await conn.close()
    return {"seed_seconds": round(seeded, 2)}


COLUMNS = [
    "time_entry_id",
    "project_id",
    "consultant_id",
    "labor_category_id",
    "legal_entity_id",
    "customer_id",
    "work_date",
    "hours",
    "billable",
    "approve_time",
]


async def raw_limit(url: str, rows: int = 200_000) -> dict[str, float]:
    """The same database's raw insert rates for ledger-shaped rows: executemany and COPY."""
    import asyncpg

    from accrue.db import asyncpg_dsn

    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await conn.execute("CREATE TEMP TABLE raw (LIKE billing.wip_entries INCLUDING DEFAULTS)")
        now = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
        data = [
            (f"raw-{i}", "p", "c", "r", "le", "cu", dt.date(2026, 11, 2), Decimal("7.50"), True, now)
            for i in range(rows)
        ]
        insert = (
            f"INSERT INTO raw ({', '.join(COLUMNS)}) VALUES ({', '.join(f'${i + 1}' for i in range(10))})"
        )
        started = time.perf_counter()
        await conn.executemany(insert, data)
        executemany = rows / (time.perf_counter() - started)
        await conn.execute("TRUNCATE raw")
        started = time.perf_counter()
        await conn.copy_records_to_table("raw", records=data, columns=COLUMNS)
        copy = rows / (time.perf_counter() - started)
    finally:
        await conn.close()
    return {"executemany_rows_per_s": round(executemany), "copy_rows_per_s": round(copy)}


async def run_once(url: str) -> dict[str, Any]:
    """The measured part (in its own process): one billing run over everything seeded."""
    from accrue.db import create_engine
    from accrue.mdprojection import MasterDataReader
    from accrue.runtime.clock import system_clock
    from accrue.runtime.identity import service_principal
    from accrue.services.billing.adapters import tables
    from accrue.services.billing.adapters.unit_of_work import BillingUnitOfWork
    from accrue.services.billing.service_layer.handlers import Billing

    class NoRemote:
        """Everything the run reads is in the projection; a call to master data is a bug here."""

        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"the run asked master data for {name}")

    engine = create_engine(url)
    reader = MasterDataReader(NoRemote(), tables.md_projection)  # type: ignore[arg-type]
    app = Billing(lambda: BillingUnitOfWork(engine, reader), system_clock)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started, cpu = time.perf_counter(), time.process_time()
    result = await app.run(*PERIOD, "", by=service_principal("benchmark"))
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    async with engine.connect() as conn:
        import sqlalchemy as sa

        billed = await conn.scalar(
            sa.text("SELECT count(*) FROM billing.wip_entries WHERE invoice_id IS NOT NULL")
        )
        in_exceptions = await conn.scalar(
            sa.text("SELECT coalesce(sum(cardinality(time_entry_ids)), 0) FROM billing.billing_exceptions")
        )
        invoices = await conn.scalar(sa.text("SELECT count(*) FROM billing.invoices"))
        lines = await conn.scalar(sa.text("SELECT count(*) FROM billing.invoice_lines"))
        adds_up = await conn.scalar(
            sa.text(
                "SELECT bool_and(i.subtotal = s.amount AND i.total = s.amount + s.tax)"
                " FROM billing.invoices i"
                " JOIN (SELECT invoice_id, sum(amount) amount, sum(tax_amount) tax FROM billing.invoice_lines"
                " GROUP BY invoice_id) s ON s.invoice_id = i.id"
            )
        )
        events = await conn.scalar(sa.text("SELECT count(*) FROM billing.outbox"))
    await engine.dispose()
    return {
        "run_seconds": round(seconds, 2),
        "run_cpu_seconds": round(cpu, 2),
        "entries_billed": result.entries_billed,
        "billed_rows": billed,
        "entries_in_exceptions": in_exceptions,
        "invoices": invoices,
        "lines": lines,
        "invoices_add_up": adds_up,
        "outbox_events": events,
        "rss_before_mib": round(before / 1024),
        "peak_rss_mib": round(peak / 1024),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--projects", type=int, default=1_000)
    parser.add_argument("--run-only", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_only:
        say(json.dumps(asyncio.run(run_once(args.run_only))))
        return
    url = os.environ.get("ACCRUE_DATABASE_URL")
    if url:
        report(url, args)
        return
    from accrue.embedded import EmbeddedPostgres

    with tempfile.TemporaryDirectory(prefix="bench-pg-") as tmp:
        data = Path(tmp) / "pg"
        # The embedded server starts with PostgreSQL's defaults (128 MB of shared buffers), far
        # below what a database server on a 24 GiB machine is given; a million-row update then
        # spends its time evicting buffers. Size it like a server, then restart it.
        with EmbeddedPostgres(data, cleanup="stop") as pg:
            for name, value in SERVER_SETTINGS.items():
                asyncio.run(_admin(pg.admin_url, f"ALTER SYSTEM SET {name} = '{value}'"))
        with EmbeddedPostgres(data, cleanup="delete") as pg:
            database = f"bench_{uuid.uuid4().hex[:8]}"
            asyncio.run(_admin(pg.admin_url, f'CREATE DATABASE "{database}"'))
            report(pg.url_for(database), args, SERVER_SETTINGS)


async def _admin(url: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def report(url: str, args: argparse.Namespace, settings: dict[str, str] | None = None) -> None:
    say(f"billing run benchmark, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores")
    where = ", ".join(f"{k}={v}" for k, v in settings.items()) if settings else "as configured"
    say(f"PostgreSQL: {'embedded' if settings else 'ACCRUE_DATABASE_URL'}, {where}")
    say(f"seeding {args.entries:,} approved entries over {args.projects:,} projects ...", flush=True)
    seeded = asyncio.run(seed(url, args.entries, args.projects))
    raw = asyncio.run(raw_limit(url))
    child = subprocess.run(
        [sys.executable, __file__, "--run-only", url], capture_output=True, text=True, check=False
    )
    if child.returncode != 0:
        raise SystemExit(f"the run failed:\n{child.stderr[-4000:]}")
    result = json.loads(child.stdout.strip().splitlines()[-1])
    rate = args.entries / result["run_seconds"]
    say(f"  seeded with COPY in {seeded['seed_seconds']} s")
    say(
        f"  run: {result['run_seconds']} s for {args.entries:,} entries"
        f" = {rate:,.0f} entries/s (target 20,000)"
    )
    say(
        f"  raw limit, same database, same run: asyncpg executemany {raw['executemany_rows_per_s']:,} rows/s,"
        f" COPY {raw['copy_rows_per_s']:,} rows/s"
    )
    say(f"  ratio run / raw executemany: {rate / raw['executemany_rows_per_s']:.2f}")
    say(
        f"  the run's own CPU: {result['run_cpu_seconds']} s of {result['run_seconds']} s"
        " (the rest is PostgreSQL sorting, reading and updating the ledger, and waiting for a core)"
    )
    say(
        f"  peak RSS of the run's process: {result['peak_rss_mib']} MiB"
        f" (before the run {result['rss_before_mib']} MiB)"
    )
    say(
        f"  result: {result['entries_billed']:,} entries billed ({result['billed_rows']:,} rows marked),"
        f" {result['entries_in_exceptions']:,} in exceptions, {result['invoices']:,} invoices,"
        f" {result['lines']:,} lines, invoices add up: {result['invoices_add_up']},"
        f" {result['outbox_events']:,} events in the outbox"
    )
    if (
        result["billed_rows"] + result["entries_in_exceptions"] != args.entries
        or not result["invoices_add_up"]
    ):
        raise SystemExit("the run's result is wrong")


if __name__ == "__main__":
    main()
