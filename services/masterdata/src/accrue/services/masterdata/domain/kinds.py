"""The canonical entities: what each must contain and what it refers to.

Master data is a schema'd record store, so the contract's messages are the model; the rules
that make a record valid live here, one function per entity, and nowhere else. Each rule adds
every violation it finds (field path, stable code, sentence) rather than stopping at the first.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from google.protobuf.message import Message

from accrue.events.v1 import masterdata_events_pb2 as ev
from accrue.masterdata.v1 import resources_pb2 as md
from accrue.runtime.validation import Violations

# A reference from a field of a record to another record: (field path, target kind, id).
Reference = tuple[str, str, str]


@dataclass(frozen=True)
class Kind:
    """One entity type: its message, its event, its rules and its references."""

    name: str  # singular snake_case, e.g. "labor_category"; used in subjects and tables
    plural: str  # e.g. "labor_categories"; the collection field in List/BatchUpsert
    message: type[Message]
    event: type[Message]
    validate: Callable[[Any, Violations], None]
    references: Callable[[Any], Iterator[Reference]]

    @property
    def event_type(self) -> str:
        """The upsert event's type, e.g. "md.project.upserted"."""
        return f"md.{self.name}.upserted"


def _refs(*pairs: tuple[str, str]) -> Callable[[Any], Iterator[Reference]]:
    def references(msg: Any) -> Iterator[Reference]:
        for field, target in pairs:
            value = getattr(msg, field)
            if value:
                yield field, target, value

    return references


def _validate_legal_entity(m: md.LegalEntity, v: Violations) -> None:
    v.required("code", m.code)
    v.required("name", m.name)
    v.currency("base_currency", m.base_currency)
    if m.country and (len(m.country) != 2 or not m.country.isalpha() or not m.country.isupper()):
        v.add(
            "country",
            "INVALID_COUNTRY",
            f'country must be an ISO 3166-1 alpha-2 code like "GB", got {m.country!r}',
        )


def _validate_customer(m: md.Customer, v: Violations) -> None:
    v.required("code", m.code)
    v.required("name", m.name)
    v.required("legal_entity_id", m.legal_entity_id)
    v.currency("currency", m.currency)


def _validate_labor_category(m: md.LaborCategory, v: Violations) -> None:
    v.required("code", m.code)
    v.required("name", m.name)


def _validate_consultant(m: md.Consultant, v: Violations) -> None:
    v.required("code", m.code)
    v.required("name", m.name)
    v.required("legal_entity_id", m.legal_entity_id)
    v.required("labor_category_id", m.labor_category_id)
    if m.email and ("@" not in m.email or " " in m.email):
        v.add("email", "INVALID_EMAIL", f"email must be an e-mail address, got {m.email!r}")
    v.decimal(
        "weekly_capacity_hours",
        m.weekly_capacity_hours,
        required=False,
        minimum=Decimal(0),
        maximum=Decimal(168),
    )
    v.decimal("cost_rate", m.cost_rate, required=False, minimum=Decimal(0))
    start = v.date("active_from", m.active_from)
    end = v.date("active_to", m.active_to, required=False)
    v.date_range("active_from", start, "active_to", end)
    if m.manager_id and m.id and m.manager_id == m.id:
        v.add("manager_id", "SELF_MANAGED", "a consultant cannot be their own manager")


def _validate_project(m: md.Project, v: Violations) -> None:
    v.required("code", m.code)
    v.required("name", m.name)
    v.required("customer_id", m.customer_id)
    v.required("legal_entity_id", m.legal_entity_id)
    v.required("manager_id", m.manager_id)
    if m.status == md.PROJECT_STATUS_UNSPECIFIED:
        v.add("status", "REQUIRED", "status is required")
    start = v.date("start_date", m.start_date)
    end = v.date("end_date", m.end_date, required=False)
    v.date_range("start_date", start, "end_date", end)
    v.decimal("budget_hours", m.budget_hours, required=False, minimum=Decimal(0))


def _validate_rate_card(m: md.RateCard, v: Violations) -> None:
    v.required("code", m.code)
    v.currency("currency", m.currency)
    spans: dict[tuple[str, str], list[tuple[dt.date, dt.date | None, int]]] = {}
    for i, entry in enumerate(m.rates):
        e = v.nested(f"rates[{i}]")
        e.required("labor_category_id", entry.labor_category_id)
        e.decimal("rate", entry.rate, minimum=Decimal(0))
        start = e.date("effective_from", entry.effective_from)
        end = e.date("effective_to", entry.effective_to, required=False)
        e.date_range("effective_from", start, "effective_to", end)
        if start is not None and (end is None or end >= start):
            spans.setdefault((entry.labor_category_id, entry.consultant_id), []).append((start, end, i))
    # Two entries for the same key in effect on the same day would make the price ambiguous.
    for ranges in spans.values():
        ranges.sort(key=lambda r: r[0])
        for (_, end_a, i), (start_b, _, j) in itertools.pairwise(ranges):
            if end_a is None or start_b <= end_a:
                v.add(
                    f"rates[{j}].effective_from",
                    "OVERLAPPING_RATES",
                    f"rates[{j}] overlaps rates[{i}] for the same labor category and consultant",
                )


def _rate_card_refs(m: md.RateCard) -> Iterator[Reference]:
    for i, entry in enumerate(m.rates):
        if entry.labor_category_id:
            yield f"rates[{i}].labor_category_id", "labor_category", entry.labor_category_id
        if entry.consultant_id:
            yield f"rates[{i}].consultant_id", "consultant", entry.consultant_id


def _validate_contract(m: md.Contract, v: Violations) -> None:
    v.required("code", m.code)
    v.required("customer_id", m.customer_id)
    v.currency("currency", m.currency)
    seen: dict[str, int] = {}
    for i, line in enumerate(m.lines):
        lv = v.nested(f"lines[{i}]")
        if lv.required("project_id", line.project_id) and line.project_id in seen:
            lv.add(
                "project_id", "DUPLICATE_PROJECT", f"the project is already on lines[{seen[line.project_id]}]"
            )
        seen.setdefault(line.project_id, i)
        model = line.billing_model
        if model == md.BILLING_MODEL_UNSPECIFIED:
            lv.add("billing_model", "REQUIRED", "billing_model is required")
        if model in (md.BILLING_MODEL_TIME_AND_MATERIALS, md.BILLING_MODEL_CAPPED) and not line.rate_card_id:
            lv.add(
                "rate_card_id", "REQUIRED", "rate_card_id is required for time-and-materials and capped lines"
            )
        if model == md.BILLING_MODEL_CAPPED:
            lv.decimal("cap_amount", line.cap_amount, minimum=Decimal(0), exclusive_minimum=True)
        elif line.cap_amount:
            lv.add("cap_amount", "NOT_APPLICABLE", "cap_amount applies to CAPPED lines only")
        if model == md.BILLING_MODEL_FIXED_FEE:
            lv.decimal("fee_amount", line.fee_amount, minimum=Decimal(0), exclusive_minimum=True)
        elif line.fee_amount:
            lv.add("fee_amount", "NOT_APPLICABLE", "fee_amount applies to FIXED_FEE lines only")


def _contract_refs(m: md.Contract) -> Iterator[Reference]:
    if m.customer_id:
        yield "customer_id", "customer", m.customer_id
    for i, line in enumerate(m.lines):
        if line.project_id:
            yield f"lines[{i}].project_id", "project", line.project_id
        if line.rate_card_id:
            yield f"lines[{i}].rate_card_id", "rate_card", line.rate_card_id


def _validate_milestone(m: md.Milestone, v: Violations) -> None:
    v.required("contract_line_id", m.contract_line_id)
    v.required("name", m.name)
    v.decimal("amount", m.amount, minimum=Decimal(0), exclusive_minimum=True)
    v.date("due_date", m.due_date)


def _validate_assignment(m: md.Assignment, v: Violations) -> None:
    v.required("project_id", m.project_id)
    v.required("consultant_id", m.consultant_id)
    v.required("labor_category_id", m.labor_category_id)
    start = v.date("start_date", m.start_date)
    end = v.date("end_date", m.end_date, required=False)
    v.date_range("start_date", start, "end_date", end)
    v.decimal("allocation_percent", m.allocation_percent, minimum=Decimal(0), maximum=Decimal(100))


def _validate_opportunity(m: md.Opportunity, v: Violations) -> None:
    v.required("customer_id", m.customer_id)
    v.required("legal_entity_id", m.legal_entity_id)
    v.required("name", m.name)
    v.decimal("amount", m.amount, minimum=Decimal(0))
    v.currency("currency", m.currency)
    v.decimal("probability", m.probability, minimum=Decimal(0), maximum=Decimal(1))
    v.date("expected_start", m.expected_start)
    if m.duration_months < 1:
        v.add(
            "duration_months", "OUT_OF_RANGE", f"duration_months must be at least 1, got {m.duration_months}"
        )


def _validate_fx_rate(m: md.FxRate, v: Violations) -> None:
    base = v.currency("base", m.base)
    quote = v.currency("quote", m.quote)
    if base and quote and base == quote:
        v.add("quote", "SAME_CURRENCY", "quote must differ from base")
    v.decimal("rate", m.rate, minimum=Decimal(0), exclusive_minimum=True)
    v.date("effective_date", m.effective_date)


def _validate_tax_rate(m: md.TaxRate, v: Violations) -> None:
    v.required("tax_code", m.tax_code)
    v.decimal("rate", m.rate, minimum=Decimal(0), maximum=Decimal(1))
    v.date("effective_from", m.effective_from)


def _none(_: Any) -> Iterator[Reference]:
    return iter(())


KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind(
            "legal_entity",
            "legal_entities",
            md.LegalEntity,
            ev.LegalEntityUpserted,
            _validate_legal_entity,
            _none,
        ),
        Kind(
            "customer",
            "customers",
            md.Customer,
            ev.CustomerUpserted,
            _validate_customer,
            _refs(("legal_entity_id", "legal_entity")),
        ),
        Kind(
            "labor_category",
            "labor_categories",
            md.LaborCategory,
            ev.LaborCategoryUpserted,
            _validate_labor_category,
            _none,
        ),
        Kind(
            "consultant",
            "consultants",
            md.Consultant,
            ev.ConsultantUpserted,
            _validate_consultant,
            _refs(
                ("legal_entity_id", "legal_entity"),
                ("labor_category_id", "labor_category"),
                ("manager_id", "consultant"),
            ),
        ),
        Kind(
            "project",
            "projects",
            md.Project,
            ev.ProjectUpserted,
            _validate_project,
            _refs(
                ("customer_id", "customer"), ("legal_entity_id", "legal_entity"), ("manager_id", "consultant")
            ),
        ),
        Kind(
            "rate_card", "rate_cards", md.RateCard, ev.RateCardUpserted, _validate_rate_card, _rate_card_refs
        ),
        Kind("contract", "contracts", md.Contract, ev.ContractUpserted, _validate_contract, _contract_refs),
        Kind(
            "milestone",
            "milestones",
            md.Milestone,
            ev.MilestoneUpserted,
            _validate_milestone,
            _refs(("contract_line_id", "contract_line")),
        ),
        Kind(
            "assignment",
            "assignments",
            md.Assignment,
            ev.AssignmentUpserted,
            _validate_assignment,
            _refs(
                ("project_id", "project"),
                ("consultant_id", "consultant"),
                ("labor_category_id", "labor_category"),
            ),
        ),
        Kind(
            "opportunity",
            "opportunities",
            md.Opportunity,
            ev.OpportunityUpserted,
            _validate_opportunity,
            _refs(("customer_id", "customer"), ("legal_entity_id", "legal_entity")),
        ),
        Kind("fx_rate", "fx_rates", md.FxRate, ev.FxRateUpserted, _validate_fx_rate, _none),
        Kind("tax_rate", "tax_rates", md.TaxRate, ev.TaxRateUpserted, _validate_tax_rate, _none),
    )
}
