"""Billing's resource rules on their own: legal-entity scope and four eyes (domain/access.py)."""

import pytest

from accrue.runtime import NotFound
from accrue.runtime.errors import PermissionDenied
from accrue.runtime.identity import service_principal
from accrue.services.billing.domain.access import FourEyes, check_run_scope, require_visible, scope_of
from accrue.services.billing.settings import BillingSettings
from accrue.testing import identity

IE = "le-ie"
UK = "le-uk"
IRISH_FINANCE = identity.person("fin-ie", "finance", legal_entities=[IE])
GROUP_FINANCE = identity.person("fin-group", "finance")


def test_legal_entity_scope_every_entity_and_services_see_all() -> None:
    assert scope_of(GROUP_FINANCE) is None
    assert scope_of(service_principal("observability")) is None
    assert scope_of(IRISH_FINANCE) == frozenset({IE})


def test_legal_entity_scope_another_entitys_record_reads_like_a_missing_one() -> None:
    require_visible(IRISH_FINANCE, IE, "invoice", "i-1")
    with pytest.raises(NotFound) as hidden:
        require_visible(IRISH_FINANCE, UK, "invoice", "i-1")
    assert (hidden.value.message, hidden.value.reason) == ("no invoice with id 'i-1'", "NOT_FOUND")
    # An exception with no legal entity is nobody's: only the whole group sees it.
    with pytest.raises(NotFound):
        require_visible(IRISH_FINANCE, "", "billing exception", "x-1")
    require_visible(GROUP_FINANCE, "", "billing exception", "x-1")


def test_legal_entity_scope_a_scoped_caller_runs_billing_only_for_its_own_entity() -> None:
    check_run_scope(IRISH_FINANCE, IE)
    check_run_scope(GROUP_FINANCE, "")
    with pytest.raises(PermissionDenied) as everyone:
        check_run_scope(IRISH_FINANCE, "")
    assert everyone.value.reason == "LEGAL_ENTITY_SCOPE"
    assert [v.field for v in everyone.value.violations] == ["billing_run.legal_entity_id"]
    assert "le-ie" in everyone.value.message
    with pytest.raises(PermissionDenied) as other:
        check_run_scope(IRISH_FINANCE, UK)
    assert other.value.reason == "LEGAL_ENTITY_SCOPE"
    assert [v.code for v in other.value.violations] == ["OUT_OF_SCOPE"]


def test_four_eyes_the_approver_may_not_post_where_it_is_on() -> None:
    rule = FourEyes.of([IE])
    rule.check_post("i-1", IE, approved_by="someone-else", poster=IRISH_FINANCE)
    rule.check_post("i-1", UK, approved_by="fin-ie", poster=IRISH_FINANCE)  # off in UK
    with pytest.raises(PermissionDenied) as refused:
        rule.check_post("i-1", IE, approved_by="fin-ie", poster=IRISH_FINANCE)
    assert refused.value.reason == "FOUR_EYES"
    assert "four-eyes" in refused.value.message
    assert "i-1" in refused.value.message


def test_four_eyes_star_means_every_legal_entity_and_empty_means_off() -> None:
    with pytest.raises(PermissionDenied):
        FourEyes.of(["*"]).check_post("i-1", UK, approved_by="fin-ie", poster=IRISH_FINANCE)
    FourEyes.of([]).check_post("i-1", UK, approved_by="fin-ie", poster=IRISH_FINANCE)
    FourEyes.of([" ", ""]).check_post("i-1", UK, approved_by="fin-ie", poster=IRISH_FINANCE)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("*", ["*"]), ("le-ie, le-uk", ["le-ie", "le-uk"]), ('["le-ie"]', ["le-ie"]), ("", [])],
)
def test_four_eyes_setting_reads_comma_separated_ids_star_or_json(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: list[str]
) -> None:
    monkeypatch.setenv("ACCRUE_BILLING_FOUR_EYES_LEGAL_ENTITIES", value)
    settings = BillingSettings(database_url="postgresql://x/y", nats_url="nats://x")
    assert settings.four_eyes_legal_entities == expected
