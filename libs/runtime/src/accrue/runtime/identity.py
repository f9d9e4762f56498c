"""Who is acting: the one seam for identity.

Until the gateway verifies bearer tokens and passes the principal in gRPC metadata (DESIGN §8),
the acting person is the one the request names (e.g. `approverId`). Every service asks this
module, and only this module, so switching to verified identity is a change here, not in each
use case.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from accrue.runtime.errors import InvalidArgument, Violation
from accrue.runtime.grpc_types import Context


@dataclass(frozen=True)
class Principal:
    """The caller: a subject (a consultant id for people), roles and legal entities."""

    subject: str
    roles: frozenset[str] = field(default_factory=frozenset)
    legal_entity_ids: frozenset[str] = field(default_factory=frozenset)


def acting_principal(context: Context, named_in_request: str, field_name: str) -> Principal:
    """The principal acting on this call; today, the subject the request names in field_name."""
    del context  # will carry the verified principal once tokens do
    if not named_in_request:
        raise InvalidArgument(
            f"{field_name} is required until bearer tokens carry identity",
            [Violation(field_name, "REQUIRED", f"{field_name} names who is acting")],
        )
    return Principal(subject=named_in_request)


def optional_principal(context: Context, named_in_request: str) -> Principal | None:
    """The principal acting on a call that may name nobody (e.g. a sync from a system of record).

    Today, the subject the request names, if any; the caller decides who acts otherwise (master
    data records the source system as the actor of an integration's write).
    """
    del context  # will carry the verified principal once tokens do
    return Principal(subject=named_in_request) if named_in_request else None
