"""Billing's background work on real PostgreSQL and JetStream: posting jobs and scheduled runs.

The service runs (so its consumers fill the ledger and its projection), but these tests drive
the posting worker and the scheduler themselves, several at once, with clocks they choose: the
scheduler is told when "now" is, and the posting workers run on a FixedClock set a little after
the run's pinned instant (the running service, on the pinned clock, queues their jobs before it).
"""

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import grpc
import nats
import pytest
import sqlalchemy as sa
from google.protobuf.message import Message
from nats.js import JetStreamContext

from accrue.billing.v1 import billing_service_pb2 as bla
from accrue.billing.v1 import billing_service_pb2_grpc as blg
from accrue.billing.v1 import resources_pb2 as bl
from accrue.db import create_engine
from accrue.events.v1 import masterdata_events_pb2 as mev
from accrue.events.v1 import time_events_pb2 as tev
from accrue.masterdata.v1 import masterdata_service_pb2 as mda
from accrue.masterdata.v1 import masterdata_service_pb2_grpc as mdg
from accrue.masterdata.v1 import resources_pb2 as md
from accrue.mdprojection import MasterDataReader
from accrue.runtime.clock import FixedClock
from accrue.runtime.server import RunningService
from accrue.services.billing.adapters import tables
from accrue.services.billing.adapters.erp import ErpInvoice, ErpReceipt
from accrue.services.billing.adapters.erp.file import FileErp
from accrue.services.billing.adapters.unit_of_work import BillingUnitOfWork
from accrue.services.billing.domain.posting import RetryPolicy
from accrue.services.billing.service_layer.handlers import Billing
from accrue.services.billing.service_layer.posting import PostingWorker
from accrue.testing import identity
from accrue.timekeeping.v1 import resources_pb2 as tk

pytestmark = [pytest.mark.integration, pytest.mark.dates]

# The use cases are called directly here, as a finance person of every legal entity.
FINANCE = identity.person("finance-1", "finance")


class Env:
    def __init__(self, **kw: Any) -> None:
        self.__dict__.update(kw)


@pytest.fixture
async def env(
    start_service: Any,
    channel_to: Callable[[RunningService], grpc.aio.Channel],
    build_firm: Any,
    nats_url: str,
    database_url: str,
    tmp_path: Path,
    instant: dt.datetime,
) -> AsyncIterator[Any]:
    masterdata = await start_service("masterdata")
    address = f"127.0.0.1:{masterdata.grpc_port}"
    # The service's own posting worker looks once at start, then sleeps: the tests post.
    billing = await start_service(
        "billing",
        masterdata_address=address,
        erp_file_dir=tmp_path / "erp",
        posting_poll_seconds=3600,
        schedule_interval_seconds=0,
    )
    md_stub = mdg.MasterDataServiceStub(channel_to(masterdata))
    engine = create_engine(database_url)
    reader = MasterDataReader(md_stub, tables.md_projection)
    nc = await nats.connect(nats_url)
    yield Env(
        md=md_stub,
        bl=blg.BillingServiceStub(channel_to(billing)),
        js=nc.jetstream(),
        f=await build_firm(md_stub),
        engine=engine,
        uow=lambda: BillingUnitOfWork(engine, reader),
        erp_dir=tmp_path / "erp",
        # Later than anything the service stamps while the test sets up (its clock starts at the
        # pinned instant and ticks): jobs it queued are due for workers on this clock.
        clock=FixedClock(instant + dt.timedelta(minutes=5)),
    )
    await nc.close()
    await engine.dispose()


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 15.0) -> None:
    async with asyncio.timeout(within):
        while not await check():  # noqa: ASYNC110 - waiting for an asynchronous consumer
            await asyncio.sleep(0.05)


async def publish(
    js: JetStreamContext, event_type: str, key: str, message: Message, occurred_at: dt.datetime
) -> None:
    await js.publish(
        f"{event_type}.{key}",
        message.SerializeToString(),
        headers={
            "Nats-Msg-Id": str(uuid.uuid4()),
            "Accrue-Event-Type": event_type,
            "Accrue-Schema": message.DESCRIPTOR.full_name,
            "Accrue-Occurred-At": occurred_at.isoformat(),
        },
    )


async def approve(e: Any, day: str, hours: str, project: Any, approved_at: dt.datetime) -> tk.TimeEntry:
    entry = tk.TimeEntry(
        id=str(uuid.uuid4()),
        consultant_id=e.f["dev"].id,
        project_id=project.id,
        labor_category_id=e.f["lc"].id,
        work_date=day,
        hours=hours,
        billable=True,
        status=tk.TIME_ENTRY_STATUS_APPROVED,
        legal_entity_id=project.legal_entity_id,
        customer_id=project.customer_id,
    )
    entry.approve_time.FromDatetime(approved_at)
    await publish(
        e.js, "time.entry.approved", project.id, tev.TimeEntryApproved(time_entry=entry), approved_at
    )
    return entry


async def project_on_contract(
    e: Any, code: str, name: str, customer_id: str, legal_entity_id: str, contract_code: str
) -> md.Project:
    """An active project of the customer's on a T&M contract priced by the firm's rate card."""
    project = (
        await e.md.CreateProject(
            mda.CreateProjectRequest(
                project=md.Project(
                    code=code,
                    name=name,
                    customer_id=customer_id,
                    legal_entity_id=legal_entity_id,
                    manager_id=e.f["boss"].id,
                    status=md.PROJECT_STATUS_ACTIVE,
                    start_date="2026-01-01",
                )
            )
        )
    ).project
    await e.md.CreateContract(
        mda.CreateContractRequest(
            contract=md.Contract(
                code=contract_code,
                customer_id=customer_id,
                currency="GBP",
                lines=[
                    md.ContractLine(
                        project_id=project.id,
                        billing_model=md.BILLING_MODEL_TIME_AND_MATERIALS,
                        rate_card_id=e.f["card"].id,
                    )
                ],
            )
        )
    )
    return project


async def count(e: Any, sql: str) -> Any:
    async with e.engine.connect() as conn:
        return await conn.scalar(sa.text(sql))


async def ledger_has(e: Any, n: int) -> None:
    async def check() -> bool:
        return await count(e, "SELECT count(*) FROM billing.wip_entries") == n

    await eventually(check)


async def projects_with_contracts(
    e: Any, n: int, period: int = md.BILLING_PERIOD_MONTHLY
) -> list[md.Project]:
    made = []
    for i in range(n):
        p = (
            await e.md.CreateProject(
                mda.CreateProjectRequest(
                    project=md.Project(
                        code=f"PX{i}-{period}",
                        name=f"Project {i}",
                        customer_id=e.f["cu"].id,
                        legal_entity_id=e.f["le"].id,
                        manager_id=e.f["boss"].id,
                        status=md.PROJECT_STATUS_ACTIVE,
                        start_date="2026-01-01",
                    )
                )
            )
        ).project
        await e.md.CreateContract(
            mda.CreateContractRequest(
                contract=md.Contract(
                    code=f"KX{i}-{period}",
                    customer_id=e.f["cu"].id,
                    currency="GBP",
                    lines=[
                        md.ContractLine(
                            project_id=p.id,
                            billing_model=md.BILLING_MODEL_TIME_AND_MATERIALS,
                            rate_card_id=e.f["card"].id,
                            billing_period=period,
                        )
                    ],
                )
            )
        )
        made.append(p)
    return made


async def november_run(e: Any, legal_entity_id: str = "") -> bl.BillingRun:
    """A billing run for November (every legal entity unless one is named)."""
    period = bl.BillingRun(
        period_start="2026-11-01", period_end="2026-11-30", legal_entity_id=legal_entity_id
    )
    return (await e.bl.CreateBillingRun(bla.CreateBillingRunRequest(billing_run=period))).billing_run


async def queue_for_posting(e: Any, invoices: Iterable[bl.Invoice]) -> None:
    """Finance approves each invoice and asks for it to be posted, in order."""
    for invoice in invoices:
        await e.bl.ApproveInvoice(bla.ApproveInvoiceRequest(id=invoice.id, actor_id="fin"))
        await e.bl.PostInvoice(bla.PostInvoiceRequest(id=invoice.id, actor_id="fin"))


class CrashingOnce:
    """The file ERP, but the first call for one invoice dies after the ERP has the document:
    what a lost response or a killed worker looks like from the database's side."""

    system = "file"

    def __init__(self, inner: FileErp, victim: str) -> None:
        self.inner, self.victim, self.calls = inner, victim, 0

    async def post_invoice(self, invoice: ErpInvoice) -> ErpReceipt:
        self.calls += 1
        receipt = await self.inner.post_invoice(invoice)
        if invoice.reference == self.victim:
            self.victim = ""
            raise ConnectionResetError("the response was lost")
        return receipt

    async def find_posted(self, reference: str) -> ErpReceipt | None:
        return await self.inner.find_posted(reference)

    async def close(self) -> None:
        pass


async def test_concurrent_workers_post_each_invoice_once_with_gap_free_numbers(env: Any) -> None:
    e = env
    projects = await projects_with_contracts(e, 6)
    for p in projects:
        await approve(e, "2026-11-02", "8", p, dt.datetime(2026, 11, 2, tzinfo=dt.UTC))
    await ledger_has(e, 6)
    run = await november_run(e)
    assert len(run.invoices) == 6
    await queue_for_posting(e, run.invoices)
    erp = CrashingOnce(FileErp(e.erp_dir), victim=run.invoices[2].id)
    app = Billing(e.uow, e.clock, erp=erp)
    workers = [
        PostingWorker(
            e.uow,
            app,
            erp,
            retry=RetryPolicy(first_delay=dt.timedelta(0)),
            rate_per_second=1000,
            clock=e.clock,
        )
        for _ in range(3)
    ]

    async def drain(worker: PostingWorker) -> None:
        for _ in range(50):
            try:
                if not await worker.post_next():
                    return
            except ConnectionResetError:
                continue

    await asyncio.gather(*(drain(w) for w in workers))
    numbers = sorted(
        [(await e.bl.GetInvoice(bla.GetInvoiceRequest(id=i.id))).invoice.number for i in run.invoices]
    )
    assert numbers == [f"{n:06d}" for n in range(1, 7)]
    assert erp.calls == 7  # one call was lost and made again
    assert len(list(e.erp_dir.glob("*/*.json"))) == 6
    assert (
        await count(e, "SELECT count(*) FROM billing.outbox WHERE event_type = 'billing.invoice.posted'") == 6
    )


async def test_scheduled_runs_bill_each_period_once_at_its_cut_off(env: Any) -> None:
    e = env
    (monthly,) = await projects_with_contracts(e, 1)
    (weekly,) = await projects_with_contracts(e, 1, md.BILLING_PERIOD_WEEKLY)
    utc = dt.UTC
    on_time = await approve(e, "2026-11-27", "8", monthly, dt.datetime(2026, 12, 1, 9, tzinfo=utc))
    late = await approve(e, "2026-11-30", "4", monthly, dt.datetime(2026, 12, 5, 9, tzinfo=utc))
    week = await approve(e, "2026-11-25", "2", weekly, dt.datetime(2026, 11, 25, 18, tzinfo=utc))
    await ledger_has(e, 3)
    app = Billing(e.uow, e.clock, cutoff_delay=dt.timedelta(hours=48))

    def sources(invoices: list[bl.Invoice]) -> set[str]:
        return {i for inv in invoices for line in inv.lines for i in line.source_time_entry_ids}

    # 3 December, 00:00 UTC: November's cut-off. The week of 23-29 November was due on 2 December.
    first = await app.run_due(dt.datetime(2026, 12, 3, 0, 1, tzinfo=utc))
    again = await app.run_due(dt.datetime(2026, 12, 3, 0, 2, tzinfo=utc))
    by_kind = {r.billing_period: r for r in first}
    assert (by_kind["MONTHLY"].scheduled, by_kind["MONTHLY"].period_end) == (True, dt.date(2026, 11, 30))
    monthly_run = await app.get_run(by_kind["MONTHLY"].run_id, by=FINANCE)
    weekly_run = await app.get_run(by_kind["WEEKLY"].run_id, by=FINANCE)
    assert sources(list(monthly_run.invoices)) == {on_time.id}
    assert sources(list(weekly_run.invoices)) == {week.id}
    assert (weekly_run.period_start, weekly_run.period_end) == ("2026-11-23", "2026-11-29")
    assert {r.run_id for r in again} <= {r.run_id for r in first}
    assert sum(r.entries_billed for r in again) == 0
    # Late work (approved after November's cut-off) is on December's invoice.
    january = await app.run_due(dt.datetime(2027, 1, 3, 0, 1, tzinfo=utc))
    (december,) = [r for r in january if r.billing_period == "MONTHLY"]
    assert sources(list((await app.get_run(december.run_id, by=FINANCE)).invoices)) == {late.id}


async def test_overlapping_runs_at_once_bill_each_entry_exactly_once(env: Any) -> None:
    e = env
    projects = await projects_with_contracts(e, 3)
    entries = [
        await approve(e, f"2026-11-{day:02d}", "2", p, dt.datetime(2026, 11, day, 18, tzinfo=dt.UTC))
        for p in projects
        for day in (2, 9, 16)
    ]
    await ledger_has(e, len(entries))
    app = Billing(e.uow, e.clock)
    le = e.f["le"].id
    await asyncio.gather(
        app.run("2026-11-01", "2026-11-30", "", by=FINANCE),
        app.run("2026-11-01", "2026-11-30", le, by=FINANCE),
        app.run("2026-11-01", "2026-11-30", le, md.BILLING_PERIOD_MONTHLY, by=FINANCE),
        app.run("2026-11-01", "2026-11-15", le, by=FINANCE),
    )
    async with e.engine.connect() as conn:
        lineage = (
            await conn.execute(
                sa.text(
                    "SELECT unnest(l.source_time_entry_ids) FROM billing.invoice_lines l"
                    " JOIN billing.invoices i ON i.id = l.invoice_id WHERE i.status <> 'VOID'"
                )
            )
        ).scalars()
        billed = list(lineage)
        marked = await conn.scalar(
            sa.text("SELECT count(*) FROM billing.wip_entries WHERE invoice_id IS NOT NULL")
        )
        hours = await conn.scalar(sa.text("SELECT sum(quantity) FROM billing.invoice_lines"))
    assert sorted(billed) == sorted(x.id for x in entries)
    assert (marked, hours) == (len(entries), 2 * len(entries))


async def test_the_erp_rate_limit_is_one_bucket_for_every_worker(env: Any) -> None:
    e = env
    # 4 calls a second with a burst of 4: 12 tokens taken from two "replicas" at once need
    # about (12 - 4) / 4 = 2 seconds, however they interleave.
    app = Billing(e.uow, e.clock)
    workers = [
        PostingWorker(e.uow, app, FileErp(e.erp_dir), rate_per_second=4, clock=e.clock) for _ in range(2)
    ]
    started = asyncio.get_running_loop().time()
    await asyncio.gather(*(w._wait_for_token() for w in workers for _ in range(6)))
    elapsed = asyncio.get_running_loop().time() - started
    assert 1.7 <= elapsed < 6, elapsed


async def approved_invoices(e: Any, n: int) -> list[bl.Invoice]:
    """n approved invoices of November, queued for posting in order."""
    projects = await projects_with_contracts(e, n)
    for p in projects:
        await approve(e, "2026-11-02", "8", p, dt.datetime(2026, 11, 2, tzinfo=dt.UTC))
    await ledger_has(e, n)
    run = await november_run(e)
    invoices = sorted(run.invoices, key=lambda i: i.id)
    await queue_for_posting(e, invoices)
    return invoices


async def job(e: Any, invoice_id: str) -> Any:
    async with e.engine.connect() as conn:
        return (
            await conn.execute(
                sa.text("SELECT * FROM billing.posting_jobs WHERE invoice_id = :id"), {"id": invoice_id}
            )
        ).one()


class Buggy:
    """The file ERP, but posting one invoice hits a bug (not an ErpError)."""

    system = "file"

    def __init__(self, inner: FileErp, victim: str) -> None:
        self.inner, self.victim = inner, victim

    async def post_invoice(self, invoice: ErpInvoice) -> ErpReceipt:
        if invoice.reference == self.victim:
            raise ValueError("cannot decode the answer")
        return await self.inner.post_invoice(invoice)

    async def find_posted(self, reference: str) -> ErpReceipt | None:
        return await self.inner.find_posted(reference)

    async def close(self) -> None:
        pass


async def test_a_failure_that_is_no_erp_error_is_counted_and_backs_off_while_other_jobs_post(
    env: Any,
) -> None:
    e = env
    first, second = await approved_invoices(e, 2)
    erp = Buggy(FileErp(e.erp_dir), victim=first.id)
    app = Billing(e.uow, e.clock, erp=erp)
    worker = PostingWorker(
        e.uow,
        app,
        erp,
        retry=RetryPolicy(max_attempts=2, first_delay=dt.timedelta(minutes=10)),
        clock=e.clock,
    )
    assert await worker.post_next()  # the first (oldest) job, which fails
    failing = await job(e, first.id)
    assert (failing.status, failing.attempts, failing.leased_until) == ("QUEUED", 1, None)
    assert failing.last_error == "ValueError: cannot decode the answer"
    assert failing.next_attempt_time == e.clock() + dt.timedelta(minutes=10)
    # The queue is not stalled: the next due job posts, then nothing is due for a while.
    assert await worker.post_next()
    assert (await e.bl.GetInvoice(bla.GetInvoiceRequest(id=second.id))).invoice.number == "000001"
    assert not await worker.post_next()
    # Once its attempts run out the job fails for good, with an exception for finance.
    e.clock.advance(dt.timedelta(minutes=11))
    assert await PostingWorker(e.uow, app, erp, retry=RetryPolicy(max_attempts=2), clock=e.clock).post_next()
    assert ((await job(e, first.id)).status, (await job(e, first.id)).attempts) == ("FAILED", 2)
    assert (
        await count(
            e,
            "SELECT count(*) FROM billing.billing_exceptions"
            f" WHERE kind = 'ERP_POST_FAILED' AND status = 'OPEN' AND invoice_id = '{first.id}'",
        )
        == 1
    )


class Watching:
    """The file ERP, checking from another connection, mid-call, that billing holds nothing."""

    system = "file"

    def __init__(self, inner: FileErp, engine: Any) -> None:
        self.inner, self.engine = inner, engine
        self.seen: list[tuple[int, int]] = []

    async def post_invoice(self, invoice: ErpInvoice) -> ErpReceipt:
        # No connection of the worker's pool is checked out: no transaction can be open.
        checked_out = self.engine.pool.checkedout()
        async with self.engine.connect() as conn:
            # And nothing is locked: the job, the invoice and the number counters are free.
            locked = 0
            for sql in (
                "SELECT 1 FROM billing.posting_jobs WHERE invoice_id = :id FOR UPDATE NOWAIT",
                "SELECT 1 FROM billing.invoices WHERE id = :id FOR UPDATE NOWAIT",
                "SELECT 1 FROM billing.invoice_numbers FOR UPDATE NOWAIT",
            ):
                try:
                    await conn.execute(sa.text(sql), {"id": invoice.reference})
                except sa.exc.DBAPIError:
                    locked += 1
                    await conn.rollback()
            await conn.rollback()
        self.seen.append((checked_out, locked))
        return await self.inner.post_invoice(invoice)

    async def find_posted(self, reference: str) -> ErpReceipt | None:
        return await self.inner.find_posted(reference)

    async def close(self) -> None:
        pass


async def test_no_transaction_or_lock_is_held_while_the_erp_is_called(env: Any) -> None:
    e = env
    first, second = await approved_invoices(e, 2)
    erp = Watching(FileErp(e.erp_dir), e.engine)
    app = Billing(e.uow, e.clock, erp=erp)
    worker = PostingWorker(e.uow, app, erp, rate_per_second=1000, clock=e.clock)
    assert await worker.post_next()
    assert await worker.post_next()
    assert erp.seen == [(0, 0), (0, 0)]
    got = [await e.bl.GetInvoice(bla.GetInvoiceRequest(id=i.id)) for i in (first, second)]
    numbers = [g.invoice.number for g in got]
    assert sorted(numbers) == ["000001", "000002"]


class Killed(BaseException):
    """The worker's process dies (nothing in the worker catches it)."""


class DyingAfterTheErp:
    """The file ERP, but the worker dies right after the ERP confirmed the first call."""

    system = "file"

    def __init__(self, inner: FileErp) -> None:
        self.inner, self.calls, self.dead = inner, 0, False

    async def post_invoice(self, invoice: ErpInvoice) -> ErpReceipt:
        self.calls += 1
        receipt = await self.inner.post_invoice(invoice)
        if not self.dead:
            self.dead = True
            raise Killed
        return receipt

    async def find_posted(self, reference: str) -> ErpReceipt | None:
        return await self.inner.find_posted(reference)

    async def close(self) -> None:
        pass


async def test_a_worker_dying_after_the_erp_confirmed_is_finished_once_its_lease_ends(env: Any) -> None:
    e = env
    (invoice,) = await approved_invoices(e, 1)
    erp = DyingAfterTheErp(FileErp(e.erp_dir))
    app = Billing(e.uow, e.clock, erp=erp)
    lease = dt.timedelta(minutes=5)
    with pytest.raises(Killed):
        await PostingWorker(e.uow, app, erp, lease=lease, clock=e.clock).post_next()
    leased = await job(e, invoice.id)
    assert (leased.status, leased.attempts) == ("QUEUED", 1)
    assert leased.leased_until == e.clock() + lease
    # While the lease runs, no other worker takes the job.
    e.clock.advance(dt.timedelta(minutes=4))
    assert not await PostingWorker(e.uow, app, erp, lease=lease, clock=e.clock).post_next()
    e.clock.advance(dt.timedelta(minutes=2))
    assert await PostingWorker(e.uow, app, erp, lease=lease, clock=e.clock).post_next()
    posted = (await e.bl.GetInvoice(bla.GetInvoiceRequest(id=invoice.id))).invoice
    assert (posted.status, posted.number) == (bl.INVOICE_STATUS_POSTED, "000001")
    assert posted.erp_document_id == f"{e.f['le'].id}/{invoice.id}.json"
    assert ((await job(e, invoice.id)).status, (await job(e, invoice.id)).attempts) == ("CONFIRMED", 2)
    assert erp.calls == 2
    assert len(list(e.erp_dir.glob("*/*.json"))) == 1
    assert await count(e, "SELECT last_number FROM billing.invoice_numbers") == 1
    assert (
        await count(e, "SELECT count(*) FROM billing.outbox WHERE event_type = 'billing.invoice.posted'") == 1
    )


async def test_a_job_whose_attempts_all_died_unrecorded_fails_for_finance_without_another_call(
    env: Any,
) -> None:
    e = env
    (invoice,) = await approved_invoices(e, 1)
    erp = DyingAfterTheErp(FileErp(e.erp_dir))
    erp.dead = True  # from here on the ERP answers; only the claims below count
    app = Billing(e.uow, e.clock, erp=erp)
    # Two earlier workers claimed the job and died before recording anything.
    async with e.engine.begin() as conn:
        await conn.execute(
            sa.text(
                "UPDATE billing.posting_jobs SET attempts = 2, leased_until = NULL,"
                " next_attempt_time = :due WHERE invoice_id = :id"
            ),
            {"id": invoice.id, "due": e.clock() - dt.timedelta(seconds=1)},
        )
    worker = PostingWorker(e.uow, app, erp, retry=RetryPolicy(max_attempts=2), clock=e.clock)
    assert await worker.post_next()
    failed = await job(e, invoice.id)
    assert (failed.status, failed.attempts, failed.leased_until) == ("FAILED", 3, None)
    assert failed.last_error == "AttemptsUnrecorded: 2 attempt(s) ended without an outcome being recorded"
    assert erp.calls == 0
    assert (
        await count(
            e,
            "SELECT count(*) FROM billing.billing_exceptions"
            f" WHERE kind = 'ERP_POST_FAILED' AND status = 'OPEN' AND invoice_id = '{invoice.id}'",
        )
        == 1
    )
    assert not await worker.post_next()


async def test_two_concurrent_runs_for_one_legal_entity_and_period_are_one_run(env: Any) -> None:
    e = env
    projects = await projects_with_contracts(e, 2)
    for p in projects:
        await approve(e, "2026-11-02", "8", p, dt.datetime(2026, 11, 2, tzinfo=dt.UTC))
    await ledger_has(e, 2)
    app = Billing(e.uow, e.clock)
    le = e.f["le"].id
    first, second = await asyncio.gather(
        app.run("2026-11-01", "2026-11-30", le, by=FINANCE),
        app.run("2026-11-01", "2026-11-30", le, by=FINANCE),
    )
    assert first.run_id == second.run_id
    assert sorted(first.invoice_ids) == sorted(second.invoice_ids)
    assert len(first.invoice_ids) == 2
    # One call billed the entries, the other found nothing left: each entry once.
    assert sorted([first.entries_billed, second.entries_billed]) == [0, 2]
    assert await count(e, "SELECT count(*) FROM billing.billing_runs") == 1
    assert await count(e, "SELECT count(*) FROM billing.invoices") == 2
    assert await count(e, "SELECT count(*) FROM billing.invoice_lines") == 2


class VoidingMidCall:
    """The file ERP, but finance tries to void the invoice while the ERP is posting it."""

    system = "file"

    def __init__(self, inner: FileErp, stub: Any) -> None:
        self.inner, self.stub = inner, stub
        self.refusals: list[tuple[grpc.StatusCode, str]] = []

    async def post_invoice(self, invoice: ErpInvoice) -> ErpReceipt:
        try:
            async with asyncio.timeout(10):  # the row is not locked, so the answer is immediate
                await self.stub.VoidInvoice(
                    bla.VoidInvoiceRequest(id=invoice.reference, actor_id="fin", reason="changed my mind")
                )
        except grpc.aio.AioRpcError as refused:
            self.refusals.append((refused.code(), refused.details() or ""))
        return await self.inner.post_invoice(invoice)

    async def find_posted(self, reference: str) -> ErpReceipt | None:
        return await self.inner.find_posted(reference)

    async def close(self) -> None:
        pass


async def test_an_approved_invoice_can_be_voided_until_posting_is_asked_for(env: Any) -> None:
    e = env
    projects = await projects_with_contracts(e, 2)
    entries = [
        await approve(e, "2026-11-02", "8", p, dt.datetime(2026, 11, 2, tzinfo=dt.UTC)) for p in projects
    ]
    await ledger_has(e, 2)
    le = e.f["le"].id
    run = await november_run(e, le)
    voided_one, posted_one = sorted(run.invoices, key=lambda i: i.id)
    for invoice in (voided_one, posted_one):
        await e.bl.ApproveInvoice(bla.ApproveInvoiceRequest(id=invoice.id, actor_id="fin"))
    # APPROVED, not yet asked to post: the void goes through and its time is unbilled again.
    voided = (
        await e.bl.VoidInvoice(bla.VoidInvoiceRequest(id=voided_one.id, actor_id="fin", reason="wrong PO"))
    ).invoice
    assert (voided.status, voided.voided_by, voided.void_reason) == (
        bl.INVOICE_STATUS_VOID,
        "fin",
        "wrong PO",
    )
    released = {i for line in voided_one.lines for i in line.source_time_entry_ids}
    assert (
        await count(
            e,
            "SELECT count(*) FROM billing.wip_entries"
            f" WHERE invoice_id IS NULL AND time_entry_id IN ({', '.join(repr(i) for i in released)})",
        )
        == 1
    )
    assert released <= {x.id for x in entries}
    # Once posting is asked for, a void is refused — queued, and also while the ERP call is in
    # flight (the job leased, no row locked): the ERP may be making the document.
    await e.bl.PostInvoice(bla.PostInvoiceRequest(id=posted_one.id, actor_id="fin"))
    with pytest.raises(grpc.aio.AioRpcError) as queued:
        await e.bl.VoidInvoice(bla.VoidInvoiceRequest(id=posted_one.id, actor_id="fin", reason="late"))
    assert queued.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    erp = VoidingMidCall(FileErp(e.erp_dir), e.bl)
    assert await PostingWorker(e.uow, Billing(e.uow, e.clock, erp=erp), erp, clock=e.clock).post_next()
    ((code, details),) = erp.refusals
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "being posted" in details
    posted = (await e.bl.GetInvoice(bla.GetInvoiceRequest(id=posted_one.id))).invoice
    assert (posted.status, posted.number) == (bl.INVOICE_STATUS_POSTED, "000001")
    # The voided invoice's time goes on the next run's fresh draft.
    again = await november_run(e, le)
    fresh = [i for i in again.invoices if i.status == bl.INVOICE_STATUS_DRAFT]
    assert [set(line.source_time_entry_ids) for i in fresh for line in i.lines] == [released]


async def test_each_legal_entity_numbers_its_invoices_on_its_own_without_gaps(env: Any) -> None:
    e = env
    other = (
        await e.md.CreateLegalEntity(
            mda.CreateLegalEntityRequest(
                legal_entity=md.LegalEntity(code="IE", name="Acme Ireland", base_currency="GBP")
            )
        )
    ).legal_entity
    customer = (
        await e.md.CreateCustomer(
            mda.CreateCustomerRequest(
                customer=md.Customer(code="INITECH", name="Initech", legal_entity_id=other.id, currency="GBP")
            )
        )
    ).customer
    uk = await projects_with_contracts(e, 3)
    ie = []
    for i in range(2):
        p = await project_on_contract(e, f"IE{i}", f"Irish project {i}", customer.id, other.id, f"KIE{i}")
        ie.append(p)
    for p in uk:
        await approve(e, "2026-11-02", "8", p, dt.datetime(2026, 11, 2, tzinfo=dt.UTC))
    for p in ie:
        entry = tk.TimeEntry(
            id=str(uuid.uuid4()),
            consultant_id=e.f["dev"].id,
            project_id=p.id,
            labor_category_id=e.f["lc"].id,
            work_date="2026-11-03",
            hours="4",
            billable=True,
            status=tk.TIME_ENTRY_STATUS_APPROVED,
            legal_entity_id=other.id,
            customer_id=customer.id,
        )
        approved_at = dt.datetime(2026, 11, 3, tzinfo=dt.UTC)
        entry.approve_time.FromDatetime(approved_at)
        await publish(e.js, "time.entry.approved", p.id, tev.TimeEntryApproved(time_entry=entry), approved_at)
    await ledger_has(e, 5)
    run = await november_run(e)
    assert len(run.invoices) == 5
    await queue_for_posting(e, run.invoices)
    erp = FileErp(e.erp_dir)
    app = Billing(e.uow, e.clock, erp=erp)
    workers = [PostingWorker(e.uow, app, erp, rate_per_second=1000, clock=e.clock) for _ in range(2)]

    async def drain(worker: PostingWorker) -> None:
        while await worker.post_next():
            pass

    await asyncio.gather(*(drain(w) for w in workers))
    numbers: dict[str, list[str]] = {}
    for invoice in run.invoices:
        posted = (await e.bl.GetInvoice(bla.GetInvoiceRequest(id=invoice.id))).invoice
        numbers.setdefault(posted.legal_entity_id, []).append(posted.number)
    assert {le: sorted(n) for le, n in numbers.items()} == {
        e.f["le"].id: ["000001", "000002", "000003"],
        other.id: ["000001", "000002"],
    }


async def test_a_scheduler_down_over_whole_periods_gives_each_missed_period_its_own_run(env: Any) -> None:
    e = env
    (monthly,) = await projects_with_contracts(e, 1)
    utc = dt.UTC
    september = await approve(e, "2026-09-10", "1", monthly, dt.datetime(2026, 9, 10, 18, tzinfo=utc))
    october = await approve(e, "2026-10-10", "2", monthly, dt.datetime(2026, 10, 10, 18, tzinfo=utc))
    november = await approve(e, "2026-11-10", "3", monthly, dt.datetime(2026, 11, 10, 18, tzinfo=utc))
    await ledger_has(e, 3)
    app = Billing(e.uow, e.clock, cutoff_delay=dt.timedelta(hours=48))

    async def billed(result: Any) -> tuple[str, str, set[str]]:
        run = await app.get_run(result.run_id, by=FINANCE)
        return (
            run.period_start,
            run.period_end,
            {i for inv in run.invoices for line in inv.lines for i in line.source_time_entry_ids},
        )

    (first,) = [
        r
        for r in await app.run_due(dt.datetime(2026, 10, 3, 0, 1, tzinfo=utc))
        if r.billing_period == "MONTHLY"
    ]
    assert await billed(first) == ("2026-09-01", "2026-09-30", {september.id})
    # Down through October and November: on 3 December both months are billed, each on its own.
    caught_up = [
        r
        for r in await app.run_due(dt.datetime(2026, 12, 3, 0, 1, tzinfo=utc))
        if r.billing_period == "MONTHLY"
    ]
    assert [await billed(r) for r in caught_up] == [
        ("2026-10-01", "2026-10-31", {october.id}),
        ("2026-11-01", "2026-11-30", {november.id}),
    ]
    assert all(r.scheduled for r in caught_up)
    again = await app.run_due(dt.datetime(2026, 12, 3, 0, 2, tzinfo=utc))
    assert sum(r.entries_billed for r in again) == 0


async def legal_entity_in(e: Any, code: str, time_zone: str) -> tuple[md.LegalEntity, md.Project]:
    """A legal entity in a time zone, with a customer and a project on a monthly T&M contract."""
    le = (
        await e.md.CreateLegalEntity(
            mda.CreateLegalEntityRequest(
                legal_entity=md.LegalEntity(
                    code=code, name=f"Acme {code}", base_currency="GBP", time_zone=time_zone
                )
            )
        )
    ).legal_entity
    customer = (
        await e.md.CreateCustomer(
            mda.CreateCustomerRequest(
                customer=md.Customer(
                    code=f"CU-{code}", name=f"Client {code}", legal_entity_id=le.id, currency="GBP"
                )
            )
        )
    ).customer
    project = await project_on_contract(e, f"P-{code}", f"Project {code}", customer.id, le.id, f"K-{code}")
    return le, project


async def test_each_legal_entity_s_month_is_billed_once_its_own_month_has_ended(env: Any) -> None:
    """November ends at 14:00 UTC on 30 November in Brisbane (UTC+10), at midnight UTC in the
    UTC entity and at 08:00 UTC on 1 December in Los Angeles (UTC-8); 48 hours later each is due."""
    e = env
    utc = dt.UTC
    brisbane, bne_project = await legal_entity_in(e, "BNE", "Australia/Brisbane")
    los_angeles, lax_project = await legal_entity_in(e, "LAX", "America/Los_Angeles")
    (utc_project,) = await projects_with_contracts(e, 1)
    names = {brisbane.id: "Brisbane", e.f["le"].id: "UTC", los_angeles.id: "Los Angeles"}
    # Work on the last day of November everywhere, approved that day (before any cut-off).
    approved_at = dt.datetime(2026, 11, 30, 10, tzinfo=utc)
    entries = {
        names[p.legal_entity_id]: (await approve(e, "2026-11-30", "8", p, approved_at)).id
        for p in (bne_project, utc_project, lax_project)
    }
    await ledger_has(e, 3)
    app = Billing(e.uow, e.clock, cutoff_delay=dt.timedelta(hours=48))

    async def november_runs(now: dt.datetime) -> dict[str, tuple[str, dt.datetime | None, set[str]]]:
        """The monthly runs a scheduler tick at now makes: per legal entity, period end, cut-off
        and the entries billed."""
        made = {}
        for r in await app.run_due(now):
            if r.billing_period == "MONTHLY":
                run = await app.get_run(r.run_id, by=FINANCE)
                billed = {i for inv in run.invoices for line in inv.lines for i in line.source_time_entry_ids}
                made[names[r.legal_entity_id]] = (run.period_end, r.cutoff_time, billed)
        return made

    second = dt.timedelta(seconds=1)
    brisbane_due = dt.datetime(2026, 12, 2, 14, tzinfo=utc)
    assert await november_runs(brisbane_due - second) == {}
    assert await november_runs(brisbane_due) == {
        "Brisbane": ("2026-11-30", brisbane_due, {entries["Brisbane"]})
    }
    # The UTC entity's November is not due yet, whatever Brisbane's calendar says.
    utc_due = dt.datetime(2026, 12, 3, tzinfo=utc)
    assert await november_runs(utc_due - second) == {}
    assert await november_runs(utc_due) == {"UTC": ("2026-11-30", utc_due, {entries["UTC"]})}
    los_angeles_due = dt.datetime(2026, 12, 3, 8, tzinfo=utc)
    assert await november_runs(los_angeles_due - second) == {}
    assert await november_runs(los_angeles_due) == {
        "Los Angeles": ("2026-11-30", los_angeles_due, {entries["Los Angeles"]})
    }
    # Each month ran once: ticking again makes nothing new.
    assert await november_runs(los_angeles_due + dt.timedelta(hours=1)) == {}


async def test_a_milestone_completes_on_its_legal_entity_s_date(env: Any) -> None:
    """One instant, 15:00 UTC on 30 November, is 1 December in Brisbane: the milestone is
    December's there, and November's in the UTC entity."""
    e = env
    _, bne_project = await legal_entity_in(e, "BNE", "Australia/Brisbane")
    (utc_project,) = await projects_with_contracts(e, 1)
    completed_at = dt.datetime(2026, 11, 30, 15, tzinfo=dt.UTC)
    ids = {}
    for name, project in (("Brisbane", bne_project), ("UTC", utc_project)):
        milestone = md.Milestone(
            id=str(uuid.uuid4()),
            contract_line_id="line",
            name="Handover",
            amount="100.00",
            due_date="2026-11-30",
            status=md.MILESTONE_STATUS_COMPLETED,
        )
        milestone.complete_time.FromDatetime(completed_at)
        event = mev.MilestoneCompleted(milestone=milestone, contract_id="contract", project_id=project.id)
        await publish(e.js, "md.milestone.completed", milestone.id, event, completed_at)
        ids[name] = milestone.id

    async def recorded() -> bool:
        return await count(e, "SELECT count(*) FROM billing.milestones") == 2

    await eventually(recorded)
    async with e.engine.connect() as conn:
        dates = dict(
            (await conn.execute(sa.text("SELECT milestone_id, complete_date FROM billing.milestones"))).all()
        )
    assert {name: dates[i] for name, i in ids.items()} == {
        "Brisbane": dt.date(2026, 12, 1),
        "UTC": dt.date(2026, 11, 30),
    }


class Hanging:
    """An ERP that never answers."""

    system = "file"

    async def post_invoice(self, invoice: ErpInvoice) -> ErpReceipt:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")

    async def find_posted(self, reference: str) -> ErpReceipt | None:
        return None

    async def close(self) -> None:
        pass


async def test_an_erp_call_that_hangs_is_cut_off_before_the_lease_ends_and_retried_later(env: Any) -> None:
    e = env
    (invoice,) = await approved_invoices(e, 1)
    erp = Hanging()
    worker = PostingWorker(
        e.uow,
        Billing(e.uow, e.clock, erp=erp),
        erp,
        call_timeout=0.2,
        lease=dt.timedelta(seconds=30),
        retry=RetryPolicy(first_delay=dt.timedelta(minutes=1)),
        clock=e.clock,
    )
    async with asyncio.timeout(10):
        assert await worker.post_next()
    waiting = await job(e, invoice.id)
    assert (waiting.status, waiting.attempts, waiting.leased_until) == ("QUEUED", 1, None)
    assert waiting.last_error == "file did not answer within 0.2 s"
    with pytest.raises(ValueError, match="lease"):
        PostingWorker(
            e.uow,
            Billing(e.uow, e.clock),
            erp,
            call_timeout=60,
            lease=dt.timedelta(seconds=60),
            clock=e.clock,
        )
