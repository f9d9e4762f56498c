"""The observability schema: a ledger of approved work and whether it is invoiced yet."""

from __future__ import annotations

import sqlalchemy as sa

from accrue.db.idempotency import idempotency_table
from accrue.eventbus import inbox_table, outbox_table

SCHEMA = "observability"
metadata = sa.MetaData(schema=SCHEMA)

outbox = outbox_table(metadata)
inbox = inbox_table(metadata)
idempotency_keys = idempotency_table(metadata)

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
    sa.Index(
        "work_ledger_unbilled",
        "legal_entity_id",
        postgresql_where=sa.text("invoice_id IS NULL AND billable AND hours IS NOT NULL"),
    ),
)
