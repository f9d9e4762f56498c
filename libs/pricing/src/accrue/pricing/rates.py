"""Which rate-card entry prices a consultant's hour on a given day."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from accrue.money import parse_decimal


class RateCardEntryMessage(Protocol):
    """What reading an entry needs of accrue.masterdata.v1.RateCardEntry (or its projection)."""

    id: str
    labor_category_id: str
    consultant_id: str
    rate: str
    effective_from: str
    effective_to: str


@dataclass(frozen=True, slots=True)
class RateEntry:
    """One hourly rate on a rate card."""

    id: str
    labor_category_id: str
    consultant_id: str | None
    rate: Decimal
    effective_from: dt.date
    effective_to: dt.date | None

    @classmethod
    def of(cls, entry: RateCardEntryMessage) -> RateEntry:
        """The rule's view of a master-data rate-card entry (decimal and ISO-date strings,
        "" for no consultant and no end), as every service that prices time reads it."""
        return cls(
            id=entry.id,
            labor_category_id=entry.labor_category_id,
            consultant_id=entry.consultant_id or None,
            rate=parse_decimal(entry.rate),
            effective_from=dt.date.fromisoformat(entry.effective_from),
            effective_to=dt.date.fromisoformat(entry.effective_to) if entry.effective_to else None,
        )

    def covers(self, day: dt.date) -> bool:
        """True when the entry is in effect on day (both ends inclusive)."""
        return self.effective_from <= day and (self.effective_to is None or day <= self.effective_to)


def resolve_rate(
    entries: Iterable[RateEntry], *, consultant_id: str, labor_category_id: str, day: dt.date
) -> RateEntry | None:
    """The entry that prices the hour, or None when the card has no rate for it.

    The rule: only entries for the labor category worked, in effect on the day, count. A
    consultant override (an entry naming this consultant) beats the category's rate. Among
    equally specific entries the latest effective_from wins; master data rejects overlapping
    ranges for the same key, so the id tie-break only makes the answer deterministic.
    """
    best: RateEntry | None = None
    best_key: tuple[int, dt.date, str] | None = None
    for entry in entries:
        if entry.labor_category_id != labor_category_id or not entry.covers(day):
            continue
        if entry.consultant_id is not None and entry.consultant_id != consultant_id:
            continue
        key = (1 if entry.consultant_id is not None else 0, entry.effective_from, entry.id)
        if best_key is None or key > best_key:
            best, best_key = entry, key
    return best
