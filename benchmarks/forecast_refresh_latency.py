"""Benchmark: from an approved-time event to the live forecast reflecting it, at 500 events/s
(target p99 < 500 ms).

    .venv/bin/python benchmarks/forecast_refresh_latency.py [--rate 500] [--seconds 20]

Servers as in timekeeping_common: ACCRUE_DATABASE_URL / ACCRUE_NATS_URL when set, otherwise an
embedded durable PostgreSQL (fsync on) and an embedded NATS JetStream. Then:

1. migrates and starts the forecasting service as its own process and publishes a firm's
   master data as md.* events (a legal entity, a customer, consultants, projects, a rate card,
   a T&M contract and one assignment per consultant), waiting until the forecast shows it;
2. measures the raw limits on the same servers in the same run: JetStream publish (one at a
   time, each awaiting its ack), a one-row INSERT + COMMIT through asyncpg, and asyncpg
   executemany;
3. publishes time.entry.approved events open-loop at --rate from a separate process (event i
   is sent at start + i/rate whatever happened before, and carries that instant as its
   Accrue-Occurred-At), spread over every project; one in ten goes to a probe project, 0.25 h
   each;
4. meanwhile reads the probe project's forecast through gRPC (GetForecast) every 50 ms: when its
   approved hours first cover probe event k, event k's latency is that read's return time less
   k's scheduled instant. That is the whole path: publish, JetStream, the consumer's commit
   and a forecast read. The service's own accrue_forecast_refresh_lag_seconds histogram
   (occurred-at to commit, every event) is scraped before and after and printed beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import nats

sys.path.insert(0, str(Path(__file__).resolve().parent))

from timekeeping_common import (
    bucket_quantile,
    histogram,
    percentile,
    raw_executemany_rate,
    say,
    servers,
    summary_ms,
)

from accrue.embedded.stack import without_credentials
from accrue.events.v1 import masterdata_events_pb2 as mev
from accrue.events.v1 import time_events_pb2 as tev
from accrue.forecasting.v1 import forecasting_service_pb2 as fa
from accrue.forecasting.v1 import forecasting_service_pb2_grpc as fg
from accrue.masterdata.v1 import resources_pb2 as md
from accrue.runtime.clock import system_clock
from accrue.testing import identity
from accrue.testing.identity import gateway_signer, make_keys
from accrue.timekeeping.v1 import resources_pb2 as tk
from accrue.type.v1 import types_pb2

TARGET_P99_MS = 500.0
PROBE_EVERY = 10
PROBE_HOURS = Decimal("0.25")
MONTH = "2026-11"
# Between two reads of the probe: a reader polling flat out would take a core from the consumer.
POLL = 0.05


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def headers(event_type: str, message: Any, occurred: float | None = None) -> dict[str, str]:
    when = dt.datetime.fromtimestamp(occurred if occurred is not None else time.time(), dt.UTC)
    return {
        "Nats-Msg-Id": str(uuid.uuid4()),
        "Accrue-Event-Type": event_type,
        "Accrue-Schema": message.DESCRIPTOR.full_name,
        "Accrue-Occurred-At": when.isoformat(),
    }


# -- the firm, as master data's relay would publish it ----------------------------------------------


def firm_events(consultants: int, projects: int) -> tuple[list[tuple[str, str, Any]], dict[str, Any]]:
    le = md.LegalEntity(id="le-1", code="UK", name="Acme UK", base_currency="GBP", etag="1")
    cu = md.Customer(id="cu-1", code="GLOBEX", name="Globex", legal_entity_id=le.id, currency="GBP", etag="1")
    people = [
        md.Consultant(
            id=f"c-{i}",
            code=f"E{i}",
            name=f"Consultant {i}",
            legal_entity_id=le.id,
            labor_category_id="lc-1",
            weekly_capacity_hours="40",
            active_from="2020-01-01",
            etag="1",
        )
        for i in range(consultants)
    ]
    project_ids = [f"p-{i}" for i in range(projects)]
    plist = [
        md.Project(
            id=pid,
            code=pid,
            name=pid,
            customer_id=cu.id,
            legal_entity_id=le.id,
            manager_id="c-0",
            status=md.PROJECT_STATUS_ACTIVE,
            start_date="2026-01-01",
            budget_hours="5000",
            etag="1",
        )
        for pid in project_ids
    ]
    card = md.RateCard(
        id="rc-1",
        code="RC",
        currency="GBP",
        rates=[
            md.RateCardEntry(id="r-1", labor_category_id="lc-1", rate="150.00", effective_from="2026-01-01")
        ],
        etag="1",
    )
    contract = md.Contract(
        id="k-1",
        code="K1",
        customer_id=cu.id,
        currency="GBP",
        lines=[
            md.ContractLine(
                id=f"line-{pid}",
                project_id=pid,
                billing_model=md.BILLING_MODEL_TIME_AND_MATERIALS,
                rate_card_id=card.id,
            )
            for pid in project_ids
        ],
        etag="1",
    )
    assignments = [
        md.Assignment(
            id=f"a-{i}",
            project_id=project_ids[i % projects],
            consultant_id=p.id,
            labor_category_id="lc-1",
            start_date="2026-01-01",
            allocation_percent="80",
            etag="1",
        )
        for i, p in enumerate(people)
    ]
    events: list[tuple[str, str, Any]] = [
        ("md.legal_entity.upserted", le.id, mev.LegalEntityUpserted(legal_entity=le)),
        ("md.customer.upserted", cu.id, mev.CustomerUpserted(customer=cu)),
        ("md.rate_card.upserted", card.id, mev.RateCardUpserted(rate_card=card)),
        ("md.contract.upserted", contract.id, mev.ContractUpserted(contract=contract)),
    ]
    events += [("md.consultant.upserted", p.id, mev.ConsultantUpserted(consultant=p)) for p in people]
    events += [("md.project.upserted", p.id, mev.ProjectUpserted(project=p)) for p in plist]
    events += [("md.assignment.upserted", a.id, mev.AssignmentUpserted(assignment=a)) for a in assignments]
    return events, {"projects": project_ids, "consultants": [p.id for p in people]}


def approved(firm: dict[str, Any], i: int) -> tuple[str, bytes, str]:
    """Event i: the probe project every PROBE_EVERY-th, else spread over the other projects."""
    projects, people = firm["projects"], firm["consultants"]
    project = projects[0] if i % PROBE_EVERY == 0 else projects[1 + i % (len(projects) - 1)]
    entry = tk.TimeEntry(
        id=f"bench-{i}",
        consultant_id=people[i % len(people)],
        project_id=project,
        labor_category_id="lc-1",
        work_date=f"{MONTH}-{1 + i % 28:02d}",
        hours=str(PROBE_HOURS) if project == projects[0] else "7.5",
        billable=True,
        status=tk.TIME_ENTRY_STATUS_APPROVED,
        legal_entity_id="le-1",
        customer_id="cu-1",
        indicative_rate=types_pb2.Money(amount="150.00", currency="GBP"),
    )
    return project, tev.TimeEntryApproved(time_entry=entry).SerializeToString(), entry.id


# -- the load generator (its own process) -------------------------------------------------------------


async def generate(
    nats_url: str, firm: dict[str, Any], rate: float, count: int, start: float
) -> dict[str, Any]:
    """Publish count approved events open-loop from the wall-clock instant start."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    lag: list[float] = []
    errors = 0
    payloads = [approved(firm, i) for i in range(count)]
    schema = tev.TimeEntryApproved.DESCRIPTOR.full_name

    async def one(i: int) -> None:
        nonlocal errors
        scheduled = start + i / rate
        delay = scheduled - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        project, body, _ = payloads[i]
        lag.append(time.time() - scheduled)
        try:
            await js.publish(
                f"time.entry.approved.{project}",
                body,
                headers={
                    "Nats-Msg-Id": str(uuid.uuid4()),
                    "Accrue-Event-Type": "time.entry.approved",
                    "Accrue-Schema": schema,
                    "Accrue-Occurred-At": dt.datetime.fromtimestamp(scheduled, dt.UTC).isoformat(),
                },
            )
        except Exception:
            errors += 1

    tasks = []
    for i in range(count):
        delay = start + i / rate - time.time() - 0.005
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    await nc.close()
    return {"errors": errors, "send_lag_p99": percentile(lag, 99)}


def generator_main(args: argparse.Namespace) -> None:
    firm = json.loads(Path(args.firm).read_text())
    result = asyncio.run(generate(args.nats_url, firm, args.rate, args.count, args.start))
    Path(args.out).write_text(json.dumps(result))


# -- raw limits -------------------------------------------------------------------------------------------


async def raw_publish(nats_url: str, count: int) -> tuple[float, list[float]]:
    """JetStream publishes one at a time, each awaiting its ack, into a scratch stream."""
    nc = await nats.connect(nats_url)
    js = nc.jetstream()
    await js.add_stream(name="BENCH_RAW", subjects=["bench.raw.>"])
    latencies = []
    began = time.perf_counter()
    for i in range(count):
        t0 = time.perf_counter()
        await js.publish(f"bench.raw.{i % 50}", b"x" * 300, headers={"Nats-Msg-Id": str(uuid.uuid4())})
        latencies.append(time.perf_counter() - t0)
    rate = count / (time.perf_counter() - began)
    await js.delete_stream("BENCH_RAW")
    await nc.close()
    return rate, latencies


async def raw_commit_latencies(database_url: str, samples: int) -> list[float]:
    """One-row INSERT + COMMIT, one after another, through plain asyncpg."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS public.bench_raw_commit (id bigint, note text)")
        out = []
        for i in range(samples):
            t0 = time.perf_counter()
            await conn.execute("INSERT INTO public.bench_raw_commit VALUES ($1, $2)", i, "x")
            out.append(time.perf_counter() - t0)
        await conn.execute("DROP TABLE public.bench_raw_commit")
        return out
    finally:
        await conn.close()


# -- the run ------------------------------------------------------------------------------------------------


async def wait_for_firm(stub: fg.ForecastingServiceStub, projects: int, within: float = 120.0) -> None:
    deadline = time.monotonic() + within
    while True:
        f = (await stub.GetForecast(fa.GetForecastRequest(month_from=MONTH, month_to=MONTH))).forecast
        if sum(1 for p in f.projects if p.scheduled_hours not in ("", "0.00")) >= projects:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the forecast shows {len(f.projects)} of {projects} projects after {within}s")
        await asyncio.sleep(0.2)


async def observe(
    stub: fg.ForecastingServiceStub, probe: str, probes: int, start: float, rate: float, give_up: float
) -> tuple[list[float], list[float]]:
    """Read the probe's forecast until every probe event shows; latencies per probe event."""
    seen = 0
    latencies: list[float] = []
    reads: list[float] = []
    request = fa.GetForecastRequest(project_id=probe, month_from=MONTH, month_to=MONTH)
    while seen < probes and time.time() < give_up:
        t0 = time.perf_counter()
        f = (await stub.GetForecast(request)).forecast
        now = time.time()
        reads.append(time.perf_counter() - t0)
        hours = next((Decimal(r.approved_hours) for r in f.rows if r.month == MONTH), Decimal(0))
        covered = int(hours / PROBE_HOURS)
        for k in range(seen, min(covered, probes)):
            latencies.append(now - (start + k * PROBE_EVERY / rate))
        seen = max(seen, covered)
        await asyncio.sleep(POLL)
    return latencies, reads


async def run(args: argparse.Namespace) -> None:
    count = int(args.rate * args.seconds)
    with servers() as s, tempfile.TemporaryDirectory(prefix="forecast-bench-") as tmp:
        say(f"servers: {s.description}; {os.cpu_count()} CPUs")
        grpc_port, metrics_port = free_port(), free_port()
        keys = make_keys(Path(tmp) / "keys")
        env = {
            **os.environ,
            "ACCRUE_FORECASTING_DATABASE_URL": s.database_url,
            "ACCRUE_FORECASTING_NATS_URL": s.nats_url,
            "ACCRUE_FORECASTING_GRPC_PORT": str(grpc_port),
            "ACCRUE_FORECASTING_METRICS_PORT": str(metrics_port),
            "ACCRUE_FORECASTING_VERSION_SCHEDULE_SECONDS": "0",
            "ACCRUE_FORECASTING_REPORTING_CURRENCY": "GBP",
            "ACCRUE_LOG_LEVEL": "WARNING",
            # The service verifies every call's internal token against this keyring.
            "ACCRUE_INTERNAL_KEYS_DIR": str(keys),
        }
        if s.nats_passwords is not None:
            # The service logs in to NATS as itself, as in `make run`; the benchmark's own
            # publishers use the admin user in s.nats_url.
            env["ACCRUE_FORECASTING_NATS_URL"] = without_credentials(s.nats_url)
            env["ACCRUE_FORECASTING_NATS_USER"] = "forecasting"
            env["ACCRUE_FORECASTING_NATS_PASSWORD"] = s.nats_passwords["forecasting"]
        module = "accrue.services.forecasting"
        # Blocking on purpose: nothing else runs in this process yet.
        subprocess.run([sys.executable, "-m", module, "migrate"], env=env, check=True)  # noqa: ASYNC221
        log = (Path(tmp) / "forecasting.log").open("w")
        service = subprocess.Popen(  # noqa: ASYNC220 - starting it does not block
            [sys.executable, "-m", module, "serve"], env=env, stdout=log, stderr=log
        )
        # Reads go as a local administrator, with internal tokens the gateway's key signs (as the
        # gateway does for a caller it has verified).
        channel = identity.channel(
            f"127.0.0.1:{grpc_port}", gateway_signer(keys, system_clock), identity.admin()
        )
        try:
            await asyncio.wait_for(channel.channel_ready(), 60)
            stub = fg.ForecastingServiceStub(channel)
            events, firm = firm_events(args.consultants, args.projects)
            nc = await nats.connect(s.nats_url)
            js = nc.jetstream()
            for event_type, key, message in events:
                await js.publish(
                    f"{event_type}.{key}", message.SerializeToString(), headers=headers(event_type, message)
                )
            await nc.close()
            await wait_for_firm(stub, args.projects)
            say(f"firm: {args.consultants} consultants on {args.projects} projects, projected")

            pub_rate, pub_lat = await raw_publish(s.nats_url, 2000)
            commits = await raw_commit_latencies(s.database_url, 1000)
            say(
                "raw limits, same servers, same run:",
                "  JetStream publish, one at a time awaiting each ack: "
                f"{pub_rate:,.0f} msgs/s; {summary_ms(pub_lat)}",
                f"  asyncpg one-row INSERT + COMMIT: {summary_ms(commits)}"
                f" (serial ceiling {1 / statistics.fmean(commits):,.0f} commits/s)",
                f"  asyncpg executemany, one transaction: {await _executemany(s.database_url):,.0f} rows/s",
            )

            firm_file = Path(tmp) / "firm.json"
            firm_file.write_text(json.dumps(firm))
            out = Path(tmp) / "generator.json"
            metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
            before = histogram(metrics_url, "accrue_forecast_refresh_lag_seconds", {"stream": "TIME"})
            service_cpu = cpu_seconds(service.pid)
            start = time.time() + 2.0
            generator = subprocess.Popen(  # noqa: ASYNC220 - starting it does not block
                [
                    sys.executable,
                    __file__,
                    "--generator",
                    "--nats-url",
                    s.nats_url,
                    "--firm",
                    str(firm_file),
                    "--rate",
                    str(args.rate),
                    "--count",
                    str(count),
                    "--start",
                    repr(start),
                    "--out",
                    str(out),
                ]
            )
            probes = (count + PROBE_EVERY - 1) // PROBE_EVERY
            latencies, reads = await observe(
                stub, firm["projects"][0], probes, start, args.rate, start + args.seconds + 120
            )
            drained = time.time()
            service_cpu = cpu_seconds(service.pid) - service_cpu
            generator.wait(timeout=120)
            sent = json.loads(out.read_text())
            after = histogram(metrics_url, "accrue_forecast_refresh_lag_seconds", {"stream": "TIME"})

            say(
                f"load: {count:,} time.entry.approved events at {args.rate:g}/s for {args.seconds:g} s "
                f"(publish errors {sent['errors']}, "
                f"generator send lag p99 {sent['send_lag_p99'] * 1000:.1f} ms)",
                f"  consumed: all {count:,} within {drained - start:.1f} s of the first "
                f"({count / max(drained - start, 1e-9):,.0f} events/s); forecasting process CPU "
                f"{service_cpu:.1f} s ({service_cpu / max(drained - start, 1e-9):.0%} of a core, "
                "reads included)",
                f"  load average (1 min) at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs",
                f"event -> forecast reflecting it, through GetForecast ({len(latencies)} probe events):",
                f"  {summary_ms(latencies)}",
                f"  GetForecast (one project, one month) read time: {summary_ms(reads)}",
                "occurred-at -> consumer commit, every event (the service's histogram, bucket bounds):",
                "  p50 "
                + bucket_quantile(before, after, 0.5)
                + ", p95 "
                + bucket_quantile(before, after, 0.95)
                + ", p99 "
                + bucket_quantile(before, after, 0.99),
            )
            whole = []
            for _ in range(3):
                t0 = time.perf_counter()
                await stub.GetForecast(fa.GetForecastRequest())
                whole.append(time.perf_counter() - t0)
            say(f"the whole firm's forecast (every project, 12 months), idle: {summary_ms(whole)}")
            p99 = percentile(latencies, 99) * 1000
            if len(latencies) < probes:
                say(f"RESULT: FAILED, only {len(latencies)} of {probes} probe events showed")
            else:
                verdict = "met" if p99 < TARGET_P99_MS else "NOT met"
                say(f"RESULT: p99 {p99:.1f} ms, target < {TARGET_P99_MS:g} ms {verdict}")
        finally:
            await channel.close()
            service.terminate()
            service.wait(timeout=30)
            log.close()


async def _executemany(database_url: str) -> float:
    conn = await asyncpg.connect(database_url)
    try:
        # raw_executemany_rate copies timekeeping's table; give it one to copy.
        await conn.execute("CREATE SCHEMA IF NOT EXISTS timekeeping")
        exists = await conn.fetchval("SELECT to_regclass('timekeeping.time_entries') IS NOT NULL")
        if not exists:
            await conn.execute(
                """CREATE TABLE timekeeping.time_entries (id uuid, fingerprint text, consultant_id text,
                   project_id text, labor_category_id text, work_date date, hours numeric, billable bool,
                   notes text, status text, violations jsonb, approver_id text, decline_reason text,
                   invoice_id text, legal_entity_id text, customer_id text, rate numeric,
                   rate_currency text, version int, create_time timestamptz, update_time timestamptz)"""
            )
    finally:
        await conn.close()
    return await raw_executemany_rate(database_url, 20000)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--consultants", type=int, default=200)
    parser.add_argument("--projects", type=int, default=50)
    parser.add_argument("--generator", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--nats-url", help=argparse.SUPPRESS)
    parser.add_argument("--firm", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--start", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.generator:
        generator_main(args)
    else:
        asyncio.run(run(args))


if __name__ == "__main__":
    main()
