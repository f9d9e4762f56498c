"""The forecasting schema: the facts the forecast is computed from, and its versions.

The live forecast is not stored: it is computed on read from these facts (approved work,
invoices, the master-data projection), so an event is reflected as soon as its consumer commits.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from accrue.db.audit import audit_table
from accrue.db.idempotency import idempotency_table
from accrue.eventbus import inbox_table, outbox_table
from accrue.mdprojection import projection_table

SCHEMA = "forecasting"
metadata = sa.MetaData(schema=SCHEMA)

outbox = outbox_table(metadata)
inbox = inbox_table(metadata)
idempotency_keys = idempotency_table(metadata)
audit_events = audit_table(metadata)
md_projection = projection_table(metadata)

# One row per approved entry; an invoice mark may arrive before the approval (two streams).
actual_work = sa.Table(
    "actual_work",
    metadata,
    sa.Column("time_entry_id", sa.Text, primary_key=True),
    sa.Column("project_id", sa.Text, nullable=True),
    sa.Column("customer_id", sa.Text, nullable=True),
    sa.Column("legal_entity_id", sa.Text, nullable=True),
    sa.Column("month", sa.Text, nullable=True),
    sa.Column("hours", sa.Numeric(8, 2), nullable=True),
    sa.Column("value", sa.Numeric(24, 8), nullable=True),
    sa.Column("currency", sa.Text, nullable=True),
    sa.Column("invoice_id", sa.Text, nullable=True),
    sa.Column("event_time", sa.DateTime(timezone=True), nullable=True),
    sa.Column("consultant_id", sa.Text, nullable=True),
    sa.Column("billable", sa.Boolean, nullable=True),
    # Set when time.entry.reversed cancels the entry: it leaves hours and WIP.
    sa.Column("reversed", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Index("actual_work_project_month", "project_id", "month"),
    sa.Index("actual_work_invoice", "invoice_id"),
    sa.Index("actual_work_event_time", "event_time"),
)

# The newest state of each invoice the forecast has seen, and its lines.
invoices = sa.Table(
    "invoices",
    metadata,
    sa.Column("invoice_id", sa.Text, primary_key=True),
    # DRAFT < APPROVED < POSTED; VOID is final. An older state never overwrites a newer one.
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("rank", sa.Integer, nullable=False),
    sa.Column("legal_entity_id", sa.Text, nullable=False),
    sa.Column("customer_id", sa.Text, nullable=False),
    sa.Column("month", sa.Text, nullable=False),
    sa.Column("currency", sa.Text, nullable=False),
)

invoice_lines = sa.Table(
    "invoice_lines",
    metadata,
    sa.Column("invoice_id", sa.Text, primary_key=True),
    sa.Column("line_id", sa.Text, primary_key=True),
    sa.Column("project_id", sa.Text, nullable=False),
    sa.Column("contract_line_id", sa.Text, nullable=False),
    sa.Column("milestone_id", sa.Text, nullable=True),
    sa.Column("amount", sa.Numeric(20, 4), nullable=False),
)

# Immutable snapshots (a trigger rejects UPDATE and DELETE).
forecast_versions = sa.Table(
    "forecast_versions",
    metadata,
    sa.Column("seq", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("id", sa.Text, nullable=False, unique=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("previous_version_id", sa.Text, nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("watermark", JSONB, nullable=False),
    # The accrue.forecasting.v1.Forecast as taken, serialized.
    sa.Column("forecast", sa.LargeBinary, nullable=False),
    # One scheduled version per name (per ISO week), however many replicas try.
    sa.Index(
        "forecast_versions_scheduled_name",
        "name",
        unique=True,
        postgresql_where=sa.text("kind = 'SCHEDULED'"),
    ),
)
