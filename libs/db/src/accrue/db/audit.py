"""A tamper-evident, append-only audit trail, one per service schema.

Each service keeps `<schema>.audit_events` (`audit_table(metadata)`). A use case appends a record
in the same transaction as the change it describes, so the change and its record commit together
or not at all:

    class Uow(UnitOfWork):
        def on_enter(self) -> None:
            self.audit = AuditLog(self, audit)          # written just before commit

    async with uow:
        ...
        uow.audit.add(AuditRecord(...))
        await uow.commit()

Tamper evidence: records form one hash chain per legal entity ('' is the firm-wide chain),
`hash_n = SHA-256(hash_{n-1} || canonical(record_n))`, starting from 32 zero bytes (`GENESIS`).
`canonical` is documented below and pinned by a test: it is a compatibility contract, since every
stored hash depends on it. `verify()` recomputes every chain and names the first broken link per
legal entity. Appends to one legal entity are serialized by a transaction-scoped advisory lock
(held until the appending transaction ends), and a unique (legal_entity_id, prev_hash) index
refuses a fork outright should anything ever append without the lock.

Append-only: `create_append_only_triggers()` (for a migration) installs a trigger that refuses
UPDATE, DELETE and TRUNCATE on the table, and `append_only_grants_sql()` gives the application's
database role SELECT and INSERT only. Neither stops a superuser or the table's owner, who can
disable triggers; the chain is what makes their edits visible. A superuser who rewrites a row and
every row after it leaves a consistent chain, which only a copy of the chain heads kept elsewhere
(`Verification.heads`) can expose.

Canonical form (version 1): the UTF-8 bytes of a JSON object holding the record's fields (see
`CANONICAL_FIELDS`) plus `"v": 1`, with keys sorted by code point at every level, no whitespace
(separators "," and ":"), non-ASCII characters unescaped, and values reduced to plain JSON:
Decimal → its exact string (`str`, so "150.00" keeps its scale), datetime → UTC
"YYYY-MM-DDTHH:MM:SS.ffffffZ" (naive refused), date → "YYYY-MM-DD", UUID and str enums → their
string, int enums → their int, tuples → lists. Floats, NaN, bytes, sets and non-string keys are
refused: none of them has one exact, portable spelling. `changes` is stored already reduced, so a
row read back from the database canonicalizes to the same bytes as the record that was written.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import hashlib
import json
import uuid
import zlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, Protocol

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, distinct_on
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.schema import CreateIndex, CreateTable

from accrue.db.unit_of_work import UnitOfWork

TABLE_NAME = "audit_events"
GENESIS = bytes(32)
"""The prev_hash of the first record of every chain."""
CANONICAL_VERSION = 1
CANONICAL_FIELDS = (
    "legal_entity_id",
    "principal_subject",
    "principal_roles",
    "principal_client",
    "operation",
    "resource_type",
    "resource_id",
    "request_id",
    "idempotency_key",
    "outcome",
    "changes",
    "occurred_at",
)

JsonValue = None | bool | int | str | list["JsonValue"] | dict[str, "JsonValue"]


class Outcome(enum.StrEnum):
    """What became of the attempt being recorded. Other values are allowed; these are the usual."""

    OK = "OK"
    DENIED = "DENIED"  # authenticated, but the policy refused it (403 / PERMISSION_DENIED)
    UNAUTHENTICATED = "UNAUTHENTICATED"  # no valid identity (401); the token itself is never stored


def audit_table(metadata: sa.MetaData, name: str = TABLE_NAME) -> sa.Table:
    """The per-schema audit table; pair its migration with `create_append_only_triggers`."""
    return sa.Table(
        name,
        metadata,
        sa.Column("seq", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("legal_entity_id", sa.Text, nullable=False, server_default=""),
        sa.Column("principal_subject", sa.Text, nullable=False),
        sa.Column("principal_roles", ARRAY(sa.Text), nullable=False, server_default="{}"),
        sa.Column("principal_client", sa.Text, nullable=False, server_default=""),
        sa.Column("operation", sa.Text, nullable=False),
        sa.Column("resource_type", sa.Text, nullable=False),
        sa.Column("resource_id", sa.Text, nullable=False, server_default=""),
        sa.Column("request_id", sa.Text, nullable=False, server_default=""),
        sa.Column("idempotency_key", sa.Text, nullable=False, server_default=""),
        sa.Column("outcome", sa.Text, nullable=False),
        sa.Column("changes", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        # From the caller's injected clock, never the database's now(): tests and demos pin time.
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("prev_hash", sa.LargeBinary, nullable=False),
        sa.Column("hash", sa.LargeBinary, nullable=False),
        # The chain head lookup and verify's walk both read a legal entity's rows in seq order.
        sa.Index(f"{name}_chain", "legal_entity_id", "seq", unique=True),
        # Two rows naming the same predecessor would be a fork: refused even without the lock.
        sa.Index(f"{name}_no_fork", "legal_entity_id", "prev_hash", unique=True),
        sa.Index(f"{name}_resource", "resource_type", "resource_id", "seq"),
    )


# -- the canonical form ------------------------------------------------------------------------------


def _instant(value: dt.datetime) -> str:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(
            f"naive datetime {value.isoformat()} in an audit record: an instant needs its offset"
        )
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _string(value: str) -> str:
    if "\x00" in value:
        raise ValueError("NUL character in an audit record: PostgreSQL cannot store it")
    return str(value)  # a plain str, whatever subclass came in


def to_json(value: Any) -> JsonValue:
    """Reduce a value to plain JSON with one exact spelling (see the module's canonical form)."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, enum.Enum):
        # Before str/int: a StrEnum's str() and an IntEnum's repr differ by Python version.
        return to_json(value.value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            raise ValueError(f"{value} in an audit record: only finite decimals have an exact spelling")
        return str(value)
    if isinstance(value, dt.datetime):
        return _instant(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Mapping):
        out: dict[str, JsonValue] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"audit record key {key!r} is not a string")
            out[_string(key)] = to_json(item)
        return out
    if isinstance(value, list | tuple):
        return [to_json(item) for item in value]
    # float (inexact, and JSONB would respell it), bytes, sets (no order), anything else.
    raise TypeError(f"{type(value).__name__} value {value!r} has no canonical form in an audit record")


def canonical(fields: Mapping[str, Any]) -> bytes:
    """The canonical bytes of a record given as its column values (`CANONICAL_FIELDS`)."""
    document = {name: fields[name] for name in CANONICAL_FIELDS}
    document["v"] = CANONICAL_VERSION
    return json.dumps(
        to_json(document), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def chain_hash(prev_hash: bytes, canonical_bytes: bytes) -> bytes:
    """h_n = SHA-256(h_{n-1} || canonical(record_n))."""
    return hashlib.sha256(prev_hash + canonical_bytes).digest()


def diff(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> dict[str, JsonValue]:
    """The changed fields as {field: {"before": old, "after": new}}; a missing side is null.

    Compared after reduction to JSON, so Decimal("1.0") → Decimal("1.00") counts as a change
    (the stored spelling differs) while a value and its string form do not.
    """
    old = to_json(before or {})
    new = to_json(after or {})
    assert isinstance(old, dict)
    assert isinstance(new, dict)
    return {
        key: {"before": old.get(key), "after": new.get(key)}
        for key in sorted(old.keys() | new.keys())
        if old.get(key) != new.get(key)
    }


# -- records ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class AuditRecord:
    """One attempted or completed change, as the acting principal made it.

    `occurred_at` comes from the caller's injected clock. `changes` maps each changed field to
    {"before": ..., "after": ...} (see `diff()`); it is reduced to JSON when the record is made.
    Roles are stored sorted and without duplicates: a token lists them in no particular order.
    """

    operation: str
    resource_type: str
    outcome: str
    occurred_at: dt.datetime
    principal_subject: str
    legal_entity_id: str = ""
    resource_id: str = ""
    principal_roles: Sequence[str] = ()
    principal_client: str = ""
    request_id: str = ""
    idempotency_key: str = ""
    changes: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("operation", "resource_type", "outcome"):
            if not getattr(self, name):
                raise ValueError(f"an audit record needs {name}")
        _instant(self.occurred_at)
        object.__setattr__(self, "principal_roles", tuple(sorted({str(r) for r in self.principal_roles})))
        object.__setattr__(self, "outcome", str(to_json(self.outcome)))
        reduced = to_json(self.changes)
        if not isinstance(reduced, dict):
            raise TypeError("an audit record's changes must be a mapping")
        object.__setattr__(self, "changes", reduced)

    def row(self) -> dict[str, Any]:
        """The record's column values (as `canonical` and the insert take them)."""
        return {
            "legal_entity_id": self.legal_entity_id,
            "principal_subject": self.principal_subject,
            "principal_roles": list(self.principal_roles),
            "principal_client": self.principal_client,
            "operation": self.operation,
            "resource_type": self.resource_type,
            "resource_id": self.resource_id,
            "request_id": self.request_id,
            "idempotency_key": self.idempotency_key,
            "outcome": self.outcome,
            "changes": self.changes,
            "occurred_at": self.occurred_at,
        }

    def canonical(self) -> bytes:
        """The bytes this record contributes to its chain."""
        return canonical(self.row())


@dataclasses.dataclass(frozen=True)
class Appended:
    """Where a record landed in its chain."""

    seq: int
    legal_entity_id: str
    prev_hash: bytes
    hash: bytes


def _lock_key(table: sa.Table, legal_entity_id: str) -> tuple[int, int]:
    # The two-int form of the advisory lock lives apart from the one-bigint form the migrations
    # take. A crc32 collision only makes two chains share a lock: slower, never wrong.
    def int32(data: str) -> int:
        value = zlib.crc32(data.encode())
        return value - (1 << 32) if value >= 1 << 31 else value

    return int32(f"audit:{table.fullname}"), int32(legal_entity_id)


async def _lock(connection: AsyncConnection, table: sa.Table, legal_entity_id: str) -> None:
    # Its own statement, before the head is read: under READ COMMITTED the next statement's
    # snapshot is taken after the lock is granted, so it sees the previous holder's committed row.
    classid, objid = _lock_key(table, legal_entity_id)
    await connection.execute(sa.select(sa.func.pg_advisory_xact_lock(classid, objid)))


def _head(table: sa.Table, legal_entity_id: str) -> sa.ScalarSelect[Any]:
    return (
        sa.select(table.c.hash)
        .where(table.c.legal_entity_id == legal_entity_id)
        .order_by(table.c.seq.desc())
        .limit(1)
        .scalar_subquery()
    )


class AuditLog:
    """Appends audit records in the caller's transaction.

    Given a connection, `append` writes at once. Given a unit of work, build it in `on_enter`
    (hooks are per transaction): `append` writes at once on the unit's connection, and `add`
    queues a record that is written just before the unit commits, which keeps the legal entity's
    lock (held until the transaction ends) as short as possible.

    Appending for several legal entities in one transaction: use `append_many`, which takes their
    locks in a fixed order; separate `append`s in differing orders can deadlock (PostgreSQL then
    aborts one transaction). The appending transaction must run at READ COMMITTED (the default):
    under REPEATABLE READ the head would be read from a snapshot older than the lock, and the
    no-fork index would refuse the insert.
    """

    def __init__(self, target: AsyncConnection | UnitOfWork, table: sa.Table) -> None:
        self._target = target
        self._table = table
        self._pending: list[AuditRecord] = []
        if isinstance(target, UnitOfWork):
            target.before_commit(self._flush)

    @property
    def _connection(self) -> AsyncConnection:
        return self._target.connection if isinstance(self._target, UnitOfWork) else self._target

    def add(self, record: AuditRecord) -> None:
        """Queue record to be appended when the unit of work commits (only with a unit of work)."""
        if not isinstance(self._target, UnitOfWork):
            raise TypeError("AuditLog.add needs a unit of work; on a connection use `await append(...)`")
        self._pending.append(record)

    async def _flush(self, connection: AsyncConnection) -> None:
        pending, self._pending = self._pending, []
        if pending:
            await self.append_many(pending)

    async def append(self, record: AuditRecord) -> Appended:
        """Append one record to its legal entity's chain, in the caller's transaction."""
        t = self._table
        connection = self._connection
        await _lock(connection, t, record.legal_entity_id)
        # Head and hash in the insert itself: one round trip while the lock is held.
        prev = sa.func.coalesce(_head(t, record.legal_entity_id), sa.literal(GENESIS, sa.LargeBinary))
        digest = sa.func.sha256(prev.op("||")(sa.literal(record.canonical(), sa.LargeBinary)))
        row = (
            await connection.execute(
                sa.insert(t)
                .values(**record.row(), prev_hash=prev, hash=sa.type_coerce(digest, sa.LargeBinary))
                .returning(t.c.seq, t.c.prev_hash, t.c.hash)
            )
        ).one()
        return Appended(int(row.seq), record.legal_entity_id, bytes(row.prev_hash), bytes(row.hash))

    async def append_many(self, records: Iterable[AuditRecord]) -> list[Appended]:
        """Append a batch in one insert, chained in the given order per legal entity.

        Returns where each record landed, in the order given.
        """
        batch = list(records)
        if not batch:
            return []
        t = self._table
        connection = self._connection
        entities = sorted({r.legal_entity_id for r in batch})
        for entity in entities:  # a fixed order: two batches cannot wait on each other
            await _lock(connection, t, entity)
        heads = dict.fromkeys(entities, GENESIS)
        found = await connection.execute(
            sa.select(t.c.legal_entity_id, t.c.hash)
            .where(t.c.legal_entity_id.in_(entities))
            .order_by(t.c.legal_entity_id, t.c.seq.desc())
            .ext(distinct_on(t.c.legal_entity_id))
        )
        heads.update({r.legal_entity_id: bytes(r.hash) for r in found})
        rows: list[dict[str, Any]] = []
        for record in batch:
            prev = heads[record.legal_entity_id]
            digest = chain_hash(prev, record.canonical())
            heads[record.legal_entity_id] = digest
            rows.append({**record.row(), "prev_hash": prev, "hash": digest})
        # sort_by_parameter_order: the identity values are generated in the order of the rows
        # given (SQLAlchemy's INSERT..SELECT..ORDER BY form), so seq order is chain order.
        result = await connection.execute(sa.insert(t).returning(t.c.seq, sort_by_parameter_order=True), rows)
        seqs = [int(s) for s in result.scalars()]
        return [
            Appended(seq, r["legal_entity_id"], r["prev_hash"], r["hash"])
            for seq, r in zip(seqs, rows, strict=True)
        ]


# -- verification ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BrokenLink:
    """The first row of a chain that does not check out.

    field "hash": the row's own content no longer hashes to its stored hash (the row was
    changed). field "prev_hash": the row does not point at the row before it (a row before it
    was removed, inserted, or changed and re-hashed).
    """

    legal_entity_id: str
    seq: int
    field: Literal["hash", "prev_hash"]
    expected: bytes
    found: bytes

    def __str__(self) -> str:
        why = (
            "its content was changed after it was written"
            if self.field == "hash"
            else "a row before it was removed, inserted or rewritten"
        )
        return (
            f"legal entity {self.legal_entity_id!r}: row seq {self.seq}: {self.field} is "
            f"{self.found.hex()}, expected {self.expected.hex()} ({why})"
        )


@dataclasses.dataclass(frozen=True)
class ChainHead:
    """The last row of a chain: keep a copy elsewhere to detect a rewrite of the whole tail."""

    seq: int
    hash: bytes
    length: int


@dataclasses.dataclass(frozen=True)
class Verification:
    """What `verify` found: every chain's head, and the first broken link of each broken chain."""

    rows: int
    heads: dict[str, ChainHead]
    broken: dict[str, BrokenLink]

    @property
    def ok(self) -> bool:
        return not self.broken


async def verify(
    engine: AsyncEngine | AsyncConnection,
    table: sa.Table,
    *,
    legal_entity_id: str | None = None,
    legal_entity_ids: Iterable[str] | None = None,
) -> Verification:
    """Walk every chain (or one legal entity's, or some) and report the first broken link of each."""
    t = table
    query = sa.select(t.c.seq, t.c.prev_hash, t.c.hash, *(t.c[name] for name in CANONICAL_FIELDS)).order_by(
        t.c.legal_entity_id, t.c.seq
    )
    if legal_entity_id is not None:
        query = query.where(t.c.legal_entity_id == legal_entity_id)
    if legal_entity_ids is not None:
        query = query.where(t.c.legal_entity_id.in_(sorted(set(legal_entity_ids))))
    if isinstance(engine, AsyncConnection):
        return await _walk(engine, query)
    async with engine.connect() as connection:
        return await _walk(connection, query)


async def _walk(connection: AsyncConnection, query: sa.Select[Any]) -> Verification:
    rows = 0
    heads: dict[str, ChainHead] = {}
    broken: dict[str, BrokenLink] = {}
    prev: dict[str, bytes] = {}
    # Streamed (a server-side cursor in one snapshot): the table may be far larger than memory.
    result = await connection.stream(query.execution_options(yield_per=1000))
    async for row in result:
        rows += 1
        entity: str = row.legal_entity_id
        head = heads.get(entity)
        heads[entity] = ChainHead(row.seq, bytes(row.hash), 1 if head is None else head.length + 1)
        if entity in broken:
            continue
        expected_prev = prev.get(entity, GENESIS)
        found_prev = bytes(row.prev_hash)
        if found_prev != expected_prev:
            broken[entity] = BrokenLink(entity, row.seq, "prev_hash", expected_prev, found_prev)
            continue
        expected = chain_hash(found_prev, canonical(row._mapping))
        if expected != bytes(row.hash):
            broken[entity] = BrokenLink(entity, row.seq, "hash", expected, bytes(row.hash))
            continue
        prev[entity] = expected
    return Verification(rows=rows, heads=heads, broken=broken)


# -- DDL for migrations ----------------------------------------------------------------------------


class Executor(Protocol):
    """Alembic's `op` or a synchronous SQLAlchemy Connection (e.g. inside `run_sync`)."""

    def execute(self, statement: Any, /) -> Any: ...


def _qualified(schema: str, name: str) -> str:
    return f'"{schema}"."{name}"'


def append_only_sql(schema: str, table: str = TABLE_NAME) -> list[str]:
    """The statements that make `schema.table` refuse UPDATE, DELETE and TRUNCATE."""
    function = _qualified(schema, "refuse_audit_change")
    return [
        # One function per schema serves every audit table in it; the message names the table.
        f"""CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN
             RAISE EXCEPTION '%.% is append-only: % refused', TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_OP
               USING ERRCODE = 'insufficient_privilege',
                     HINT = 'audit records are never changed or removed; append a new record instead';
           END $$""",
        # Statement-level, so even an UPDATE/DELETE matching no row is refused (and costs nothing
        # per row); TRUNCATE fires no row triggers at all.
        f"""CREATE TRIGGER {table}_append_only
           BEFORE UPDATE OR DELETE OR TRUNCATE ON {_qualified(schema, table)}
           FOR EACH STATEMENT EXECUTE FUNCTION {function}()""",
    ]


def drop_append_only_sql(schema: str, table: str = TABLE_NAME) -> list[str]:
    """The statements that undo `append_only_sql` (for a migration's downgrade)."""
    return [f"DROP TRIGGER IF EXISTS {table}_append_only ON {_qualified(schema, table)}"]


def append_only_grants_sql(schema: str, role: str, table: str = TABLE_NAME) -> list[str]:
    """Leave `role` (the application's runtime role) only SELECT and INSERT on the audit table.

    The role must not own the table: an owner can disable the trigger and grant itself back
    anything. Run migrations as a separate owner role. The identity column needs no sequence
    grant: INSERT on the table is enough.
    """
    target = _qualified(schema, table)
    return [f'REVOKE ALL ON {target} FROM "{role}"', f'GRANT SELECT, INSERT ON {target} TO "{role}"']


def _run(executor: Executor, statements: Iterable[str]) -> None:
    for statement in statements:
        executor.execute(sa.text(statement))


def create_audit_table(executor: Executor, schema: str, table: str = TABLE_NAME) -> None:
    """In a migration: the audit table as `audit_table` defines it, its indexes and its triggers.

    A later change to the table's shape needs a migration of its own (and, if it touches a
    canonical field, a new canonical version): this creates the current shape.
    """
    shape = audit_table(sa.MetaData(schema=schema), table)
    executor.execute(CreateTable(shape))
    for index in sorted(shape.indexes, key=lambda i: str(i.name)):
        executor.execute(CreateIndex(index))
    create_append_only_triggers(executor, schema, table)


def create_append_only_triggers(executor: Executor, schema: str, table: str = TABLE_NAME) -> None:
    """In a migration: `create_append_only_triggers(op, "billing")` after creating the table."""
    _run(executor, append_only_sql(schema, table))


def drop_append_only_triggers(executor: Executor, schema: str, table: str = TABLE_NAME) -> None:
    """In a migration's downgrade, before dropping the table."""
    _run(executor, drop_append_only_sql(schema, table))


def grant_append_only(executor: Executor, schema: str, role: str, table: str = TABLE_NAME) -> None:
    """In a migration (run as the owner): the runtime role may only read and append."""
    _run(executor, append_only_grants_sql(schema, role, table))
