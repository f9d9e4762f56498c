"""Tryton (trytond 8.2, account_invoice) as the ERP, over its JSON-RPC API.

A posted invoice becomes a Tryton customer invoice (type "out"; a negative total makes it a
credit note) with `reference` = our invoice id. Posting is search-then-create-then-post, so a
retry after a lost response finds the document by its reference and only finishes what is
missing: it never creates a second one.

Our figures are the invoice's figures. Lines carry our quantity and unit price when Tryton
would compute the same rounded amount from them, else quantity 1 at our amount (per-entry
rounding, half-up contracts, unit prices finer than Tryton's price digits). Taxes are manual
invoice taxes per tax code with our base and amount, so Tryton never recomputes them. After
creating the document the adapter reads Tryton's totals back and refuses to post a document
whose totals differ from ours.

Tryton setup it expects: a company (the user's current one, or `company_id`), a chart of
accounts, a fiscal year with invoice sequences covering the invoice dates, a revenue journal,
one `account.tax` per tax code, named like the code, and the currencies invoiced in.
"""

from __future__ import annotations

import base64
import datetime as dt
import itertools
import json
from collections.abc import Sequence
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import httpx

from accrue.money import minor_units
from accrue.services.billing.adapters.erp import (
    ErpInvoice,
    ErpLine,
    ErpReceipt,
    ErpRejected,
    ErpUnavailable,
)
from accrue.telemetry import get_logger

log = get_logger(__name__)

# Tryton's default price precision (account.invoice.line.unit_price digits).
PRICE_DIGITS = 4
POSTED_STATES = ("posted", "paid")


def _encode(value: Any) -> Any:
    if isinstance(value, Decimal):
        return {"__class__": "Decimal", "decimal": str(value)}
    if isinstance(value, dt.datetime):
        raise TypeError("datetimes are not sent to Tryton")
    if isinstance(value, dt.date):
        return {"__class__": "date", "year": value.year, "month": value.month, "day": value.day}
    raise TypeError(f"cannot send {type(value).__name__} to Tryton")


def _decode(obj: dict[str, Any]) -> Any:
    kind = obj.get("__class__")
    if kind == "Decimal":
        return Decimal(obj["decimal"])
    if kind == "date":
        return dt.date(obj["year"], obj["month"], obj["day"])
    return obj


class _Warning(Exception):
    """Tryton asks to confirm a warning before it goes on."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


class TrytonErp:
    """Customer invoices in Tryton through JSON-RPC."""

    system = "tryton"

    def __init__(
        self,
        url: str,
        database: str,
        user: str,
        password: str,
        *,
        company_id: int = 0,
        revenue_account: str = "",
        receivable_account: str = "",
        accepted_warnings: Sequence[str] = ("invoice_date_future",),
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._endpoint = f"{url.rstrip('/')}/{database}/rpc/"
        self._user = user
        self._password = password
        self._company_id = company_id
        self._revenue_code = revenue_account
        self._receivable_code = receivable_account
        self._accepted_warnings = tuple(accepted_warnings)
        self._client = httpx.AsyncClient(timeout=timeout, transport=transport)
        self._ids = itertools.count(1)
        self._auth: str | None = None
        self._user_id = 0
        self._context: dict[str, Any] = {}
        self._cache: dict[str, Any] = {}

    # -- JSON-RPC ---------------------------------------------------------------------------

    async def _rpc(self, method: str, params: list[Any], *, authenticated: bool = True) -> Any:
        headers = await self._headers(authenticated)
        body = json.dumps({"id": next(self._ids), "method": method, "params": params}, default=_encode)
        try:
            response = await self._client.post(self._endpoint, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise ErpUnavailable(f"Tryton did not answer {method}: {exc!r}") from exc
        if response.status_code in (401, 403) and authenticated:
            # The session expired (or the server restarted): log in again, once.
            self._auth = None
            headers = await self._headers(authenticated)
            try:
                response = await self._client.post(self._endpoint, content=body, headers=headers)
            except httpx.HTTPError as exc:
                raise ErpUnavailable(f"Tryton did not answer {method}: {exc!r}") from exc
        if response.status_code != 200:
            raise ErpUnavailable(f"Tryton answered {method} with HTTP {response.status_code}")
        try:
            data = json.loads(response.text, object_hook=_decode)
        except ValueError as exc:
            raise ErpUnavailable(f"Tryton sent a body that is not JSON for {method}") from exc
        error = data.get("error")
        if error:
            self._raise(method, error)
        return data.get("result")

    async def _headers(self, authenticated: bool) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if authenticated:
            if self._auth is None:
                await self._login()
            headers["Authorization"] = self._auth or ""
        return headers

    @staticmethod
    def _raise(method: str, error: Any) -> None:
        kind = error[0] if isinstance(error, list) and error else str(error)
        args = error[1] if isinstance(error, list) and len(error) > 1 else []
        if kind == "UserWarning" and isinstance(args, list) and len(args) >= 2:
            raise _Warning(str(args[0]), str(args[1]))
        if kind == "UserError":
            message = args[0] if isinstance(args, list) and args else str(args)
            raise ErpRejected(f"Tryton refused {method}: {message}")
        if kind in ("ConcurrencyException", "RateLimitException", "TimeoutException"):
            raise ErpUnavailable(f"Tryton could not do {method} now: {kind}")
        # An unexpected server error: it may be transient; the posting job retries with backoff.
        raise ErpUnavailable(f"Tryton failed {method}: {str(kind)[:500]}")

    async def _login(self) -> None:
        result = await self._rpc(
            "common.db.login", [self._user, {"password": self._password}, "en"], authenticated=False
        )
        if not isinstance(result, list) or len(result) < 2:
            raise ErpUnavailable("Tryton refused the login")
        self._user_id, session = int(result[0]), str(result[1])
        token = base64.b64encode(f"{self._user}:{self._user_id}:{session}".encode()).decode()
        self._auth = f"Session {token}"
        preferences = await self._rpc("model.res.user.get_preferences", [True, {}])
        context = dict(preferences or {})
        if self._company_id:
            context["company"] = self._company_id
        self._context = context

    async def _model(self, model: str, method: str, *args: Any) -> Any:
        if self._auth is None:
            await self._login()
        return await self._rpc(f"model.{model}.{method}", [*args, self._context])

    async def _search(self, model: str, domain: list[Any], limit: int | None = None) -> list[int]:
        return list(await self._model(model, "search", domain, 0, limit, None))

    async def _search_read(
        self, model: str, domain: list[Any], fields: list[str], limit: int | None = None
    ) -> list[dict[str, Any]]:
        return list(await self._model(model, "search_read", domain, 0, limit, None, fields))

    # -- reference data (looked up once per process) ----------------------------------------

    async def _one(self, key: str, model: str, domain: list[Any], what: str) -> int:
        if key not in self._cache:
            found = await self._search(model, domain, 1)
            if not found:
                raise ErpRejected(f"Tryton has no {what}")
            self._cache[key] = found[0]
        return int(self._cache[key])

    async def _company(self) -> int:
        if self._auth is None:
            await self._login()
        company = self._context.get("company")
        if not company:
            raise ErpRejected("the Tryton user has no company")
        return int(company)

    async def _account(self, kind: str, code: str) -> int:
        company = await self._company()
        domain: list[Any] = [("company", "=", company), ("closed", "!=", True)]
        domain.append(("code", "=", code) if code else (f"type.{kind}", "=", True))
        return await self._one(f"account:{kind}:{code}", "account.account", domain, f"{kind} account {code}")

    async def _currency(self, code: str) -> int:
        return await self._one(
            f"currency:{code}", "currency.currency", [("code", "=", code)], f"currency {code}"
        )

    async def _journal(self) -> int:
        return await self._one("journal", "account.journal", [("type", "=", "revenue")], "revenue journal")

    async def _tax(self, code: str) -> dict[str, Any]:
        key = f"tax:{code}"
        if key not in self._cache:
            found = await self._search_read(
                "account.tax", [("name", "=", code)], ["invoice_account", "credit_note_account"], 1
            )
            if not found:
                raise ErpRejected(f"Tryton has no tax named {code!r}")
            self._cache[key] = found[0]
        return dict(self._cache[key])

    async def _party(self, invoice: ErpInvoice) -> tuple[int, int]:
        """The customer's party (by code, created on first use) and its invoice address."""
        code = invoice.customer_code or invoice.customer_id
        found = await self._search("party.party", [("code", "=", code)], 1)
        if not found:
            try:
                found = list(
                    await self._model(
                        "party.party",
                        "create",
                        [
                            {
                                "name": invoice.customer_name or code,
                                "code": code,
                                "addresses": [["create", [{}]]],
                            }
                        ],
                    )
                )
            except ErpRejected:
                # Another replica created it first (the code is unique): use theirs.
                found = await self._search("party.party", [("code", "=", code)], 1)
                if not found:
                    raise
        party = int(found[0])
        addresses = await self._search("party.address", [("party", "=", party)], 1)
        if not addresses:
            addresses = list(await self._model("party.address", "create", [{"party": party}]))
        return party, int(addresses[0])

    # -- the adapter ------------------------------------------------------------------------

    async def _by_reference(self, reference: str) -> list[dict[str, Any]]:
        return await self._search_read(
            "account.invoice",
            [("reference", "=", reference), ("type", "=", "out")],
            ["state", "number", "untaxed_amount", "tax_amount", "total_amount"],
        )

    async def find_posted(self, reference: str) -> ErpReceipt | None:
        """The posted (or paid) customer invoice whose reference is our invoice id."""
        for doc in await self._by_reference(reference):
            if doc["state"] in POSTED_STATES:
                return ErpReceipt(str(doc["id"]), str(doc.get("number") or ""))
        return None

    async def post_invoice(self, invoice: ErpInvoice) -> ErpReceipt:
        """Find or create the document for our id, check its totals, post it."""
        documents = [d for d in await self._by_reference(invoice.reference) if d["state"] != "cancelled"]
        if len(documents) > 1:
            raise ErpRejected(f"Tryton holds {len(documents)} invoices with reference {invoice.reference}")
        if documents and documents[0]["state"] in POSTED_STATES:
            doc = documents[0]
            return ErpReceipt(str(doc["id"]), str(doc.get("number") or ""))
        if documents:
            document_id = int(documents[0]["id"])
            log.info("erp_document_found", system=self.system, reference=invoice.reference, id=document_id)
        else:
            document_id = await self._create(invoice)
        await self._check_totals(document_id, invoice)
        await self._post(document_id)
        (doc,) = await self._model("account.invoice", "read", [document_id], ["state", "number"])
        if doc["state"] not in POSTED_STATES:
            raise ErpUnavailable(f"Tryton left invoice {document_id} {doc['state']} after posting")
        return ErpReceipt(str(document_id), str(doc.get("number") or ""))

    async def _create(self, invoice: ErpInvoice) -> int:
        company = await self._company()
        currency = await self._currency(invoice.currency)
        party, address = await self._party(invoice)
        revenue = await self._account("revenue", self._revenue_code)
        lines = [
            {
                "type": "line",
                "description": line.description,
                # Tryton's quantity field is a float; hours are exact in binary (quarter hours)
                # and Tryton rounds it to the unit's digits. Amounts are checked afterwards.
                "quantity": float(quantity),
                "unit_price": unit_price,
                "account": revenue,
                "currency": currency,
                "company": company,
            }
            for line in invoice.lines
            for quantity, unit_price in [_quantity_and_price(line, invoice.currency)]
        ]
        taxes = []
        for code, base, amount in _taxes_by_code(invoice.lines):
            tax = await self._tax(code)
            taxes.append(
                {
                    "manual": True,
                    "tax": tax["id"],
                    "description": code,
                    "account": tax["credit_note_account" if base < 0 else "invoice_account"],
                    "base": base,
                    "amount": amount,
                }
            )
        values: dict[str, Any] = {
            "type": "out",
            "company": company,
            "party": party,
            "invoice_address": address,
            "currency": currency,
            "journal": await self._journal(),
            "account": await self._account("receivable", self._receivable_code),
            "invoice_date": invoice.invoice_date,
            "reference": invoice.reference,
            "description": f"Services {invoice.period_start.isoformat()} to {invoice.period_end.isoformat()}",
            "lines": [["create", lines]],
        }
        if taxes:
            values["taxes"] = [["create", taxes]]
        (document_id,) = await self._model("account.invoice", "create", [values])
        log.info("erp_document_created", system=self.system, reference=invoice.reference, id=document_id)
        return int(document_id)

    async def _check_totals(self, document_id: int, invoice: ErpInvoice) -> None:
        (doc,) = await self._model(
            "account.invoice", "read", [document_id], ["untaxed_amount", "tax_amount", "total_amount"]
        )
        theirs = (doc["untaxed_amount"], doc["tax_amount"], doc["total_amount"])
        ours = (invoice.subtotal, invoice.tax_total, invoice.total)
        if theirs != ours:
            raise ErpRejected(
                f"Tryton invoice {document_id} totals {theirs} differ from ours {ours}; not posting it"
            )

    async def _post(self, document_id: int) -> None:
        for _ in range(5):
            try:
                await self._model("account.invoice", "post", [document_id])
                return
            except _Warning as warning:
                if not warning.name.endswith(self._accepted_warnings):
                    raise ErpRejected(f"Tryton warns: {warning}") from warning
                # What the Tryton client does when a user answers "yes": record the warning as
                # seen for this user, then ask again.
                await self._model(
                    "res.user.warning",
                    "create",
                    [{"user": self._user_id, "name": warning.name, "always": False}],
                )
        raise ErpUnavailable(f"Tryton kept warning while posting invoice {document_id}")

    async def close(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()


def _quantity_and_price(line: ErpLine, currency: str) -> tuple[Decimal, Decimal]:
    """Our quantity and unit price when Tryton computes our amount from them, else 1 × amount."""
    exponent = line.unit_price.normalize().as_tuple().exponent
    fine = isinstance(exponent, int) and -exponent <= PRICE_DIGITS
    quantum = Decimal(1).scaleb(-minor_units(currency))
    if fine and (line.quantity * line.unit_price).quantize(quantum, rounding=ROUND_HALF_EVEN) == line.amount:
        return line.quantity, line.unit_price
    return Decimal(1), line.amount


def _taxes_by_code(lines: Sequence[ErpLine]) -> list[tuple[str, Decimal, Decimal]]:
    """(tax code, base, amount) per tax code, from our per-line taxes."""
    totals: dict[str, tuple[Decimal, Decimal]] = {}
    for line in lines:
        if not line.tax_code:
            continue
        base, amount = totals.get(line.tax_code, (Decimal(0), Decimal(0)))
        totals[line.tax_code] = (base + line.amount, amount + line.tax_amount)
    return [(code, base, amount) for code, (base, amount) in sorted(totals.items())]
