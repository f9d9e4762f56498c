"""Partial updates (AIP-134): which fields a mask changes and the record that results."""

from accrue.masterdata.v1 import resources_pb2 as md
from accrue.runtime.validation import Violations
from accrue.services.masterdata.domain.kinds import KINDS
from accrue.services.masterdata.domain.masks import apply_mask, mask_paths, writable_fields
from accrue.type.v1 import types_pb2

CONSULTANT = KINDS["consultant"]
CURRENT = md.Consultant(
    id="c1",
    code="E1",
    name="Dana",
    email="dana@acme.test",
    legal_entity_id="le1",
    labor_category_id="lc1",
    manager_id="m1",
    active_from="2020-01-01",
    etag="4",
)


def paths(patch: md.Consultant, given: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    v = Violations()
    result = mask_paths(CONSULTANT, patch, given, v)
    return result, [(x.field, x.code) for x in v.items]


def test_writable_fields_leave_out_what_the_server_sets_and_the_ref_inputs() -> None:
    fields = writable_fields(CONSULTANT)
    assert "name" in fields
    assert "external_ref" in fields
    assert not {"id", "etag", "create_time", "update_time", "deactivate_time", "manager_ref"} & set(fields)
    assert {"status", "complete_time"}.isdisjoint(writable_fields(KINDS["milestone"]))


def test_without_a_mask_the_fields_the_patch_sets_change() -> None:
    patch = md.Consultant(name="Dana D", manager_ref=types_pb2.ExternalRef(system="hr", id="9"), etag="4")
    assert paths(patch, []) == (["name", "manager_ref"], [])


def test_a_star_replaces_every_writable_field() -> None:
    result, problems = paths(md.Consultant(name="Only name"), ["*"])
    assert problems == []
    assert result == list(writable_fields(CONSULTANT))
    updated = apply_mask(CONSULTANT, CURRENT, md.Consultant(name="Only name"), result)
    assert (updated.name, updated.email, updated.manager_id, updated.id) == ("Only name", "", "", "c1")


def test_unknown_nested_and_server_paths_are_violations_of_the_mask() -> None:
    _, problems = paths(md.Consultant(), ["colour", "external_ref.id", "etag", "*", "name", "name"])
    assert problems == [("update_mask", "INVALID_FIELD_MASK")] * 4


def test_named_fields_take_the_patch_value_and_unset_ones_are_cleared() -> None:
    updated = apply_mask(CONSULTANT, CURRENT, md.Consultant(name="Dana D", cost_rate="90"), ["name", "email"])
    assert (updated.name, updated.email, updated.cost_rate, updated.code) == ("Dana D", "", "", "E1")


def test_a_ref_path_replaces_the_id_it_stands_for() -> None:
    manager = types_pb2.ExternalRef(system="hr", id="E9")
    updated = apply_mask(CONSULTANT, CURRENT, md.Consultant(manager_ref=manager), ["manager_ref"])
    assert updated.manager_id == ""
    assert updated.manager_ref == manager


def test_repeated_fields_are_replaced_whole() -> None:
    kind = KINDS["rate_card"]
    current = md.RateCard(
        code="RC",
        currency="EUR",
        rates=[md.RateCardEntry(id="r1", labor_category_id="lc", rate="1", effective_from="2026-01-01")],
    )
    patch = md.RateCard(
        rates=[md.RateCardEntry(labor_category_id="lc", rate="2", effective_from="2026-02-01")]
    )
    updated = apply_mask(kind, current, patch, ["rates"])
    assert [(e.rate, e.effective_from) for e in updated.rates] == [("2", "2026-02-01")]
    optional = apply_mask(
        KINDS["assignment"], md.Assignment(billable=True), md.Assignment(billable=False), ["billable"]
    )
    assert optional.HasField("billable")
    assert optional.billable is False
