"""posting jobs are leased: the ERP call happens outside any transaction

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26 01:30:00

A worker claims a job by setting `leased_until` (and moving `next_attempt_time` to the same
moment, so the due index skips a leased job until its lease runs out); it then talks to the
ERP with no transaction open and records the outcome in a second, short transaction.
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

revision: str = '0003'
down_revision: Union[str, Sequence[str], None] = '0002'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

S = 'billing'


def upgrade() -> None:
    """Upgrade schema."""
    op.add_column(
        'posting_jobs', sa.Column('leased_until', sa.DateTime(timezone=True), nullable=True), schema=S
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_column('posting_jobs', 'leased_until', schema=S)
