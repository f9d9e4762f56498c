"""Unbilled approved work sums hours and, per currency, value — firm-wide, per legal entity and by
age, in days of the legal entity's time zone."""

import datetime as dt
from decimal import Decimal

import pytest

from accrue.services.observability.domain.kpis import (
    UnbilledWork,
    age_bucket,
    bucket_starts,
    unbilled_figures,
)

NOW = dt.datetime(2026, 11, 25, 12, tzinfo=dt.UTC)


def days_ago(n: int) -> dt.datetime:
    return NOW - dt.timedelta(days=n)


def test_figures_sum_per_legal_entity_and_currency() -> None:
    figures = unbilled_figures(
        [
            UnbilledWork("uk", Decimal("7.5"), Decimal("1125.00"), "GBP"),
            UnbilledWork("uk", Decimal("2"), None, ""),
            UnbilledWork("de", Decimal("8"), Decimal("960.00"), "EUR"),
        ],
        NOW,
        {},
    )
    assert figures.hours == Decimal("17.5")
    assert dict(figures.value) == {"GBP": Decimal("1125.00"), "EUR": Decimal("960.00")}
    assert figures.by_legal_entity["uk"].hours == Decimal("9.5")
    assert dict(figures.by_legal_entity["de"].value) == {"EUR": Decimal("960.00")}


def test_age_buckets_count_whole_days_since_approval() -> None:
    assert [age_bucket(d) for d in (0, 7, 8, 30, 31, 60, 61, 90, 91, 400)] == [
        "0-7d",
        "0-7d",
        "8-30d",
        "8-30d",
        "31-60d",
        "31-60d",
        "61-90d",
        "61-90d",
        "over-90d",
        "over-90d",
    ]


def test_unbilled_work_is_split_by_age_and_the_oldest_is_known() -> None:
    figures = unbilled_figures(
        [
            UnbilledWork("uk", Decimal("3"), Decimal("450.00"), "GBP", days_ago(2)),
            UnbilledWork("uk", Decimal("5"), Decimal("750.00"), "GBP", days_ago(45)),
            UnbilledWork("uk", Decimal("1"), Decimal("150.00"), "GBP", days_ago(44)),
            UnbilledWork("uk", Decimal("2"), None, "", None),  # approval not seen yet: youngest
        ],
        NOW,
        {},
    )
    uk = figures.by_legal_entity["uk"]
    assert {age: b.hours for age, b in uk.by_age.items()} == {"0-7d": Decimal(5), "31-60d": Decimal(6)}
    assert dict(uk.by_age["31-60d"].value) == {"GBP": Decimal("900.00")}
    assert uk.oldest_approved_at == days_ago(45)
    assert uk.oldest_age_seconds(NOW) == 45 * 86400
    assert uk.oldest_age_days == 45


ZONES = {"au": "Australia/Brisbane", "us": "America/Los_Angeles"}


@pytest.mark.dates
def test_a_utc_plus_10_entity_counts_ages_in_its_own_days() -> None:
    # 08:00 on 1 March 2027 in Brisbane, 22:00 on 28 February in UTC.
    now = dt.datetime(2027, 2, 28, 22, 0, tzinfo=dt.UTC)
    # Approved at 23:30 on 21 February in Brisbane (13:30 UTC, the same day in UTC).
    approved = dt.datetime(2027, 2, 21, 13, 30, tzinfo=dt.UTC)
    figures = unbilled_figures(
        [UnbilledWork(le, Decimal("2"), None, "", approved) for le in ("au", "uk")], now, ZONES
    )
    # 21 February to 1 March is 8 days in Brisbane; UTC's 21 to 28 February is 7.
    assert list(figures.by_legal_entity["au"].by_age) == ["8-30d"]
    assert figures.by_legal_entity["au"].oldest_age_days == 8
    assert list(figures.by_legal_entity["uk"].by_age) == ["0-7d"]
    assert figures.by_legal_entity["uk"].oldest_age_days == 7
    # Where the ledger's buckets begin: Brisbane's midnight starting 22 February.
    assert bucket_starts(now, "Australia/Brisbane")[0] == (
        "0-7d",
        dt.datetime(2027, 2, 21, 14, tzinfo=dt.UTC),
    )


@pytest.mark.dates
def test_a_utc_minus_8_entity_counts_ages_in_its_own_days() -> None:
    # 23:45 on 31 January 2027 in Los Angeles, 07:45 on 1 February in UTC.
    now = dt.datetime(2027, 2, 1, 7, 45, tzinfo=dt.UTC)
    # Approved at 01:00 on 24 January in Los Angeles (09:00 UTC, the same day in UTC).
    approved = dt.datetime(2027, 1, 24, 9, 0, tzinfo=dt.UTC)
    figures = unbilled_figures(
        [UnbilledWork(le, Decimal("2"), None, "", approved) for le in ("us", "uk")], now, ZONES
    )
    # Still 31 January in Los Angeles: 7 days; UTC is on 1 February: 8.
    assert list(figures.by_legal_entity["us"].by_age) == ["0-7d"]
    assert list(figures.by_legal_entity["uk"].by_age) == ["8-30d"]
    assert bucket_starts(now, "America/Los_Angeles")[0] == (
        "0-7d",
        dt.datetime(2027, 1, 24, 8, tzinfo=dt.UTC),
    )
