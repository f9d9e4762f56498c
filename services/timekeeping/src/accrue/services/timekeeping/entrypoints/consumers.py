"""Event entrypoints: the master-data projection this service validates against."""

from __future__ import annotations

from accrue.eventbus import Subscription
from accrue.mdprojection import subscription
from accrue.services.timekeeping.adapters.tables import MASTERDATA_CONSUMER, md_projection

# What validation reads: projects, consultants, assignments, contract lines and rate cards.
PROJECTED_KINDS = ("project", "consultant", "assignment", "contract", "rate_card")


def masterdata_subscription() -> Subscription:
    """md.*.upserted for the kinds validation needs, into the local projection."""
    return subscription(MASTERDATA_CONSUMER, md_projection, PROJECTED_KINDS)
