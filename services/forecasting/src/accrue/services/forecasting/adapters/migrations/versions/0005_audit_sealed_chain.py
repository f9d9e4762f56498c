"""audit sealed chain: links move from audit_events to the insert-only audit_chain

Revision ID: 0005
Revises: 0004
Create Date: 2027-02-01 09:00:00

A request used to append its audit event under the legal entity's chain lock (read the head,
hash, insert), which serialized every write of an entity. Now the request only inserts the
event, and the service's AuditSealer links committed events into audit_chain afterwards
(accrue.db.audit). Existing events keep their chains: their links are copied into audit_chain.
audit_chain is append-only like audit_events, and the service's role may only read and append it.
"""
from typing import Sequence, Union

from alembic import op

from accrue.db.audit import downgrade_from_sealed_chain, upgrade_to_sealed_chain
from accrue.db.roles import APP_ROLE

revision: str = '0005'
down_revision: Union[str, Sequence[str], None] = '0004'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

S = 'forecasting'


def upgrade() -> None:
    """Upgrade schema."""
    upgrade_to_sealed_chain(op, S, APP_ROLE)


def downgrade() -> None:
    """Downgrade schema."""
    downgrade_from_sealed_chain(op, S)
