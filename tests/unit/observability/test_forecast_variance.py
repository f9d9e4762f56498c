"""Forecast variance: latest against previous, and actuals against the forecast of closed months
(closed in each legal entity's time zone when the version was taken)."""

import datetime as dt
from decimal import Decimal

import pytest

from accrue.services.observability.domain.forecast import MonthTotal, forecast_variance

# Taken in November 2026 wherever the legal entity is (mid-month, mid-day in UTC).
IN_NOVEMBER = dt.datetime(2026, 11, 15, 12, tzinfo=dt.UTC)


def t(month: str, forecast: str, actual: str = "0", le: str = "uk") -> MonthTotal:
    return MonthTotal(le, month, "GBP", Decimal(forecast), Decimal(actual))


def test_latest_against_previous_sums_every_month_either_version_has() -> None:
    previous = [t("2026-10", "1000", "0"), t("2026-11", "2000")]
    latest = [t("2026-10", "900", "900"), t("2026-11", "2500"), t("2026-12", "300")]
    (v,) = forecast_variance(latest, previous, IN_NOVEMBER, {})
    assert v.latest_forecast == Decimal("3700")
    assert v.previous_forecast == Decimal("3000")
    assert v.against_previous == Decimal("700")
    # Only October has closed: 900 posted against the 1000 forecast before.
    assert v.against_actuals == Decimal("-100")


def test_a_first_version_has_no_variance_against_previous() -> None:
    (v,) = forecast_variance([t("2026-10", "1200", "1000"), t("2026-11", "500")], None, IN_NOVEMBER, {})
    assert v.against_previous == Decimal(0)
    assert v.previous_forecast == Decimal(0)
    # Without an earlier forecast, the version's own forecast of the closed month is the reference.
    assert v.against_actuals == Decimal("-200")


def test_variance_is_per_legal_entity_and_a_month_a_version_lacks_counts_as_zero() -> None:
    previous = [t("2026-12", "100", le="de")]
    latest = [t("2026-12", "400", le="uk")]
    result = {v.legal_entity_id: v for v in forecast_variance(latest, previous, IN_NOVEMBER, {})}
    assert result["uk"].against_previous == Decimal("400")
    assert result["de"].against_previous == Decimal("-100")
    assert result["de"].latest_forecast == Decimal(0)


@pytest.mark.dates
def test_a_month_has_closed_when_it_has_ended_in_the_legal_entitys_zone() -> None:
    # 08:00 on 1 December in Brisbane; 16:00 on 30 November in Los Angeles; 22:00 UTC, November.
    taken = dt.datetime(2026, 11, 30, 22, 0, tzinfo=dt.UTC)
    zones = {"au": "Australia/Brisbane", "us": "America/Los_Angeles"}
    latest = [t("2026-11", "1000", "800", le=le) for le in ("au", "us", "uk")]
    result = {v.legal_entity_id: v for v in forecast_variance(latest, None, taken, zones)}
    # November is over in Brisbane: 800 posted against the 1000 forecast.
    assert result["au"].against_actuals == Decimal("-200")
    # Not yet in Los Angeles, nor in UTC (uk has no zone of its own): nothing to compare.
    assert result["us"].against_actuals == Decimal(0)
    assert result["uk"].against_actuals == Decimal(0)
