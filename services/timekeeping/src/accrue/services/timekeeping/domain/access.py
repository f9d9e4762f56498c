"""Who may touch which timekeeping records: the resource rules of policy.toml, in one place.

The role x operation table (policy.toml) is enforced by the auth interceptor before a use case
runs; these are timekeeping's resource rules, which need the record to judge. The principal's
subject is the consultant id it acts as (approver, delegator, consultant recording time).

- own-time: a principal that reached submission through the consultant role alone (no
  integration role) records only its own time: every entry's consultant_id is its subject.
  An integration client records for the consultants of its legal entities; a consultant of
  another entity reads to it exactly as an unknown one (CONSULTANT_NOT_FOUND, the entry
  REJECTED), so nothing leaks.
- own-time-or-scope: a principal holding none of the roles that read beyond one's own time
  (approver, auditor, finance, project manager) reads only the entries it recorded, in any
  legal entity; the others read the entries of their legal entities.
- routed-approver: only the entry's approver of record or someone they delegated to, never the
  consultant who recorded it (domain.model.TimeEntry._authorize); entries of another legal
  entity are NotFound.
- routed-approver-or-scope: an approver lists its own queue (and its delegators'); finance and
  auditors list any approver's queue, or every pending entry, within their legal entities.
- own-delegation(-or-scope): delegations are granted and revoked by their delegator (the
  subject); approvers read the delegations they are party to, finance and auditors those of
  their legal entities (a delegation's legal entity is its delegator's).
- legal-entity-scope: period locks, reversals and summaries within the caller's entities.

Legal entity of a time entry: its project's (the master-data projection), stored on the entry.
Records of another legal entity read as missing ones: the same NotFound, the same message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from accrue.runtime import NotFound
from accrue.runtime.identity import Principal

# Roles that submit time for others (own-time): integration clients of timesheet tools.
SUBMIT_FOR_OTHERS: Final = frozenset({"integration"})
# Roles that read entries beyond their own (own-time-or-scope).
READ_BEYOND_OWN_TIME: Final = frozenset({"approver", "auditor", "finance", "project_manager"})
# Roles that list approval queues other than their own (routed-approver-or-scope).
READ_ANY_QUEUE: Final = frozenset({"auditor", "finance"})
# Roles that read delegations they are no party to (own-delegation-or-scope).
READ_ANY_DELEGATION: Final = frozenset({"auditor", "finance"})
# Roles that reverse any approved entry of their legal entities; others reverse only what they
# (or whoever delegated to them) approved.
REVERSE_ANY: Final = frozenset({"finance"})


def scope_of(principal: Principal) -> frozenset[str] | None:
    """The legal entities principal may see; None for every one (and for Accrue's services)."""
    if principal.is_service:
        return None
    return principal.legal_entity_scope


def sees(principal: Principal, legal_entity_id: str) -> bool:
    """True when the record of legal_entity_id is within principal's scope."""
    scope = scope_of(principal)
    return scope is None or legal_entity_id in scope


@dataclass(frozen=True)
class EntryView:
    """Which time entries a principal reads: one consultant's (own time) and/or some entities'."""

    consultant_id: str | None = None  # only this consultant's entries; None: anyone's
    legal_entity_ids: frozenset[str] | None = None  # only these entities'; None: every one

    def shows(self, consultant_id: str, legal_entity_id: str) -> bool:
        if self.consultant_id is not None and consultant_id != self.consultant_id:
            return False
        return self.legal_entity_ids is None or legal_entity_id in self.legal_entity_ids


def entry_view(principal: Principal) -> EntryView:
    """own-time-or-scope: what principal may read of time entries."""
    if principal.is_service or principal.has_any(READ_BEYOND_OWN_TIME):
        return EntryView(legal_entity_ids=scope_of(principal))
    # Own time: wherever it was recorded (a consultant may work on another entity's project).
    return EntryView(consultant_id=principal.subject)


def submits_only_own_time(principal: Principal) -> bool:
    """own-time: True when principal may record time for itself alone."""
    return not principal.has_any(SUBMIT_FOR_OTHERS)


@dataclass(frozen=True)
class DelegationView:
    """Which delegations a principal reads: those it is party to, or some entities'."""

    party: str | None = None  # only delegations this consultant granted or received
    legal_entity_ids: frozenset[str] | None = None

    def shows(self, delegator_id: str, delegate_id: str, legal_entity_id: str) -> bool:
        if self.party is not None and self.party not in (delegator_id, delegate_id):
            return False
        return self.legal_entity_ids is None or legal_entity_id in self.legal_entity_ids


def delegation_view(principal: Principal) -> DelegationView:
    """own-delegation-or-scope: what principal may read of delegations."""
    if principal.is_service or principal.has_any(READ_ANY_DELEGATION):
        return DelegationView(legal_entity_ids=scope_of(principal))
    return DelegationView(party=principal.subject)


def reads_any_queue(principal: Principal) -> bool:
    """routed-approver-or-scope: True when principal may list queues other than its own."""
    return principal.is_service or principal.has_any(READ_ANY_QUEUE)


def reverses_any(principal: Principal) -> bool:
    """True when principal may reverse approved time it did not approve (within its scope)."""
    return principal.has_any(REVERSE_ANY)


def not_found(what: str, record_id: str) -> NotFound:
    """The one NotFound of a record by id: missing and out-of-scope read the same."""
    return NotFound(f"no {what} with id {record_id!r}", reason="NOT_FOUND")
