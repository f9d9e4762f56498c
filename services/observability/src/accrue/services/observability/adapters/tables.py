"""The observability schema: its own ledger of the business, kept from the events it consumes.

Legal entities' time zones; approved work and whether it is invoiced and posted yet; invoices
and their posting; open billing exceptions; forecast version totals; reconciliation results.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from accrue.db.audit import audit_table
from accrue.db.idempotency import idempotency_table
from accrue.eventbus import inbox_table, outbox_table

SCHEMA = "observability"
metadata = sa.MetaData(schema=SCHEMA)

outbox = outbox_table(metadata)
inbox = inbox_table(metadata)
idempotency_keys = idempotency_table(metadata)
audit_events = audit_table(metadata)

# Each legal entity's time zone (IANA; "UTC" when master data was given none), from
# md.legal_entity.upserted: the zone its KPI ages, closed months and periods are judged in.
legal_entities = sa.Table(
    "legal_entities",
    metadata,
    sa.Column("legal_entity_id", sa.Text, primary_key=True),
    sa.Column("time_zone", sa.Text, nullable=False),
)

# One row per time entry, written by whichever of "approved" and "invoiced" arrives first
# (the TIME and BILLING streams are consumed independently, so either order happens).
work_ledger = sa.Table(
    "work_ledger",
    metadata,
    sa.Column("time_entry_id", sa.Text, primary_key=True),
    sa.Column("legal_entity_id", sa.Text, nullable=True),
    sa.Column("project_id", sa.Text, nullable=True),
    sa.Column("hours", sa.Numeric(8, 2), nullable=True),
    sa.Column("billable", sa.Boolean, nullable=True),
    sa.Column("rate", sa.Numeric(18, 6), nullable=True),
    sa.Column("currency", sa.Text, nullable=True),
    sa.Column("approve_time", sa.DateTime(timezone=True), nullable=True),
    sa.Column("invoice_id", sa.Text, nullable=True),
    sa.Column("invoice_time", sa.DateTime(timezone=True), nullable=True),
    sa.Column("work_date", sa.Date, nullable=True),
    sa.Column("submit_time", sa.DateTime(timezone=True), nullable=True),
    # Reversed after approval: no longer approved work (its replacement is a new entry).
    sa.Column("reverse_time", sa.DateTime(timezone=True), nullable=True),
    sa.Column("post_time", sa.DateTime(timezone=True), nullable=True),
    sa.Index(
        "work_ledger_unbilled",
        "legal_entity_id",
        postgresql_where=sa.text("invoice_id IS NULL AND billable AND hours IS NOT NULL"),
    ),
)

# One row per invoice, from billing.invoice.* (the newest status wins; statuses only move on).
invoices = sa.Table(
    "invoices",
    metadata,
    sa.Column("invoice_id", sa.Text, primary_key=True),
    sa.Column("legal_entity_id", sa.Text, nullable=False),
    sa.Column("currency", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("subtotal", sa.Numeric(18, 2), nullable=True),
    sa.Column("period_start", sa.Date, nullable=True),
    sa.Column("period_end", sa.Date, nullable=True),
    sa.Column("erp_document_id", sa.Text, nullable=True),
    sa.Column("post_time", sa.DateTime(timezone=True), nullable=True),
    sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
)

# The lines of posted invoices: what the ERP confirmed, per project and time entry.
posted_lines = sa.Table(
    "posted_lines",
    metadata,
    sa.Column("invoice_id", sa.Text, primary_key=True),
    sa.Column("line_id", sa.Text, primary_key=True),
    sa.Column("legal_entity_id", sa.Text, nullable=False),
    sa.Column("project_id", sa.Text, nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("quantity", sa.Numeric(18, 4), nullable=False),
    sa.Column("amount", sa.Numeric(18, 2), nullable=False),
    sa.Column("currency", sa.Text, nullable=False),
    sa.Column("time_entry_ids", postgresql.ARRAY(sa.Text), nullable=False),
)

# Billing exceptions, from billing.exception.raised/resolved.
billing_exceptions = sa.Table(
    "billing_exceptions",
    metadata,
    sa.Column("exception_id", sa.Text, primary_key=True),
    sa.Column("legal_entity_id", sa.Text, nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("open", sa.Boolean, nullable=False),
)

# Forecast versions' totals per legal entity and month, from forecast.version.published.
forecast_versions = sa.Table(
    "forecast_versions",
    metadata,
    sa.Column("version_id", sa.Text, primary_key=True),
    sa.Column("previous_version_id", sa.Text, nullable=True),
    sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
)
forecast_totals = sa.Table(
    "forecast_totals",
    metadata,
    sa.Column("version_id", sa.Text, primary_key=True),
    sa.Column("legal_entity_id", sa.Text, primary_key=True),
    sa.Column("month", sa.Text, primary_key=True),
    sa.Column("currency", sa.Text, nullable=False),
    sa.Column("forecast_revenue", sa.Numeric(18, 2), nullable=False),
    sa.Column("actual_revenue", sa.Numeric(18, 2), nullable=False),
)

# The latest reconciliation of each period and legal entity (on demand or scheduled).
reconciliations = sa.Table(
    "reconciliations",
    metadata,
    sa.Column("period_start", sa.Date, primary_key=True),
    sa.Column("period_end", sa.Date, primary_key=True),
    sa.Column("legal_entity_id", sa.Text, primary_key=True),
    sa.Column("differences", sa.Integer, nullable=False),
    sa.Column("run_time", sa.DateTime(timezone=True), nullable=False),
)
