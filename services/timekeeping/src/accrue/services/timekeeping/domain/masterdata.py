"""The slice of master data that validation reads, as plain values."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from accrue.pricing import RateEntry


@dataclass(frozen=True, slots=True)
class ProjectFacts:
    """What validation needs of a project."""

    id: str
    status: str  # ProjectStatus name without prefix, e.g. "ACTIVE"
    start_date: dt.date
    end_date: dt.date | None
    manager_id: str
    legal_entity_id: str
    customer_id: str
    deactivated: bool = False


@dataclass(frozen=True, slots=True)
class ConsultantFacts:
    """What validation needs of a consultant."""

    id: str
    legal_entity_id: str
    manager_id: str
    active_from: dt.date
    active_to: dt.date | None
    deactivated: bool = False
    # Their own IANA time zone when it differs from their legal entity's ("" otherwise).
    time_zone: str = ""


@dataclass(frozen=True, slots=True)
class LegalEntityFacts:
    """What timekeeping needs of a legal entity: the zone its business dates are judged in."""

    id: str
    time_zone: str = "UTC"


@dataclass(frozen=True, slots=True)
class AssignmentFacts:
    """A staffing of a consultant on a project."""

    id: str
    labor_category_id: str
    start_date: dt.date
    end_date: dt.date | None
    billable: bool
    deactivated: bool = False

    def covers(self, day: dt.date) -> bool:
        """True when the assignment runs on day (a deactivated assignment covers nothing)."""
        return (
            not self.deactivated
            and self.start_date <= day
            and (self.end_date is None or day <= self.end_date)
        )


@dataclass(frozen=True, slots=True)
class PricingFacts:
    """How the project's time is priced: the contract line's model and its rate card."""

    billing_model: str  # BillingModel name without prefix, e.g. "TIME_AND_MATERIALS"
    currency: str
    rates: tuple[RateEntry, ...]
