"""Reads and writes master-data records (proto messages) through SQLAlchemy Core.

Every method works on sets: a batch of 500 rows costs a handful of statements, never a
statement per row. The hot paths of a batch upsert (lookups by external ref, reference checks,
inserts, updates, history) talk to asyncpg directly on the unit of work's connection, inside its
transaction: one statement with array parameters (`unnest`) per step, and COPY for the history,
skip SQLAlchemy's per-row parameter processing. Stored bodies are compared as dicts, so an
unchanged row is recognised without building its message.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, insert
from sqlalchemy.ext.asyncio import AsyncConnection

from accrue.masterdata.v1 import resources_pb2 as md
from accrue.services.masterdata.adapters.bodies import to_body
from accrue.services.masterdata.adapters.tables import (
    COLUMNS,
    SCHEMA,
    TABLES,
    changes,
    contract_lines,
    milestones,
)
from accrue.services.masterdata.domain.kinds import KINDS, SERVER_FIELDS, Kind

_UUIDS = ARRAY(sa.Uuid(as_uuid=False))
_TEXTS = ARRAY(sa.Text)
# The advisory lock (one-bigint key space, database-wide) held while manager changes are checked.
_MANAGEMENT_CHAIN_LOCK = int.from_bytes(b"md-mgrs", "big")


def is_uuid(value: str) -> bool:
    """True when value is a canonical UUID (ids are; anything else cannot exist)."""
    try:
        return str(uuid.UUID(value)) == value
    except ValueError:
        return False


def _uuids(values: Iterable[str]) -> list[str]:
    return [v for v in set(values) if v and is_uuid(v)]


def body_of(record: Message) -> dict[str, Any]:
    """The canonical stored form: proto3 JSON with field names, without server fields."""
    body = to_body(record)
    for name in SERVER_FIELDS:
        body.pop(name, None)
    return body


# PostgreSQL array types for the unnest() parameters of bulk statements, by column type.
def _pg_type(column: sa.Column[Any]) -> str:
    t = column.type
    if isinstance(t, sa.Uuid):
        return "uuid"
    if isinstance(t, sa.DateTime):
        return "timestamptz"
    if isinstance(t, sa.Date):
        return "date"
    if isinstance(t, sa.Integer):
        return "int4"
    return "text"  # text, and JSONB sent as its text and cast


def _bulk_sql(table: sa.Table, names: Sequence[str], verb: str) -> str:
    """INSERT ... SELECT FROM unnest(...) (skipping conflicts), or UPDATE ... FROM unnest(...)."""
    params = ", ".join(f"${i}::{_pg_type(table.c[n])}[]" for i, n in enumerate(names, 1))
    source = f"unnest({params}) AS v({', '.join(names)})"
    value = {n: (f"v.{n}::jsonb" if isinstance(table.c[n].type, JSONB) else f"v.{n}") for n in names}
    target = f"{SCHEMA}.{table.name}"
    if verb == "insert":
        return (
            f"INSERT INTO {target} ({', '.join(names)}) SELECT {', '.join(value[n] for n in names)} "
            f"FROM {source} ON CONFLICT DO NOTHING RETURNING id::text"
        )
    sets = ", ".join(f"{n} = {value[n]}" for n in names if n != "id")
    return f"UPDATE {target} AS t SET {sets} FROM {source} WHERE t.id = v.id"


def to_record(kind: Kind, body: dict[str, Any], **server: Any) -> Message:
    """A record from a stored body and its server fields (id, version, timestamps)."""
    record = json_format.ParseDict(body, kind.message(), ignore_unknown_fields=True)
    set_server_fields(record, **server)
    return record


@functools.lru_cache(maxsize=4096)
def _timestamp(value: dt.datetime) -> Timestamp:
    """A Timestamp of value (cached: a batch stamps every row with the same instant)."""
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def to_json(value: dict[str, Any]) -> str:
    """Compact JSON text, as stored in JSONB columns."""
    return json.dumps(value, separators=(",", ":"))


def set_server_fields(
    record: Any,
    *,
    id: str,
    version: int,
    create_time: dt.datetime,
    update_time: dt.datetime,
    deactivate_time: dt.datetime | None,
) -> None:
    """Set what the server owns on a record."""
    record.id = id
    record.etag = str(version)
    record.create_time.CopyFrom(_timestamp(create_time))
    record.update_time.CopyFrom(_timestamp(update_time))
    if deactivate_time is not None:
        record.deactivate_time.CopyFrom(_timestamp(deactivate_time))
    else:
        record.ClearField("deactivate_time")


@dataclass
class Stored:
    """A record as stored, without building its message."""

    id: str
    version: int
    body: dict[str, Any]
    create_time: dt.datetime
    update_time: dt.datetime
    deactivate_time: dt.datetime | None

    def record(self, kind: Kind) -> Message:
        """The record's message."""
        return to_record(
            kind,
            self.body,
            id=self.id,
            version=self.version,
            create_time=self.create_time,
            update_time=self.update_time,
            deactivate_time=self.deactivate_time,
        )


@dataclass(frozen=True)
class Target:
    """What a write needs to know about a referenced record."""

    deactivated: bool
    billing_model: str = ""  # contract lines only


@dataclass
class Write:
    """One record to insert or update: the message (server fields set), its body and version."""

    record: Message
    body: dict[str, Any]
    version: int
    create_time: dt.datetime
    update_time: dt.datetime
    deactivate_time: dt.datetime | None

    @functools.cached_property
    def body_json(self) -> str:
        """The body as stored (written once, reused for the history)."""
        return to_json(self.body)


@dataclass
class ChangeRow:
    """One history entry."""

    resource_type: str
    resource_id: str
    version: int
    kind: str
    actor: str
    source: str
    change_time: dt.datetime
    state: dict[str, Any] | str  # the record after the change, or its JSON text
    reason: str = ""
    request_id: str = ""


@dataclass
class ChangeRecord:
    """A history entry read back, with the state before it."""

    version: int
    kind: str
    actor: str
    source: str
    reason: str
    request_id: str
    change_time: dt.datetime
    state: dict[str, Any]
    before: dict[str, Any] | None


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


def _hop(table: sa.Table, column: str) -> sa.Table:
    """The table a foreign-key column of table points at."""
    (fk,) = table.c[column].foreign_keys
    return fk.column.table


def in_scope(table: sa.Table, path: Sequence[str], scope: Iterable[str]) -> sa.ColumnElement[bool]:
    """SQL: the row of table belongs to one of the legal entities in scope (following path)."""
    column = table.c[path[0]]
    if len(path) == 1:
        return column == sa.any_(sa.literal(_uuids(scope), _UUIDS))
    target = _hop(table, path[0])
    return column.in_(sa.select(target.c.id).where(in_scope(target, path[1:], scope)))


def _stored(row: Any) -> Stored:
    return Stored(row.id, row.version, row.body, row.create_time, row.update_time, row.deactivate_time)


class RecordRepository:
    """Every entity's table behind one interface, keyed by the entity Kind."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._conn = connection
        self._driver_connection: Any = None

    async def _driver(self) -> Any:
        """The asyncpg connection under the unit of work's connection, inside its transaction.

        SQLAlchemy's asyncpg adapter opens the database transaction lazily, on its first
        statement; a statement sent to the driver before that would run in autocommit, outside
        the unit of work. So the transaction is made to start here, and checked.
        """
        if self._driver_connection is None:
            raw = await self._conn.get_raw_connection()
            driver: Any = raw.driver_connection
            if not driver.is_in_transaction():
                await self._conn.execute(sa.text("SELECT 1"))
            if not driver.is_in_transaction():  # pragma: no cover - a change in SQLAlchemy
                raise RuntimeError("the unit of work's transaction did not start")
            self._driver_connection = driver
        return self._driver_connection

    # -- reads -------------------------------------------------------------------------------

    async def get(self, kind: Kind, record_id: str) -> Message | None:
        """One record by id."""
        found = await self.get_many(kind, [record_id])
        return found.get(record_id)

    async def get_many(self, kind: Kind, ids: Iterable[str]) -> dict[str, Message]:
        """Records by id; unknown ids are simply absent."""
        return {i: s.record(kind) for i, s in (await self.load_many(kind, ids)).items()}

    async def load_many(self, kind: Kind, ids: Iterable[str], *, lock: bool = False) -> dict[str, Stored]:
        """Stored records by id, locked for update when asked."""
        wanted = _uuids(ids)
        if not wanted:
            return {}
        t = TABLES[kind.name]
        query = _stored_columns(t).where(t.c.id == sa.any_(sa.literal(wanted, _UUIDS))).order_by(t.c.id)
        if lock:
            # NO KEY UPDATE: ids never change, so rows being inserted elsewhere that refer to
            # this one (their foreign keys take KEY SHARE) need not wait for this transaction.
            query = query.with_for_update(key_share=True)
        return {row.id: _stored(row) for row in await self._conn.execute(query)}

    async def by_external_refs(
        self, kind: Kind, refs: Iterable[tuple[str, str]], *, lock: bool = False
    ) -> dict[tuple[str, str], Stored]:
        """Stored records by (system, id), locked for update (in id order) when asked."""
        by_system: dict[str, set[str]] = {}
        for system, ref_id in refs:
            by_system.setdefault(system, set()).add(ref_id)
        if not by_system:
            return {}
        t = TABLES[kind.name]
        sql = (
            "SELECT id::text AS id, version, body, create_time, update_time, deactivate_time, "
            f"external_ref_id FROM {SCHEMA}.{t.name} "
            "WHERE external_ref_system = $1 AND external_ref_id = ANY($2::text[]) "
            "ORDER BY id" + (" FOR NO KEY UPDATE" if lock else "")
        )
        driver = await self._driver()
        found: dict[tuple[str, str], Stored] = {}
        for system, ids in sorted(by_system.items()):
            for row in await driver.fetch(sql, system, list(ids)):
                found[(system, row["external_ref_id"])] = Stored(
                    row["id"],
                    row["version"],
                    row["body"],
                    row["create_time"],
                    row["update_time"],
                    row["deactivate_time"],
                )
        return found

    async def ids_by_external_refs(
        self, kind_name: str, refs: Iterable[tuple[str, str]]
    ) -> dict[tuple[str, str], tuple[str, Target]]:
        """Our ids of the records of a kind named by (system, id), with what a write checks."""
        by_system: dict[str, set[str]] = {}
        for system, ref_id in refs:
            by_system.setdefault(system, set()).add(ref_id)
        t = TABLES[kind_name]
        sql = (
            f"SELECT id::text AS id, external_ref_id, deactivate_time IS NOT NULL AS off "
            f"FROM {SCHEMA}.{t.name} WHERE external_ref_system = $1 AND external_ref_id = ANY($2::text[])"
        )
        driver = await self._driver()
        found: dict[tuple[str, str], tuple[str, Target]] = {}
        active, inactive = Target(False), Target(True)
        for system, ids in sorted(by_system.items()):
            for row in await driver.fetch(sql, system, list(ids)):
                found[(system, row["external_ref_id"])] = (row["id"], inactive if row["off"] else active)
        return found

    async def targets(self, kind_name: str, ids: Iterable[str]) -> dict[str, Target]:
        """The referenced records that exist, by id, with what a write checks about them."""
        wanted = _uuids(ids)
        if not wanted:
            return {}
        driver = await self._driver()
        if kind_name == "contract_line":
            # A line lives and is deactivated with its contract.
            rows = await driver.fetch(
                f"SELECT l.id::text AS id, l.billing_model, c.deactivate_time IS NOT NULL AS off "
                f"FROM {SCHEMA}.contract_lines l JOIN {SCHEMA}.contracts c ON c.id = l.contract_id "
                "WHERE l.id = ANY($1::uuid[])",
                wanted,
            )
            return {r["id"]: Target(r["off"], r["billing_model"]) for r in rows}
        t = TABLES[kind_name]
        rows = await driver.fetch(
            f"SELECT id::text AS id, deactivate_time IS NOT NULL AS off FROM {SCHEMA}.{t.name} "
            "WHERE id = ANY($1::uuid[])",
            wanted,
        )
        return {r["id"]: Target(r["off"]) for r in rows}

    async def legal_entities_of(
        self, kind_name: str, path: Sequence[str], ids: Iterable[str]
    ) -> dict[str, str]:
        """The legal entity each record (by id) belongs to, following path; unknown ids absent."""
        wanted = _uuids(ids)
        if not wanted or not path:
            return {}
        table = TABLES[kind_name]
        current, query = table, sa.select(table.c.id)
        for hop in path[:-1]:  # no path passes the same table twice, so no aliases
            target = _hop(current, hop)
            query = query.join_from(current, target, target.c.id == current.c[hop])
            current = target
        query = query.add_columns(current.c[path[-1]].label("legal_entity_id")).where(
            table.c.id == sa.any_(sa.literal(wanted, _UUIDS))
        )
        return {str(row.id): str(row.legal_entity_id) for row in await self._conn.execute(query)}

    async def unique_holders(
        self, kind: Kind, columns: Sequence[str], values: Iterable[tuple[Any, ...]]
    ) -> dict[tuple[Any, ...], str]:
        """Which record id holds each value of a unique key."""
        wanted = list({v for v in values if all(x is not None and x != "" for x in v)})
        if not wanted:
            return {}
        t = TABLES[kind.name]
        cols = [t.c[c] for c in columns]
        if len(cols) == 1:
            condition = cols[0] == sa.any_(sa.literal([v[0] for v in wanted], ARRAY(cols[0].type)))
        else:
            condition = sa.tuple_(*cols).in_(wanted)
        rows = await self._conn.execute(sa.select(t.c.id, *cols).where(condition))
        return {tuple(row[1:]): row.id for row in rows}

    async def project_lines(self, project_ids: Iterable[str]) -> dict[str, tuple[str, str]]:
        """For each project already on a contract line: (the contract's id, the line's id)."""
        wanted = _uuids(project_ids)
        if not wanted:
            return {}
        rows = await self._conn.execute(
            sa.select(contract_lines.c.project_id, contract_lines.c.contract_id, contract_lines.c.id).where(
                contract_lines.c.project_id == sa.any_(sa.literal(wanted, _UUIDS))
            )
        )
        return {row.project_id: (row.contract_id, row.id) for row in rows}

    async def line_owner(self, line_id: str) -> tuple[str, str]:
        """(contract id, project id) of a contract line."""
        row = (
            await self._conn.execute(
                sa.select(contract_lines.c.contract_id, contract_lines.c.project_id).where(
                    contract_lines.c.id == line_id
                )
            )
        ).one()
        return row.contract_id, row.project_id

    async def lines_with_milestones(self, line_ids: Iterable[str]) -> set[str]:
        """Which of the contract lines have milestones."""
        wanted = _uuids(line_ids)
        if not wanted:
            return set()
        rows = await self._conn.execute(
            sa.select(milestones.c.contract_line_id)
            .where(milestones.c.contract_line_id == sa.any_(sa.literal(wanted, _UUIDS)))
            .distinct()
        )
        return {row.contract_line_id for row in rows}

    async def lock_management_chains(self) -> None:
        """Serialize writers that change managers until this transaction ends.

        A cycle check reads other consultants' managers; two transactions each making the other's
        consultant its manager would both pass it and together commit a cycle. Holding this lock
        while checking and writing makes the second check read the first one's commit.
        """
        await self._conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_MANAGEMENT_CHAIN_LOCK)))

    async def managers(self, consultant_ids: Iterable[str]) -> dict[str, str | None]:
        """Each consultant's manager (None for none); unknown ids are absent."""
        wanted = _uuids(consultant_ids)
        if not wanted:
            return {}
        t = TABLES["consultant"]
        rows = await self._conn.execute(
            sa.select(t.c.id, t.c.manager_id).where(t.c.id == sa.any_(sa.literal(wanted, _UUIDS)))
        )
        return {row.id: row.manager_id for row in rows}

    async def page(
        self,
        kind: Kind,
        filters: Mapping[str, Any],
        page_size: int,
        after: tuple[str, str] | None,
        *,
        show_deactivated: bool = False,
        scope: frozenset[str] | None = None,
    ) -> list[Message]:
        """A page of records matching filters (column → value), in (code, id) order, of the
        legal entities in scope (None: every one; firm-wide kinds are in every scope)."""
        table = TABLES[kind.name]
        sort_key = sa.func.coalesce(table.c.code, "")
        query = _stored_columns(table)
        if scope is not None and kind.legal_entity_path:
            query = query.where(in_scope(table, kind.legal_entity_path, scope))
        if not show_deactivated:
            query = query.where(table.c.deactivate_time.is_(None))
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
        return [_stored(row).record(kind) for row in rows]

    async def contract_line_for_project(self, project_id: str) -> tuple[md.Contract, md.ContractLine] | None:
        """The contract and line that bill a project, if any (deactivated contracts included)."""
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

    async def effective_rows(
        self, kind: Kind, key: Mapping[str, str], date_column: str, day: dt.date
    ) -> Stored | None:
        """The record of an effective-dated kind (FX, tax) in effect on day for key, if any."""
        t = TABLES[kind.name]
        query = (
            _stored_columns(t)
            .where(*(t.c[c] == v for c, v in key.items()))
            .where(t.c[date_column] <= day, t.c.deactivate_time.is_(None))
            .order_by(t.c[date_column].desc())
            .limit(1)
        )
        row = (await self._conn.execute(query)).first()
        return _stored(row) if row is not None else None

    async def has_any(self, kind: Kind, key: Mapping[str, str]) -> bool:
        """Whether any active record matches key (to say why a lookup found nothing)."""
        t = TABLES[kind.name]
        found = await self._conn.scalar(
            sa.select(t.c.id)
            .where(*(t.c[c] == v for c, v in key.items()), t.c.deactivate_time.is_(None))
            .limit(1)
        )
        return found is not None

    # -- writes ------------------------------------------------------------------------------

    def _columns(self, kind: Kind, writes: Sequence[Write]) -> tuple[list[str], list[list[Any]]]:
        """The write's column names and, per column, the values of every write."""
        typed = COLUMNS[kind.name]
        rows = [
            {
                "id": w.record.id,  # type: ignore[attr-defined]
                "external_ref_system": w.record.external_ref.system or None,  # type: ignore[attr-defined]
                "external_ref_id": w.record.external_ref.id or None,  # type: ignore[attr-defined]
                "version": w.version,
                "body": w.body_json,
                "create_time": w.create_time,
                "update_time": w.update_time,
                "deactivate_time": w.deactivate_time,
                **typed(w.record),
            }
            for w in writes
        ]
        names = list(rows[0])
        return names, [[row[n] for row in rows] for n in names]

    async def insert(self, kind: Kind, writes: Sequence[Write]) -> set[str]:
        """Insert new records; returns the ids inserted.

        A record whose external ref or unique key another transaction inserted meanwhile is
        skipped (ON CONFLICT DO NOTHING) rather than failing the batch; the caller reports it.
        """
        if not writes:
            return set()
        table = TABLES[kind.name]
        names, values = self._columns(kind, writes)
        driver = await self._driver()
        rows = await driver.fetch(_bulk_sql(table, names, "insert"), *values)
        inserted = {row["id"] for row in rows}
        if kind.name == "contract":
            await self.sync_contract_lines([w.record for w in writes if w.record.id in inserted])  # type: ignore[attr-defined]
        return inserted

    async def update(self, kind: Kind, writes: Sequence[Write]) -> None:
        """Replace records the caller holds locked (loaded with lock=True)."""
        if not writes:
            return
        table = TABLES[kind.name]
        names, values = self._columns(kind, writes)
        keep = [i for i, n in enumerate(names) if n != "create_time"]
        names = [names[i] for i in keep]
        values = [values[i] for i in keep]
        driver = await self._driver()
        await driver.execute(_bulk_sql(table, names, "update"), *values)
        if kind.name == "contract":
            await self.sync_contract_lines([w.record for w in writes])

    async def sync_contract_lines(self, records: Sequence[Message]) -> None:
        """Keep the contract_lines rows in step with the contracts' bodies."""
        if not records:
            return
        ids = [c.id for c in records]  # type: ignore[attr-defined]
        keep: list[dict[str, Any]] = []
        for contract in records:
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
                contract_lines.c.contract_id == sa.any_(sa.literal(ids, _UUIDS)),
                contract_lines.c.id != sa.all_(sa.literal(keep_ids, _UUIDS)),
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

    # -- history ---------------------------------------------------------------------------

    async def add_changes(self, rows: Sequence[ChangeRow]) -> None:
        """Append history entries (COPY: the history grows by a row per change)."""
        if not rows:
            return
        columns = [
            "resource_type",
            "resource_id",
            "version",
            "kind",
            "actor",
            "source",
            "reason",
            "request_id",
            "change_time",
            "state",
        ]
        records = [
            (
                r.resource_type,
                r.resource_id,
                r.version,
                r.kind,
                r.actor,
                r.source,
                r.reason,
                r.request_id,
                r.change_time,
                r.state if isinstance(r.state, str) else to_json(r.state),
            )
            for r in rows
        ]
        driver = await self._driver()
        await driver.copy_records_to_table(changes.name, schema_name=SCHEMA, columns=columns, records=records)

    async def changes_of(
        self, resource_type: str, resource_id: str, after_version: int, limit: int
    ) -> list[ChangeRecord]:
        """A resource's history after a version, oldest first, each with the state before it."""
        if not is_uuid(resource_id):
            return []
        c = changes
        inner = (
            sa.select(
                c.c.version,
                c.c.kind,
                c.c.actor,
                c.c.source,
                c.c.reason,
                c.c.request_id,
                c.c.change_time,
                c.c.state,
                sa.func.lag(c.c.state).over(order_by=c.c.version).label("before"),
            )
            .where(c.c.resource_type == resource_type, c.c.resource_id == resource_id)
            .subquery()
        )
        rows = await self._conn.execute(
            sa.select(inner).where(inner.c.version > after_version).order_by(inner.c.version).limit(limit)
        )
        return [
            ChangeRecord(
                r.version, r.kind, r.actor, r.source, r.reason, r.request_id, r.change_time, r.state, r.before
            )
            for r in rows
        ]


def _stored_columns(t: sa.Table, *extra: Any) -> sa.Select[Any]:
    return sa.select(
        t.c.id, t.c.version, t.c.body, t.c.create_time, t.c.update_time, t.c.deactivate_time, *extra
    )
