"""A small collector for input violations, so every problem is reported at once.

Domain code checks a whole input, adding a Violation per problem (field path, stable code,
sentence), then raises InvalidArgument with all of them — never just the first.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from accrue.money import DecimalError, is_currency, parse_decimal
from accrue.runtime.clock import is_time_zone
from accrue.runtime.errors import InvalidArgument, Violation


class Violations:
    """Collects violations under an optional field prefix (e.g. "time_entry")."""

    def __init__(self, prefix: str = "") -> None:
        self._prefix = prefix
        self.items: list[Violation] = []

    def path(self, field: str) -> str:
        """The full field path under this collector's prefix."""
        if not self._prefix:
            return field
        return f"{self._prefix}.{field}" if field else self._prefix

    def nested(self, prefix: str) -> Violations:
        """A collector for a sub-message that adds into this one."""
        child = Violations(self.path(prefix))
        child.items = self.items
        return child

    def add(self, field: str, code: str, message: str) -> None:
        """Record one violation."""
        self.items.append(Violation(self.path(field), code, message))

    def __bool__(self) -> bool:
        return bool(self.items)

    def raise_if_any(self, message: str = "the request is invalid") -> None:
        """Raise InvalidArgument with every violation, if there are any."""
        if self.items:
            detail = "; ".join(f"{v.field}: {v.message}" for v in self.items[:5])
            more = f" (and {len(self.items) - 5} more)" if len(self.items) > 5 else ""
            raise InvalidArgument(f"{message}: {detail}{more}", self.items)

    # -- typed checks: each returns the parsed value, or None after recording a violation --

    def required(self, field: str, value: str) -> str | None:
        """A non-empty string."""
        if not value or not value.strip():
            self.add(field, "REQUIRED", f"{field} is required")
            return None
        return value

    def decimal(
        self,
        field: str,
        value: str,
        *,
        required: bool = True,
        minimum: Decimal | None = None,
        maximum: Decimal | None = None,
        exclusive_minimum: bool = False,
    ) -> Decimal | None:
        """An exact decimal string within optional bounds."""
        if not value:
            if required:
                self.add(field, "REQUIRED", f"{field} is required")
            return None
        try:
            number = parse_decimal(value)
        except DecimalError as exc:
            self.add(field, "INVALID_DECIMAL", f"{field} {exc}")
            return None
        if minimum is not None and (number <= minimum if exclusive_minimum else number < minimum):
            bound = "greater than" if exclusive_minimum else "at least"
            self.add(field, "OUT_OF_RANGE", f"{field} must be {bound} {minimum}, got {value}")
            return None
        if maximum is not None and number > maximum:
            self.add(field, "OUT_OF_RANGE", f"{field} must be at most {maximum}, got {value}")
            return None
        return number

    def date(self, field: str, value: str, *, required: bool = True) -> dt.date | None:
        """An ISO calendar date "YYYY-MM-DD" that exists."""
        if not value:
            if required:
                self.add(field, "REQUIRED", f"{field} is required")
            return None
        try:
            if len(value) != 10:
                raise ValueError
            return dt.date.fromisoformat(value)
        except ValueError:
            self.add(field, "INVALID_DATE", f"{field} must be a real date as YYYY-MM-DD, got {value!r}")
            return None

    def date_range(
        self, start_field: str, start: dt.date | None, end_field: str, end: dt.date | None
    ) -> None:
        """end, when given, is not before start."""
        if start is not None and end is not None and end < start:
            self.add(end_field, "INVALID_RANGE", f"{end_field} ({end}) is before {start_field} ({start})")

    def currency(self, field: str, value: str, *, required: bool = True) -> str | None:
        """An active ISO 4217 code."""
        if not value:
            if required:
                self.add(field, "REQUIRED", f"{field} is required")
            return None
        if not is_currency(value):
            self.add(field, "INVALID_CURRENCY", f"{field} must be an ISO 4217 currency code, got {value!r}")
            return None
        return value

    def time_zone(self, field: str, value: str) -> str | None:
        """An IANA time zone name (optional: empty passes as None)."""
        if not value:
            return None
        if not is_time_zone(value):
            self.add(
                field,
                "INVALID_TIME_ZONE",
                f'{field} must be an IANA time zone like "Europe/London", got {value!r}',
            )
            return None
        return value

    def time_of_day(self, field: str, value: str) -> dt.time | None:
        """A local time "HH:MM" (optional: empty passes as None)."""
        if not value:
            return None
        try:
            if len(value) != 5 or value[2] != ":":
                raise ValueError(value)
            return dt.time(int(value[:2]), int(value[3:]))
        except ValueError:
            self.add(field, "INVALID_TIME", f'{field} must be a time of day "HH:MM", got {value!r}')
            return None
