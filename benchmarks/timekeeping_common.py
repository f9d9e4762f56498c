"""Shared pieces of the timekeeping benchmarks: servers, the running stack, a staffed firm, and
the raw PostgreSQL figures each run is compared with.

Servers: ACCRUE_DATABASE_URL / ACCRUE_NATS_URL when set (a fresh database is created on that
server for the run, and dropped after); otherwise an embedded, durable PostgreSQL (fsync on, as
`make run` runs it) and an embedded NATS JetStream with one user per service that refuses
anonymous clients (as `make run` runs it), both deleted afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from accrue.embedded.stack import module_command
from accrue.testing.servers import PostgresServerHandle, plain_postgres_url
from accrue.testing.stack import Stack

FIRST_DAY = dt.date(2026, 1, 5)


@dataclass(frozen=True)
class Servers:
    database_url: str
    nats_url: str
    description: str
    # Embedded servers' process ids (postmaster, nats-server), for CPU accounting.
    postgres_pid: int | None = None
    nats_pid: int | None = None
    # Each service's NATS password (embedded NATS only); nats_url then carries the admin user's
    # credentials, for the benchmark's own clients.
    nats_passwords: Mapping[str, str] | None = field(default=None, repr=False)


@contextlib.contextmanager
def servers() -> Iterator[Servers]:
    """PostgreSQL and NATS for one benchmark run (see the module docstring)."""
    db_env = os.environ.get("ACCRUE_DATABASE_URL")
    nats_env = os.environ.get("ACCRUE_NATS_URL")
    root = Path(tempfile.mkdtemp(prefix="accrue-bench-"))
    try:
        with contextlib.ExitStack() as stack:
            postgres_pid = nats_pid = None
            if db_env:
                handle = PostgresServerHandle("env", plain_postgres_url(db_env))
                database_url = stack.enter_context(handle.fresh_database("bench"))
                db_kind = "PostgreSQL from ACCRUE_DATABASE_URL"
            else:
                from accrue.embedded import EmbeddedPostgres

                pg = stack.enter_context(EmbeddedPostgres(root / "pg", cleanup="delete", durable=True))
                database_url = pg.url
                db_kind = "embedded PostgreSQL (durable: fsync on)"
                postgres_pid = _first_int(pg.data_dir / "postmaster.pid")
            passwords = None
            if nats_env:
                nats_url, nats_kind = nats_env, "NATS from ACCRUE_NATS_URL"
            else:
                import secrets

                from accrue.embedded import EmbeddedNats
                from accrue.embedded.stack import generate_nats_passwords
                from accrue.eventbus.permissions import ADMIN_USER, render_authorization

                passwords = generate_nats_passwords()
                admin = secrets.token_urlsafe(24)
                nats_server = stack.enter_context(
                    EmbeddedNats(
                        root / "nats", authorization=render_authorization(passwords, admin_password=admin)
                    )
                )
                nats_url = f"nats://{ADMIN_USER}:{admin}@{nats_server.host}:{nats_server.port}"
                nats_kind = "embedded NATS JetStream (a user per service)"
                nats_pid = nats_server.pid
            yield Servers(
                database_url, nats_url, f"{db_kind}; {nats_kind}", postgres_pid, nats_pid, passwords
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _first_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


class CpuMeter:
    """CPU seconds used per part of the system (from /proc), between start() and stop()."""

    def __init__(self, s: Servers, stack: Stack) -> None:
        self._groups: dict[str, set[int]] = {}
        for name in stack.names:
            pid = stack.pid(name)
            if pid is not None:
                self._groups[name] = {pid}
        self._pg_root = s.postgres_pid
        if s.nats_pid is not None:
            self._groups["nats-server"] = {s.nats_pid}
        self._start: dict[str, float] = {}
        self._machine_start = 0.0

    def _pids(self) -> dict[str, set[int]]:
        groups = {k: set(v) for k, v in self._groups.items()}
        if self._pg_root is not None:
            children = {self._pg_root}
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit():
                    stat = _stat(int(entry.name))
                    if stat is not None and int(stat[1]) == self._pg_root:
                        children.add(int(entry.name))
            groups["postgres"] = children
        return groups

    def _read(self) -> dict[str, float]:
        tick = os.sysconf("SC_CLK_TCK")
        out: dict[str, float] = {}
        for group, pids in self._pids().items():
            total = 0.0
            for pid in pids:
                stat = _stat(pid)
                if stat is not None:
                    total += (int(stat[11]) + int(stat[12])) / tick
            out[group] = total
        return out

    def start(self) -> None:
        self._start = self._read()
        self._machine_start = _machine_busy()

    def stop(self) -> dict[str, float]:
        end = self._read()
        used = {k: end.get(k, 0.0) - v for k, v in self._start.items()}
        used[MACHINE] = _machine_busy() - self._machine_start
        return used


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state is [0], ppid [1], utime [11])."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()


def _machine_busy() -> float:
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(x) for x in fields]
    idle = values[3] + values[4]
    return (sum(values) - idle) / os.sysconf("SC_CLK_TCK")


MACHINE = "(whole machine, every user)"


def cpu_report(used: dict[str, float], elapsed: float) -> str:
    parts = [
        f"{name} {seconds / elapsed:.0%}" for name, seconds in sorted(used.items(), key=lambda kv: -kv[1])
    ]
    return "CPU (share of one core over the run): " + ", ".join(parts)


def stack_share(used: dict[str, float], elapsed: float) -> float:
    """How many cores the system under test (services, gateway, PostgreSQL, NATS) used on average."""
    return sum(v for k, v in used.items() if k != MACHINE) / elapsed


def others_share(used: dict[str, float], elapsed: float) -> float:
    """How many cores everything else on the machine used meanwhile (other users' work)."""
    return max(0.0, used.get(MACHINE, 0.0) / elapsed - stack_share(used, elapsed))


def start_stack(s: Servers, log_dir: Path, command: Callable[[str], Sequence[str]] = module_command) -> Stack:
    """Every service and the gateway as processes, migrated and ready (command: how each is
    started; identity_common.auth_off_command for the auth-OFF measurement)."""
    stack = Stack.from_catalogue(
        database_url=s.database_url,
        nats_url=s.nats_url,
        log_dir=log_dir,
        log_level="WARNING",
        command=command,
        nats_passwords=s.nats_passwords,
    )
    return stack.up()


async def post(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(path, json=body)
    if response.status_code != 200:
        raise RuntimeError(f"POST {path} -> {response.status_code}: {response.text[:500]}")
    result: dict[str, Any] = response.json()
    return result


@dataclass
class Firm:
    legal_entity_id: str
    manager_id: str
    project_ids: list[str]
    consultant_ids: list[str]


async def build_firm(client: httpx.AsyncClient, consultants: int, projects: int = 4) -> Firm:
    """A firm through the public REST API: a manager, consultants, projects on one T&M contract,
    everyone assigned to every project."""
    tag = uuid.uuid4().hex[:6]
    le = await post(
        client, "/v1/legal-entities", {"code": f"LE{tag}", "name": "Bench Ltd", "baseCurrency": "GBP"}
    )
    cu = await post(
        client,
        "/v1/customers",
        {"code": f"CU{tag}", "name": "Bench Co", "legalEntityId": le["id"], "currency": "GBP"},
    )
    lc = await post(client, "/v1/labor-categories", {"code": f"LC{tag}", "name": "Consultant"})
    boss = await post(
        client,
        "/v1/consultants",
        {
            "code": f"M{tag}",
            "name": "Manager",
            "legalEntityId": le["id"],
            "laborCategoryId": lc["id"],
            "activeFrom": "2020-01-01",
        },
    )
    people: list[str] = []
    for start in range(0, consultants, 500):
        rows = [
            {
                "externalRef": {"system": "bench", "id": f"{tag}-c{i}"},
                "code": f"C{tag}{i}",
                "name": f"Consultant {i}",
                "legalEntityId": le["id"],
                "laborCategoryId": lc["id"],
                "managerId": boss["id"],
                "activeFrom": "2020-01-01",
            }
            for i in range(start, min(start + 500, consultants))
        ]
        reply = await post(client, "/v1/consultants:batchUpsert", {"consultants": rows})
        people += [r["consultant"]["id"] for r in reply["results"]]
    card = await post(
        client,
        "/v1/rate-cards",
        {
            "code": f"RC{tag}",
            "currency": "GBP",
            "rates": [{"laborCategoryId": lc["id"], "rate": "150.00", "effectiveFrom": "2020-01-01"}],
        },
    )
    project_ids = []
    for p in range(projects):
        project = await post(
            client,
            "/v1/projects",
            {
                "code": f"P{tag}{p}",
                "name": f"Project {p}",
                "customerId": cu["id"],
                "legalEntityId": le["id"],
                "managerId": boss["id"],
                "status": "PROJECT_STATUS_ACTIVE",
                "startDate": "2026-01-01",
            },
        )
        project_ids.append(project["id"])
    await post(
        client,
        "/v1/contracts",
        {
            "code": f"K{tag}",
            "customerId": cu["id"],
            "currency": "GBP",
            "lines": [
                {"projectId": p, "billingModel": "BILLING_MODEL_TIME_AND_MATERIALS", "rateCardId": card["id"]}
                for p in project_ids
            ],
        },
    )
    assignments = [
        {
            "externalRef": {"system": "bench", "id": f"{tag}-a{p}-{c}"},
            "projectId": project_id,
            "consultantId": consultant_id,
            "laborCategoryId": lc["id"],
            "startDate": "2026-01-01",
            "allocationPercent": "25",
        }
        for p, project_id in enumerate(project_ids)
        for c, consultant_id in enumerate(people)
    ]
    for start in range(0, len(assignments), 500):
        await post(client, "/v1/assignments:batchUpsert", {"assignments": assignments[start : start + 500]})
    return Firm(le["id"], boss["id"], project_ids, people)


async def wait_for_projection(database_url: str, firm: Firm, within: float = 120.0) -> None:
    """Until timekeeping's projection holds the firm (validation then reads no gRPC)."""
    want = len(firm.consultant_ids) * len(firm.project_ids)
    conn = await asyncpg.connect(database_url)
    try:
        deadline = time.monotonic() + within
        while True:
            have = await conn.fetchval(
                "SELECT count(*) FROM timekeeping.md_projection WHERE kind = 'assignment'"
            )
            if have >= want:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the projection holds {have} of {want} assignments after {within}s")
            await asyncio.sleep(0.2)
    finally:
        await conn.close()


def entries(firm: Firm, count: int, offset: int = 0, tag: str = "") -> list[dict[str, Any]]:
    """count distinct, valid entries (one per consultant-day, 7.5 h), as REST JSON."""
    out = []
    people = firm.consultant_ids
    for n in range(offset, offset + count):
        consultant = people[n % len(people)]
        day = FIRST_DAY + dt.timedelta(days=n // len(people))
        out.append(
            {
                "consultantId": consultant,
                "projectId": firm.project_ids[n % len(firm.project_ids)],
                "workDate": day.isoformat(),
                "hours": "7.5",
                "notes": f"work item {n}",
                "externalRef": {"system": "bench", "id": f"{tag}{n}"},
            }
        )
    latest = FIRST_DAY + dt.timedelta(days=(offset + count) // len(people))
    if latest > dt.datetime.now(dt.UTC).date():
        raise RuntimeError(f"too many entries for {len(people)} consultants: dates would reach {latest}")
    return out


async def raw_executemany_rate(database_url: str, rows: int) -> float:
    """Rows/s of plain asyncpg executemany into an unindexed copy of time_entries, one
    transaction: the floor of what storing entries can cost on this database, right now."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("CREATE TEMP TABLE raw_entries (LIKE timekeeping.time_entries INCLUDING DEFAULTS)")
        columns = (
            "id, fingerprint, consultant_id, project_id, labor_category_id, work_date, hours, billable, "
            "notes, status, violations, approver_id, decline_reason, invoice_id, legal_entity_id, "
            "customer_id, rate, rate_currency, version, create_time, update_time"
        )
        now = dt.datetime.now(dt.UTC)
        data = [
            (
                uuid.uuid4(),
                "f" * 64,
                "consultant",
                "project",
                "lc",
                FIRST_DAY,
                7.5,
                True,
                f"work item {i}",
                "PENDING_APPROVAL",
                "[]",
                "boss",
                "",
                "",
                "le",
                "cu",
                150,
                "GBP",
                1,
                now,
                now,
            )
            for i in range(rows)
        ]
        placeholders = ", ".join(f"${i}" for i in range(1, 22))
        start = time.perf_counter()
        async with conn.transaction():
            await conn.executemany(f"INSERT INTO raw_entries ({columns}) VALUES ({placeholders})", data)
        return rows / (time.perf_counter() - start)
    finally:
        await conn.close()


def say(*lines: str) -> None:
    """Print a benchmark's figures (scripts, so printing is their output)."""
    print(*lines, sep="\n", flush=True)  # noqa: T201


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0-100), nearest rank."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def summary_ms(latencies: Sequence[float]) -> str:
    ms = [x * 1000 for x in latencies]
    return (
        f"p50 {percentile(ms, 50):.1f} ms, p90 {percentile(ms, 90):.1f} ms, p99 {percentile(ms, 99):.1f} ms, "
        f"max {max(ms):.1f} ms, mean {statistics.fmean(ms):.1f} ms"
    )


def histogram(metrics_url: str, name: str, match: dict[str, str]) -> dict[float, float]:
    """Cumulative bucket counts (upper bound -> count) of one Prometheus histogram series."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(metrics_url, timeout=10).text
    out: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name != f"{name}_bucket":
                continue
            labels = sample.labels
            if all(labels.get(k) == v for k, v in match.items()):
                out[float(labels["le"])] = out.get(float(labels["le"]), 0.0) + sample.value
    return out


def bucket_quantile(before: dict[float, float], after: dict[float, float], q: float) -> str:
    """The bucket bound under which a q share of the observations between two scrapes fell."""
    bounds = sorted(after)
    deltas = [after[b] - before.get(b, 0.0) for b in bounds]
    if not deltas or deltas[-1] <= 0:
        return "n/a"
    for bound, cumulative in zip(bounds, deltas, strict=True):
        if cumulative >= q * deltas[-1]:
            if bound == float("inf"):
                return f"> {bounds[-2] * 1000:g} ms" if len(bounds) > 1 else "n/a"
            return f"<= {bound * 1000:g} ms"
    return "n/a"


def gc_pauses(metrics_url: str) -> dict[str, dict[float, float]]:
    """accrue_gc_pause_seconds per generation (cumulative buckets), as `histogram` reads them."""
    return {g: histogram(metrics_url, "accrue_gc_pause_seconds", {"generation": g}) for g in ("0", "1", "2")}


def gc_report(name: str, before: dict[str, dict[float, float]], after: dict[str, dict[float, float]]) -> str:
    """'<name> gen0 N passes (longest <= X ms), ...' between two scrapes."""
    parts = []
    for generation, now in after.items():
        passes = max(now.values(), default=0.0) - max(before.get(generation, {}).values(), default=0.0)
        if passes > 0:
            longest = bucket_quantile(before.get(generation, {}), now, 1.0)
            parts.append(f"gen{generation} {passes:.0f} passes (longest {longest})")
    return f"{name}: " + (", ".join(parts) if parts else "no passes")


def loop_lag(metrics_url: str) -> dict[float, float]:
    """accrue_event_loop_lag_seconds (cumulative buckets) of one process."""
    return histogram(metrics_url, "accrue_event_loop_lag_seconds", {})


def loop_lag_report(name: str, before: dict[float, float], after: dict[float, float]) -> str:
    """'<name>: N of M timer wakes over 25 ms late (longest <= X ms)' between two scrapes."""
    bounds = sorted(after)
    deltas = {b: after[b] - before.get(b, 0.0) for b in bounds}
    wakes = deltas[bounds[-1]] if bounds else 0.0
    if wakes <= 0:
        return f"{name}: no samples"
    late = wakes - deltas.get(0.025, wakes)
    return (
        f"{name}: {late:.0f} of {wakes:.0f} wakes over 25 ms late "
        f"(longest {bucket_quantile(before, after, 1.0)})"
    )


# -- profiling a process while a benchmark runs (py-spy) --------------------------------------------

PY_SPY = Path(sys.executable).parent / "py-spy"


class Profiler:
    """py-spy sampling processes of the stack between start() and stop(), in collapsed-stack
    ("raw") form, non-blocking (the target is never paused, so latency is not disturbed by the
    sampler beyond its CPU share)."""

    def __init__(self, directory: Path, label: str, pids: dict[str, int | None], rate: int = 100) -> None:
        self.directory, self.label, self.rate = directory, label, rate
        self._pids = {name: pid for name, pid in pids.items() if pid is not None}
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self.outputs: dict[str, Path] = {}

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        for name, pid in self._pids.items():
            out = self.directory / f"{self.label}-{name}.txt"
            self.outputs[name] = out
            self._procs[name] = subprocess.Popen(
                [
                    str(PY_SPY),
                    "record",
                    "--pid",
                    str(pid),
                    "--rate",
                    str(self.rate),
                    "--format",
                    "raw",
                    "--nonblocking",
                    "--output",
                    str(out),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )

    def stop(self) -> None:
        for proc in self._procs.values():
            proc.send_signal(signal.SIGINT)
        for name, proc in self._procs.items():
            try:
                _, err = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
            if not self.outputs[name].exists():
                say(f"py-spy on {name} wrote nothing: {err.decode(errors='replace')[-500:]}")


def profile_report(path: Path, top: int = 15, within: str = "") -> str:
    """The hottest frames of a collapsed-stack file: inclusive share (a frame anywhere on the
    stack) and self share (the frame on top), as lines. within: only stacks through this text."""
    inclusive: dict[str, int] = {}
    leaf: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit() or (within and within not in stack):
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
        leaf[frames[-1]] = leaf.get(frames[-1], 0) + count
    if not total:
        return f"{path.name}: no samples"

    def rows(counts: dict[str, int], keep: Callable[[str], bool]) -> list[str]:
        ranked = sorted(((n, f) for f, n in counts.items() if keep(f)), reverse=True)[:top]
        return [f"  {n / total:6.1%}  {f}" for n, f in ranked]

    def interesting(frame: str) -> bool:
        # Our code and the libraries on the request path; not the interpreter's entry frames.
        return not frame.startswith(("process ", "thread ", "<module>", "run (", "run_module", "_run_"))

    return "\n".join(
        [
            f"{path.name}: {total} samples" + (f" through {within!r}" if within else ""),
            " inclusive (on the stack):",
            *rows(inclusive, interesting),
            " self (on top of the stack):",
            *rows(leaf, lambda _: True),
        ]
    )


class WaitSampler:
    """Samples pg_stat_activity every `every` seconds on a thread of its own, between start()
    and stop(): what the stack's backends were waiting on (e.g. Lock:advisory, IO:WALSync,
    Client:ClientRead), so a latency tail can be tied to a cause."""

    def __init__(
        self, database_url: str, every: float = 0.02, namespaces: Mapping[int, str] | None = None
    ) -> None:
        self._url, self._every = database_url, every
        # The first key of two-key advisory locks -> what takes them, to name whose lock is waited on.
        self._namespaces = dict(namespaces or {})
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.samples = 0
        self.waits: dict[str, int] = {}
        self.advisory: dict[str, int] = {}

    def start(self) -> None:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), name="pg-waits", daemon=True)
        self._thread.start()

    async def _run(self) -> None:
        conn = await asyncpg.connect(self._url)
        try:
            while not self._stop.is_set():
                rows = await conn.fetch(
                    "SELECT coalesce(wait_event_type || ':' || wait_event, 'CPU') AS w, state "
                    "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
                    "AND state = 'active'"
                )
                self.samples += 1
                for row in rows:
                    self.waits[row["w"]] = self.waits.get(row["w"], 0) + 1
                if any(row["w"] == "Lock:advisory" for row in rows):
                    for row in await conn.fetch(
                        "SELECT classid::int4 AS ns, count(*) AS n FROM pg_locks "
                        "WHERE locktype = 'advisory' AND NOT granted AND objsubid = 2 GROUP BY 1"
                    ):
                        name = self._namespaces.get(row["ns"], f"namespace {row['ns']}")
                        self.advisory[name] = self.advisory.get(name, 0) + row["n"]
                await asyncio.sleep(self._every)
        finally:
            await conn.close()

    def stop(self) -> str:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        shown = ", ".join(
            f"{name} {count / max(1, self.samples):.2f}"
            for name, count in sorted(self.waits.items(), key=lambda kv: -kv[1])
        )
        locks = ", ".join(
            f"{name} {count / max(1, self.samples):.2f}"
            for name, count in sorted(self.advisory.items(), key=lambda kv: -kv[1])
        )
        return (
            f"PostgreSQL backends busy on a request, average per sample of pg_stat_activity "
            f"({self.samples} samples, every {self._every * 1000:g} ms): {shown or 'none'}"
            + (f"; advisory locks waited for: {locks}" if locks else "")
        )


def advisory_namespaces(schema: str) -> dict[int, str]:
    """Who takes which two-key advisory locks in a service's schema: the audit chain's per legal
    entity (accrue.db.audit: crc32 of "audit:<schema>.audit_events", signed) and timekeeping's
    own (adapters/repository.py: 1 consultant-day, 2 external reference, 3 legal entity)."""
    import zlib

    value = zlib.crc32(f"audit:{schema}.audit_events".encode())
    audit = value - (1 << 32) if value >= 1 << 31 else value
    return {
        audit: "audit chain (per legal entity, exclusive)",
        1: "timekeeping consultant-day",
        2: "timekeeping external reference",
        3: "timekeeping legal entity (shared)",
    }
