"""The canonical entities: what each must contain, what it refers to, and what makes it unique.

Master data is a schema'd record store, so the contract's messages are the model; the rules
that make a record valid live here, one function per entity, and nowhere else. Each rule adds
every violation it finds (field path, stable code, sentence) rather than stopping at the first.

A reference to another record is an id field (`customer_id`) with, beside it, an input-only
external reference (`customer_ref`) a system of record may use instead: it names the record by
the id it has in that system, and the service layer resolves it to our id before storing.
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

# Fields the server sets on every resource; a client's values for them are ignored.
SERVER_FIELDS = ("id", "etag", "create_time", "update_time", "deactivate_time")


@dataclass(frozen=True)
class RefField:
    """A reference field: the id, its external-ref alternative, and the kind it points at.

    `via` names the kind the external ref is looked up in when that is not the target itself:
    a milestone names its contract line by the project the line bills (a project is on at most
    one line), since lines have no identity in any system of record.
    """

    id_field: str
    ref_field: str
    target: str
    via: str = ""

    @property
    def lookup(self) -> str:
        """The kind an external ref of this field is looked up in."""
        return self.via or self.target


@dataclass(slots=True)
class Reference:
    """One reference found in a record: where it is, what it points at and how it was named."""

    path: str  # "lines[0].project_id"
    ref_path: str  # "lines[0].project_ref"
    field: RefField
    holder: Any  # the message that has the field (the record, or a rate entry or contract line)
    id: str  # the id the field holds ("" when only the external ref names the target)
    external: tuple[str, str] | None  # the (system, id) the external ref names, if given

    def set_id(self, value: str) -> None:
        """Store the resolved id in the record."""
        setattr(self.holder, self.field.id_field, value)
        self.id = value


def _reference(path: str, ref_path: str, f: RefField, holder: Any) -> Reference | None:
    external = None
    if holder.HasField(f.ref_field):  # cheaper than reading an unset sub-message
        ref = getattr(holder, f.ref_field)
        external = (ref.system, ref.id) if ref.system or ref.id else None
    target_id = getattr(holder, f.id_field)
    if not target_id and external is None:
        return None
    return Reference(path, ref_path, f, holder, target_id, external)


@dataclass(frozen=True)
class UniqueKey:
    """Fields no two records of a kind may share (besides the id and the external ref)."""

    columns: tuple[str, ...]  # typed columns (see adapters.tables.COLUMNS)
    field: str  # the field a violation names
    code: str
    describe: str  # e.g. "code", "rate for the pair on that date"


@dataclass(frozen=True)
class Kind:
    """One entity type: its message, its event, its rules, references and unique keys."""

    name: str  # singular snake_case, e.g. "labor_category"; used in subjects and tables
    plural: str  # e.g. "labor_categories"; the collection field in List/BatchUpsert
    collection: str  # the REST collection, e.g. "labor-categories"
    message: type[Message]
    event: type[Message]
    validate: Callable[[Any, Violations], None]
    refs: tuple[RefField, ...] = ()
    # Repeated sub-messages that hold references of their own: (field, references).
    nested_refs: tuple[tuple[str, tuple[RefField, ...]], ...] = ()
    unique: tuple[UniqueKey, ...] = ()
    # Body fields only the server changes (a milestone's status); kept across upserts.
    server_managed: tuple[str, ...] = ()
    # The legal entity a record belongs to, reached by following these id fields from the
    # record ("id" for a legal entity itself); empty for firm-wide kinds, which every principal
    # sees (labor categories, rate cards, FX and tax rates). See domain.access.
    legal_entity_path: tuple[str, ...] = ()

    @property
    def event_type(self) -> str:
        """The upsert event's type, e.g. "md.project.upserted"."""
        return f"md.{self.name}.upserted"

    @property
    def deactivated_event_type(self) -> str:
        """The deactivation event's type, e.g. "md.project.deactivated"."""
        return f"md.{self.name}.deactivated"

    @property
    def title(self) -> str:
        """For sentences: "labor category"."""
        return self.name.replace("_", " ")

    @property
    def all_ref_fields(self) -> tuple[str, ...]:
        """Every input-only *_ref field name at the top level."""
        return tuple(r.ref_field for r in self.refs)

    def references(self, record: Any) -> Iterator[Reference]:
        """Every reference in record, named by id or by external ref (empty ones skipped)."""
        for f in self.refs:
            ref = _reference(f.id_field, f.ref_field, f, record)
            if ref is not None:
                yield ref
        for repeated, fields in self.nested_refs:
            for i, child in enumerate(getattr(record, repeated)):
                for f in fields:
                    ref = _reference(
                        f"{repeated}[{i}].{f.id_field}", f"{repeated}[{i}].{f.ref_field}", f, child
                    )
                    if ref is not None:
                        yield ref

    def referenced_ids(self, body: dict[str, Any]) -> set[tuple[str, str]]:
        """(target kind, id) of every reference in a stored body (the proto-JSON dict)."""
        found = {(f.target, str(body[f.id_field])) for f in self.refs if body.get(f.id_field)}
        for repeated, fields in self.nested_refs:
            for child in body.get(repeated, ()):
                found.update((f.target, str(child[f.id_field])) for f in fields if child.get(f.id_field))
        return found


# -- field rules ----------------------------------------------------------------------------------


def _required_ref(v: Violations, m: Any, id_field: str, ref_field: str) -> None:
    """A reference given by id or by a complete external ref."""
    ref = getattr(m, ref_field)
    if ref.system or ref.id:
        if not ref.system or not ref.id:
            v.add(ref_field, "INCOMPLETE_REF", f"{ref_field} needs both system and id")
    elif not getattr(m, id_field):
        v.add(id_field, "REQUIRED", f"{id_field} (or {ref_field}) is required")


def _optional_ref(v: Violations, m: Any, ref_field: str) -> None:
    ref = getattr(m, ref_field)
    if (ref.system or ref.id) and (not ref.system or not ref.id):
        v.add(ref_field, "INCOMPLETE_REF", f"{ref_field} needs both system and id")


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
    v.time_zone("time_zone", m.time_zone)


def _validate_customer(m: md.Customer, v: Violations) -> None:
    v.required("code", m.code)
    v.required("name", m.name)
    _required_ref(v, m, "legal_entity_id", "legal_entity_ref")
    v.currency("currency", m.currency)


def _validate_labor_category(m: md.LaborCategory, v: Violations) -> None:
    v.required("code", m.code)
    v.required("name", m.name)


def _validate_consultant(m: md.Consultant, v: Violations) -> None:
    v.required("code", m.code)
    v.required("name", m.name)
    _required_ref(v, m, "legal_entity_id", "legal_entity_ref")
    _required_ref(v, m, "labor_category_id", "labor_category_ref")
    _optional_ref(v, m, "manager_ref")
    if m.email and ("@" not in m.email or " " in m.email):
        v.add("email", "INVALID_EMAIL", f"email must be an e-mail address, got {m.email!r}")
    v.time_zone("time_zone", m.time_zone)
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
    if m.manager_ref.id and m.manager_ref == m.external_ref:
        v.add("manager_ref", "SELF_MANAGED", "a consultant cannot be their own manager")


def _validate_project(m: md.Project, v: Violations) -> None:
    v.required("code", m.code)
    v.required("name", m.name)
    _required_ref(v, m, "customer_id", "customer_ref")
    _required_ref(v, m, "legal_entity_id", "legal_entity_ref")
    _required_ref(v, m, "manager_id", "manager_ref")
    if m.status == md.PROJECT_STATUS_UNSPECIFIED:
        v.add("status", "REQUIRED", "status is required")
    start = v.date("start_date", m.start_date)
    end = v.date("end_date", m.end_date, required=False)
    v.date_range("start_date", start, "end_date", end)
    v.decimal("budget_hours", m.budget_hours, required=False, minimum=Decimal(0))


def _rate_key(entry: md.RateCardEntry) -> tuple[Any, ...]:
    """Entries that price the same hours: same role, same consultant (or both the role rate)."""
    lc = entry.labor_category_id or (entry.labor_category_ref.system, entry.labor_category_ref.id)
    who = entry.consultant_id or (entry.consultant_ref.system, entry.consultant_ref.id)
    return (lc, who if (entry.consultant_id or entry.consultant_ref.id) else "")


def _validate_rate_card(m: md.RateCard, v: Violations) -> None:
    v.required("code", m.code)
    v.currency("currency", m.currency)
    spans: dict[tuple[Any, ...], list[tuple[dt.date, dt.date | None, int]]] = {}
    for i, entry in enumerate(m.rates):
        e = v.nested(f"rates[{i}]")
        _required_ref(e, entry, "labor_category_id", "labor_category_ref")
        _optional_ref(e, entry, "consultant_ref")
        e.decimal("rate", entry.rate, minimum=Decimal(0))
        start = e.date("effective_from", entry.effective_from)
        end = e.date("effective_to", entry.effective_to, required=False)
        e.date_range("effective_from", start, "effective_to", end)
        if start is not None and (end is None or end >= start):
            spans.setdefault(_rate_key(entry), []).append((start, end, i))
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


def _line_project(line: md.ContractLine) -> Any:
    return line.project_id or (line.project_ref.system, line.project_ref.id)


def _validate_contract(m: md.Contract, v: Violations) -> None:
    v.required("code", m.code)
    _required_ref(v, m, "customer_id", "customer_ref")
    v.currency("currency", m.currency)
    seen: dict[Any, int] = {}
    for i, line in enumerate(m.lines):
        lv = v.nested(f"lines[{i}]")
        _required_ref(lv, line, "project_id", "project_ref")
        _optional_ref(lv, line, "rate_card_ref")
        project = _line_project(line)
        if project and project != ("", "") and project in seen:
            lv.add("project_id", "DUPLICATE_PROJECT", f"the project is already on lines[{seen[project]}]")
        seen.setdefault(project, i)
        model = line.billing_model
        if model == md.BILLING_MODEL_UNSPECIFIED:
            lv.add("billing_model", "REQUIRED", "billing_model is required")
        has_card = line.rate_card_id or line.rate_card_ref.id
        if model in (md.BILLING_MODEL_TIME_AND_MATERIALS, md.BILLING_MODEL_CAPPED) and not has_card:
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
    if m.rounding_mode not in md.RoundingMode.values():
        v.add("rounding_mode", "INVALID_VALUE", f"rounding_mode {m.rounding_mode} is not a RoundingMode")
    if m.rounding_scope not in md.RoundingScope.values():
        v.add("rounding_scope", "INVALID_VALUE", f"rounding_scope {m.rounding_scope} is not a RoundingScope")


def _validate_milestone(m: md.Milestone, v: Violations) -> None:
    _required_ref(v, m, "contract_line_id", "project_ref")
    v.required("name", m.name)
    v.decimal("amount", m.amount, minimum=Decimal(0), exclusive_minimum=True)
    v.date("due_date", m.due_date)


def _validate_assignment(m: md.Assignment, v: Violations) -> None:
    _required_ref(v, m, "project_id", "project_ref")
    _required_ref(v, m, "consultant_id", "consultant_ref")
    _required_ref(v, m, "labor_category_id", "labor_category_ref")
    start = v.date("start_date", m.start_date)
    end = v.date("end_date", m.end_date, required=False)
    v.date_range("start_date", start, "end_date", end)
    v.decimal("allocation_percent", m.allocation_percent, minimum=Decimal(0), maximum=Decimal(100))


def _validate_opportunity(m: md.Opportunity, v: Violations) -> None:
    _required_ref(v, m, "customer_id", "customer_ref")
    _required_ref(v, m, "legal_entity_id", "legal_entity_ref")
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


def _validate_calendar(m: md.Calendar, v: Violations) -> None:
    v.required("code", m.code)
    _required_ref(v, m, "legal_entity_id", "legal_entity_ref")
    days: set[int] = set()
    for i, day in enumerate(m.working_days):
        if day not in md.Weekday.values() or day == md.WEEKDAY_UNSPECIFIED:
            v.add(f"working_days[{i}]", "INVALID_VALUE", "working_days holds weekdays MONDAY to SUNDAY")
        elif day in days:
            v.add(f"working_days[{i}]", "DUPLICATE", f"{md.Weekday.Name(day)} is listed twice")
        days.add(day)
    dates: dict[dt.date, int] = {}
    for i, holiday in enumerate(m.holidays):
        when = v.nested(f"holidays[{i}]").date("date", holiday.date)
        if when is None:
            continue
        if when in dates:
            v.add(f"holidays[{i}].date", "DUPLICATE", f"{when} is already holidays[{dates[when]}]")
        dates.setdefault(when, i)
    start = v.time_of_day("workday_start", m.workday_start)
    end = v.time_of_day("workday_end", m.workday_end)
    if (start or dt.time(9)) >= (end or dt.time(17)):
        v.add("workday_end", "INVALID_RANGE", "workday_end must be after workday_start")


_CODE = UniqueKey(("code",), "code", "CODE_TAKEN", "code")
_LE = RefField("legal_entity_id", "legal_entity_ref", "legal_entity")
_CU = RefField("customer_id", "customer_ref", "customer")
_LC = RefField("labor_category_id", "labor_category_ref", "labor_category")
_BY_LE = ("legal_entity_id",)
# A contract line belongs to its contract's customer's legal entity (not a Kind of its own, but
# a reference target: milestones point at lines).
CONTRACT_LINE_LEGAL_ENTITY_PATH = ("contract_id", "customer_id", "legal_entity_id")


KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind(
            "legal_entity",
            "legal_entities",
            "legal-entities",
            md.LegalEntity,
            ev.LegalEntityUpserted,
            _validate_legal_entity,
            unique=(_CODE,),
            legal_entity_path=("id",),
        ),
        Kind(
            "customer",
            "customers",
            "customers",
            md.Customer,
            ev.CustomerUpserted,
            _validate_customer,
            refs=(_LE,),
            unique=(_CODE,),
            legal_entity_path=_BY_LE,
        ),
        Kind(
            "labor_category",
            "labor_categories",
            "labor-categories",
            md.LaborCategory,
            ev.LaborCategoryUpserted,
            _validate_labor_category,
            unique=(_CODE,),
        ),
        Kind(
            "consultant",
            "consultants",
            "consultants",
            md.Consultant,
            ev.ConsultantUpserted,
            _validate_consultant,
            refs=(_LE, _LC, RefField("manager_id", "manager_ref", "consultant")),
            unique=(_CODE,),
            legal_entity_path=_BY_LE,
        ),
        Kind(
            "project",
            "projects",
            "projects",
            md.Project,
            ev.ProjectUpserted,
            _validate_project,
            refs=(_CU, _LE, RefField("manager_id", "manager_ref", "consultant")),
            unique=(_CODE,),
            legal_entity_path=_BY_LE,
        ),
        Kind(
            "rate_card",
            "rate_cards",
            "rate-cards",
            md.RateCard,
            ev.RateCardUpserted,
            _validate_rate_card,
            nested_refs=(("rates", (_LC, RefField("consultant_id", "consultant_ref", "consultant"))),),
            unique=(_CODE,),
        ),
        Kind(
            "contract",
            "contracts",
            "contracts",
            md.Contract,
            ev.ContractUpserted,
            _validate_contract,
            refs=(_CU,),
            nested_refs=(
                (
                    "lines",
                    (
                        RefField("project_id", "project_ref", "project"),
                        RefField("rate_card_id", "rate_card_ref", "rate_card"),
                    ),
                ),
            ),
            unique=(_CODE,),
            legal_entity_path=("customer_id", "legal_entity_id"),
        ),
        Kind(
            "milestone",
            "milestones",
            "milestones",
            md.Milestone,
            ev.MilestoneUpserted,
            _validate_milestone,
            refs=(RefField("contract_line_id", "project_ref", "contract_line", via="project"),),
            server_managed=("status", "complete_time"),
            legal_entity_path=("contract_line_id", *CONTRACT_LINE_LEGAL_ENTITY_PATH),
        ),
        Kind(
            "assignment",
            "assignments",
            "assignments",
            md.Assignment,
            ev.AssignmentUpserted,
            _validate_assignment,
            refs=(
                RefField("project_id", "project_ref", "project"),
                RefField("consultant_id", "consultant_ref", "consultant"),
                _LC,
            ),
            legal_entity_path=("project_id", "legal_entity_id"),
        ),
        Kind(
            "opportunity",
            "opportunities",
            "opportunities",
            md.Opportunity,
            ev.OpportunityUpserted,
            _validate_opportunity,
            refs=(_CU, _LE),
            legal_entity_path=_BY_LE,
        ),
        Kind(
            "fx_rate",
            "fx_rates",
            "fx-rates",
            md.FxRate,
            ev.FxRateUpserted,
            _validate_fx_rate,
            unique=(
                UniqueKey(
                    ("base", "quote", "effective_date"),
                    "effective_date",
                    "RATE_EXISTS",
                    "rate for this currency pair and effective_date",
                ),
            ),
        ),
        Kind(
            "tax_rate",
            "tax_rates",
            "tax-rates",
            md.TaxRate,
            ev.TaxRateUpserted,
            _validate_tax_rate,
            unique=(
                UniqueKey(
                    ("tax_code", "effective_from"),
                    "effective_from",
                    "RATE_EXISTS",
                    "rate for this tax code and effective_from",
                ),
            ),
        ),
        Kind(
            "calendar",
            "calendars",
            "calendars",
            md.Calendar,
            ev.CalendarUpserted,
            _validate_calendar,
            refs=(_LE,),
            unique=(_CODE,),
            legal_entity_path=_BY_LE,
        ),
    )
}
