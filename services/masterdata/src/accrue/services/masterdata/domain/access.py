"""Who may touch which master-data records: policy.toml's resource rules for master data, in one
place.

The role x operation table (policy.toml) is enforced by the auth interceptor before a use case
runs; a principal holding only the consultant role, for instance, never reaches the rate-card,
contract, FX, tax, opportunity or history reads. These are the rules that need the record:

- legal-entity-scope: a principal limited to some legal entities sees only the records that
  belong to them (`Kind.legal_entity_path` says how a record reaches its entity: a customer by
  its legal_entity_id, a contract by its customer's, a milestone by its contract line's
  contract's customer's, an assignment by its project's). Lists are filtered in SQL; a record of
  another entity read, changed or referenced by id reads exactly as a missing one (the same
  NOT_FOUND, the same message). Firm-wide kinds (labor categories, rate cards, FX and tax rates)
  are visible to everyone, but only a principal of every legal entity may change them, or
  create a legal entity: both reach beyond any one entity.
- system-of-record: the source of a write is the caller's identity, never the request: an
  integration client writes as the system it is, a person as "api". A batch row's
  external_ref.system only keys the row; it claims nothing. A kind with an owner
  (ACCRUE_MASTERDATA_OWNERS) takes writes from its owner's client alone (domain.ownership).
"""

from __future__ import annotations

from accrue.runtime import NotFound, PermissionDenied, Violation
from accrue.runtime.identity import Principal
from accrue.services.masterdata.domain.kinds import Kind
from accrue.services.masterdata.domain.ownership import API_SOURCE

FIRM_WIDE = "FIRM_WIDE"
NOT_IN_SCOPE = "LEGAL_ENTITY_SCOPE"


def scope_of(principal: Principal) -> frozenset[str] | None:
    """The legal entities principal may see; None for every one (and for Accrue's services)."""
    if principal.is_service:
        return None
    return principal.legal_entity_scope


def source_of(principal: Principal) -> str:
    """system-of-record: the source a principal writes as (its system, or "api" for a person)."""
    return principal.system or API_SOURCE


def is_firm_wide(kind: Kind) -> bool:
    return not kind.legal_entity_path


def reaches_beyond_scope(kind: Kind, creating: bool) -> bool:
    """True when a write of kind affects more than some legal entities: a firm-wide record, or
    a new legal entity (which nobody limited to some entities holds yet)."""
    return is_firm_wide(kind) or (creating and kind.legal_entity_path == ("id",))


def beyond_scope(kind: Kind) -> Violation:
    """Why a principal limited to some legal entities may not make this write."""
    what = "are firm-wide" if is_firm_wide(kind) else "are created"
    return Violation(
        kind.name,
        FIRM_WIDE if is_firm_wide(kind) else NOT_IN_SCOPE,
        f"{kind.plural.replace('_', ' ')} {what}: only a principal of every legal entity may "
        f"{'change' if is_firm_wide(kind) else 'create'} them",
    )


def refuse_beyond_scope(kind: Kind) -> PermissionDenied:
    violation = beyond_scope(kind)
    return PermissionDenied(violation.message, [violation], reason=violation.code)


def not_found(kind: Kind, record_id: str) -> NotFound:
    """The one NotFound of a record by id: missing and out-of-scope read the same."""
    return NotFound(f"no {kind.title} with id {record_id!r}", reason="NOT_FOUND")
