"""audit trail: the append-only, hash-chained audit_events table; the service's runtime role

Revision ID: 0005
Revises: 0004
Create Date: 2027-01-15 09:00:00

Every state-changing call appends its audit record here in the same transaction as the change
(accrue.db.audit_interceptor). The table refuses UPDATE, DELETE and TRUNCATE by trigger, and the
role the service runs as (accrue.db.roles.APP_ROLE) gets everything it needs on this schema's
tables but only SELECT and INSERT on this one: run as the schema's owner.
"""
from typing import Sequence, Union

from alembic import op

from accrue.db.audit import TABLE_NAME, create_audit_table, drop_append_only_triggers
from accrue.db.roles import grant_app_role, revoke_app_role_sql

revision: str = '0005'
down_revision: Union[str, Sequence[str], None] = '0004'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

S = 'observability'


def upgrade() -> None:
    """Upgrade schema."""
    create_audit_table(op, S)
    grant_app_role(op, S)


def downgrade() -> None:
    """Downgrade schema."""
    for statement in revoke_app_role_sql(S):
        op.execute(statement)
    drop_append_only_triggers(op, S)
    op.drop_table(TABLE_NAME, schema=S)
