"""Single-entry submit latency through the REST gateway at a fixed arrival rate, every service up.

    .venv/bin/python benchmarks/timekeeping_submit_latency.py [--rate 200] [--seconds 30]
        [--auth both|on|off] [--py-spy DIR]

The load comes from a separate process and is open-loop: request i is sent at start + i/rate
whether or not earlier ones have answered, and its latency is counted from that scheduled
instant, so a slow server cannot slow the load down and hide its own queueing (coordinated
omission). Target: p99 < 50 ms at 200 requests/s. Printed beside it, measured in the same run
on the same database: the latency of a bare one-row INSERT + COMMIT through asyncpg, the floor
any durable write pays here.

Every request carries a bearer token from the stack's local issuer (a local administrator). By
default the run measures twice, each time on servers of its own: auth ON (the product as it
ships) and auth OFF (benchmarks/identity_off_common.py, a measurement device that replaces
verification with a pass-through), then prints them side by side: what identity costs per
request, in latency and in CPU. --py-spy DIR samples timekeeping and the gateway during the
measured load and prints their hottest frames.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from identity_common import AUTH_VARIANTS, admin_headers, auth_off_command, check_auth
from timekeeping_common import (
    CpuMeter,
    Firm,
    Profiler,
    Servers,
    WaitSampler,
    advisory_namespaces,
    bucket_quantile,
    build_firm,
    cpu_report,
    gc_pauses,
    gc_report,
    histogram,
    loop_lag,
    loop_lag_report,
    others_share,
    percentile,
    profile_report,
    say,
    servers,
    stack_share,
    start_stack,
    summary_ms,
    wait_for_projection,
)

from accrue.embedded.stack import module_command
from accrue.testing.stack import Stack

TARGET_P99_MS = 50.0
SEQUENTIAL_WARM_UP = 200


# -- the load generator (its own process) -------------------------------------------------------


class _Closed(Exception):
    """The server had closed the connection."""


class HttpPool:
    """A minimal HTTP/1.1 keep-alive client on asyncio streams.

    The load generator must cost far less than what it measures: httpx at a few hundred
    requests a second spends a core of its own on pool bookkeeping, which on a 2-core machine
    starves the services it is measuring.
    """

    def __init__(self, url: str, size: int, authorization: str | None = None) -> None:
        parsed = urlsplit(url)
        # Sent with every request, as a client holding one access token does.
        self._auth = f"Authorization: {authorization}\r\n" if authorization else ""
        self._host, self._port = parsed.hostname or "127.0.0.1", parsed.port or 80
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._slots = asyncio.Semaphore(size)

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        async with self._slots:
            request = (
                f"POST {path} HTTP/1.1\r\nHost: {self._host}\r\nContent-Type: application/json\r\n"
                f"{self._auth}Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            if self._idle:
                reader, writer = self._idle.pop()
                try:
                    return await self._exchange(reader, writer, request)
                except (ConnectionError, asyncio.IncompleteReadError, _Closed):
                    # The server closed an idle keep-alive connection before reading this
                    # request (uvicorn does after a few seconds): nothing was sent, send again.
                    writer.close()
            reader, writer = await asyncio.open_connection(self._host, self._port)
            return await self._exchange(reader, writer, request)

    async def _exchange(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
    ) -> tuple[int, bytes]:
        writer.write(request)
        status_line = await reader.readline()
        if not status_line:
            raise _Closed
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        payload = await reader.readexactly(length)
        self._idle.append((reader, writer))
        return int(status_line.split()[1]), payload

    async def close(self) -> None:
        for _, writer in self._idle:
            writer.close()


async def generate(
    url: str,
    rate: float,
    seconds: float,
    bodies: list[dict[str, Any]],
    warm: list[dict[str, Any]],
    authorization: str | None = None,
) -> dict[str, Any]:
    """Send bodies open-loop at rate; latencies from each request's scheduled send time.

    The warm-up bodies go first, on the same schedule and connections, and are not measured:
    the services' connection pools grow to what this load needs (each new PostgreSQL backend
    loads its catalog caches, a stall of 100-300 ms on a cold stack) before the measurement.
    """
    count = min(len(bodies), int(rate * seconds))
    encoded = [json.dumps(b).encode() for b in [*warm, *bodies[:count]]]
    first = len(warm)
    warm_statuses: dict[str, int] = {}
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    lag: list[float] = []
    slow: list[tuple[float, float]] = []  # (scheduled second of the run, latency) over the target
    pool = HttpPool(url, 256, authorization)
    start = time.perf_counter() + 0.2
    measured_from = start + first / rate

    async def one(i: int) -> None:
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if i >= first:
            lag.append(time.perf_counter() - scheduled)
        try:
            status, payload = await pool.post("/v1/time-entries", encoded[i])
            key = str(status)
            if status == 200:
                key = json.loads(payload)["status"]
        except (OSError, asyncio.IncompleteReadError) as exc:
            key = type(exc).__name__
        latency = time.perf_counter() - scheduled
        if i < first:
            warm_statuses[key] = warm_statuses.get(key, 0) + 1
            return
        latencies.append(latency)
        if latency * 1000 >= TARGET_P99_MS:
            slow.append((scheduled - measured_from, latency))
        statuses[key] = statuses.get(key, 0) + 1

    # One task per request, created as its time comes (not thousands parked at once).
    tasks = []
    began = measured_from
    for i in range(len(encoded)):
        delay = start + i / rate - time.perf_counter() - 0.005
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - began
    await pool.close()
    return {
        "latencies": latencies,
        "statuses": statuses,
        "elapsed": elapsed,
        "sent": count,
        "lag": lag,
        "slow": sorted(slow),
        "warm": warm_statuses,
    }


def slow_report(slow: list[list[float]]) -> str:
    """How the requests over the target cluster in time: one stall, or spread over the run."""
    if not slow:
        return f"requests at or over {TARGET_P99_MS:g} ms: none"
    stalls: list[list[float]] = []  # [first second, last second, count, worst latency]
    for at, latency in slow:
        if stalls and at - stalls[-1][1] <= 0.25:
            stalls[-1][1], stalls[-1][2] = at, stalls[-1][2] + 1
            stalls[-1][3] = max(stalls[-1][3], latency)
        else:
            stalls.append([at, at, 1, latency])
    worst = sorted(stalls, key=lambda x: -x[2])[:5]
    shown = ", ".join(f"{n:.0f} at {a:.1f}-{b:.1f} s (worst {w * 1000:.0f} ms)" for a, b, n, w in worst)
    return (
        f"requests at or over {TARGET_P99_MS:g} ms: {len(slow)}, in {len(stalls)} stall(s) (biggest: {shown})"
    )


def generator_main(args: argparse.Namespace) -> None:
    bodies = json.loads(Path(args.bodies).read_text())
    result = asyncio.run(
        generate(
            args.url, args.rate, args.seconds, bodies["measured"], bodies["warm"], bodies.get("authorization")
        )
    )
    Path(args.out).write_text(json.dumps(result))


# -- the run ----------------------------------------------------------------------------------------


def bodies_for(firm: Firm, count: int) -> list[dict[str, Any]]:
    """One distinct, valid entry per request: a consultant-day each."""
    out = []
    people = firm.consultant_ids
    first = dt.date(2026, 3, 2)
    for n in range(count):
        day = first + dt.timedelta(days=n // len(people))
        out.append(
            {
                "consultantId": people[n % len(people)],
                "projectId": firm.project_ids[n % len(firm.project_ids)],
                "workDate": day.isoformat(),
                "hours": "7.5",
                "notes": f"latency item {n}",
                "externalRef": {"system": "bench-latency", "id": str(n)},
            }
        )
    return out


async def raw_insert_latencies(database_url: str, samples: int) -> list[float]:
    """One-row INSERT + COMMIT, one after another, through plain asyncpg."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS public.bench_raw_commit (id bigint, note text)")
        out = []
        for i in range(samples):
            start = time.perf_counter()
            await conn.execute("INSERT INTO public.bench_raw_commit VALUES ($1, $2)", i, "x")
            out.append(time.perf_counter() - start)
        await conn.execute("DROP TABLE public.bench_raw_commit")
        return out
    finally:
        await conn.close()


async def prepare(
    s: Servers, stack: Stack, headers: dict[str, str], count: int, consultants: int, warm: int
) -> dict[str, Any]:
    """The measured bodies and the open-loop warm-up's, after a firm and a sequential warm-up."""
    async with httpx.AsyncClient(base_url=stack.gateway_url, headers=headers, timeout=120) as client:
        firm = await build_firm(client, consultants)
        await wait_for_projection(s.database_url, firm)
        # Warm-up outside the measurement: every process's code paths, one request at a time.
        extra = bodies_for(firm, count + SEQUENTIAL_WARM_UP + warm)[count:]
        for body in extra:
            body["externalRef"]["system"] = "bench-warm"
        for body in extra[:SEQUENTIAL_WARM_UP]:
            await client.post("/v1/time-entries", json=body)
    return {"measured": bodies_for(firm, count), "warm": extra[SEQUENTIAL_WARM_UP:]}


def measure(args: argparse.Namespace, variant: str) -> dict[str, Any]:
    """One variant (auth "on" or "off") on servers of its own: the figures and the report lines."""
    count = int(args.rate * args.seconds)
    command = auth_off_command if variant == "off" else module_command
    with servers() as s, tempfile.TemporaryDirectory(prefix="bench-logs-") as logs:
        say(f"[auth {variant.upper()}] servers: {s.description}; starting the stack (logs in {logs}) ...")
        stack = start_stack(s, Path(logs), command)
        try:
            checked = check_auth(stack.gateway_url, variant)
            headers = admin_headers(stack)
            bodies: dict[str, Any] = asyncio.run(
                prepare(s, stack, headers, count, args.consultants, int(args.rate * args.warm_up))
            )
            bodies["authorization"] = headers["Authorization"]
            bodies_path, out_path = Path(logs) / "bodies.json", Path(logs) / "result.json"
            bodies_path.write_text(json.dumps(bodies))
            handler = ("grpc_server_handling_seconds", {"grpc_method": "SubmitTimeEntry"})
            http = ("http_request_duration_seconds", {"method": "POST", "route": "/v1/time-entries"})
            handler_before = histogram(stack.metrics_url("timekeeping"), *handler)
            http_before = histogram(stack.metrics_url("gateway"), *http)
            gc_before = {n: gc_pauses(stack.metrics_url(n)) for n in ("timekeeping", "gateway")}
            lag_before = {n: loop_lag(stack.metrics_url(n)) for n in ("timekeeping", "gateway")}
            profiler = None
            if args.py_spy:
                pids = {n: stack.pid(n) for n in ("timekeeping", "gateway")}
                profiler = Profiler(Path(args.py_spy), f"submit-auth-{variant}", pids)
                profiler.start()
            waits = (
                WaitSampler(s.database_url, namespaces=advisory_namespaces("timekeeping"))
                if args.pg_waits
                else None
            )
            if waits is not None:
                waits.start()
            meter = CpuMeter(s, stack)
            meter.start()
            started = time.perf_counter()
            subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--generate",
                    "--url",
                    stack.gateway_url,
                    "--rate",
                    str(args.rate),
                    "--seconds",
                    str(args.seconds),
                    "--bodies",
                    str(bodies_path),
                    "--out",
                    str(out_path),
                ],
                check=True,
            )
            cpu = meter.stop()
            wall = time.perf_counter() - started
            waited = waits.stop() if waits is not None else None
            if profiler is not None:
                profiler.stop()
            handler_after = histogram(stack.metrics_url("timekeeping"), *handler)
            http_after = histogram(stack.metrics_url("gateway"), *http)
            gc_after = {n: gc_pauses(stack.metrics_url(n)) for n in ("timekeeping", "gateway")}
            lag_after = {n: loop_lag(stack.metrics_url(n)) for n in ("timekeeping", "gateway")}
            result = json.loads(out_path.read_text())
            raw = asyncio.run(raw_insert_latencies(s.database_url, 2000))
        except BaseException:
            sys.stderr.write(stack.report(20) + "\n")
            raise
        finally:
            stack.down()
    latencies = result["latencies"]
    ms = [x * 1000 for x in latencies]
    p99 = percentile(ms, 99)
    ok = result["statuses"].get("TIME_ENTRY_STATUS_PENDING_APPROVAL", 0)
    lines = [
        f"\n== timekeeping single-entry submit via REST, auth {variant.upper()} "
        f"({dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC) ==",
        f"machine: {os.cpu_count()} cores; {checked}",
        f"load: open loop, {args.rate:g} requests/s for {args.seconds:g} s from a separate process, "
        f"after {args.warm_up:g} s of it unmeasured (warm-up outcome {result['warm']}); "
        f"{result['sent']} sent in {result['elapsed']:.1f} s; outcome {result['statuses']}",
        f"generator lag (send - scheduled): p99 {percentile([x * 1000 for x in result['lag']], 99):.1f} ms",
        f"latency from scheduled send: {summary_ms(latencies)}",
        slow_report(result["slow"]),
        "inside (from the services' own histograms, bucket bounds): "
        f"gateway request p50 {bucket_quantile(http_before, http_after, 0.5)}, "
        f"p99 {bucket_quantile(http_before, http_after, 0.99)}; "
        f"timekeeping handler p50 {bucket_quantile(handler_before, handler_after, 0.5)}, "
        f"p99 {bucket_quantile(handler_before, handler_after, 0.99)}",
        "garbage collection (the process stands still): "
        + "; ".join(gc_report(n, gc_before[n], gc_after[n]) for n in gc_before),
        "event-loop lag (a 50 ms timer, how late it fired): "
        + "; ".join(loop_lag_report(n, lag_before[n], lag_after[n]) for n in lag_before),
        cpu_report(cpu, wall),
        "CPU per request: "
        + ", ".join(
            f"{name} {cpu.get(name, 0.0) / max(1, result['sent']) * 1e3:.2f} ms"
            for name in ("gateway", "timekeeping", "postgres")
        ),
        f"machine share: the system under test used {stack_share(cpu, wall):.2f} cores on average "
        f"(the load generator not included), other work on the machine {others_share(cpu, wall):.2f}",
        f"p99 {p99:.1f} ms (target < {TARGET_P99_MS:g} ms) -> {'PASS' if p99 < TARGET_P99_MS else 'FAIL'}",
        f"raw floor: one-row INSERT + COMMIT through asyncpg, sequential: {summary_ms(raw)}",
    ]
    if waited is not None:
        lines.append(waited)
    if profiler is not None:
        for name, path in profiler.outputs.items():
            if path.exists():
                lines.append(f"py-spy {name} (collapsed stacks in {path}):")
                lines.append(profile_report(path))
    say(*lines)
    return {
        "variant": variant,
        "complete": ok == result["sent"],
        "p50": percentile(ms, 50),
        "p90": percentile(ms, 90),
        "p99": p99,
        "others": others_share(cpu, wall),
        "cpu_ms": {
            name: cpu.get(name, 0.0) / max(1, result["sent"]) * 1e3
            for name in ("gateway", "timekeeping", "postgres")
        },
        "gateway_p50": bucket_quantile(http_before, http_after, 0.5),
        "handler_p50": bucket_quantile(handler_before, handler_after, 0.5),
    }


def compare(results: dict[str, dict[str, Any]]) -> None:
    """ON beside OFF: latency percentiles and CPU per request (the steadier figure on a shared machine)."""
    on, off = results["on"], results["off"]
    rows = [f"{'':<30}{'auth ON':>12}{'auth OFF':>12}{'ON - OFF':>12}"]
    for key, label in (("p50", "latency p50 (ms)"), ("p90", "latency p90 (ms)"), ("p99", "latency p99 (ms)")):
        rows.append(f"{label:<30}{on[key]:>12.1f}{off[key]:>12.1f}{on[key] - off[key]:>+12.1f}")
    for name in ("gateway", "timekeeping", "postgres"):
        a, b = on["cpu_ms"][name], off["cpu_ms"][name]
        rows.append(f"{'CPU/request ' + name + ' (ms)':<30}{a:>12.2f}{b:>12.2f}{a - b:>+12.2f}")
    rows.append(f"{'gateway request p50':<30}{on['gateway_p50']:>12}{off['gateway_p50']:>12}")
    rows.append(f"{'timekeeping handler p50':<30}{on['handler_p50']:>12}{off['handler_p50']:>12}")
    rows.append(f"{'other work (cores)':<30}{on['others']:>12.2f}{off['others']:>12.2f}")
    say("\n== identity cost, single submit: auth ON beside OFF (same run, servers of their own) ==", *rows)


def run(args: argparse.Namespace) -> None:
    variants = AUTH_VARIANTS if args.auth == "both" else (args.auth,)
    results = {variant: measure(args, variant) for variant in variants}
    if len(results) == 2:
        compare(results)
    incomplete = [v for v, r in results.items() if not r["complete"]]
    if incomplete:
        raise SystemExit(
            f"auth {', '.join(incomplete)}: not every request stored a PENDING_APPROVAL entry: "
            "the figures above do not count"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--consultants", type=int, default=200)
    parser.add_argument(
        "--warm-up", type=float, default=3.0, help="seconds of unmeasured load at the same rate first"
    )
    parser.add_argument(
        "--auth",
        choices=("both", "on", "off"),
        default="both",
        help="identity ON (real tokens), OFF (benchmarks/identity_off_common.py), or both in turn",
    )
    parser.add_argument(
        "--py-spy", metavar="DIR", help="sample timekeeping and the gateway with py-spy into DIR"
    )
    parser.add_argument(
        "--pg-waits", action="store_true", help="sample pg_stat_activity's wait events during the load"
    )
    parser.add_argument("--generate", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--bodies", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.generate:
        generator_main(args)
    else:
        run(args)


if __name__ == "__main__":
    main()
