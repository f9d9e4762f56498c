"""The billing schema: the unbilled-work ledger, runs, invoices, exceptions, projection."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY

from accrue.db.idempotency import idempotency_table
from accrue.eventbus import inbox_table, outbox_table
from accrue.mdprojection import projection_table

SCHEMA = "billing"
metadata = sa.MetaData(schema=SCHEMA)

outbox = outbox_table(metadata)
inbox = inbox_table(metadata)
idempotency_keys = idempotency_table(metadata)
md_projection = projection_table(metadata)

_ID = sa.Uuid(as_uuid=False)

# Approved time, one row per entry (its id is the natural key, so an event applied twice
# adds nothing). invoice_id is set when a draft takes the entry.
wip_entries = sa.Table(
    "wip_entries",
    metadata,
    sa.Column("time_entry_id", sa.Text, primary_key=True),
    sa.Column("project_id", sa.Text, nullable=False),
    sa.Column("consultant_id", sa.Text, nullable=False),
    sa.Column("labor_category_id", sa.Text, nullable=False),
    sa.Column("legal_entity_id", sa.Text, nullable=False),
    sa.Column("customer_id", sa.Text, nullable=False),
    sa.Column("work_date", sa.Date, nullable=False),
    sa.Column("hours", sa.Numeric(8, 2), nullable=False),
    sa.Column("billable", sa.Boolean, nullable=False),
    sa.Column("approve_time", sa.DateTime(timezone=True), nullable=True),
    sa.Column("invoice_id", _ID, nullable=True),
    sa.Index(
        "wip_unbilled",
        "legal_entity_id",
        "work_date",
        postgresql_where=sa.text("invoice_id IS NULL AND billable"),
    ),
)

billing_runs = sa.Table(
    "billing_runs",
    metadata,
    sa.Column("id", _ID, primary_key=True),
    # "" when the run covers every legal entity, so the unique key works without NULLs.
    sa.Column("legal_entity_key", sa.Text, nullable=False),
    sa.Column("period_start", sa.Date, nullable=False),
    sa.Column("period_end", sa.Date, nullable=False),
    sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("legal_entity_key", "period_start", "period_end", name="billing_runs_scope_key"),
)

invoices = sa.Table(
    "invoices",
    metadata,
    sa.Column("id", _ID, primary_key=True),
    sa.Column("number", sa.Text, nullable=True),
    sa.Column("legal_entity_id", sa.Text, nullable=False, index=True),
    sa.Column("customer_id", sa.Text, nullable=False, index=True),
    sa.Column("contract_id", sa.Text, nullable=False),
    sa.Column("billing_run_id", _ID, sa.ForeignKey(f"{SCHEMA}.billing_runs.id"), nullable=False, index=True),
    sa.Column("period_start", sa.Date, nullable=False),
    sa.Column("period_end", sa.Date, nullable=False),
    sa.Column("currency", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("subtotal", sa.Numeric(20, 4), nullable=False),
    sa.Column("tax_total", sa.Numeric(20, 4), nullable=False),
    sa.Column("total", sa.Numeric(20, 4), nullable=False),
    sa.Column("rounding_residual", sa.Numeric(28, 10), nullable=False),
    sa.Column("erp_document_id", sa.Text, nullable=False),
    sa.Column("post_time", sa.DateTime(timezone=True), nullable=True),
    sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
    sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
)

invoice_lines = sa.Table(
    "invoice_lines",
    metadata,
    sa.Column("id", _ID, primary_key=True),
    sa.Column("invoice_id", _ID, sa.ForeignKey(f"{SCHEMA}.invoices.id"), nullable=False, index=True),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("quantity", sa.Numeric(20, 4), nullable=False),
    sa.Column("unit_price", sa.Numeric(28, 10), nullable=False),
    sa.Column("amount", sa.Numeric(20, 4), nullable=False),
    sa.Column("tax_code", sa.Text, nullable=False),
    sa.Column("tax_rate", sa.Numeric(12, 8), nullable=False),
    sa.Column("tax_amount", sa.Numeric(20, 4), nullable=False),
    sa.Column("contract_line_id", sa.Text, nullable=False, index=True),
    sa.Column("project_id", sa.Text, nullable=False),
    sa.Column("labor_category_id", sa.Text, nullable=False),
    sa.Column("rate_card_entry_id", sa.Text, nullable=False),
    sa.Column("source_time_entry_ids", ARRAY(sa.Text), nullable=False),
    sa.Column("milestone_id", sa.Text, nullable=False),
)

billing_exceptions = sa.Table(
    "billing_exceptions",
    metadata,
    sa.Column("id", _ID, primary_key=True),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("legal_entity_id", sa.Text, nullable=False),
    sa.Column("contract_id", sa.Text, nullable=False),
    sa.Column("contract_line_id", sa.Text, nullable=False),
    sa.Column("project_id", sa.Text, nullable=False),
    sa.Column("amount", sa.Numeric(20, 4), nullable=True),
    sa.Column("currency", sa.Text, nullable=False),
    sa.Column("hours", sa.Numeric(12, 2), nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
    sa.Column("time_entry_ids", ARRAY(sa.Text), nullable=False),
    sa.Column("billing_run_id", _ID, nullable=True),
    # The same problem with the same entries is raised once while it is open.
    sa.Column("dedupe_key", sa.Text, nullable=False),
    sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
    sa.Column("resolve_time", sa.DateTime(timezone=True), nullable=True),
    sa.Index(
        "billing_exceptions_open_key", "dedupe_key", unique=True, postgresql_where=sa.text("status = 'OPEN'")
    ),
)
