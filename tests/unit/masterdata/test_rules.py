"""Ownership, effective dates, money arithmetic and change diffs: the small pure rules."""

import datetime as dt
from decimal import Decimal

import pytest
from pydantic import ValidationError

from accrue.services.masterdata.domain.history import changed_fields
from accrue.services.masterdata.domain.ownership import Ownership
from accrue.services.masterdata.domain.resolution import convert, effective_on, tax_on
from accrue.services.masterdata.settings import MasterDataSettings


def test_a_kind_with_an_owner_takes_writes_from_that_system_only() -> None:
    owners = Ownership({"consultant": "workday"})
    assert owners.check("consultant", "consultants", "workday") is None
    refused = owners.check("consultant", "consultants", "crm")
    assert refused is not None
    assert (refused.field, refused.code) == ("source", "NOT_SYSTEM_OF_RECORD")
    assert refused.message == "consultants are owned by workday; a write from 'crm' is refused"
    assert owners.check("customer", "customers", "anything") is None


def test_owners_are_configured_per_kind_and_checked_at_start() -> None:
    settings = MasterDataSettings(
        database_url="postgresql://x", nats_url="nats://x", owners={"consultant": "workday"}
    )
    assert settings.owners == {"consultant": "workday"}
    with pytest.raises(ValidationError, match="unknown entity types"):
        MasterDataSettings(database_url="postgresql://x", nats_url="nats://x", owners={"employee": "workday"})
    with pytest.raises(ValidationError, match="no system named"):
        MasterDataSettings(database_url="postgresql://x", nats_url="nats://x", owners={"consultant": " "})


def test_owners_come_from_the_environment_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACCRUE_MASTERDATA_OWNERS", '{"consultant": "workday", "customer": "salesforce"}')
    settings = MasterDataSettings(database_url="postgresql://x", nats_url="nats://x")
    assert settings.owners == {"consultant": "workday", "customer": "salesforce"}


def test_the_value_in_effect_is_the_latest_on_or_before_the_day() -> None:
    rates = [(dt.date(2026, 1, 1), "a"), (dt.date(2026, 7, 1), "b"), (dt.date(2026, 3, 1), "c")]
    pick = lambda day: effective_on(rates, day, lambda r: r[0])  # noqa: E731
    assert pick(dt.date(2025, 12, 31)) is None
    assert pick(dt.date(2026, 1, 1)) == rates[0]
    assert pick(dt.date(2026, 6, 30)) == rates[2]
    assert pick(dt.date(2027, 1, 1)) == rates[1]


def test_conversion_is_exact_then_rounded_once_half_even() -> None:
    assert convert(Decimal("1000.005"), Decimal("0.8512"), "GBP") == (
        Decimal("851.20"),
        Decimal("851.2042560"),
    )
    assert convert(Decimal("0.125"), Decimal("1"), "EUR")[0] == Decimal("0.12")  # half to even
    assert convert(Decimal("100"), Decimal("151.235"), "JPY")[0] == Decimal("15124")
    assert tax_on(Decimal("1234.56"), Decimal("0.20"), "GBP") == Decimal("246.91")
    assert tax_on(Decimal("10.025"), Decimal("1"), "KWD") == Decimal("10.025")  # three decimals


def test_changed_fields_are_the_top_level_differences_without_bookkeeping() -> None:
    before = {"id": "1", "etag": "1", "name": "A", "code": "X", "update_time": "t1"}
    after = {"id": "1", "etag": "2", "name": "B", "code": "X", "country": "GB", "update_time": "t2"}
    assert changed_fields(before, after) == ["country", "name"]
    assert changed_fields(None, {"id": "1", "code": "X", "name": "A"}) == ["code", "name"]
    assert changed_fields({"email": "a@b"}, {}) == ["email"]
