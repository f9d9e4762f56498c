"""Reads and writes master-data records (proto messages) through SQLAlchemy Core."""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from google.protobuf import json_format
from google.protobuf.message import Message
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from accrue.masterdata.v1 import resources_pb2 as md
from accrue.services.masterdata.adapters.tables import COLUMNS, TABLES, contract_lines
from accrue.services.masterdata.domain.kinds import KINDS, Kind

# Fields the server sets; never part of the stored body.
SERVER_FIELDS = ("id", "etag", "create_time", "update_time")


def is_uuid(value: str) -> bool:
    """True when value is a canonical UUID (ids are; anything else cannot exist)."""
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


def body_of(record: Message) -> dict[str, Any]:
    """The canonical stored form: proto3 JSON with field names, without server fields."""
    copy = type(record)()
    copy.CopyFrom(record)
    for name in SERVER_FIELDS:
        copy.ClearField(name)
    return json_format.MessageToDict(copy, preserving_proto_field_name=True)


def _to_record(kind: Kind, row: Any) -> Message:
    record = json_format.ParseDict(row.body, kind.message(), ignore_unknown_fields=True)
    record.id = row.id  # type: ignore[attr-defined]
    record.etag = str(row.version)  # type: ignore[attr-defined]
    record.create_time.FromDatetime(row.create_time)  # type: ignore[attr-defined]
    record.update_time.FromDatetime(row.update_time)  # type: ignore[attr-defined]
    return record


def encode_page_token(sort_key: str, record_id: str) -> str:
    """An opaque keyset cursor."""
    return base64.urlsafe_b64encode(json.dumps([sort_key, record_id]).encode()).decode()


def decode_page_token(token: str) -> tuple[str, str] | None:
    """The cursor in a page token, or None when it is not one of ours."""
    try:
        key, rid = json.loads(base64.urlsafe_b64decode(token.encode()))
        return str(key), str(rid)
    except (ValueError, TypeError):
        return None


class RecordRepository:
    """Every entity's table behind one interface, keyed by the entity Kind."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._conn = connection

    async def get(self, kind: Kind, record_id: str) -> Message | None:
        """One record by id."""
        found = await self.get_many(kind, [record_id])
        return found.get(record_id)

    async def get_many(self, kind: Kind, ids: Iterable[str]) -> dict[str, Message]:
        """Records by id; unknown ids are simply absent."""
        wanted = [i for i in set(ids) if is_uuid(i)]
        if not wanted:
            return {}
        table = TABLES[kind.name]
        rows = await self._conn.execute(sa.select(table).where(table.c.id.in_(wanted)))
        return {row.id: _to_record(kind, row) for row in rows}

    async def existing_ids(self, table_name: str, ids: Iterable[str]) -> set[str]:
        """Which of ids exist in the named entity's table."""
        wanted = [i for i in set(ids) if is_uuid(i)]
        if not wanted:
            return set()
        table = TABLES[table_name]
        rows = await self._conn.execute(sa.select(table.c.id).where(table.c.id.in_(wanted)))
        return {row.id for row in rows}

    async def by_external_refs(
        self, kind: Kind, refs: Iterable[tuple[str, str]]
    ) -> dict[tuple[str, str], tuple[Message, dict[str, Any], int]]:
        """Records by (system, id): the record, its stored body and its version."""
        wanted = list(set(refs))
        if not wanted:
            return {}
        table = TABLES[kind.name]
        pair = sa.tuple_(table.c.external_ref_system, table.c.external_ref_id)
        rows = await self._conn.execute(sa.select(table).where(pair.in_(wanted)))
        return {
            (row.external_ref_system, row.external_ref_id): (_to_record(kind, row), row.body, row.version)
            for row in rows
        }

    async def code_owners(self, kind: Kind, codes: Iterable[str]) -> dict[str, str]:
        """Which record id holds each code."""
        wanted = [c for c in set(codes) if c]
        if not wanted or "code" not in COLUMNS[kind.name](kind.message()):
            return {}
        table = TABLES[kind.name]
        rows = await self._conn.execute(sa.select(table.c.code, table.c.id).where(table.c.code.in_(wanted)))
        return {row.code: row.id for row in rows}

    async def project_lines(self, project_ids: Iterable[str]) -> dict[str, str]:
        """For each project already on a contract line, the contract's id."""
        wanted = [i for i in set(project_ids) if is_uuid(i)]
        if not wanted:
            return {}
        rows = await self._conn.execute(
            sa.select(contract_lines.c.project_id, contract_lines.c.contract_id).where(
                contract_lines.c.project_id.in_(wanted)
            )
        )
        return {row.project_id: row.contract_id for row in rows}

    async def insert(self, kind: Kind, records: Sequence[Message], now: dt.datetime) -> None:
        """Insert new records (ids already assigned); sets their etag and timestamps."""
        if not records:
            return
        table = TABLES[kind.name]
        rows = []
        for record in records:
            ref = record.external_ref  # type: ignore[attr-defined]
            rows.append(
                {
                    "id": record.id,  # type: ignore[attr-defined]
                    "external_ref_system": ref.system or None,
                    "external_ref_id": ref.id or None,
                    "version": 1,
                    "body": body_of(record),
                    "create_time": now,
                    "update_time": now,
                    **COLUMNS[kind.name](record),
                }
            )
            record.etag = "1"  # type: ignore[attr-defined]
            record.create_time.FromDatetime(now)  # type: ignore[attr-defined]
            record.update_time.FromDatetime(now)  # type: ignore[attr-defined]
        await self._conn.execute(sa.insert(table), rows)
        if kind.name == "contract":
            await self._sync_contract_lines(records)

    async def update(self, kind: Kind, record: Message, version: int, now: dt.datetime) -> bool:
        """Replace a record if it is still at version; False when someone else changed it."""
        table = TABLES[kind.name]
        ref = record.external_ref  # type: ignore[attr-defined]
        result = await self._conn.execute(
            sa.update(table)
            .where(table.c.id == record.id, table.c.version == version)  # type: ignore[attr-defined]
            .values(
                external_ref_system=ref.system or None,
                external_ref_id=ref.id or None,
                version=version + 1,
                body=body_of(record),
                update_time=now,
                **COLUMNS[kind.name](record),
            )
            .returning(table.c.create_time)
        )
        created = result.scalar_one_or_none()
        if created is None:
            return False
        record.etag = str(version + 1)  # type: ignore[attr-defined]
        record.create_time.FromDatetime(created)  # type: ignore[attr-defined]
        record.update_time.FromDatetime(now)  # type: ignore[attr-defined]
        if kind.name == "contract":
            await self._sync_contract_lines([record])
        return True

    async def _sync_contract_lines(self, contracts: Sequence[Message]) -> None:
        ids = [c.id for c in contracts]  # type: ignore[attr-defined]
        keep: list[dict[str, Any]] = []
        for contract in contracts:
            assert isinstance(contract, md.Contract)
            keep.extend(
                {
                    "id": line.id,
                    "contract_id": contract.id,
                    "project_id": line.project_id,
                    "rate_card_id": line.rate_card_id or None,
                    "billing_model": md.BillingModel.Name(line.billing_model),
                }
                for line in contract.lines
            )
        keep_ids = [row["id"] for row in keep]
        await self._conn.execute(
            sa.delete(contract_lines).where(
                contract_lines.c.contract_id.in_(ids), contract_lines.c.id.not_in(keep_ids or [""])
            )
        )
        if keep:
            stmt = insert(contract_lines).values(keep)
            await self._conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=[contract_lines.c.id],
                    set_={
                        "project_id": stmt.excluded.project_id,
                        "rate_card_id": stmt.excluded.rate_card_id,
                        "billing_model": stmt.excluded.billing_model,
                    },
                )
            )

    async def page(
        self, kind: Kind, filters: Mapping[str, Any], page_size: int, after: tuple[str, str] | None
    ) -> list[Message]:
        """A page of records matching filters (column → value), in (code, id) order."""
        table = TABLES[kind.name]
        sort_key = sa.func.coalesce(table.c.code, "")
        query = sa.select(table)
        for name, value in filters.items():
            if name == "project_id" and kind.name == "contract":
                query = query.where(
                    table.c.id.in_(
                        sa.select(contract_lines.c.contract_id).where(contract_lines.c.project_id == value)
                    )
                )
            elif name.endswith("_id") and not is_uuid(value) and name not in ("external_ref_id",):
                return []
            else:
                query = query.where(table.c[name] == value)
        if after is not None:
            cursor = sa.tuple_(sa.literal(after[0]), sa.literal(after[1], type_=sa.Uuid(as_uuid=False)))
            query = query.where(sa.tuple_(sort_key, table.c.id) > cursor)
        rows = await self._conn.execute(query.order_by(sort_key, table.c.id).limit(page_size))
        return [_to_record(kind, row) for row in rows]

    async def contract_line_for_project(self, project_id: str) -> tuple[md.Contract, md.ContractLine] | None:
        """The contract and line that bill a project, if any."""
        if not is_uuid(project_id):
            return None
        contract_id = await self._conn.scalar(
            sa.select(contract_lines.c.contract_id).where(contract_lines.c.project_id == project_id)
        )
        if contract_id is None:
            return None
        contract = await self.get(KINDS["contract"], contract_id)
        assert isinstance(contract, md.Contract)
        line = next(line for line in contract.lines if line.project_id == project_id)
        return contract, line
