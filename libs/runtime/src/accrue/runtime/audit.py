"""What a call changed, told to the audit trail: the one seam use cases use for auditing.

Every state-changing RPC runs inside the audit interceptor (accrue.db.audit_interceptor), which
appends the call's audit records in the same transaction as the change. A use case tells it
*what* changed with `note(...)`: the resource, its legal entity, and the fields before and
after. The principal, operation, request id, Idempotency-Key, outcome and time are filled in by
the interceptor from the call itself, so a use case cannot get them wrong.

Outside an audited call (background workers, consumers, tests of a use case alone) `note` does
nothing: those changes are answerable through their own event history.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Change:
    """One resource a call changed."""

    resource_type: str  # e.g. "time_entry", "invoice", "consultant"
    resource_id: str
    legal_entity_id: str  # "" for firm-wide resources (e.g. labor categories, FX rates)
    before: Mapping[str, Any] | None  # None when created
    after: Mapping[str, Any] | None  # None when deleted


_changes: ContextVar[list[Change] | None] = ContextVar("accrue_audit_changes", default=None)


@contextmanager
def collecting() -> Iterator[list[Change]]:
    """Collect the changes noted by the code inside (the audit interceptor's job)."""
    changes: list[Change] = []
    token = _changes.set(changes)
    try:
        yield changes
    finally:
        _changes.reset(token)


def note(
    resource_type: str,
    resource_id: str,
    legal_entity_id: str,
    before: Mapping[str, Any] | None,
    after: Mapping[str, Any] | None,
) -> None:
    """Tell the audit trail what this call changed (a no-op outside an audited call)."""
    changes = _changes.get()
    if changes is not None:
        changes.append(Change(resource_type, resource_id, legal_entity_id, before, after))
