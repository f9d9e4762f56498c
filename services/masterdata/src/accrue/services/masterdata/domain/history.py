"""What a change changed: the top-level fields that differ between two states of a record."""

from __future__ import annotations

from typing import Any

# Bookkeeping that differs on every change; not what the change was about.
_BOOKKEEPING = frozenset({"etag", "update_time", "create_time", "id"})


def changed_fields(before: dict[str, Any] | None, after: dict[str, Any]) -> list[str]:
    """Sorted names of the top-level fields whose values differ (all of after's when created)."""
    old = before or {}
    names = (set(old) | set(after)) - _BOOKKEEPING
    return sorted(n for n in names if old.get(n) != after.get(n))
