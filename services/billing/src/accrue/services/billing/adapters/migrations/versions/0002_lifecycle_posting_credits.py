"""invoice lifecycle, ERP posting queue, numbering, credits, milestones, exception resolution

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 20:00:00

Hand-written: besides the new columns and tables it links each billed entry to its line
(wip_entries.invoice_line_id, filled from the lines' source_time_entry_ids) and installs the
triggers that keep a POSTED invoice, its lines and its entries unchanged.
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision: str = '0002'
down_revision: Union[str, Sequence[str], None] = '0001'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

S = 'billing'
UNBILLED = "invoice_id IS NULL AND billable AND hold IS NULL"


def upgrade() -> None:
    """Upgrade schema."""
    # -- the ledger ---------------------------------------------------------------------------
    op.add_column('wip_entries', sa.Column('invoice_line_id', sa.Uuid(as_uuid=False), nullable=True), schema=S)
    op.add_column('wip_entries', sa.Column('reverses_id', sa.Text(), nullable=True), schema=S)
    op.add_column('wip_entries', sa.Column('reversed_by_id', sa.Text(), nullable=True), schema=S)
    op.add_column('wip_entries', sa.Column('hold', sa.Text(), nullable=True), schema=S)
    op.add_column('wip_entries', sa.Column('hold_ref', sa.Text(), nullable=True), schema=S)
    op.add_column(
        'wip_entries',
        sa.Column('overage_approved', sa.Boolean(), server_default=sa.false(), nullable=False),
        schema=S,
    )
    op.execute(
        f"""UPDATE "{S}".wip_entries w SET invoice_line_id = l.id
            FROM "{S}".invoice_lines l, unnest(l.source_time_entry_ids) AS src(id)
            WHERE src.id = w.time_entry_id AND w.invoice_id = l.invoice_id"""
    )
    op.drop_index('wip_unbilled', table_name='wip_entries', schema=S)
    op.create_index(
        'wip_unbilled', 'wip_entries', ['legal_entity_id', 'project_id', 'work_date', 'time_entry_id'],
        unique=False, schema=S, postgresql_where=sa.text(UNBILLED),
    )
    op.create_index(
        'wip_reversals', 'wip_entries', ['reverses_id'], unique=False, schema=S,
        postgresql_where=sa.text('reverses_id IS NOT NULL'),
    )
    op.create_table(
        'milestones',
        sa.Column('milestone_id', sa.Text(), nullable=False),
        sa.Column('contract_id', sa.Text(), nullable=False),
        sa.Column('contract_line_id', sa.Text(), nullable=False),
        sa.Column('project_id', sa.Text(), nullable=False),
        sa.Column('legal_entity_id', sa.Text(), nullable=False),
        sa.Column('name', sa.Text(), nullable=False),
        sa.Column('amount', sa.Numeric(precision=20, scale=4), nullable=False),
        sa.Column('complete_date', sa.Date(), nullable=False),
        sa.Column('complete_time', sa.DateTime(timezone=True), nullable=False),
        sa.Column('invoice_id', sa.Uuid(as_uuid=False), nullable=True),
        sa.Column('invoice_line_id', sa.Uuid(as_uuid=False), nullable=True),
        sa.Column('hold', sa.Text(), nullable=True),
        sa.Column('hold_ref', sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint('milestone_id'),
        schema=S,
    )
    op.create_index(
        'milestones_unbilled', 'milestones', ['legal_entity_id', 'complete_date'], unique=False, schema=S,
        postgresql_where=sa.text('invoice_id IS NULL AND hold IS NULL'),
    )

    # -- runs ---------------------------------------------------------------------------------
    op.add_column('billing_runs', sa.Column('billing_period', sa.Text(), server_default='', nullable=False), schema=S)
    op.add_column('billing_runs', sa.Column('scheduled', sa.Boolean(), server_default=sa.false(), nullable=False), schema=S)
    op.add_column('billing_runs', sa.Column('cutoff_time', sa.DateTime(timezone=True), nullable=True), schema=S)
    op.drop_constraint('billing_runs_scope_key', 'billing_runs', schema=S, type_='unique')
    op.create_unique_constraint(
        'billing_runs_scope_key', 'billing_runs',
        ['legal_entity_key', 'period_start', 'period_end', 'billing_period'], schema=S,
    )

    # -- invoices and lines -------------------------------------------------------------------
    for name, default in (
        ('rounding_mode', 'HALF_EVEN'), ('rounding_scope', 'PER_LINE'), ('approved_by', ''),
        ('voided_by', ''), ('void_reason', ''), ('erp_number', ''),
    ):
        op.add_column('invoices', sa.Column(name, sa.Text(), server_default=default, nullable=False), schema=S)
    op.add_column('invoices', sa.Column('approve_time', sa.DateTime(timezone=True), nullable=True), schema=S)
    op.add_column('invoices', sa.Column('void_time', sa.DateTime(timezone=True), nullable=True), schema=S)
    op.create_unique_constraint('invoices_number_key', 'invoices', ['legal_entity_id', 'number'], schema=S)

    op.add_column('invoice_lines', sa.Column('exact_amount', sa.Numeric(precision=28, scale=10), nullable=True), schema=S)
    op.execute(f'UPDATE "{S}".invoice_lines SET exact_amount = quantity * unit_price')
    op.alter_column('invoice_lines', 'exact_amount', nullable=False, schema=S)
    op.add_column('invoice_lines', sa.Column('rate_card_rate', sa.Numeric(precision=18, scale=6), nullable=True), schema=S)
    op.add_column('invoice_lines', sa.Column('fx_rate', sa.Numeric(precision=28, scale=10), nullable=True), schema=S)
    for name in ('rate_card_currency', 'fx_rate_id', 'tax_rate_id'):
        op.add_column('invoice_lines', sa.Column(name, sa.Text(), server_default='', nullable=False), schema=S)
    op.add_column('invoice_lines', sa.Column('credited_invoice_id', sa.Uuid(as_uuid=False), nullable=True), schema=S)
    op.add_column('invoice_lines', sa.Column('credited_line_id', sa.Uuid(as_uuid=False), nullable=True), schema=S)

    # -- exceptions ---------------------------------------------------------------------------
    op.add_column('billing_exceptions', sa.Column('resolution', sa.Text(), nullable=True), schema=S)
    op.add_column('billing_exceptions', sa.Column('resolved_by', sa.Text(), server_default='', nullable=False), schema=S)
    op.add_column('billing_exceptions', sa.Column('resolution_note', sa.Text(), server_default='', nullable=False), schema=S)
    op.add_column('billing_exceptions', sa.Column('invoice_id', sa.Uuid(as_uuid=False), nullable=True), schema=S)
    op.add_column(
        'billing_exceptions',
        sa.Column('milestone_ids', postgresql.ARRAY(sa.Text()), server_default='{}', nullable=False),
        schema=S,
    )

    # -- posting, numbering, rate limit, cap thresholds -----------------------------------------
    op.create_table(
        'posting_jobs',
        sa.Column('invoice_id', sa.Uuid(as_uuid=False), nullable=False),
        sa.Column('legal_entity_id', sa.Text(), nullable=False),
        sa.Column('status', sa.Text(), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('next_attempt_time', sa.DateTime(timezone=True), nullable=False),
        sa.Column('last_error', sa.Text(), nullable=False),
        sa.Column('erp_system', sa.Text(), nullable=False),
        sa.Column('request_time', sa.DateTime(timezone=True), nullable=False),
        sa.Column('requested_by', sa.Text(), nullable=False),
        sa.Column('update_time', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['invoice_id'], [f'{S}.invoices.id']),
        sa.PrimaryKeyConstraint('invoice_id'),
        schema=S,
    )
    op.create_index(
        'posting_jobs_due', 'posting_jobs', ['next_attempt_time'], unique=False, schema=S,
        postgresql_where=sa.text("status = 'QUEUED'"),
    )
    op.create_table(
        'invoice_numbers',
        sa.Column('legal_entity_id', sa.Text(), nullable=False),
        sa.Column('last_number', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('legal_entity_id'),
        schema=S,
    )
    op.create_table(
        'rate_limits',
        sa.Column('name', sa.Text(), nullable=False),
        sa.Column('tokens', sa.Float(), nullable=False),
        sa.Column('update_time', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('name'),
        schema=S,
    )
    op.create_table(
        'cap_thresholds',
        sa.Column('contract_line_id', sa.Text(), nullable=False),
        sa.Column('threshold_percent', sa.Integer(), nullable=False),
        sa.Column('billed_amount', sa.Numeric(precision=20, scale=4), nullable=False),
        sa.Column('reach_time', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('contract_line_id', 'threshold_percent'),
        schema=S,
    )

    # -- a posted invoice never changes ----------------------------------------------------------
    # The service never tries; these make it impossible for anything else too (a bug, a manual
    # UPDATE): corrections after posting are credit lines on a later invoice.
    op.execute(
        f"""CREATE FUNCTION "{S}".refuse_posted_invoice_change() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              RAISE EXCEPTION 'invoice % is POSTED and never changes', OLD.id
                USING ERRCODE = 'integrity_constraint_violation';
            END $$"""
    )
    op.execute(
        f"""CREATE TRIGGER invoices_posted_are_final BEFORE UPDATE OR DELETE ON "{S}".invoices
            FOR EACH ROW WHEN (OLD.status = 'POSTED') EXECUTE FUNCTION "{S}".refuse_posted_invoice_change()"""
    )
    op.execute(
        f"""CREATE FUNCTION "{S}".refuse_posted_line_change() RETURNS trigger LANGUAGE plpgsql AS $$
            DECLARE target uuid;
            BEGIN
              target := CASE WHEN TG_OP = 'INSERT' THEN NEW.invoice_id ELSE OLD.invoice_id END;
              IF EXISTS (SELECT 1 FROM "{S}".invoices WHERE id = target AND status = 'POSTED') THEN
                RAISE EXCEPTION 'invoice % is POSTED: its lines never change', target
                  USING ERRCODE = 'integrity_constraint_violation';
              END IF;
              RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
            END $$"""
    )
    op.execute(
        f"""CREATE TRIGGER invoice_lines_posted_are_final BEFORE INSERT OR UPDATE OR DELETE
            ON "{S}".invoice_lines FOR EACH ROW EXECUTE FUNCTION "{S}".refuse_posted_line_change()"""
    )
    op.execute(
        f"""CREATE FUNCTION "{S}".refuse_posted_work_change() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              IF EXISTS (SELECT 1 FROM "{S}".invoices WHERE id = OLD.invoice_id AND status = 'POSTED') THEN
                RAISE EXCEPTION 'time entry % is on POSTED invoice %', OLD.time_entry_id, OLD.invoice_id
                  USING ERRCODE = 'integrity_constraint_violation';
              END IF;
              RETURN NEW;
            END $$"""
    )
    # Only fires for rows already on an invoice whose billing would change, so billing a run
    # (invoice_id NULL → set) costs nothing extra.
    op.execute(
        f"""CREATE TRIGGER wip_posted_are_final BEFORE UPDATE ON "{S}".wip_entries FOR EACH ROW
            WHEN (OLD.invoice_id IS NOT NULL AND (NEW.invoice_id IS DISTINCT FROM OLD.invoice_id
                  OR NEW.invoice_line_id IS DISTINCT FROM OLD.invoice_line_id OR NEW.hours <> OLD.hours))
            EXECUTE FUNCTION "{S}".refuse_posted_work_change()"""
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.execute(f'DROP TRIGGER IF EXISTS wip_posted_are_final ON "{S}".wip_entries')
    op.execute(f'DROP TRIGGER IF EXISTS invoice_lines_posted_are_final ON "{S}".invoice_lines')
    op.execute(f'DROP TRIGGER IF EXISTS invoices_posted_are_final ON "{S}".invoices')
    op.execute(f'DROP FUNCTION IF EXISTS "{S}".refuse_posted_work_change()')
    op.execute(f'DROP FUNCTION IF EXISTS "{S}".refuse_posted_line_change()')
    op.execute(f'DROP FUNCTION IF EXISTS "{S}".refuse_posted_invoice_change()')
    op.drop_table('cap_thresholds', schema=S)
    op.drop_table('rate_limits', schema=S)
    op.drop_table('invoice_numbers', schema=S)
    op.drop_index('posting_jobs_due', table_name='posting_jobs', schema=S)
    op.drop_table('posting_jobs', schema=S)
    for name in ('milestone_ids', 'invoice_id', 'resolution_note', 'resolved_by', 'resolution'):
        op.drop_column('billing_exceptions', name, schema=S)
    for name in (
        'credited_line_id', 'credited_invoice_id', 'tax_rate_id', 'fx_rate_id', 'rate_card_currency',
        'fx_rate', 'rate_card_rate', 'exact_amount',
    ):
        op.drop_column('invoice_lines', name, schema=S)
    op.drop_constraint('invoices_number_key', 'invoices', schema=S, type_='unique')
    for name in (
        'void_time', 'approve_time', 'erp_number', 'void_reason', 'voided_by', 'approved_by',
        'rounding_scope', 'rounding_mode',
    ):
        op.drop_column('invoices', name, schema=S)
    op.drop_constraint('billing_runs_scope_key', 'billing_runs', schema=S, type_='unique')
    op.create_unique_constraint(
        'billing_runs_scope_key', 'billing_runs', ['legal_entity_key', 'period_start', 'period_end'], schema=S
    )
    for name in ('cutoff_time', 'scheduled', 'billing_period'):
        op.drop_column('billing_runs', name, schema=S)
    op.drop_index('milestones_unbilled', table_name='milestones', schema=S)
    op.drop_table('milestones', schema=S)
    op.drop_index('wip_reversals', table_name='wip_entries', schema=S)
    op.drop_index('wip_unbilled', table_name='wip_entries', schema=S)
    op.create_index(
        'wip_unbilled', 'wip_entries', ['legal_entity_id', 'work_date'], unique=False, schema=S,
        postgresql_where=sa.text('invoice_id IS NULL AND billable'),
    )
    for name in ('overage_approved', 'hold_ref', 'hold', 'reversed_by_id', 'reverses_id', 'invoice_line_id'):
        op.drop_column('wip_entries', name, schema=S)
