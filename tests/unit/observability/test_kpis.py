"""Unbilled approved work sums hours and, per currency, value — firm-wide and per legal entity."""

from decimal import Decimal

from accrue.services.observability.domain.kpis import UnbilledWork, unbilled_figures


def test_figures_sum_per_legal_entity_and_currency() -> None:
    figures = unbilled_figures(
        [
            UnbilledWork("uk", Decimal("7.5"), Decimal("1125.00"), "GBP"),
            UnbilledWork("uk", Decimal("2"), None, ""),
            UnbilledWork("de", Decimal("8"), Decimal("960.00"), "EUR"),
        ]
    )
    assert figures.hours == Decimal("17.5")
    assert dict(figures.value) == {"GBP": Decimal("1125.00"), "EUR": Decimal("960.00")}
    assert figures.by_legal_entity["uk"].hours == Decimal("9.5")
    assert dict(figures.by_legal_entity["de"].value) == {"EUR": Decimal("960.00")}
