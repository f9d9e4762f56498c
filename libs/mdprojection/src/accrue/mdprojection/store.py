"""The projection table and its reads and writes."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from google.protobuf.message import Message
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from accrue.masterdata.v1 import resources_pb2 as md

# The record types a projection may hold, by kind name (as in md.<kind>.upserted).
MESSAGES: dict[str, type[Message]] = {
    "legal_entity": md.LegalEntity,
    "customer": md.Customer,
    "labor_category": md.LaborCategory,
    "consultant": md.Consultant,
    "project": md.Project,
    "rate_card": md.RateCard,
    "contract": md.Contract,
    "contract_line": md.ContractLine,
    "milestone": md.Milestone,
    "assignment": md.Assignment,
    "opportunity": md.Opportunity,
    "fx_rate": md.FxRate,
    "tax_rate": md.TaxRate,
    "calendar": md.Calendar,
}


def projection_table(metadata: sa.MetaData) -> sa.Table:
    """One row per projected record, with the keys lookups need."""
    return sa.Table(
        "md_projection",
        metadata,
        sa.Column("kind", sa.Text, primary_key=True),
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("parent_id", sa.Text, nullable=True),
        sa.Column("project_id", sa.Text, nullable=True),
        sa.Column("consultant_id", sa.Text, nullable=True),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Index("md_projection_project", "kind", "project_id"),
        sa.Index("md_projection_consultant", "kind", "consultant_id", "project_id"),
        sa.Index("md_projection_parent", "kind", "parent_id"),
    )


def _version(record: Message) -> int:
    etag = getattr(record, "etag", "")
    return int(etag) if etag.isdigit() else 0


def _keys(kind: str, record: Any) -> dict[str, Any]:
    return {
        "project_id": record.id if kind == "project" else getattr(record, "project_id", None) or None,
        "consultant_id": record.id
        if kind == "consultant"
        else getattr(record, "consultant_id", None) or None,
    }


class ProjectionStore:
    """Reads and writes one service's projection table on a connection."""

    def __init__(self, connection: AsyncConnection, table: sa.Table) -> None:
        self._conn = connection
        self._table = table

    async def upsert(self, kind: str, record: Message) -> bool:
        """Store record unless a newer version is already there; True when it was stored."""
        stored = await self._write(kind, record, _version(record), parent_id=None)
        if stored and isinstance(record, md.Contract):
            # Lines are kept as their own rows, found by project; the line version follows the
            # contract's, so removing a line from a contract removes its row.
            version = _version(record)
            for line in record.lines:
                await self._write("contract_line", line, version, parent_id=record.id)
            t = self._table
            await self._conn.execute(
                sa.delete(t).where(
                    t.c.kind == "contract_line",
                    t.c.parent_id == record.id,
                    t.c.id.not_in([line.id for line in record.lines] or [""]),
                )
            )
        return stored

    async def _write(self, kind: str, record: Any, version: int, parent_id: str | None) -> bool:
        t = self._table
        stmt = insert(t).values(
            kind=kind,
            id=record.id,
            version=version,
            parent_id=parent_id,
            payload=record.SerializeToString(deterministic=True),
            **_keys(kind, record),
        )
        result = await self._conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[t.c.kind, t.c.id],
                set_={
                    "version": stmt.excluded.version,
                    "parent_id": stmt.excluded.parent_id,
                    "project_id": stmt.excluded.project_id,
                    "consultant_id": stmt.excluded.consultant_id,
                    "payload": stmt.excluded.payload,
                },
                where=t.c.version <= stmt.excluded.version,
            ).returning(t.c.id)
        )
        return result.first() is not None

    async def get_many(self, kind: str, ids: Iterable[str]) -> dict[str, Message]:
        """Records of one kind by id; missing ones are absent."""
        wanted = list(set(ids))
        if not wanted:
            return {}
        t = self._table
        rows = await self._conn.execute(
            sa.select(t.c.id, t.c.payload).where(t.c.kind == kind, t.c.id.in_(wanted))
        )
        cls = MESSAGES[kind]
        return {row.id: cls.FromString(row.payload) for row in rows}

    async def by_project(self, kind: str, project_ids: Iterable[str]) -> list[Message]:
        """Records of one kind (assignment, contract_line) on any of the projects."""
        wanted = list(set(project_ids))
        if not wanted:
            return []
        t = self._table
        rows = await self._conn.execute(
            sa.select(t.c.payload).where(t.c.kind == kind, t.c.project_id.in_(wanted))
        )
        cls = MESSAGES[kind]
        return [cls.FromString(row.payload) for row in rows]

    async def all(self, kind: str) -> list[Message]:
        """Every record of a kind (small kinds only: tax and FX rates, legal entities)."""
        t = self._table
        rows = await self._conn.execute(sa.select(t.c.payload).where(t.c.kind == kind))
        cls = MESSAGES[kind]
        return [cls.FromString(row.payload) for row in rows]
