"""The ERP adapters' own rules: files written once and atomically, Tryton's line mapping and errors."""

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from accrue.services.billing.adapters.erp import ErpInvoice, ErpLine, ErpRejected, ErpUnavailable
from accrue.services.billing.adapters.erp.file import FileErp
from accrue.services.billing.adapters.erp.tryton import TrytonErp, _quantity_and_price, _taxes_by_code


def line(quantity: str, price: str, amount: str, tax_code: str = "VAT", tax: str = "0") -> ErpLine:
    return ErpLine(
        "TIME",
        "Professional services",
        Decimal(quantity),
        Decimal(price),
        Decimal(amount),
        tax_code,
        Decimal("0.2"),
        Decimal(tax),
    )


def invoice(reference: str = "inv-1", *lines: ErpLine) -> ErpInvoice:
    lines = lines or (
        line("12.50", "150.00", "1875.00", tax="375.00"),
        line("-2", "150", "-300.00", tax="-60.00"),
    )
    subtotal = sum((x.amount for x in lines), Decimal(0))
    tax = sum((x.tax_amount for x in lines), Decimal(0))
    return ErpInvoice(
        reference,
        "le-1",
        "UK",
        "cu-1",
        "GLOBEX",
        "Globex",
        "GBP",
        dt.date(2026, 11, 30),
        dt.date(2026, 11, 1),
        dt.date(2026, 11, 30),
        lines,
        subtotal,
        tax,
        subtotal + tax,
    )


async def test_the_file_adapter_writes_json_and_csv_once(tmp_path: Path) -> None:
    erp = FileErp(tmp_path)
    first = await erp.post_invoice(invoice())
    again = await erp.post_invoice(invoice())
    assert first == again
    assert first.document_id == "le-1/inv-1.json"
    body = json.loads((tmp_path / "le-1" / "inv-1.json").read_text())
    assert (body["subtotal"], body["taxTotal"], body["total"]) == ("1575.00", "315.00", "1890.00")
    assert [ln["amount"] for ln in body["lines"]] == ["1875.00", "-300.00"]
    rows = (tmp_path / "le-1" / "inv-1.csv").read_text().splitlines()
    assert rows[0].startswith("invoice_id,legal_entity_id,customer_code")
    assert len(rows) == 3
    assert sorted(p.name for p in (tmp_path / "le-1").iterdir()) == ["inv-1.csv", "inv-1.json"]
    assert await erp.find_posted("inv-1") == first
    assert await erp.find_posted("inv-2") is None


async def test_the_file_adapter_refuses_a_different_document_for_the_same_invoice(tmp_path: Path) -> None:
    erp = FileErp(tmp_path)
    await erp.post_invoice(invoice())
    changed = invoice("inv-1", line("1", "10", "10.00", tax="2.00"))
    with pytest.raises(ErpRejected):
        await erp.post_invoice(changed)


def test_tryton_lines_carry_our_quantity_and_price_only_when_tryton_would_get_our_amount() -> None:
    assert _quantity_and_price(line("12.50", "150.00", "1875.00"), "GBP") == (
        Decimal("12.50"),
        Decimal("150.00"),
    )
    # Half-up contract: 0.25 × 100.10 = 25.025 → 25.03, which Tryton (half-even) would make 25.02.
    assert _quantity_and_price(line("0.25", "100.10", "25.03"), "GBP") == (Decimal(1), Decimal("25.03"))
    # A unit price finer than Tryton's four price digits (an FX-converted rate).
    assert _quantity_and_price(line("2", "162.63451", "325.27"), "GBP") == (Decimal(1), Decimal("325.27"))


def test_tryton_taxes_are_our_per_line_taxes_summed_per_code() -> None:
    lines = [
        line("1", "100", "100.00", "VAT", "20.00"),
        line("1", "50", "50.00", "VAT", "10.00"),
        line("1", "5", "5.00", ""),
    ]
    assert _taxes_by_code(lines) == [("VAT", Decimal("150.00"), Decimal("30.00"))]


def _tryton(handler: object) -> TrytonErp:
    return TrytonErp(
        "http://erp.invalid",
        "erp",
        "admin",
        "secret",
        transport=httpx.MockTransport(handler),  # type: ignore[arg-type]
    )


async def test_tryton_errors_say_whether_a_retry_can_help() -> None:
    def login_then(error: object) -> object:
        def handle(request: httpx.Request) -> httpx.Response:
            body = json.loads(request.content)
            if body["method"] == "common.db.login":
                return httpx.Response(200, json={"id": body["id"], "result": [1, "session", None]})
            if body["method"] == "model.res.user.get_preferences":
                return httpx.Response(200, json={"id": body["id"], "result": {"company": 1}})
            if isinstance(error, int):
                return httpx.Response(error)
            return httpx.Response(200, json={"id": body["id"], "error": error})

        return handle

    refused = _tryton(login_then(["UserError", ["The party is inactive.", "", None]]))
    with pytest.raises(ErpRejected, match="inactive"):
        await refused.find_posted("inv-1")
    busy = _tryton(login_then(["ConcurrencyException", ["Record modified"]]))
    with pytest.raises(ErpUnavailable):
        await busy.find_posted("inv-1")
    down = _tryton(login_then(503))
    with pytest.raises(ErpUnavailable, match="503"):
        await down.find_posted("inv-1")

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    with pytest.raises(ErpUnavailable, match="did not answer"):
        await _tryton(refuse).find_posted("inv-1")
