"""The billing schema: the unbilled-work ledger, runs, invoices, exceptions, projection."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY

from accrue.db.audit import audit_table
from accrue.db.idempotency import idempotency_table
from accrue.eventbus import inbox_table, outbox_table
from accrue.mdprojection import projection_table

SCHEMA = "billing"
metadata = sa.MetaData(schema=SCHEMA)

outbox = outbox_table(metadata)
inbox = inbox_table(metadata)
idempotency_keys = idempotency_table(metadata)
audit_events = audit_table(metadata)
md_projection = projection_table(metadata)

_ID = sa.Uuid(as_uuid=False)

# Unbilled work is "billable, on no invoice, not held": the run streams it in this order.
UNBILLED = "invoice_id IS NULL AND billable AND hold IS NULL"

# Approved time, one row per entry (its id is the natural key, so an event applied twice
# adds nothing). invoice_id/invoice_line_id are set when a draft takes the entry (and cleared
# if that invoice is voided). There is deliberately no index on invoice_id: billing a run
# updates every row it bills, and each index would cost an insertion per row; an invoice's
# entries are found through its lines' source_time_entry_ids. A reversal is a row of its own
# with negative hours (reverses_id set); it is billed as a CREDIT line when its original was
# invoiced, else both rows are held CANCELLED.
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
    sa.Column("invoice_line_id", _ID, nullable=True),
    sa.Column("reverses_id", sa.Text, nullable=True),
    sa.Column("reversed_by_id", sa.Text, nullable=True),
    # Never billed by the hour: CANCELLED (reversed before it was invoiced), WRITTEN_OFF (by
    # finance), or FIXED_FEE (time on a fixed-fee line, which bills its milestones instead;
    # settled by the run that meets it).
    sa.Column("hold", sa.Text, nullable=True),
    # The exception whose resolution set the hold or approved the overage; for FIXED_FEE the
    # contract line whose fee covers the time.
    sa.Column("hold_ref", sa.Text, nullable=True),
    # CAP_EXCEEDED resolved with BILL_OVERAGE: bill it beyond the cap.
    sa.Column("overage_approved", sa.Boolean, nullable=False, server_default=sa.false()),
    # Ordered like the run streams it: per legal entity, project by project, oldest first.
    sa.Index(
        "wip_unbilled",
        "legal_entity_id",
        "project_id",
        "work_date",
        "time_entry_id",
        postgresql_where=sa.text(UNBILLED),
    ),
    # Reversals by what they reverse (few rows): voids check whether a credit was issued.
    sa.Index("wip_reversals", "reverses_id", postgresql_where=sa.text("reverses_id IS NOT NULL")),
)

# Completed milestones of FIXED_FEE lines (md.milestone.completed), billed once each.
milestones = sa.Table(
    "milestones",
    metadata,
    sa.Column("milestone_id", sa.Text, primary_key=True),
    sa.Column("contract_id", sa.Text, nullable=False),
    sa.Column("contract_line_id", sa.Text, nullable=False),
    sa.Column("project_id", sa.Text, nullable=False),
    sa.Column("legal_entity_id", sa.Text, nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("amount", sa.Numeric(20, 4), nullable=False),
    sa.Column("complete_date", sa.Date, nullable=False),
    sa.Column("complete_time", sa.DateTime(timezone=True), nullable=False),
    sa.Column("invoice_id", _ID, nullable=True),
    sa.Column("invoice_line_id", _ID, nullable=True),
    sa.Column("hold", sa.Text, nullable=True),
    sa.Column("hold_ref", sa.Text, nullable=True),
    sa.Index(
        "milestones_unbilled",
        "legal_entity_id",
        "complete_date",
        postgresql_where=sa.text("invoice_id IS NULL AND hold IS NULL"),
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
    # "" bills every contract line; MONTHLY/SEMI_MONTHLY/WEEKLY only lines with that period.
    sa.Column("billing_period", sa.Text, nullable=False, server_default=""),
    sa.Column("scheduled", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("cutoff_time", sa.DateTime(timezone=True), nullable=True),
    sa.UniqueConstraint(
        "legal_entity_key", "period_start", "period_end", "billing_period", name="billing_runs_scope_key"
    ),
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
    sa.Column("rounding_mode", sa.Text, nullable=False, server_default="HALF_EVEN"),
    sa.Column("rounding_scope", sa.Text, nullable=False, server_default="PER_LINE"),
    sa.Column("approve_time", sa.DateTime(timezone=True), nullable=True),
    sa.Column("approved_by", sa.Text, nullable=False, server_default=""),
    sa.Column("void_time", sa.DateTime(timezone=True), nullable=True),
    sa.Column("voided_by", sa.Text, nullable=False, server_default=""),
    sa.Column("void_reason", sa.Text, nullable=False, server_default=""),
    sa.Column("erp_number", sa.Text, nullable=False, server_default=""),
    # Only one number per legal entity; NULL until posted.
    sa.UniqueConstraint("legal_entity_id", "number", name="invoices_number_key"),
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
    # The line's lineage: the entries it bills (TIME, CREDIT), kept even if the invoice is voided.
    sa.Column("source_time_entry_ids", ARRAY(sa.Text), nullable=False),
    sa.Column("milestone_id", sa.Text, nullable=False),
    # quantity × unit_price before rounding (the sum of the entries' exact values).
    sa.Column("exact_amount", sa.Numeric(28, 10), nullable=False),
    sa.Column("rate_card_rate", sa.Numeric(18, 6), nullable=True),
    sa.Column("rate_card_currency", sa.Text, nullable=False, server_default=""),
    sa.Column("fx_rate", sa.Numeric(28, 10), nullable=True),
    sa.Column("fx_rate_id", sa.Text, nullable=False, server_default=""),
    sa.Column("tax_rate_id", sa.Text, nullable=False, server_default=""),
    sa.Column("credited_invoice_id", _ID, nullable=True),
    sa.Column("credited_line_id", _ID, nullable=True),
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
    sa.Column("resolution", sa.Text, nullable=True),
    sa.Column("resolved_by", sa.Text, nullable=False, server_default=""),
    sa.Column("resolution_note", sa.Text, nullable=False, server_default=""),
    sa.Column("invoice_id", _ID, nullable=True),
    sa.Column("milestone_ids", ARRAY(sa.Text), nullable=False, server_default="{}"),
    sa.Index(
        "billing_exceptions_open_key", "dedupe_key", unique=True, postgresql_where=sa.text("status = 'OPEN'")
    ),
)

# The durable posting queue: one job per invoice. A replica claims a due job (FOR UPDATE SKIP
# LOCKED, in a short transaction) by leasing it; the ERP call runs with no transaction open.
posting_jobs = sa.Table(
    "posting_jobs",
    metadata,
    sa.Column("invoice_id", _ID, sa.ForeignKey(f"{SCHEMA}.invoices.id"), primary_key=True),
    sa.Column("legal_entity_id", sa.Text, nullable=False),
    # QUEUED (first try or retry), CONFIRMED (the ERP has it), FAILED (given up).
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_attempt_time", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_error", sa.Text, nullable=False),
    sa.Column("erp_system", sa.Text, nullable=False),
    sa.Column("request_time", sa.DateTime(timezone=True), nullable=False),
    sa.Column("requested_by", sa.Text, nullable=False),
    sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
    # Set while a worker is posting the job: it is that worker's until then (next_attempt_time
    # is moved to the same moment, so nobody else finds it due). A worker that died leaves
    # a lease that simply runs out, and the job is claimed again.
    sa.Column("leased_until", sa.DateTime(timezone=True), nullable=True),
    sa.Index("posting_jobs_due", "next_attempt_time", postgresql_where=sa.text("status = 'QUEUED'")),
)

# Gap-free invoice numbers: one counter per legal entity, locked by the posting transaction.
invoice_numbers = sa.Table(
    "invoice_numbers",
    metadata,
    sa.Column("legal_entity_id", sa.Text, primary_key=True),
    sa.Column("last_number", sa.BigInteger, nullable=False),
)

# A token bucket shared by every replica, so the ERP sees one rate limit, not one per process.
rate_limits = sa.Table(
    "rate_limits",
    metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("tokens", sa.Float, nullable=False),
    sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
)

# Cap thresholds crossed per CAPPED line, so each is announced once (again only after the
# billed amount fell back below it, e.g. through a void or a credit).
cap_thresholds = sa.Table(
    "cap_thresholds",
    metadata,
    sa.Column("contract_line_id", sa.Text, primary_key=True),
    sa.Column("threshold_percent", sa.Integer, primary_key=True),
    sa.Column("billed_amount", sa.Numeric(20, 4), nullable=False),
    sa.Column("reach_time", sa.DateTime(timezone=True), nullable=False),
)
