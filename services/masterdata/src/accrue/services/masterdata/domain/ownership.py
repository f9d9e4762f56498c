"""Which system of record owns each entity type, and whether a write may change it.

The owner of a kind is configured (ACCRUE_MASTERDATA_OWNERS='{"consultant": "workday"}'). A
kind without an owner accepts writes from any source. A write's source is the caller's identity
(domain.access.source_of): the system an integration client is, or "api" for a person — never a
request field or a batch row's external_ref.system — so once HR owns consultants neither a person
at the REST API nor another system's client can change them behind HR's back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from accrue.runtime import Violation

API_SOURCE = "api"


@dataclass(frozen=True)
class Ownership:
    """Entity type (kind name) → the system of record that owns it."""

    owners: Mapping[str, str] = field(default_factory=dict)

    def owner(self, kind: str) -> str | None:
        """The owning system, or None when any source may write."""
        return self.owners.get(kind) or None

    def check(self, kind: str, plural: str, source: str) -> Violation | None:
        """None when source may write records of kind, else the reason it may not."""
        owner = self.owner(kind)
        if owner is None or source == owner:
            return None
        return Violation(
            "source",
            "NOT_SYSTEM_OF_RECORD",
            f"{plural.replace('_', ' ')} are owned by {owner}; a write from {source or API_SOURCE!r} "
            "is refused",
        )
