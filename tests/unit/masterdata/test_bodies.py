"""The fast stored-body converter gives exactly what MessageToDict gives, for every kind."""

from google.protobuf import json_format

from accrue.masterdata.v1 import resources_pb2 as md
from accrue.services.masterdata.adapters.bodies import to_body
from accrue.services.masterdata.domain.kinds import KINDS
from accrue.type.v1 import types_pb2

REF = types_pb2.ExternalRef(system="hr", id="E1")
SAMPLES = [
    md.LegalEntity(
        id="x", code="UK", name="Acme", base_currency="GBP", country="GB", external_ref=REF, etag="3"
    ),
    md.Customer(code="C", name="C", legal_entity_id="le", currency="EUR", legal_entity_ref=REF),
    md.LaborCategory(code="SC", name="Senior"),
    md.Consultant(code="E", name="N", manager_id="m", weekly_capacity_hours="40", active_from="2020-01-01"),
    md.Project(
        code="P", name="P", status=md.PROJECT_STATUS_ON_HOLD, start_date="2026-01-01", budget_hours="10.5"
    ),
    md.RateCard(
        code="RC",
        currency="EUR",
        rates=[
            md.RateCardEntry(id="r1", labor_category_id="lc", rate="150.00", effective_from="2026-01-01"),
            md.RateCardEntry(
                id="r2", labor_category_id="lc", consultant_id="c", rate="1", effective_from="2026-01-01"
            ),
        ],
    ),
    md.Contract(
        code="K",
        customer_id="cu",
        currency="GBP",
        rounding_mode=md.ROUNDING_MODE_HALF_UP,
        lines=[
            md.ContractLine(id="l", project_id="p", billing_model=md.BILLING_MODEL_CAPPED, cap_amount="1")
        ],
    ),
    md.Milestone(
        contract_line_id="l",
        name="M",
        amount="1",
        due_date="2026-01-01",
        status=md.MILESTONE_STATUS_COMPLETED,
    ),
    md.Assignment(project_id="p", consultant_id="c", allocation_percent="50", billable=False),
    md.Assignment(project_id="p", consultant_id="c", allocation_percent="50"),
    md.Opportunity(name="Deal", amount="1", probability="0.5", duration_months=12, stage="Proposal"),
    md.FxRate(base="EUR", quote="GBP", rate="0.86", effective_date="2026-01-01"),
    md.TaxRate(tax_code="VAT", rate="0.2", effective_from="2026-01-01"),
    md.Calendar(
        code="UK",
        legal_entity_id="le",
        working_days=[md.WEEKDAY_MONDAY, md.WEEKDAY_FRIDAY],
        holidays=[md.Holiday(date="2026-12-25", name="Christmas")],
    ),
]


def test_every_kind_renders_like_message_to_dict() -> None:
    covered = set()
    for sample in SAMPLES:
        sample.create_time.FromJsonString("2026-11-25T19:44:55.019608Z")
        sample.deactivate_time.FromJsonString("2026-11-26T00:00:00Z")
        assert to_body(sample) == json_format.MessageToDict(sample, preserving_proto_field_name=True)
        covered.add(type(sample))
        assert to_body(type(sample)()) == {}
    assert covered == {k.message for k in KINDS.values()}


def test_an_unset_optional_is_absent_and_a_false_one_is_kept() -> None:
    assert to_body(md.Assignment(billable=False)) == {"billable": False}
    assert "billable" not in to_body(md.Assignment())
