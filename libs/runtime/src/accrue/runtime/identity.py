"""Who is acting: the verified principal of the current RPC, and the one seam use cases ask.

Each service's authentication interceptor (accrue.identity.grpc) verifies the caller's internal
token and binds its principal for the duration of the call (`bound_principal`); use cases and
entrypoints read it here and nowhere else. Request fields that name an actor (`approverId`,
`actorId`, ...) are no longer trusted: when given they must name the principal (else
PERMISSION_DENIED naming the field), and what is stored always comes from the principal.

Legal-entity scope: a principal holds the legal entities it may see; `ALL_LEGAL_ENTITIES` ("*")
means every one (administrators, auditors of the whole group, the services themselves). A
principal with none sees no entity-owned data at all: scope fails closed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Final

from accrue.runtime.errors import PermissionDenied, Unauthenticated, Violation
from accrue.runtime.grpc_types import Context

ALL_LEGAL_ENTITIES: Final = "*"
SERVICE_ROLE: Final = "service"
SERVICE_SUBJECT_PREFIX: Final = "service:"


@dataclass(frozen=True)
class Principal:
    """The verified caller. Built only from a verified token's claims."""

    subject: str
    roles: frozenset[str] = frozenset()
    legal_entity_ids: frozenset[str] = frozenset()
    # The OAuth client the token was issued to (e.g. a client-credentials integration).
    client_id: str | None = None
    # The system of record an integration client is (e.g. "workday"); None for people.
    system: str | None = None
    email: str | None = None

    @property
    def is_service(self) -> bool:
        return self.subject.startswith(SERVICE_SUBJECT_PREFIX) and SERVICE_ROLE in self.roles

    @property
    def legal_entity_scope(self) -> frozenset[str] | None:
        """The legal entities this principal may see, or None for all of them."""
        if ALL_LEGAL_ENTITIES in self.legal_entity_ids:
            return None
        return self.legal_entity_ids

    def sees(self, legal_entity_id: str) -> bool:
        scope = self.legal_entity_scope
        return scope is None or legal_entity_id in scope

    def has_any(self, roles: frozenset[str]) -> bool:
        return not self.roles.isdisjoint(roles)


def service_principal(service: str) -> Principal:
    """The identity a service calls other services with."""
    return Principal(
        subject=SERVICE_SUBJECT_PREFIX + service,
        roles=frozenset({SERVICE_ROLE}),
        legal_entity_ids=frozenset({ALL_LEGAL_ENTITIES}),
    )


_current: ContextVar[Principal | None] = ContextVar("accrue_principal", default=None)


@contextmanager
def bound_principal(principal: Principal) -> Iterator[Principal]:
    """Make principal the acting one for the code inside (the interceptor's job, and tests')."""
    token = _current.set(principal)
    try:
        yield principal
    finally:
        _current.reset(token)


def current_principal(context: Context | None = None) -> Principal:
    """The principal of the current call; UNAUTHENTICATED when nobody was verified."""
    del context  # the principal travels in a context variable the interceptor sets
    principal = _current.get()
    if principal is None:
        raise Unauthenticated("this call carries no verified identity", reason="UNAUTHENTICATED")
    return principal


def acting_principal(context: Context | None, named_in_request: str, field_name: str) -> Principal:
    """The verified principal; a request field naming the actor must name that same principal."""
    principal = current_principal(context)
    if named_in_request and named_in_request != principal.subject:
        raise PermissionDenied(
            f"{field_name} names {named_in_request!r}, but the caller is {principal.subject!r}; "
            f"the acting person comes from the bearer token",
            [Violation(field_name, "NOT_THE_CALLER", f"{field_name} must be the caller or left out")],
            reason="ACTOR_MISMATCH",
        )
    return principal
