"""Master-data field rules: every violation names its field and reason."""

from accrue.masterdata.v1 import resources_pb2 as md
from accrue.runtime.validation import Violations
from accrue.services.masterdata.domain.kinds import KINDS
from accrue.type.v1 import types_pb2


def violations(kind: str, record: object) -> list[tuple[str, str]]:
    v = Violations()
    KINDS[kind].validate(record, v)
    return [(x.field, x.code) for x in v.items]


def test_legal_entity_needs_code_name_and_an_iso_currency() -> None:
    assert (
        violations("legal_entity", md.LegalEntity(code="UK", name="Acme", base_currency="GBP", country="GB"))
        == []
    )
    assert violations("legal_entity", md.LegalEntity(base_currency="EURO", country="gb")) == [
        ("code", "REQUIRED"),
        ("name", "REQUIRED"),
        ("base_currency", "INVALID_CURRENCY"),
        ("country", "INVALID_COUNTRY"),
    ]


def test_consultant_dates_must_be_real_and_ordered() -> None:
    bad = md.Consultant(
        code="E1",
        name="A",
        legal_entity_id="le",
        labor_category_id="lc",
        active_from="2026-02-30",
        weekly_capacity_hours="abc",
    )
    assert violations("consultant", bad) == [
        ("weekly_capacity_hours", "INVALID_DECIMAL"),
        ("active_from", "INVALID_DATE"),
    ]
    reversed_dates = md.Consultant(
        code="E1",
        name="A",
        legal_entity_id="le",
        labor_category_id="lc",
        active_from="2026-02-01",
        active_to="2026-01-01",
    )
    assert violations("consultant", reversed_dates) == [("active_to", "INVALID_RANGE")]


def test_assignment_allocation_is_a_percentage_and_opportunity_probability_a_fraction() -> None:
    a = md.Assignment(
        project_id="p",
        consultant_id="c",
        labor_category_id="l",
        start_date="2026-01-01",
        allocation_percent="120",
    )
    assert violations("assignment", a) == [("allocation_percent", "OUT_OF_RANGE")]
    o = md.Opportunity(
        customer_id="c",
        legal_entity_id="l",
        name="Deal",
        amount="1000",
        currency="EUR",
        probability="1.5",
        expected_start="2027-01-01",
        duration_months=0,
    )
    assert violations("opportunity", o) == [
        ("probability", "OUT_OF_RANGE"),
        ("duration_months", "OUT_OF_RANGE"),
    ]


def test_rate_entries_for_the_same_key_may_not_overlap() -> None:
    card = md.RateCard(
        code="RC",
        currency="EUR",
        rates=[
            md.RateCardEntry(
                labor_category_id="sc", rate="150", effective_from="2026-01-01", effective_to="2026-06-30"
            ),
            md.RateCardEntry(labor_category_id="sc", rate="160", effective_from="2026-06-01"),
            md.RateCardEntry(
                labor_category_id="sc", consultant_id="c1", rate="170", effective_from="2026-06-01"
            ),
        ],
    )
    assert violations("rate_card", card) == [("rates[1].effective_from", "OVERLAPPING_RATES")]


def test_contract_lines_need_what_their_billing_model_needs() -> None:
    contract = md.Contract(
        code="K",
        customer_id="cu",
        currency="EUR",
        lines=[
            md.ContractLine(project_id="p1", billing_model=md.BILLING_MODEL_CAPPED, rate_card_id="rc"),
            md.ContractLine(project_id="p2", billing_model=md.BILLING_MODEL_FIXED_FEE, cap_amount="10"),
            md.ContractLine(project_id="p1", billing_model=md.BILLING_MODEL_TIME_AND_MATERIALS),
        ],
    )
    assert violations("contract", contract) == [
        ("lines[0].cap_amount", "REQUIRED"),
        ("lines[1].cap_amount", "NOT_APPLICABLE"),
        ("lines[1].fee_amount", "REQUIRED"),
        ("lines[2].project_id", "DUPLICATE_PROJECT"),
        ("lines[2].rate_card_id", "REQUIRED"),
    ]
    refs = [(r.path, r.field.target, r.id) for r in KINDS["contract"].references(contract)]
    assert ("lines[0].rate_card_id", "rate_card", "rc") in refs


def test_fx_rate_must_be_positive_between_two_currencies() -> None:
    assert violations(
        "fx_rate", md.FxRate(base="EUR", quote="EUR", rate="0", effective_date="2026-01-01")
    ) == [
        ("quote", "SAME_CURRENCY"),
        ("rate", "OUT_OF_RANGE"),
    ]


def test_a_reference_is_given_by_id_or_by_a_complete_external_ref() -> None:
    by_ref = md.Customer(
        code="C",
        name="C",
        currency="EUR",
        legal_entity_ref=types_pb2.ExternalRef(system="erp", id="LE1"),
    )
    assert violations("customer", by_ref) == []
    assert violations("customer", md.Customer(code="C", name="C", currency="EUR")) == [
        ("legal_entity_id", "REQUIRED")
    ]
    half = md.Customer(
        code="C", name="C", currency="EUR", legal_entity_ref=types_pb2.ExternalRef(system="erp")
    )
    assert violations("customer", half) == [("legal_entity_ref", "INCOMPLETE_REF")]
    refs = [
        (r.path, r.ref_path, r.field.target, r.id, r.external) for r in KINDS["customer"].references(by_ref)
    ]
    assert refs == [("legal_entity_id", "legal_entity_ref", "legal_entity", "", ("erp", "LE1"))]


def test_a_milestone_names_its_contract_line_by_the_project_it_bills() -> None:
    m = md.Milestone(
        name="Design",
        amount="100",
        due_date="2026-01-31",
        project_ref=types_pb2.ExternalRef(system="psa", id="P1"),
    )
    assert violations("milestone", m) == []
    (ref,) = KINDS["milestone"].references(m)
    assert (ref.path, ref.field.target, ref.field.lookup) == ("contract_line_id", "contract_line", "project")
    assert violations("milestone", md.Milestone(name="x", amount="0", due_date="2026-01-31")) == [
        ("contract_line_id", "REQUIRED"),
        ("amount", "OUT_OF_RANGE"),
    ]


def test_a_consultant_cannot_manage_themselves() -> None:
    me = types_pb2.ExternalRef(system="hr", id="E1")
    c = md.Consultant(
        code="E1",
        name="A",
        legal_entity_id="le",
        labor_category_id="lc",
        active_from="2026-01-01",
        external_ref=me,
        manager_ref=me,
    )
    assert violations("consultant", c) == [("manager_ref", "SELF_MANAGED")]


def test_calendars_list_each_weekday_and_holiday_once() -> None:
    good = md.Calendar(
        code="UK",
        legal_entity_id="le",
        working_days=[md.WEEKDAY_MONDAY],
        holidays=[md.Holiday(date="2026-12-25")],
    )
    assert violations("calendar", good) == []
    bad = md.Calendar(
        working_days=[md.WEEKDAY_UNSPECIFIED, md.WEEKDAY_FRIDAY, md.WEEKDAY_FRIDAY],
        holidays=[
            md.Holiday(date="2026-12-25"),
            md.Holiday(date="25/12/2026"),
            md.Holiday(date="2026-12-25"),
        ],
    )
    assert violations("calendar", bad) == [
        ("code", "REQUIRED"),
        ("legal_entity_id", "REQUIRED"),
        ("working_days[0]", "INVALID_VALUE"),
        ("working_days[2]", "DUPLICATE"),
        ("holidays[1].date", "INVALID_DATE"),
        ("holidays[2].date", "DUPLICATE"),
    ]


def test_currency_codes_must_be_iso_4217_everywhere_money_is() -> None:
    assert ("currency", "INVALID_CURRENCY") in violations("rate_card", md.RateCard(code="RC", currency="usd"))
    assert ("currency", "INVALID_CURRENCY") in violations(
        "opportunity",
        md.Opportunity(
            customer_id="c",
            legal_entity_id="l",
            name="D",
            amount="1",
            currency="XYZ",
            probability="0.5",
            expected_start="2027-01-01",
            duration_months=3,
        ),
    )
    assert violations(
        "fx_rate", md.FxRate(base="EUR", quote="GBPX", rate="1.1", effective_date="2026-01-01")
    ) == [("quote", "INVALID_CURRENCY")]


def test_overlapping_rates_are_found_for_entries_named_by_external_ref_too() -> None:
    sc = types_pb2.ExternalRef(system="hr", id="SC")
    card = md.RateCard(
        code="RC",
        currency="EUR",
        rates=[
            md.RateCardEntry(labor_category_ref=sc, rate="150", effective_from="2026-01-01"),
            md.RateCardEntry(labor_category_ref=sc, rate="160", effective_from="2026-07-01"),
        ],
    )
    assert violations("rate_card", card) == [("rates[1].effective_from", "OVERLAPPING_RATES")]


def test_time_zones_are_iana_names() -> None:
    assert violations(
        "legal_entity", md.LegalEntity(code="AU", name="A", base_currency="AUD", time_zone="AEST")
    ) == [("time_zone", "INVALID_TIME_ZONE")]
    assert (
        violations(
            "legal_entity",
            md.LegalEntity(code="AU", name="A", base_currency="AUD", time_zone="Australia/Brisbane"),
        )
        == []
    )
    consultant = md.Consultant(
        code="E1", name="A", legal_entity_id="le", labor_category_id="lc", active_from="2026-01-01"
    )
    consultant.time_zone = "Mars/Olympus"
    assert violations("consultant", consultant) == [("time_zone", "INVALID_TIME_ZONE")]
    consultant.time_zone = "America/Los_Angeles"
    assert violations("consultant", consultant) == []


def test_a_calendars_working_day_is_hh_mm_and_ends_after_it_starts() -> None:
    base = {"code": "AU-2027", "legal_entity_id": "le"}
    assert violations("calendar", md.Calendar(**base, workday_start="8am", workday_end="17:60")) == [
        ("workday_start", "INVALID_TIME"),
        ("workday_end", "INVALID_TIME"),
    ]
    assert violations("calendar", md.Calendar(**base, workday_start="18:00")) == [
        ("workday_end", "INVALID_RANGE")
    ]
    assert violations("calendar", md.Calendar(**base, workday_start="08:30", workday_end="16:30")) == []
