"""delegation legal entity: a delegation belongs to its delegator's legal entity

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-10 10:00:00

Finance and auditors limited to some legal entities list only those entities' delegations, in
SQL: the delegator's legal entity is stored on the delegation when it is granted. Existing rows
take it from the master-data projection (the consultant's record); a delegator the projection
does not hold keeps '' (only principals of every legal entity see it) until granted again.
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

revision: str = '0005'
down_revision: Union[str, Sequence[str], None] = '0004'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

S = 'timekeeping'


def upgrade() -> None:
    """Upgrade schema."""
    op.add_column('approval_delegations', sa.Column('legal_entity_id', sa.Text(), server_default='', nullable=False), schema=S)
    op.create_index('approval_delegations_legal_entity', 'approval_delegations', ['legal_entity_id', 'create_time'], unique=False, schema=S)
    from accrue.masterdata.v1 import resources_pb2 as md

    conn = op.get_bind()
    rows = conn.execute(sa.text(
        f"SELECT p.id, p.payload FROM {S}.md_projection p "
        f"WHERE p.kind = 'consultant' AND p.id IN (SELECT delegator_id FROM {S}.approval_delegations)"
    )).all()
    for consultant_id, payload in rows:
        legal_entity_id = md.Consultant.FromString(payload).legal_entity_id
        conn.execute(
            sa.text(f"UPDATE {S}.approval_delegations SET legal_entity_id = :le WHERE delegator_id = :id"),
            {"le": legal_entity_id, "id": consultant_id},
        )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index('approval_delegations_legal_entity', table_name='approval_delegations', schema=S)
    op.drop_column('approval_delegations', 'legal_entity_id', schema=S)
