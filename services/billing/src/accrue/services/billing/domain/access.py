"""Who may touch which billing records: legal-entity scope and four eyes, in one place.

The role x operation table is policy.toml (enforced by the auth interceptor before a use case
runs); these are its resource rules for billing, which need the record to judge:

- legal-entity-scope: a principal limited to some legal entities sees only their invoices,
  runs, exceptions, cap status and billed work. Another entity's record read or written by id
  is NotFound with the very message a missing id gets (no existence leak). A billing run is
  *for* a legal entity the caller names: a scoped principal must name one of its own; a run for
  every legal entity (none named) is refused to it, because such a run would bill entities it
  cannot see (PERMISSION_DENIED, reason LEGAL_ENTITY_SCOPE: the refusal is judged on the
  caller's scope alone, never on what exists, so it leaks nothing).
  Exceptions with no legal entity (work on a project master data does not know) belong to no
  entity a scoped principal holds: only principals of every legal entity see them.
- four-eyes: in the legal entities the setting names ("*": all), whoever approved an invoice
  may not also post it (PERMISSION_DENIED, reason FOUR_EYES). Asking for a retry of a failed
  posting (PostInvoice again, or resolving ERP_POST_FAILED with RETRY) is posting too.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from accrue.runtime import NotFound, Violation
from accrue.runtime.errors import PermissionDenied
from accrue.runtime.identity import ALL_LEGAL_ENTITIES, Principal

LEGAL_ENTITY_SCOPE = "legal-entity-scope"
FOUR_EYES = "four-eyes"


def scope_of(principal: Principal) -> frozenset[str] | None:
    """The legal entities principal may see; None for every one (and for Accrue's services)."""
    if principal.is_service:
        return None
    return principal.legal_entity_scope


def not_found(what: str, record_id: str) -> NotFound:
    """The one NotFound of a record by id: missing and out-of-scope read the same."""
    return NotFound(f"no {what} with id {record_id!r}", reason="NOT_FOUND")


def require_visible(principal: Principal, legal_entity_id: str, what: str, record_id: str) -> None:
    """NotFound, exactly as for a missing id, when the record's legal entity is not principal's."""
    scope = scope_of(principal)
    if scope is not None and legal_entity_id not in scope:
        raise not_found(what, record_id)


def check_run_scope(principal: Principal, legal_entity_id: str) -> None:
    """A scoped principal runs billing only for one of its own legal entities, named."""
    scope = scope_of(principal)
    if scope is None or legal_entity_id in scope:
        return
    if not legal_entity_id:
        raise PermissionDenied(
            "a billing run for every legal entity needs access to every legal entity; "
            f"name one of yours ({', '.join(sorted(scope)) or 'none'}) in legal_entity_id "
            f"(rule {LEGAL_ENTITY_SCOPE})",
            [Violation("billing_run.legal_entity_id", "REQUIRED", "name a legal entity you may bill")],
            reason="LEGAL_ENTITY_SCOPE",
        )
    raise PermissionDenied(
        f"legal entity {legal_entity_id!r} is not one of the caller's (rule {LEGAL_ENTITY_SCOPE})",
        [Violation("billing_run.legal_entity_id", "OUT_OF_SCOPE", "name a legal entity you may bill")],
        reason="LEGAL_ENTITY_SCOPE",
    )


@dataclass(frozen=True)
class FourEyes:
    """The legal entities where an invoice's approver may not post it (the setting)."""

    legal_entity_ids: frozenset[str] = frozenset()

    @classmethod
    def of(cls, legal_entity_ids: Iterable[str]) -> FourEyes:
        return cls(frozenset(i.strip() for i in legal_entity_ids if i.strip()))

    def applies_to(self, legal_entity_id: str) -> bool:
        return ALL_LEGAL_ENTITIES in self.legal_entity_ids or legal_entity_id in self.legal_entity_ids

    def check_post(self, invoice_id: str, legal_entity_id: str, approved_by: str, poster: Principal) -> None:
        """Refuse posting by the invoice's approver where four eyes are on."""
        if approved_by and approved_by == poster.subject and self.applies_to(legal_entity_id):
            raise PermissionDenied(
                f"{poster.subject!r} approved invoice {invoice_id}, so someone else must post it: "
                f"four eyes are on for legal entity {legal_entity_id} (rule {FOUR_EYES})",
                reason="FOUR_EYES",
            )
