"""Pricing rules shared by every service that prices time (a shared kernel).

Master data answers `rates:resolve`, timekeeping checks that billable time has a rate, and
billing prices approved time. All three ask the same question, so the answer lives here, once.
"""

from accrue.pricing.rates import RateEntry, resolve_rate

__all__ = ["RateEntry", "resolve_rate"]
