"""Posting to a real Tryton over JSON-RPC: once per invoice, whatever is lost on the way.

The adapter tests talk to the session's trytond directly; the last test posts through the
billing service (on real PostgreSQL and JetStream) with Tryton configured as its ERP.
"""

import asyncio
import base64
import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
import httpx
import nats
import pytest

from accrue.billing.v1 import billing_service_pb2 as bla
from accrue.billing.v1 import billing_service_pb2_grpc as blg
from accrue.billing.v1 import resources_pb2 as bl
from accrue.events.v1 import time_events_pb2 as tev
from accrue.masterdata.v1 import masterdata_service_pb2 as mda
from accrue.masterdata.v1 import masterdata_service_pb2_grpc as mdg
from accrue.masterdata.v1 import resources_pb2 as md
from accrue.runtime.server import RunningService, start
from accrue.services.billing import bootstrap as billing_bootstrap
from accrue.services.billing.adapters.erp import ErpInvoice, ErpLine, ErpRejected, ErpUnavailable
from accrue.services.billing.adapters.erp.tryton import TrytonErp
from accrue.services.billing.settings import BillingSettings
from accrue.services.masterdata import bootstrap as masterdata_bootstrap
from accrue.services.masterdata.settings import MasterDataSettings
from accrue.testing import identity
from accrue.timekeeping.v1 import resources_pb2 as tk

pytestmark = pytest.mark.integration


class Tryton:
    """An independent JSON-RPC client to look at what the adapter did."""

    def __init__(self, server: Any) -> None:
        self.endpoint = f"{server.url}/{server.database}/rpc/"
        login = httpx.post(
            self.endpoint,
            json={
                "id": 1,
                "method": "common.db.login",
                "params": [server.user, {"password": server.password}, "en"],
            },
        ).json()["result"]
        token = base64.b64encode(f"{server.user}:{login[0]}:{login[1]}".encode()).decode()
        self.headers = {"Authorization": f"Session {token}"}

    def call(self, method: str, *params: Any) -> Any:
        def decode(obj: dict[str, Any]) -> Any:
            return Decimal(obj["decimal"]) if obj.get("__class__") == "Decimal" else obj

        answer = httpx.post(
            self.endpoint, json={"id": 1, "method": method, "params": [*params, {}]}, headers=self.headers
        )
        return json.loads(answer.text, object_hook=decode)["result"]

    def invoices(self, reference: str) -> list[dict[str, Any]]:
        return list(
            self.call(
                "model.account.invoice.search_read",
                [["reference", "=", reference]],
                0,
                None,
                None,
                ["state", "number", "untaxed_amount", "tax_amount", "total_amount", "party.code"],
            )
        )


class LoseResponse(httpx.AsyncBaseTransport):
    """Delivers the request, then loses Tryton's answer to the first call of one method."""

    def __init__(self, method: str) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.method = method
        self.lost = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if not self.lost and json.loads(request.content)["method"] == self.method:
            await response.aread()
            await response.aclose()
            self.lost += 1
            raise httpx.ReadError("connection reset by peer", request=request)
        return response


def adapter(server: Any, transport: httpx.AsyncBaseTransport | None = None) -> TrytonErp:
    return TrytonErp(server.url, server.database, server.user, server.password, transport=transport)


def document(*lines: ErpLine, currency: str = "GBP", customer: str = "GLOBEX") -> ErpInvoice:
    lines = lines or (
        ErpLine(
            "TIME",
            "Professional services, 12.50 h",
            Decimal("12.50"),
            Decimal("150.00"),
            Decimal("1875.00"),
            "VAT-STD",
            Decimal("0.20"),
            Decimal("375.00"),
        ),
        ErpLine(
            "TIME",
            "Professional services, 7.25 h",
            Decimal("7.25"),
            Decimal("160.00"),
            Decimal("1160.00"),
            "VAT-STD",
            Decimal("0.20"),
            Decimal("232.00"),
        ),
    )
    subtotal = sum((x.amount for x in lines), Decimal(0))
    tax = sum((x.tax_amount for x in lines), Decimal(0))
    return ErpInvoice(
        reference=str(uuid.uuid4()),
        legal_entity_id="le-1",
        legal_entity_code="UK",
        customer_id="cu-1",
        customer_code=customer,
        customer_name="Globex Ltd",
        currency=currency,
        invoice_date=dt.date(2026, 11, 30),
        period_start=dt.date(2026, 11, 1),
        period_end=dt.date(2026, 11, 30),
        lines=lines,
        subtotal=subtotal,
        tax_total=tax,
        total=subtotal + tax,
    )


async def test_an_invoice_is_posted_once_with_our_figures_and_found_again(tryton_server: Any) -> None:
    erp, tryton = adapter(tryton_server), Tryton(tryton_server)
    doc = document()
    try:
        receipt = await erp.post_invoice(doc)
        again = await erp.post_invoice(doc)
        found = await erp.find_posted(doc.reference)
    finally:
        await erp.close()
    assert receipt == again == found
    (stored,) = tryton.invoices(doc.reference)
    assert (stored["state"], str(stored["id"]), stored["number"]) == (
        "posted",
        receipt.document_id,
        receipt.number,
    )
    assert (stored["untaxed_amount"], stored["tax_amount"], stored["total_amount"]) == (
        Decimal("3035.00"),
        Decimal("607.00"),
        Decimal("3642.00"),
    )
    assert stored["party."]["code"] == "GLOBEX"


@pytest.mark.parametrize("lost", ["model.account.invoice.create", "model.account.invoice.post"])
async def test_a_lost_answer_never_makes_a_second_document(tryton_server: Any, lost: str) -> None:
    tryton, doc = Tryton(tryton_server), document(customer=f"C-{lost[-6:]}")
    transport = LoseResponse(lost)
    erp = adapter(tryton_server, transport)
    try:
        with pytest.raises(ErpUnavailable):
            await erp.post_invoice(doc)
        assert transport.lost == 1
        receipt = await erp.post_invoice(doc)
    finally:
        await erp.close()
    (stored,) = tryton.invoices(doc.reference)
    assert (stored["state"], str(stored["id"])) == ("posted", receipt.document_id)


async def test_a_credit_note_and_amounts_tryton_would_round_otherwise(tryton_server: Any) -> None:
    # A credit (negative quantity) on a half-up contract: 0.25 h × 100.10 = 25.025 → 25.03, which
    # Tryton's half-even would make 25.02; the adapter sends 1 × 25.03 so the totals agree.
    doc = document(
        ErpLine(
            "CREDIT",
            "Credit for reversed time, -2.50 h",
            Decimal("-2.50"),
            Decimal("150.00"),
            Decimal("-375.00"),
            "VAT-STD",
            Decimal("0.20"),
            Decimal("-75.00"),
        ),
        ErpLine(
            "TIME",
            "Professional services, 0.25 h",
            Decimal("0.25"),
            Decimal("100.10"),
            Decimal("25.03"),
            "VAT-STD",
            Decimal("0.20"),
            Decimal("5.01"),
        ),
    )
    erp = adapter(tryton_server)
    try:
        await erp.post_invoice(doc)
    finally:
        await erp.close()
    (stored,) = Tryton(tryton_server).invoices(doc.reference)
    assert (stored["state"], stored["untaxed_amount"], stored["tax_amount"], stored["total_amount"]) == (
        "posted",
        Decimal("-349.97"),
        Decimal("-69.99"),
        Decimal("-419.96"),
    )


async def test_what_tryton_cannot_take_is_refused_without_a_document(tryton_server: Any) -> None:
    doc = document(
        ErpLine(
            "TIME",
            "Work",
            Decimal("1"),
            Decimal("100"),
            Decimal("100.00"),
            "NO-SUCH-TAX",
            Decimal("0.1"),
            Decimal("10.00"),
        ),
    )
    erp = adapter(tryton_server)
    try:
        with pytest.raises(ErpRejected, match="NO-SUCH-TAX"):
            await erp.post_invoice(doc)
    finally:
        await erp.close()
    assert Tryton(tryton_server).invoices(doc.reference) == []


# -- through the billing service ------------------------------------------------------------------


@pytest.fixture
async def services(
    database_url: str, nats_url: str, tryton_server: Any
) -> AsyncIterator[list[RunningService]]:
    common = {"database_url": database_url, "nats_url": nats_url, "grpc_port": 0, "metrics_port": 0}
    md_settings = MasterDataSettings(**common, shutdown_grace_seconds=1)
    await masterdata_bootstrap.migrate(md_settings)
    masterdata = await start(await masterdata_bootstrap.bootstrap(md_settings))
    settings = BillingSettings(
        **common,
        shutdown_grace_seconds=1,
        masterdata_address=f"127.0.0.1:{masterdata.grpc_port}",
        erp_adapter="tryton",
        tryton_url=tryton_server.url,
        tryton_database=tryton_server.database,
        tryton_user=tryton_server.user,
        tryton_password=tryton_server.password,
        posting_poll_seconds=0.05,
        schedule_interval_seconds=0,
        erp_file_dir=Path("unused"),
    )
    await billing_bootstrap.migrate(settings)
    billing = await start(await billing_bootstrap.bootstrap(settings))
    yield [masterdata, billing]
    await billing.stop()
    await masterdata.stop()


async def test_the_billing_service_posts_approved_invoices_to_tryton(
    services: list[RunningService], nats_url: str, tryton_server: Any
) -> None:
    masterdata, billing = services
    async with (
        _channel(masterdata) as md_channel,
        _channel(billing) as bl_channel,
    ):
        mds, bls = mdg.MasterDataServiceStub(md_channel), blg.BillingServiceStub(bl_channel)
        le = (
            await mds.CreateLegalEntity(
                mda.CreateLegalEntityRequest(
                    legal_entity=md.LegalEntity(code="UK", name="Acme UK", base_currency="GBP")
                )
            )
        ).legal_entity
        cu = (
            await mds.CreateCustomer(
                mda.CreateCustomerRequest(
                    customer=md.Customer(
                        code="INITECH", name="Initech", legal_entity_id=le.id, currency="GBP"
                    )
                )
            )
        ).customer
        lc = (
            await mds.CreateLaborCategory(
                mda.CreateLaborCategoryRequest(labor_category=md.LaborCategory(code="SC", name="Senior"))
            )
        ).labor_category
        boss = (
            await mds.CreateConsultant(
                mda.CreateConsultantRequest(
                    consultant=md.Consultant(
                        code="E1",
                        name="Boss",
                        legal_entity_id=le.id,
                        labor_category_id=lc.id,
                        active_from="2020-01-01",
                    )
                )
            )
        ).consultant
        project = (
            await mds.CreateProject(
                mda.CreateProjectRequest(
                    project=md.Project(
                        code="P1",
                        name="P1",
                        customer_id=cu.id,
                        legal_entity_id=le.id,
                        manager_id=boss.id,
                        status=md.PROJECT_STATUS_ACTIVE,
                        start_date="2026-01-01",
                    )
                )
            )
        ).project
        card = (
            await mds.CreateRateCard(
                mda.CreateRateCardRequest(
                    rate_card=md.RateCard(
                        code="RC",
                        currency="GBP",
                        rates=[
                            md.RateCardEntry(
                                labor_category_id=lc.id, rate="150.00", effective_from="2026-01-01"
                            )
                        ],
                    )
                )
            )
        ).rate_card
        await mds.CreateTaxRate(
            mda.CreateTaxRateRequest(
                tax_rate=md.TaxRate(tax_code="VAT-STD", rate="0.20", effective_from="2020-01-01")
            )
        )
        await mds.CreateContract(
            mda.CreateContractRequest(
                contract=md.Contract(
                    code="K1",
                    customer_id=cu.id,
                    currency="GBP",
                    lines=[
                        md.ContractLine(
                            project_id=project.id,
                            rate_card_id=card.id,
                            tax_code="VAT-STD",
                            billing_model=md.BILLING_MODEL_TIME_AND_MATERIALS,
                        )
                    ],
                )
            )
        )
        entry = tk.TimeEntry(
            id=str(uuid.uuid4()),
            consultant_id=boss.id,
            project_id=project.id,
            labor_category_id=lc.id,
            work_date="2026-11-02",
            hours="7.5",
            billable=True,
            status=tk.TIME_ENTRY_STATUS_APPROVED,
            legal_entity_id=le.id,
            customer_id=cu.id,
        )
        nc = await nats.connect(nats_url)
        message = tev.TimeEntryApproved(time_entry=entry)
        await nc.jetstream().publish(
            f"time.entry.approved.{project.id}",
            message.SerializeToString(),
            headers={
                "Nats-Msg-Id": str(uuid.uuid4()),
                "Accrue-Event-Type": "time.entry.approved",
                "Accrue-Schema": message.DESCRIPTOR.full_name,
            },
        )
        await nc.close()
        period = bla.SummarizeBilledWorkRequest(period_start="2026-11-01", period_end="2026-11-30")
        async with asyncio.timeout(15):
            while not (await bls.SummarizeBilledWork(period)).projects:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        run = (
            await bls.CreateBillingRun(
                bla.CreateBillingRunRequest(
                    billing_run=bl.BillingRun(period_start="2026-11-01", period_end="2026-11-30")
                )
            )
        ).billing_run
        (invoice,) = run.invoices
        await bls.ApproveInvoice(bla.ApproveInvoiceRequest(id=invoice.id, actor_id="finance"))
        await bls.PostInvoice(bla.PostInvoiceRequest(id=invoice.id, actor_id="finance"))
        async with asyncio.timeout(30):
            while True:
                posted = (await bls.GetInvoice(bla.GetInvoiceRequest(id=invoice.id))).invoice
                if posted.status == bl.INVOICE_STATUS_POSTED:
                    break
                await asyncio.sleep(0.1)
    (stored,) = Tryton(tryton_server).invoices(invoice.id)
    assert (str(stored["id"]), stored["number"]) == (posted.erp_document_id, posted.erp_number)
    assert (stored["total_amount"], posted.total) == (Decimal("1350.00"), "1350.00")
    assert (posted.number, stored["party."]["code"]) == ("000001", "INITECH")


def _channel(service: RunningService) -> grpc.aio.Channel:
    return identity.channel(f"127.0.0.1:{service.grpc_port}", identity.run_signer())
