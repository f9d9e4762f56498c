"""Hand-computed variance splits, accuracy and utilization (docs/forecasting.md)."""

import datetime as dt
from decimal import Decimal

from accrue.services.forecasting.domain.calendar import WorkCalendar
from accrue.services.forecasting.domain.forecast import (
    ActualWork,
    Inputs,
    Model,
    Person,
    ProjectTerms,
    Staffing,
)
from accrue.services.forecasting.domain.utilization import utilization
from accrue.services.forecasting.domain.variance import Point, accuracy, compare

D = Decimal


def point(month: str, hours: str, revenue: str, project_id: str = "p1") -> Point:
    return Point(project_id, "", month, "GBP", D(hours), D(revenue))


def test_hours_moved_between_months_are_timing_and_a_higher_rate_is_rate() -> None:
    # Nov: 100 h at 100 -> 80 h at 110: rate (110 - 100) x 80 = 800, the other -2,000 is 20 h
    # at 100. Dec: 50 h -> 70 h at 100: +2,000. The project's hours net to zero: all timing.
    base = [point("2026-11", "100", "10000"), point("2026-12", "50", "5000")]
    other = [point("2026-11", "80", "8800"), point("2026-12", "70", "7000")]
    nov, dec = compare(base, other)
    assert (nov.change, nov.volume, nov.rate, nov.timing) == (D("-1200"), D("0"), D("800"), D("-2000"))
    assert (dec.change, dec.volume, dec.rate, dec.timing) == (D("2000"), D("0"), D("0"), D("2000"))


def test_a_net_increase_is_volume_and_only_the_offset_part_is_timing() -> None:
    # Dec goes to 90 h (+4,000) while Nov loses 2,000 of quantity: net +2,000 is volume (in Dec),
    # 2,000 moved from Nov to Dec is timing.
    base = [point("2026-11", "100", "10000"), point("2026-12", "50", "5000")]
    other = [point("2026-11", "80", "8800"), point("2026-12", "90", "9000")]
    nov, dec = compare(base, other)
    assert (nov.volume, nov.rate, nov.timing) == (D("0"), D("800"), D("-2000"))
    assert (dec.volume, dec.rate, dec.timing) == (D("2000"), D("0"), D("2000"))
    assert nov.timing + dec.timing == 0


def test_new_and_dropped_months_and_projects_are_volume_and_unchanged_ones_are_left_out() -> None:
    base = [point("2026-11", "10", "1000"), point("2026-11", "5", "500", "p2")]
    other = [point("2026-11", "10", "1000"), point("2026-12", "8", "960", "p3")]
    rows = {(v.project_id, v.month): v for v in compare(base, other)}
    assert set(rows) == {("p2", "2026-11"), ("p3", "2026-12")}
    assert (rows["p2", "2026-11"].volume, rows["p2", "2026-11"].timing) == (D("-500"), D("0"))
    assert (rows["p3", "2026-12"].volume, rows["p3", "2026-12"].rate) == (D("960"), D("0"))


def test_accuracy_compares_a_versions_month_with_actuals_per_project_and_in_total() -> None:
    forecast = [point("2026-10", "100", "10000"), point("2026-10", "20", "2000", "p2")]
    actual = [point("2026-10", "95", "9500"), point("2026-10", "0", "0", "p3")]
    rows, totals = accuracy(forecast, actual)
    assert [(r.project_id, r.variance) for r in rows] == [
        ("p1", D("-500")),
        ("p2", D("-2000")),
        ("p3", D("0")),
    ]
    (total,) = totals
    assert (total.forecast_revenue, total.actual_revenue, total.variance) == (
        D("12000"),
        D("9500"),
        D("-2500"),
    )
    assert total.absolute_percentage_error == D("0.2632")  # 2,500 / 9,500


def test_utilization_uses_capacity_from_the_calendar_and_billable_hours() -> None:
    # November 2026: 21 weekdays less the 26th = 20 working days x 40 h / 5 = 160 h. As of Mon 23
    # Nov a 50 % billable assignment schedules 23-25, 27 and 30 Nov = 5 days x 4 h = 20 h.
    inp = Inputs(
        now=dt.datetime(2026, 11, 23, 12, tzinfo=dt.UTC),
        horizon_months=2,
        projects={
            "p1": ProjectTerms(
                "p1", "cu1", "le1", "GBP", True, dt.date(2026, 1, 1), None, model=Model.TIME_AND_MATERIALS
            )
        },
        staffing=[Staffing("p1", "c1", "sc", dt.date(2026, 1, 1), None, D("50"))],
        people={"c1": Person("c1", "le1", D("40"), dt.date(2020, 1, 1), None)},
        calendars={"le1": WorkCalendar(holidays=frozenset({dt.date(2026, 11, 26)}))},
        work=[
            ActualWork("p1", "c1", "cu1", "le1", "2026-11", D("100"), True, None, "GBP", False),
            ActualWork("p1", "c1", "cu1", "le1", "2026-11", D("12"), False, None, "GBP", False),
        ],
    )
    nov, dec = utilization(inp, ["2026-11", "2026-12"])
    assert (nov.capacity_hours, nov.billable_hours, nov.approved_hours) == (D("160"), D("100"), D("112"))
    assert (nov.scheduled_hours, nov.scheduled_billable_hours) == (D("20"), D("20"))
    assert (nov.actual, nov.forecast) == (D("0.6250"), D("0.7500"))
    # December: 23 working days, 184 h of capacity, 92 h scheduled.
    assert (dec.capacity_hours, dec.scheduled_hours, dec.actual, dec.forecast) == (
        D("184"),
        D("92"),
        D("0.0000"),
        D("0.5000"),
    )


def test_capacity_stops_at_the_consultants_active_dates_and_follows_the_working_week() -> None:
    inp = Inputs(
        now=dt.datetime(2026, 11, 2, 12, tzinfo=dt.UTC),
        people={"c1": Person("c1", "le1", D("32"), dt.date(2026, 11, 16), None)},
        calendars={"le1": WorkCalendar(working_days=frozenset({1, 2, 3, 4}))},
    )
    (nov,) = utilization(inp, ["2026-11"])
    # Mondays to Thursdays from the 16th: 16-19, 23-26, 30 = 9 days x 32 / 5.
    assert nov.capacity_hours == D("57.6")
    assert nov.actual == D("0.0000")
