"""escalation due time: the approval SLA counts working hours of the legal entity's calendar

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06 03:30:00

Each pending entry stores when it escalates (queue time plus the SLA in working hours, worked
out by the service, which knows the SLA and the calendars); the sweep selects by it. Entries
already waiting keep a NULL until the first sweep after the upgrade works theirs out.
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

revision: str = '0004'
down_revision: Union[str, Sequence[str], None] = '0003'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

S = 'timekeeping'
PENDING = sa.text("status = 'PENDING_APPROVAL'")


def upgrade() -> None:
    """Upgrade schema."""
    op.add_column('time_entries', sa.Column('escalation_due_time', sa.DateTime(timezone=True), nullable=True), schema=S)
    op.create_index('time_entries_escalation_due', 'time_entries', ['escalation_due_time'], unique=False, schema=S, postgresql_where=PENDING)
    op.drop_index('time_entries_pending_queue', table_name='time_entries', schema=S, postgresql_where=PENDING)


def downgrade() -> None:
    """Downgrade schema."""
    op.create_index('time_entries_pending_queue', 'time_entries', ['queue_time'], unique=False, schema=S, postgresql_where=PENDING)
    op.drop_index('time_entries_escalation_due', table_name='time_entries', schema=S, postgresql_where=PENDING)
    op.drop_column('time_entries', 'escalation_due_time', schema=S)
