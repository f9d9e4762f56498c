"""legal entities' time zones: KPI ages, closed months and reconciled periods are local

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06 04:00:00

One row per legal entity, from md.legal_entity.upserted. Entities whose last upsert was applied
before this revision have no row, and count as UTC until their next upsert (or a replay of the
MD stream for observability-md, its inbox rows cleared: docs/events.md, "Replay").
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

revision: str = '0004'
down_revision: Union[str, Sequence[str], None] = '0003'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

S = 'observability'


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        'legal_entities',
        sa.Column('legal_entity_id', sa.Text(), nullable=False),
        sa.Column('time_zone', sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint('legal_entity_id'),
        schema=S,
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_table('legal_entities', schema=S)
