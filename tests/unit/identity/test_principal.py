"""ClaimsMapping: the principal a verified token names, for Keycloak-style and flat claims."""

from __future__ import annotations

from typing import Any

import pytest

from accrue.identity.errors import InvalidToken
from accrue.identity.principal import ClaimsMapping, Principal, claim_at

pytestmark = pytest.mark.unit

# As Keycloak issues them: realm roles nested, the client in azp, a custom mapper for entities.
KEYCLOAK_USER: dict[str, Any] = {
    "iss": "https://id.example/realms/acme",
    "sub": "6f1c-user",
    "azp": "accrue-portal",
    "realm_access": {"roles": ["finance", "offline_access"]},
    "resource_access": {"accrue-api": {"roles": ["auditor"]}},
    "accrue": {"legal_entities": ["le-uk", "le-de"]},
    "email": "morgan@acme.example",
    "email_verified": True,
}
KEYCLOAK = ClaimsMapping(
    roles="realm_access.roles",
    legal_entities="accrue.legal_entities",
    client_systems={"workday-sync": "workday"},
)


def test_keycloak_style_nested_claims() -> None:
    assert KEYCLOAK.principal(KEYCLOAK_USER) == Principal(
        subject="6f1c-user",
        roles=frozenset({"finance", "offline_access"}),
        legal_entity_ids=frozenset({"le-uk", "le-de"}),
        client_id="accrue-portal",
        system=None,
        email="morgan@acme.example",
    )
    # Client roles instead of realm roles: a deeper path.
    by_client = ClaimsMapping(roles="resource_access.accrue-api.roles")
    assert by_client.principal(KEYCLOAK_USER).roles == frozenset({"auditor"})


def test_a_keycloak_client_credentials_token_is_its_system_of_record() -> None:
    service_account = {"sub": "sa-7", "azp": "workday-sync", "client_id": "workday-sync", "realm_access": {}}
    principal = KEYCLOAK.principal(service_account)
    assert principal.client_id == "workday-sync"
    assert principal.system == "workday"
    assert principal.roles == frozenset()  # realm_access without roles: none, not an error
    assert principal.legal_entity_ids == frozenset()


def test_flat_claims_with_the_defaults() -> None:
    mapping = ClaimsMapping(client_systems={"sf-sync": "salesforce"})
    claims = {
        "sub": "c-42",
        "roles": ["consultant", "approver"],
        "accrue_legal_entities": ["le-1"],
        "client_id": "sf-sync",
        "azp": "ignored-because-client_id-comes-first",
    }
    assert mapping.principal(claims) == Principal(
        subject="c-42",
        roles=frozenset({"consultant", "approver"}),
        legal_entity_ids=frozenset({"le-1"}),
        client_id="sf-sync",
        system="salesforce",
        email=None,
    )


def test_an_unknown_client_is_no_system() -> None:
    principal = ClaimsMapping(client_systems={"workday-sync": "workday"}).principal(
        {"sub": "x", "client_id": "someone-else"}
    )
    assert principal.client_id == "someone-else"
    assert principal.system is None


def test_roles_from_a_space_separated_scope() -> None:
    mapping = ClaimsMapping(roles="scope")
    assert mapping.principal({"sub": "x", "scope": "finance  auditor"}).roles == frozenset(
        {"finance", "auditor"}
    )


def test_a_namespaced_claim_with_dots_in_its_name() -> None:
    # Auth0-style custom claims are URLs: the whole name is tried before the dotted path.
    mapping = ClaimsMapping(roles="https://accrue.example/roles", subject="sub")
    claims = {"sub": "auth0|1", "https://accrue.example/roles": ["viewer"]}
    assert mapping.principal(claims).roles == frozenset({"viewer"})


def test_another_subject_claim() -> None:
    mapping = ClaimsMapping(subject="preferred_username")
    assert mapping.principal({"sub": "opaque", "preferred_username": "E2"}).subject == "E2"


@pytest.mark.parametrize(
    "claims",
    [
        {},
        {"sub": ""},
        {"sub": "   "},
        {"sub": 42},
        {"sub": "x", "roles": [1, 2]},
        {"sub": "x", "roles": {"finance": True}},
        {"sub": "x", "accrue_legal_entities": 7},
    ],
)
def test_claims_that_name_nobody_or_carry_odd_roles_are_malformed(claims: dict[str, Any]) -> None:
    with pytest.raises(InvalidToken) as caught:
        ClaimsMapping().principal(claims)
    assert caught.value.reason == "malformed"


def test_an_unverified_email_is_left_out() -> None:
    mapping = ClaimsMapping()
    assert mapping.principal({"sub": "x", "email": "a@b.example", "email_verified": False}).email is None
    assert mapping.principal({"sub": "x", "email": "a@b.example"}).email == "a@b.example"
    assert mapping.principal({"sub": "x", "email": ""}).email is None


def test_claim_at() -> None:
    claims = {"a": {"b": {"c": 1}}, "a.b": "whole-name", "l": [1]}
    assert claim_at(claims, "a.b") == "whole-name"
    assert claim_at(claims, "a.b.c") == 1
    assert claim_at(claims, "a.x") is None
    assert claim_at(claims, "l.0") is None  # lists are not walked into


@pytest.mark.parametrize(
    "options",
    [{"roles": ""}, {"subject": ".sub"}, {"legal_entities": "a."}, {"client_systems": {"": "workday"}}],
)
def test_a_mapping_refuses_empty_paths_and_names(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="non-empty"):
        ClaimsMapping(**options)
