"""The file/batch adapter: one JSON and one CSV file per invoice, for ERPs that import files.

Files land in `<directory>/<legal entity id>/<invoice id>.json|.csv`, written to a temporary
name, flushed to disk and renamed, so an importer never sees half a file. The invoice id is the
file name: posting the same invoice again finds its files and confirms them, never a second pair.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
from decimal import Decimal
from pathlib import Path

from accrue.money import format_decimal, format_money
from accrue.services.billing.adapters.erp import ErpInvoice, ErpReceipt, ErpRejected, ErpUnavailable

CSV_COLUMNS = (
    "invoice_id",
    "legal_entity_id",
    "customer_code",
    "currency",
    "invoice_date",
    "line",
    "kind",
    "description",
    "quantity",
    "unit_price",
    "amount",
    "tax_code",
    "tax_rate",
    "tax_amount",
)


def invoice_json(invoice: ErpInvoice) -> str:
    """The JSON document: exact decimal strings, as everywhere in Accrue."""

    def money(value: Decimal) -> str:
        return format_money(value, invoice.currency)

    body = {
        "invoiceId": invoice.reference,
        "legalEntityId": invoice.legal_entity_id,
        "legalEntityCode": invoice.legal_entity_code,
        "customerId": invoice.customer_id,
        "customerCode": invoice.customer_code,
        "customerName": invoice.customer_name,
        "currency": invoice.currency,
        "invoiceDate": invoice.invoice_date.isoformat(),
        "periodStart": invoice.period_start.isoformat(),
        "periodEnd": invoice.period_end.isoformat(),
        "lines": [
            {
                "kind": line.kind,
                "description": line.description,
                "quantity": format_decimal(line.quantity, 2),
                "unitPrice": money(line.unit_price),
                "amount": money(line.amount),
                "taxCode": line.tax_code,
                "taxRate": format_decimal(line.tax_rate),
                "taxAmount": money(line.tax_amount),
            }
            for line in invoice.lines
        ],
        "subtotal": money(invoice.subtotal),
        "taxTotal": money(invoice.tax_total),
        "total": money(invoice.total),
    }
    return json.dumps(body, indent=2, ensure_ascii=False) + "\n"


def invoice_csv(invoice: ErpInvoice) -> str:
    """The CSV document: one row per line, the invoice's keys repeated on each."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for number, line in enumerate(invoice.lines, start=1):
        writer.writerow(
            (
                invoice.reference,
                invoice.legal_entity_id,
                invoice.customer_code,
                invoice.currency,
                invoice.invoice_date.isoformat(),
                number,
                line.kind,
                line.description,
                format_decimal(line.quantity, 2),
                format_money(line.unit_price, invoice.currency),
                format_money(line.amount, invoice.currency),
                line.tax_code,
                format_decimal(line.tax_rate),
                format_money(line.tax_amount, invoice.currency),
            )
        )
    return out.getvalue()


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class FileErp:
    """Writes each posted invoice as JSON and CSV into a directory."""

    system = "file"

    def __init__(self, directory: Path) -> None:
        self._directory = directory

    def _paths(self, legal_entity_id: str, reference: str) -> tuple[Path, Path]:
        folder = self._directory / (legal_entity_id or "none")
        return folder / f"{reference}.json", folder / f"{reference}.csv"

    def _receipt(self, json_path: Path) -> ErpReceipt:
        return ErpReceipt(document_id=str(json_path.relative_to(self._directory)), number="")

    async def post_invoice(self, invoice: ErpInvoice) -> ErpReceipt:
        """Write both files (again, identically, if a previous attempt was cut short)."""
        json_path, csv_path = self._paths(invoice.legal_entity_id, invoice.reference)
        body, table = invoice_json(invoice), invoice_csv(invoice)

        def write() -> ErpReceipt:
            if json_path.exists() and json_path.read_text(encoding="utf-8") != body:
                # A posted document never changes; a different body for the same id is a bug.
                raise ErpRejected(f"{json_path} already holds a different document for this invoice")
            json_path.parent.mkdir(parents=True, exist_ok=True)
            # CSV first: the JSON file's presence is what marks the document complete.
            _write_atomically(csv_path, table)
            _write_atomically(json_path, body)
            return self._receipt(json_path)

        try:
            return await asyncio.to_thread(write)
        except ErpRejected:
            raise
        except OSError as exc:
            raise ErpUnavailable(f"could not write {json_path}: {exc}") from exc

    async def find_posted(self, reference: str) -> ErpReceipt | None:
        """The JSON file of the invoice, in whichever legal entity's folder it is."""

        def find() -> ErpReceipt | None:
            for path in self._directory.glob(f"*/{reference}.json"):
                return self._receipt(path)
            return None

        return await asyncio.to_thread(find)

    async def close(self) -> None:
        """Nothing to release."""
