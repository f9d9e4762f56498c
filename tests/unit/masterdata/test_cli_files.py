"""`accrue import` reading files and `accrue seed` building the firm: no servers needed."""

import json
from pathlib import Path

import pytest

from accrue.cli.importer import ImportFileError, read_files
from accrue.cli.seed import build_firm
from accrue.cli.sync import Row, collection_named, in_reference_order


def test_csv_columns_reach_into_objects_and_json_cells_become_lists(tmp_path: Path) -> None:
    (tmp_path / "rate_cards.csv").write_text(
        "externalRef.system,externalRef.id,code,currency,rates,unused\n"
        'psa,RC1,RC1,EUR,"[{""laborCategoryId"": ""lc"", ""rate"": ""150.00"", '
        '""effectiveFrom"": ""2026-01-01""}]",\n'
        "psa,RC2,RC2,EUR,,\n"
    )
    (tmp_path / "assignments.csv").write_text(
        "code,billable,allocationPercent\nA,TRUE,50\nB,no,10\nC,maybe,1\n"
    )
    rows = read_files([tmp_path / "rate_cards.csv", tmp_path / "assignments.csv"])
    cards = rows[collection_named("rate-cards")]  # type: ignore[index]
    assert cards[0].body == {
        "externalRef": {"system": "psa", "id": "RC1"},
        "code": "RC1",
        "currency": "EUR",
        "rates": [{"laborCategoryId": "lc", "rate": "150.00", "effectiveFrom": "2026-01-01"}],
    }
    assert cards[1].origin == "rate_cards.csv:3"
    assignments = rows[collection_named("assignments")]  # type: ignore[index]
    assert [r.body["billable"] for r in assignments] == [True, False, "maybe"]  # the API names the bad value


def test_a_json_bundle_holds_every_type_and_unknown_types_are_refused(tmp_path: Path) -> None:
    bundle = tmp_path / "firm.json"
    bundle.write_text(json.dumps({"legalEntities": [{"code": "UK"}], "fx_rates": [{"base": "EUR"}]}))
    rows = read_files([bundle])
    assert {c.path: [r.origin for r in rs] for c, rs in rows.items()} == {
        "legal-entities": ["firm.json#legalEntities:1"],
        "fx-rates": ["firm.json#fx_rates:1"],
    }
    bundle.write_text(json.dumps({"people": []}))
    with pytest.raises(ImportFileError, match="'people' is not an entity type"):
        read_files([bundle])
    listed = tmp_path / "consultants.json"
    listed.write_text(json.dumps([{"code": "E1"}, {"code": "E2"}]))
    assert len(read_files([listed])[collection_named("consultants")]) == 2  # type: ignore[index]
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ImportFileError, match="not valid JSON"):
        read_files([tmp_path / "broken.json"])


def test_managers_are_sent_before_the_people_who_report_to_them() -> None:
    consultants = collection_named("consultants")
    assert consultants is not None

    def row(code: str, manager: str = "") -> Row:
        body: dict[str, object] = {"externalRef": {"system": "hr", "id": code}}
        if manager:
            body["managerRef"] = {"system": "hr", "id": manager}
        return Row(body, code)

    ordered = in_reference_order(consultants, [row("C", "B"), row("B", "A"), row("X", "Q"), row("A")])
    assert [r.origin for r in ordered] == ["A", "B", "C", "X"]


def test_the_seed_firm_is_the_same_for_the_same_seed_and_has_what_the_demo_needs() -> None:
    firm = build_firm(30, seed=7)
    again = build_firm(30, seed=7)
    body = {c.path: [r.body for r in rows] for c, rows in firm.rows.items()}
    assert body == {c.path: [r.body for r in rows] for c, rows in again.rows.items()}
    assert len(body["consultants"]) == 30
    assert {e["baseCurrency"] for e in body["legal-entities"]} == {"GBP", "EUR", "USD"}
    models = {line["billingModel"] for c in body["contracts"] for line in c["lines"]}
    assert models == {"BILLING_MODEL_TIME_AND_MATERIALS", "BILLING_MODEL_CAPPED", "BILLING_MODEL_FIXED_FEE"}
    assert all(
        r["effectiveFrom"] in ("2026-01-01", "2026-07-01")
        for card in body["rate-cards"]
        for r in card["rates"]
    )
    assert body["milestones"]
    assert firm.completed_milestones
    pairs = {(r["base"], r["quote"]) for r in body["fx-rates"]}
    assert len(pairs) == 6  # every ordered pair of the three currencies
    with pytest.raises(ValueError, match="at least 3"):
        build_firm(2)
