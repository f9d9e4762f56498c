"""Master data's resource rules that need no database (domain.access)."""

from accrue.runtime.identity import service_principal
from accrue.services.masterdata.domain import access
from accrue.services.masterdata.domain.kinds import KINDS
from accrue.testing import identity


def test_system_of_record_the_source_is_the_callers_identity() -> None:
    assert access.source_of(identity.system_client("workday")) == "workday"
    assert access.source_of(identity.person("ada", "masterdata_admin")) == "api"
    assert access.source_of(identity.admin()) == "api"


def test_legal_entity_scope_every_kind_says_how_it_reaches_its_legal_entity() -> None:
    firm_wide = {name for name, kind in KINDS.items() if access.is_firm_wide(kind)}
    assert firm_wide == {"labor_category", "rate_card", "fx_rate", "tax_rate"}
    # Every path ends at a legal entity id, or is the legal entity itself.
    for name, kind in KINDS.items():
        if kind.legal_entity_path:
            assert kind.legal_entity_path[-1] in ("legal_entity_id", "id"), name


def test_legal_entity_scope_firm_wide_writes_and_new_entities_reach_beyond_a_scope() -> None:
    assert access.reaches_beyond_scope(KINDS["fx_rate"], creating=False)
    assert access.reaches_beyond_scope(KINDS["legal_entity"], creating=True)
    assert not access.reaches_beyond_scope(KINDS["legal_entity"], creating=False)
    assert not access.reaches_beyond_scope(KINDS["customer"], creating=True)
    assert access.beyond_scope(KINDS["labor_category"]).code == "FIRM_WIDE"
    assert access.beyond_scope(KINDS["legal_entity"]).code == "LEGAL_ENTITY_SCOPE"


def test_legal_entity_scope_services_and_all_entity_principals_see_everything() -> None:
    assert access.scope_of(service_principal("billing")) is None
    assert access.scope_of(identity.admin()) is None
    assert access.scope_of(identity.person("u", "finance", legal_entities=["le-1"])) == frozenset({"le-1"})
    assert access.scope_of(identity.person("u", "finance", legal_entities=[])) == frozenset()
