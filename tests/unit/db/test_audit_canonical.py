"""The audit trail's canonical form: one exact byte string per record, whatever the spelling."""

import datetime as dt
import enum
import hashlib
import uuid
from decimal import Decimal

import pytest

from accrue.db.audit import GENESIS, AuditRecord, Outcome, canonical, chain_hash, diff, to_json

# A fixed instant: nothing here depends on the date the tests run.
AT = dt.datetime(2027, 2, 28, 13, 40, 0, 123456, tzinfo=dt.UTC)


def record(**overrides: object) -> AuditRecord:
    fields: dict[str, object] = {
        "operation": "billing.invoices.approve",
        "resource_type": "invoice",
        "resource_id": "inv-1",
        "outcome": Outcome.OK,
        "occurred_at": AT,
        "principal_subject": "user-7",
        "principal_roles": ["finance", "approver"],
        "principal_client": "accrue-web",
        "legal_entity_id": "le-uk",
        "request_id": "req-1",
        "idempotency_key": "key-1",
        "changes": {
            "status": {"before": "DRAFT", "after": "APPROVED"},
            "total": {"after": Decimal("1125.00")},
        },
    }
    fields.update(overrides)
    return AuditRecord(**fields)  # type: ignore[arg-type]


def test_the_canonical_form_is_pinned() -> None:
    # Every stored hash depends on these bytes: changing them is a breaking change of the format.
    assert record().canonical() == (
        b'{"changes":{"status":{"after":"APPROVED","before":"DRAFT"},"total":{"after":"1125.00"}},'
        b'"idempotency_key":"key-1","legal_entity_id":"le-uk","occurred_at":"2027-02-28T13:40:00.123456Z",'
        b'"operation":"billing.invoices.approve","outcome":"OK","principal_client":"accrue-web",'
        b'"principal_roles":["approver","finance"],"principal_subject":"user-7","request_id":"req-1",'
        b'"resource_id":"inv-1","resource_type":"invoice","v":1}'
    )
    assert (
        chain_hash(GENESIS, record().canonical()) == hashlib.sha256(bytes(32) + record().canonical()).digest()
    )


def test_key_order_and_role_order_do_not_matter() -> None:
    a = record(changes={"a": {"before": 1, "after": 2}, "b": {"before": None, "after": {"y": 1, "x": 2}}})
    b = record(changes={"b": {"after": {"x": 2, "y": 1}, "before": None}, "a": {"after": 2, "before": 1}})
    assert a.canonical() == b.canonical()
    assert record(principal_roles=("finance", "approver", "finance")).canonical() == record().canonical()


def test_decimals_keep_their_exact_spelling() -> None:
    assert to_json(Decimal("150.00")) == "150.00"
    assert to_json(Decimal("0.1") + Decimal("0.2")) == "0.3"
    assert to_json(Decimal("12345678901234567890.123456789")) == "12345678901234567890.123456789"
    # The scale is part of the value as stored: 150.0 and 150.00 are different records.
    assert (
        record(changes={"rate": {"after": Decimal("150.0")}}).canonical()
        != record(changes={"rate": {"after": Decimal("150.00")}}).canonical()
    )
    # A decimal and its string are the same canonical value (decimals are strings on the wire).
    assert (
        record(changes={"rate": {"after": "150.00"}}).canonical()
        == record(changes={"rate": {"after": Decimal("150.00")}}).canonical()
    )


def test_instants_are_utc_with_microseconds_and_dates_are_iso() -> None:
    brisbane = dt.timezone(dt.timedelta(hours=10))
    assert record(occurred_at=AT.astimezone(brisbane)).canonical() == record().canonical()
    assert to_json(dt.datetime(2028, 2, 29, 0, 0, tzinfo=dt.UTC)) == "2028-02-29T00:00:00.000000Z"
    assert to_json(dt.date(2028, 2, 29)) == "2028-02-29"
    assert to_json(uuid.UUID(int=1)) == "00000000-0000-0000-0000-000000000001"


def test_enums_become_their_values() -> None:
    class Status(enum.IntEnum):
        ACTIVE = 1

    assert to_json({"s": Status.ACTIVE, "o": Outcome.DENIED}) == {"s": 1, "o": "DENIED"}
    assert canonical(record(outcome="DENIED").row()) == canonical(record(outcome=Outcome.DENIED).row())


@pytest.mark.parametrize(
    "value",
    [0.1, float("nan"), Decimal("NaN"), Decimal("Infinity"), b"raw", {1, 2}, {1: "x"}, "a\x00b"],
    ids=["float", "float-nan", "decimal-nan", "decimal-inf", "bytes", "set", "int-key", "nul"],
)
def test_values_without_one_exact_spelling_are_refused(value: object) -> None:
    with pytest.raises((TypeError, ValueError)):
        record(changes={"x": {"after": value}})


def test_a_record_needs_an_aware_instant_and_an_operation() -> None:
    with pytest.raises(ValueError, match="naive"):
        record(occurred_at=AT.replace(tzinfo=None))
    with pytest.raises(ValueError, match="operation"):
        record(operation="")


def test_non_ascii_is_kept_as_utf8() -> None:
    assert '"Zoë Ünal"'.encode() in record(changes={"name": {"after": "Zoë Ünal"}}).canonical()


def test_diff_lists_changed_fields_only() -> None:
    before = {"status": "DRAFT", "total": Decimal("10.00"), "note": "x"}
    after = {"status": "APPROVED", "total": "10.00", "approved_by": "user-7", "note": "x"}
    assert diff(before, after) == {
        "approved_by": {"before": None, "after": "user-7"},
        "status": {"before": "DRAFT", "after": "APPROVED"},
    }
    assert diff(None, {"code": "UK"}) == {"code": {"before": None, "after": "UK"}}
