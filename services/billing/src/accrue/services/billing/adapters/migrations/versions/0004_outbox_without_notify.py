"""the outbox no longer NOTIFYs: the relay is woken by its own process's commits

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 02:40:00

PostgreSQL serializes the commits of every transaction that NOTIFYs, server-wide, on one lock
held through the WAL flush; under a few hundred commits a second a slow flush stalled every
request in flight. The relay now wakes on its engine's commits that wrote outbox rows, and
polls for the rest (see accrue.eventbus.outbox).
"""
from typing import Sequence, Union

from alembic import op

revision: str = '0004'
down_revision: Union[str, Sequence[str], None] = '0003'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

S = 'billing'


def upgrade() -> None:
    """Upgrade schema."""
    op.execute(f'DROP TRIGGER IF EXISTS outbox_notify ON "{S}".outbox')
    op.execute(f'DROP FUNCTION IF EXISTS "{S}".outbox_notify()')


def downgrade() -> None:
    """Downgrade schema."""
    op.execute(
        f"""CREATE OR REPLACE FUNCTION "{S}".outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN PERFORM pg_notify('{S}_outbox', ''); RETURN NULL; END $$"""
    )
    op.execute(
        f"""CREATE TRIGGER outbox_notify AFTER INSERT ON "{S}".outbox
           FOR EACH STATEMENT EXECUTE FUNCTION "{S}".outbox_notify()"""
    )
