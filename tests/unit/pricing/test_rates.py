"""The rate rule: only the worked role on the day counts; an override beats the role; latest wins."""

import datetime as dt
from decimal import Decimal

from accrue.pricing import RateEntry, resolve_rate

D = dt.date


def entry(
    entry_id: str,
    rate: str,
    start: dt.date,
    end: dt.date | None = None,
    *,
    role: str = "sc",
    who: str | None = None,
) -> RateEntry:
    return RateEntry(entry_id, role, who, Decimal(rate), start, end)


def test_latest_effective_entry_wins_after_a_mid_month_rate_change() -> None:
    card = [entry("old", "150", D(2026, 1, 1), D(2026, 11, 14)), entry("new", "160", D(2026, 11, 15))]
    assert resolve_rate(card, consultant_id="c1", labor_category_id="sc", day=D(2026, 11, 14)).id == "old"  # type: ignore[union-attr]
    assert resolve_rate(card, consultant_id="c1", labor_category_id="sc", day=D(2026, 11, 15)).id == "new"  # type: ignore[union-attr]


def test_consultant_override_beats_a_newer_role_rate() -> None:
    card = [entry("role", "160", D(2026, 6, 1)), entry("override", "140", D(2026, 1, 1), who="c1")]
    assert resolve_rate(card, consultant_id="c1", labor_category_id="sc", day=D(2026, 7, 1)).id == "override"  # type: ignore[union-attr]
    assert resolve_rate(card, consultant_id="c2", labor_category_id="sc", day=D(2026, 7, 1)).id == "role"  # type: ignore[union-attr]


def test_no_rate_for_another_role_or_outside_the_dates() -> None:
    card = [entry("e", "150", D(2026, 1, 1), D(2026, 6, 30))]
    assert resolve_rate(card, consultant_id="c1", labor_category_id="pm", day=D(2026, 3, 1)) is None
    assert resolve_rate(card, consultant_id="c1", labor_category_id="sc", day=D(2026, 7, 1)) is None
    assert resolve_rate(card, consultant_id="c1", labor_category_id="sc", day=D(2025, 12, 31)) is None


def test_an_override_for_another_consultant_never_applies() -> None:
    card = [entry("theirs", "100", D(2026, 1, 1), who="c2")]
    assert resolve_rate(card, consultant_id="c1", labor_category_id="sc", day=D(2026, 3, 1)) is None


def test_a_master_data_entry_reads_as_the_rule_s_entry() -> None:
    from accrue.masterdata.v1 import resources_pb2 as md

    open_ended = RateEntry.of(
        md.RateCardEntry(id="e1", labor_category_id="sc", rate="150.125", effective_from="2026-07-01")
    )
    assert open_ended == RateEntry("e1", "sc", None, Decimal("150.125"), dt.date(2026, 7, 1), None)
    override = RateEntry.of(
        md.RateCardEntry(
            id="e2",
            labor_category_id="sc",
            consultant_id="c1",
            rate="200",
            effective_from="2026-01-01",
            effective_to="2026-06-30",
        )
    )
    assert (override.consultant_id, override.effective_to) == ("c1", dt.date(2026, 6, 30))
