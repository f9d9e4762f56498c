"""The forecasting schema: approved work per entry, from which the forecast is rolled up."""

from __future__ import annotations

import sqlalchemy as sa

from accrue.db.idempotency import idempotency_table
from accrue.eventbus import inbox_table, outbox_table

SCHEMA = "forecasting"
metadata = sa.MetaData(schema=SCHEMA)

outbox = outbox_table(metadata)
inbox = inbox_table(metadata)
idempotency_keys = idempotency_table(metadata)

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
    sa.Index("actual_work_project_month", "project_id", "month"),
)
