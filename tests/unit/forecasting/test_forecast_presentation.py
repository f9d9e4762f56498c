"""The one rounding step: figures are exact until presented, then rounded half-even to the
currency's minor unit, and a row's forecast revenue is the sum of what it shows."""

import datetime as dt
from decimal import Decimal

from accrue.forecasting.v1 import forecasting_service_pb2 as api
from accrue.services.forecasting.adapters import codec
from accrue.services.forecasting.domain.forecast import Figures, Forecast, Row

D = Decimal


def test_amounts_round_once_half_even_and_the_total_is_the_sum_of_what_is_shown() -> None:
    figures = Figures(wip=D("10.005"), scheduled=D("20.015"), weighted_pipeline=D("0.3333333333"))
    shown = codec.amounts(figures, "GBP")
    assert (shown.wip, shown.scheduled, shown.weighted_pipeline) == ("10.00", "20.02", "0.33")
    assert shown.forecast_revenue == "30.35"
    assert codec.amounts(Figures(actual_revenue=D("1234.5")), "JPY").actual_revenue == "1234"


def test_a_row_without_an_fx_rate_has_no_base_amounts_and_hours_show_two_places() -> None:
    row = Row(
        "p1", "", "cu1", "le1", "2026-11", "USD", approved_hours=D("7.125"), scheduled_hours=D("2.49975")
    )
    row.amounts.wip = D("100")
    row.base_currency = "GBP"
    presented = codec.forecast(Forecast([row], [], [], ["USD/GBP"]), dt.date(2026, 11, 2), None)
    (out,) = presented.rows
    assert (out.approved_hours, out.scheduled_hours, out.wip) == ("7.12", "2.50", "100.00")
    assert not out.HasField("base_amounts")
    assert list(presented.missing_fx) == ["USD/GBP"]
    assert presented.as_of_date == "2026-11-02"
    points = codec.points(presented)
    assert (points[0].hours, points[0].revenue) == (D("9.62"), D("100.00"))
    assert isinstance(presented, api.Forecast)
