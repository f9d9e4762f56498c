"""Unbilled approved work sums hours and, per currency, value — firm-wide, per legal entity and by age."""

import datetime as dt
from decimal import Decimal

from accrue.services.observability.domain.kpis import UnbilledWork, age_bucket, unbilled_figures

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
    )
    uk = figures.by_legal_entity["uk"]
    assert {age: b.hours for age, b in uk.by_age.items()} == {"0-7d": Decimal(5), "31-60d": Decimal(6)}
    assert dict(uk.by_age["31-60d"].value) == {"GBP": Decimal("900.00")}
    assert uk.oldest_approved_at == days_ago(45)
    assert uk.oldest_age_seconds(NOW) == 45 * 86400
