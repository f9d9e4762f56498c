"""Who a verified token names: the `Principal`, read from its claims by a `ClaimsMapping`.

Providers put the same facts in different places (Keycloak: `realm_access.roles`; Entra ID and
most others: `roles`; the client of a client-credentials token in `azp` or `client_id`), so where
each fact lives is configuration, not code. Pure: claims in, principal out, no I/O.

A claim path is dotted (`realm_access.roles` is `claims["realm_access"]["roles"]`), except that
a claim whose whole name is the path wins: namespaced claims such as
`https://accrue.example/roles` contain dots of their own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from accrue.identity.errors import InvalidToken

# One Principal for the whole system: the runtime's, which use cases read (accrue.runtime.identity).
from accrue.runtime.identity import Principal

__all__ = ["DEFAULT_LEGAL_ENTITIES_CLAIM", "DEFAULT_ROLES_CLAIM", "ClaimsMapping", "Principal", "claim_at"]

DEFAULT_ROLES_CLAIM: Final = "roles"
DEFAULT_LEGAL_ENTITIES_CLAIM: Final = "accrue_legal_entities"


@dataclass(frozen=True)
class ClaimsMapping:
    """Where a provider's tokens carry each fact about the caller."""

    subject: str = "sub"
    roles: str = DEFAULT_ROLES_CLAIM
    legal_entities: str = DEFAULT_LEGAL_ENTITIES_CLAIM
    # The first of these present names the client: `client_id` (RFC 9068), then `azp` (OIDC).
    client_id: tuple[str, ...] = ("client_id", "azp")
    email: str = "email"
    # client_id -> the system of record that client is, e.g. {"workday-sync": "workday"}.
    client_systems: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        paths = [self.subject, self.roles, self.legal_entities, self.email, *self.client_id]
        if any(not path or path.startswith(".") or path.endswith(".") for path in paths):
            raise ValueError("claim paths must be non-empty and may not start or end with a dot")
        if any(not client or not system for client, system in self.client_systems.items()):
            raise ValueError("client_systems maps non-empty client ids to non-empty system names")

    def principal(self, claims: Mapping[str, Any]) -> Principal:
        """The principal the claims name; InvalidToken("malformed") if they name nobody.

        A subject is required. Roles and legal entities are optional (absent means none) but
        when present must be strings: a list, or one space-separated string as OAuth's `scope`.
        """
        subject = claim_at(claims, self.subject)
        if not isinstance(subject, str) or not subject.strip():
            raise InvalidToken("malformed")
        client_id = next(
            (value for path in self.client_id if isinstance(value := claim_at(claims, path), str) and value),
            None,
        )
        return Principal(
            subject=subject,
            roles=_strings(claim_at(claims, self.roles)),
            legal_entity_ids=_strings(claim_at(claims, self.legal_entities)),
            client_id=client_id,
            system=self.client_systems.get(client_id) if client_id is not None else None,
            email=_email(claims, self.email),
        )


def claim_at(claims: Mapping[str, Any], path: str) -> Any:
    """The value at a claim path, or None: the whole name first, then its dotted parts."""
    if path in claims:
        return claims[path]
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _strings(value: Any) -> frozenset[str]:
    if value is None:
        return frozenset()
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return frozenset(item for item in value if item)
    # A number, an object, or a list with one: a mapping or provider bug, not "no roles".
    raise InvalidToken("malformed")


def _email(claims: Mapping[str, Any], path: str) -> str | None:
    email = claim_at(claims, path)
    if not isinstance(email, str) or not email:
        return None
    # An address the provider says it has not verified could be anyone's: it is left out, since a
    # subject may later be matched to a consultant by email.
    if claims.get("email_verified") is False:
        return None
    return email
