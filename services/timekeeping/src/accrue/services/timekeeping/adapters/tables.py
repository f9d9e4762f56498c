"""The timekeeping schema: entries, delegations, period locks, and the local master-data projection."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from accrue.db.audit import audit_table
from accrue.db.idempotency import idempotency_table
from accrue.eventbus import inbox_table, outbox_table
from accrue.mdprojection import projection_table

SCHEMA = "timekeeping"
metadata = sa.MetaData(schema=SCHEMA)

outbox = outbox_table(metadata)
inbox = inbox_table(metadata)
idempotency_keys = idempotency_table(metadata)
audit_events = audit_table(metadata)

time_entries = sa.Table(
    "time_entries",
    metadata,
    sa.Column("id", sa.Uuid(as_uuid=False), primary_key=True),
    sa.Column("external_ref_system", sa.Text, nullable=True),
    sa.Column("external_ref_id", sa.Text, nullable=True),
    sa.Column("fingerprint", sa.Text, nullable=False),
    sa.Column("consultant_id", sa.Text, nullable=False),
    sa.Column("project_id", sa.Text, nullable=False),
    sa.Column("requested_labor_category_id", sa.Text, nullable=True),
    sa.Column("labor_category_id", sa.Text, nullable=False),
    sa.Column("work_date", sa.Date, nullable=False),
    sa.Column("hours", sa.Numeric(8, 2), nullable=False),
    sa.Column("requested_billable", sa.Boolean, nullable=True),
    sa.Column("billable", sa.Boolean, nullable=False),
    sa.Column("notes", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("violations", JSONB, nullable=False),
    sa.Column("approver_id", sa.Text, nullable=False),
    sa.Column("approve_time", sa.DateTime(timezone=True), nullable=True),
    sa.Column("decline_reason", sa.Text, nullable=False),
    sa.Column("invoice_id", sa.Text, nullable=False),
    sa.Column("legal_entity_id", sa.Text, nullable=False),
    sa.Column("customer_id", sa.Text, nullable=False),
    sa.Column("rate", sa.Numeric(18, 6), nullable=True),
    sa.Column("rate_currency", sa.Text, nullable=False),
    sa.Column("reverses_id", sa.Text, nullable=False, server_default=""),
    sa.Column("reversed_by_id", sa.Text, nullable=False, server_default=""),
    sa.Column("replaces_id", sa.Text, nullable=False, server_default=""),
    sa.Column("reversal_reason", sa.Text, nullable=False, server_default=""),
    sa.Column("escalation_level", sa.Integer, nullable=False, server_default="0"),
    sa.Column("likely_duplicate_of_id", sa.Text, nullable=False, server_default=""),
    sa.Column("decided_by_id", sa.Text, nullable=False, server_default=""),
    sa.Column("queue_time", sa.DateTime(timezone=True), nullable=True),
    # When escalation last found nobody above the approver (internal: not on the wire).
    sa.Column("escalation_checked_time", sa.DateTime(timezone=True), nullable=True),
    # When a pending entry escalates: its queue time plus the SLA in the working hours of its
    # legal entity's calendar (internal). NULL on entries queued before it was stored.
    sa.Column("escalation_due_time", sa.DateTime(timezone=True), nullable=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
    sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
    # One live entry per external reference: a reversed entry keeps its reference (for the
    # record) while its replacement takes the same reference over. The slot is '' on every
    # live entry (so two live ones collide) and the entry's own id once reversed; one index
    # both enforces that and serves lookups by reference, reversed entries included.
    sa.Column("external_ref_slot", sa.Text, nullable=False, server_default=""),
    sa.UniqueConstraint(
        "external_ref_system", "external_ref_id", "external_ref_slot", name="time_entries_external_ref_key"
    ),
    sa.Index("time_entries_consultant_day", "consultant_id", "work_date"),
    sa.Index("time_entries_project_day", "project_id", "work_date"),
    sa.Index(
        "time_entries_approver_pending",
        "approver_id",
        "create_time",
        postgresql_where=sa.text("status = 'PENDING_APPROVAL'"),
    ),
    # The escalation sweep reads the pending entries that are due, earliest first.
    sa.Index(
        "time_entries_escalation_due",
        "escalation_due_time",
        postgresql_where=sa.text("status = 'PENDING_APPROVAL'"),
    ),
)

period_locks = sa.Table(
    "period_locks",
    metadata,
    sa.Column("id", sa.Uuid(as_uuid=False), primary_key=True),
    sa.Column("legal_entity_id", sa.Text, nullable=False, index=True),
    sa.Column("locked_through", sa.Date, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
    sa.Column("locked_by_id", sa.Text, nullable=False, server_default=""),
    sa.Column("reopened_by_id", sa.Text, nullable=False, server_default=""),
    sa.Column("reopen_reason", sa.Text, nullable=False, server_default=""),
    sa.Column("reopen_time", sa.DateTime(timezone=True), nullable=True),
)

approval_delegations = sa.Table(
    "approval_delegations",
    metadata,
    sa.Column("id", sa.Uuid(as_uuid=False), primary_key=True),
    sa.Column("delegator_id", sa.Text, nullable=False, index=True),
    sa.Column("delegate_id", sa.Text, nullable=False, index=True),
    sa.Column("start_date", sa.Date, nullable=False),
    sa.Column("end_date", sa.Date, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
    sa.Column("revoked_by_id", sa.Text, nullable=False, server_default=""),
    sa.Column("revoke_time", sa.DateTime(timezone=True), nullable=True),
    # The delegator's legal entity when granted: scoped readers list delegations by it.
    sa.Column("legal_entity_id", sa.Text, nullable=False, server_default=""),
    sa.Index("approval_delegations_legal_entity", "legal_entity_id", "create_time"),
)

# The master data validation reads, fed by md.* events and by gRPC on a miss.
md_projection = projection_table(metadata)
# The durable consumer that feeds it (and whose inbox rows a rebuild clears).
MASTERDATA_CONSUMER = "timekeeping-md"
