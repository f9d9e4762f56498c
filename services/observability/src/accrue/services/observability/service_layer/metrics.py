"""The business metrics observability exports to Prometheus.

Names follow Prometheus conventions (base units, `_total` for counters, `_seconds` for time).
Labels are bounded: legal_entity (a firm has a handful), currency, fixed age buckets, stage,
stream and durable consumer names (fixed by the code), exception kind (an enum).

Gauges are recomputed from the ledger and JetStream every interval, so every replica exports
the same values (take `max` across replicas, not `sum`). Counters and histograms are observed
where an event is applied the first time (the inbox guarantees once), so they are per replica
(take `sum` of their rates).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# Lags run from minutes to weeks.
LAG_BUCKETS = (60, 300, 900, 3600, 4 * 3600, 86400, 2 * 86400, 7 * 86400, 14 * 86400, 30 * 86400, 60 * 86400)

UNBILLED_HOURS = Gauge(
    "accrue_unbilled_approved_hours",
    "Approved billable hours not yet on an invoice, by days since approval.",
    ["legal_entity", "age"],
)
UNBILLED_VALUE = Gauge(
    "accrue_unbilled_approved_value",
    "Value of unbilled approved hours at the indicative rate, in the rate's currency, by age.",
    ["legal_entity", "currency", "age"],
)
UNBILLED_OLDEST = Gauge(
    "accrue_unbilled_approved_oldest_age_seconds",
    "Time since the oldest unbilled approved work was approved.",
    ["legal_entity"],
)
APPROVAL_LAG = Histogram(
    "accrue_approval_lag_seconds",
    "From a time entry's submission to its approval.",
    ["legal_entity"],
    buckets=LAG_BUCKETS,
)
INVOICE_LAG = Histogram(
    "accrue_invoice_lag_seconds",
    "From a time entry's approval to its invoice: stage draft (invoice drafted) or posted (ERP confirmed).",
    ["legal_entity", "stage"],
    buckets=LAG_BUCKETS,
)
ERP_POSTING_FAILURES = Counter(
    "accrue_erp_posting_failures_total",
    "Invoices whose ERP posting failed (an ERP_POST_FAILED billing exception was raised).",
    ["legal_entity"],
)
ERP_POSTINGS = Counter(
    "accrue_erp_postings_total", "Invoices the ERP confirmed (billing.invoice.posted).", ["legal_entity"]
)
ERP_POSTING_BACKLOG = Gauge(
    "accrue_erp_posting_backlog_invoices",
    "Approved invoices the ERP has not confirmed yet.",
    ["legal_entity"],
)
BILLING_EXCEPTIONS_OPEN = Gauge(
    "accrue_billing_exceptions_open",
    "Open billing exceptions, by kind (ERP_POST_FAILED: postings that need finance).",
    ["legal_entity", "kind"],
)
FORECAST_REVENUE = Gauge(
    "accrue_forecast_revenue",
    "Forecast revenue over a version's months in the legal entity's base currency (latest|previous).",
    ["legal_entity", "currency", "version"],
)
FORECAST_VARIANCE = Gauge(
    "accrue_forecast_variance",
    "Latest forecast against the previous version, or actual against forecast revenue of closed months.",
    ["legal_entity", "currency", "against"],
)
FORECAST_VERSIONS = Counter(
    "accrue_observed_forecast_versions_total", "Forecast versions published, as observability received them."
)
SYNC_BACKLOG = Gauge(
    "accrue_sync_backlog_messages",
    "Events a durable consumer has not processed yet (num_pending + num_ack_pending).",
    ["stream", "consumer"],
)
CONSUMER_PENDING = Gauge(
    "accrue_consumer_pending_messages",
    "JetStream consumer state: undelivered (state=pending) and unacknowledged (state=ack_pending).",
    ["stream", "consumer", "state"],
)
CONSUMER_DELIVERED = Gauge(
    "accrue_consumer_delivered_messages",
    "Messages a durable consumer has been delivered (its delivered consumer sequence).",
    ["stream", "consumer"],
)
CONSUMER_REDELIVERED = Gauge(
    "accrue_consumer_redelivered_messages",
    "Messages delivered more than once and not yet acknowledged (failing or slow).",
    ["stream", "consumer"],
)
DEAD_LETTERS = Gauge("accrue_dead_letters_messages", "Messages in the dead-letter stream.")
DEAD_LETTERS_BY_CONSUMER = Gauge(
    "accrue_dead_letters_by_consumer_messages",
    "Messages in the dead-letter stream, by the consumer that gave up.",
    ["consumer"],
)
RECONCILIATION_DIFFERENCES = Gauge(
    "accrue_reconciliation_differences",
    "Entries behind differences in the latest reconciliation of the legal entity's most recent period.",
    ["legal_entity"],
)
RECONCILIATIONS = Counter(
    "accrue_reconciliations_total", "Reconciliations run, by outcome (matched|mismatched).", ["outcome"]
)
KPI_EXPORTS = Counter(
    "accrue_kpi_exports_total", "Recomputations of the business gauges, by outcome (ok|failed).", ["outcome"]
)


def known_legal_entity(legal_entity: str) -> None:
    """Create a legal entity's counter and histogram series at zero.

    A series born at its first observation starts above zero, and rate()/increase() cannot see
    that first step; so every series of a legal entity exists from the first event naming it.
    """
    APPROVAL_LAG.labels(legal_entity)
    INVOICE_LAG.labels(legal_entity, "draft")
    INVOICE_LAG.labels(legal_entity, "posted")
    ERP_POSTING_FAILURES.labels(legal_entity)
    ERP_POSTINGS.labels(legal_entity)
