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

Tamper evidence, in two steps so no request waits on a chain. The request's transaction only
INSERTs its event (seq from the table's identity; no lock, no chain head read, no hash). An
`AuditSealer` (a background task of every service, like the outbox relay) then links committed
events into one hash chain per legal entity ('' is the firm-wide chain) in `<schema>.audit_chain`:
one row per event, `hash_n = SHA-256(hash_{n-1} || canonical(event_n))`, starting from 32 zero
bytes (`GENESIS`). The chain's order is the sealing order (an event committed late with a lower
seq is sealed later). Sealers of several replicas serialize per legal entity on a
transaction-scoped advisory lock, and unique (legal_entity_id, position), (legal_entity_id,
prev_hash) and (event_seq) indexes refuse a fork or a second link to one event outright.
`canonical` is documented below and pinned by a test: it is a compatibility contract, since every
stored hash depends on it. `verify()` walks every chain, recomputes each hash from the event its
link names, names the first broken link per legal entity, and reports events not sealed yet (one
unsealed longer than `STALE_AFTER` is a problem: a sealer is down, or a row was inserted around it).

Append-only: `create_append_only_triggers()` (for a migration) installs a trigger that refuses
UPDATE, DELETE and TRUNCATE on a table (both audit tables have it), and `append_only_grants_sql()`
gives the application's database role SELECT and INSERT only. Neither stops a superuser or the
tables' owner, who can disable triggers; the chain is what makes their edits visible. A superuser
who rewrites an event and every link after it leaves a consistent chain, which only a copy of
the chain heads kept elsewhere (`Verification.heads`) can expose.

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

import asyncio
import collections
import contextlib
import dataclasses
import datetime as dt
import decimal
import enum
import functools
import hashlib
import json
import math
import time
import uuid
import zlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, Protocol

import sqlalchemy as sa
from sqlalchemy import Connection, event
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.schema import CreateIndex, CreateTable

from accrue.db.unit_of_work import UnitOfWork
from accrue.telemetry import get_logger

log = get_logger(__name__)

TABLE_NAME = "audit_events"
CHAIN_TABLE_NAME = "audit_chain"
STALE_AFTER = dt.timedelta(minutes=5)
"""An event still unsealed this long after it occurred is reported by `verify` as a problem."""
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


def audit_table(
    metadata: sa.MetaData, name: str = TABLE_NAME, chain_name: str = CHAIN_TABLE_NAME
) -> sa.Table:
    """The per-schema audit table, and its chain table (`chain_table_of`) in the same metadata.

    Pair their migration with `create_append_only_triggers` for both (`create_audit_table`, then
    `upgrade_to_sealed_chain`).
    """
    events = sa.Table(
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
        # The sealer reads a legal entity's unsealed events in seq order.
        sa.Index(f"{name}_chain", "legal_entity_id", "seq", unique=True),
        sa.Index(f"{name}_resource", "resource_type", "resource_id", "seq"),
        info={"audit_chain": chain_name},
    )
    chain_table(metadata, chain_name)
    return events


def chain_table(metadata: sa.MetaData, name: str = CHAIN_TABLE_NAME) -> sa.Table:
    """The links of the hash chains: one row per sealed event, insert-only like the events."""
    return sa.Table(
        name,
        metadata,
        sa.Column("legal_entity_id", sa.Text, nullable=False),
        # 1, 2, 3, ... per legal entity, in sealing order.
        sa.Column("position", sa.BigInteger, nullable=False),
        sa.Column("event_seq", sa.BigInteger, nullable=False),
        sa.Column("prev_hash", sa.LargeBinary, nullable=False),
        sa.Column("hash", sa.LargeBinary, nullable=False),
        sa.PrimaryKeyConstraint("legal_entity_id", "position", name=f"{name}_pkey"),
        # One link per event: a second one (a "duplicated" event) is refused.
        sa.Index(f"{name}_event", "event_seq", unique=True),
        # Two links naming the same predecessor would be a fork: refused even without the lock.
        sa.Index(f"{name}_no_fork", "legal_entity_id", "prev_hash", unique=True),
    )


def chain_table_of(events: sa.Table) -> sa.Table:
    """The chain table `audit_table` defined next to `events`."""
    name = events.info.get("audit_chain", CHAIN_TABLE_NAME)
    key = f"{events.schema}.{name}" if events.schema else name
    return events.metadata.tables[key]


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


WROTE_AUDIT = "accrue.audit.wrote"
"""Set in a connection's info by an append: its commit wakes the sealers of that engine."""


def _lock_key(table: sa.Table, legal_entity_id: str) -> tuple[int, int]:
    # The two-int form of the advisory lock lives apart from the one-bigint form the migrations
    # take. A crc32 collision only makes two chains share a lock: slower, never wrong.
    def int32(data: str) -> int:
        value = zlib.crc32(data.encode())
        return value - (1 << 32) if value >= 1 << 31 else value

    return int32(f"audit:{table.fullname}"), int32(legal_entity_id)


async def _lock(connection: AsyncConnection, table: sa.Table, legal_entity_id: str) -> None:
    # Its own statement, before the head is read: under READ COMMITTED the next statement's
    # snapshot is taken after the lock is granted, so it sees the previous holder's committed links.
    classid, objid = _lock_key(table, legal_entity_id)
    await connection.execute(sa.select(sa.func.pg_advisory_xact_lock(classid, objid)))


@functools.cache
def _insert_one(table: sa.Table) -> sa.Insert:
    return sa.insert(table).returning(table.c.seq)


class AuditLog:
    """Appends audit records in the caller's transaction: one INSERT, no lock, no chain read.

    Given a connection, `append` writes at once. Given a unit of work, build it in `on_enter`
    (hooks are per transaction): `append` writes at once on the unit's connection, and `add`
    queues a record that is written just before the unit commits. Records are linked into their
    legal entity's chain after they commit, by an `AuditSealer`.
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

    def _wrote(self, connection: AsyncConnection) -> None:
        connection.sync_connection.info[WROTE_AUDIT] = True  # type: ignore[union-attr]

    async def append(self, record: AuditRecord) -> int:
        """Append one record in the caller's transaction; returns its seq."""
        connection = self._connection
        # One statement object per table, built once: building one per call (and its cache
        # key) cost about a tenth of a millisecond of the request's CPU.
        seq = await connection.scalar(_insert_one(self._table), record.row())
        self._wrote(connection)
        return int(seq)

    async def append_many(self, records: Iterable[AuditRecord]) -> list[int]:
        """Append a batch in one INSERT; returns their seqs in the order given."""
        batch = [r.row() for r in records]
        if not batch:
            return []
        connection = self._connection
        # sort_by_parameter_order: the identity values are generated in the order of the rows given.
        result = await connection.execute(
            sa.insert(self._table).returning(self._table.c.seq, sort_by_parameter_order=True), batch
        )
        self._wrote(connection)
        return [int(s) for s in result.scalars()]


# -- sealing ---------------------------------------------------------------------------------------


def _unsealed(events: sa.Table, chain: sa.Table) -> sa.ColumnElement[bool]:
    return ~sa.exists().where(chain.c.event_seq == events.c.seq)


class AuditSealer:
    """Links committed events into their legal entity's chain, off the request path.

    `run()` is a Service background task: it seals, then sleeps until an append commits on this
    engine (plus `coalesce`, so a burst is sealed in one round) or `interval` passes (events
    appended by other processes are found by the interval).
    Each legal entity is sealed in a transaction of its own under its advisory lock, so sealers of
    several replicas never interleave within a chain, and one that dies mid-way leaves nothing:
    the next round (of any sealer) starts again from the chain's committed head.

    Which events are unsealed is an anti-join of the events against the links, bounded below by
    a floor (`seq` at or below it is known sealed) so a round reads only recent events. An event
    can commit with a lower seq than others already sealed (its transaction began first and ended
    last), so the floor trails the highest seq seen by `settle` seconds, and every `sweep` seconds
    a round looks further back, to the highest seq seen `horizon` seconds ago (the whole table in
    a sealer's first `horizon`): the event of a transaction open longer than `settle` is sealed
    within `sweep`, well inside `STALE_AFTER`. One of a transaction open longer than `horizon`
    waits for the next start of a sealer (verify reports it as stale meanwhile).
    """

    def __init__(
        self,
        engine: AsyncEngine,
        events: sa.Table,
        *,
        interval: float = 0.2,
        coalesce: float = 0.05,
        batch_size: int = 1000,
        settle: float = 10.0,
        sweep: float = 60.0,
        horizon: float = 600.0,
    ) -> None:
        self._engine = engine
        self._events = events
        self._chain = chain_table_of(events)
        self._interval = interval
        self._coalesce = coalesce
        self._batch_size = batch_size
        self._settle = settle
        self._sweep = sweep
        self._horizon = horizon
        self._floor = 0
        # (monotonic time, highest seq seen then), one a second at most, back to `horizon` ago.
        self._seen: collections.deque[tuple[float, int]] = collections.deque()
        self._last_sweep = -math.inf
        self._wake = asyncio.Event()

    async def run(self) -> None:
        """Seal until cancelled; failures are logged and retried with backoff."""
        target = self._engine.sync_engine
        event.listen(target, "commit", self._committed)
        event.listen(target, "rollback", self._rolled_back)
        backoff = self._interval
        try:
            while True:
                try:
                    sealed = await self.seal()
                    backoff = self._interval
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning(
                        "audit_sealer_retry", table=self._events.fullname, error=repr(exc), retry_in=backoff
                    )
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                if sealed >= self._batch_size:
                    continue  # more is waiting
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self._interval)
                    # Woken by a commit: let the rest of its burst commit too and seal them in
                    # one round; a round per commit would cost more than the lock it replaced.
                    await asyncio.sleep(self._coalesce)
        finally:
            event.remove(target, "commit", self._committed)
            event.remove(target, "rollback", self._rolled_back)

    def _committed(self, conn: Connection) -> None:
        # The outermost commit only (a savepoint's release is another event).
        if not conn.invalidated and conn.info.pop(WROTE_AUDIT, False):
            self._wake.set()

    def _rolled_back(self, conn: Connection) -> None:
        if not conn.invalidated:  # an invalidated connection has no info left to clear
            conn.info.pop(WROTE_AUDIT, None)

    async def seal(self) -> int:
        """One round: link every committed unsealed event (up to a batch per legal entity).

        Returns how many links were written.
        """
        e = self._events
        now = time.monotonic()
        sweeping = now - self._last_sweep >= self._sweep
        floor = self._seen_before(now, self._horizon) if sweeping else self._floor
        async with self._engine.connect() as conn:
            found = (
                await conn.execute(
                    sa.select(e.c.legal_entity_id, sa.func.max(e.c.seq))
                    .where(e.c.seq > floor, _unsealed(e, self._chain))
                    .group_by(e.c.legal_entity_id)
                )
            ).all()
            top = await conn.scalar(sa.select(sa.func.max(e.c.seq)))
        sealed = 0
        for entity, _ in sorted(found):
            async with self._engine.connect() as conn, conn.begin():
                sealed += await self.seal_entity(conn, entity, floor)
        if sweeping:
            self._last_sweep = now
        self._advance(now, int(top or 0))
        return sealed

    def _seen_before(self, now: float, age: float) -> int:
        """The highest seq seen at least `age` seconds ago (0: nothing seen that long ago)."""
        for at, seq in reversed(self._seen):  # tops only grow: the newest old enough is the highest
            if now - at >= age:
                return seq
        return 0

    def _advance(self, now: float, top: int) -> None:
        if not self._seen or now - self._seen[-1][0] >= 1.0:
            self._seen.append((now, top))
        while len(self._seen) > 1 and now - self._seen[1][0] >= self._horizon:
            self._seen.popleft()  # the next one is old enough to be the sweep's floor
        self._floor = max(self._floor, self._seen_before(now, self._settle))

    async def seal_entity(self, connection: AsyncConnection, legal_entity_id: str, floor: int = 0) -> int:
        """Link one legal entity's unsealed events with seq above `floor`, in the caller's transaction.

        Takes the entity's chain lock (held until the transaction ends); returns how many links.
        """
        e, c = self._events, self._chain
        await _lock(connection, e, legal_entity_id)
        head = (
            await connection.execute(
                sa.select(c.c.position, c.c.hash)
                .where(c.c.legal_entity_id == legal_entity_id)
                .order_by(c.c.position.desc())
                .limit(1)
            )
        ).one_or_none()
        position, prev = (int(head.position), bytes(head.hash)) if head is not None else (0, GENESIS)
        rows = (
            await connection.execute(
                sa.select(e.c.seq, *(e.c[name] for name in CANONICAL_FIELDS))
                .where(e.c.legal_entity_id == legal_entity_id, e.c.seq > floor, _unsealed(e, c))
                .order_by(e.c.seq)
                .limit(self._batch_size)
            )
        ).all()
        links: list[dict[str, Any]] = []
        for row in rows:
            # Hashed from the row as stored, exactly as verify() will read it back.
            digest = chain_hash(prev, canonical(row._asdict()))
            position += 1
            links.append(
                {
                    "legal_entity_id": legal_entity_id,
                    "position": position,
                    "event_seq": row.seq,
                    "prev_hash": prev,
                    "hash": digest,
                }
            )
            prev = digest
        if links:
            await connection.execute(sa.insert(c), links)
        return len(links)


# -- verification ----------------------------------------------------------------------------------

LinkProblem = Literal["hash", "prev_hash", "position", "event", "duplicate", "unsealed"]

_WHY: dict[str, str] = {
    "hash": "the event was changed after it was sealed",
    "prev_hash": "a link before it was removed, inserted or rewritten",
    "position": "a link before it is missing",
    "event": "the event it seals is missing or belongs to another legal entity",
    "duplicate": "the event is sealed twice",
    "unsealed": "an event has waited too long for its seal (is a sealer down, or was it inserted around it?)",
}


@dataclasses.dataclass(frozen=True)
class BrokenLink:
    """The first link of a chain that does not check out (`seq`: the event it names).

    field "hash": the event's content no longer hashes to its link (the event was changed).
    "prev_hash": the link does not point at the one before it (a link was removed, inserted, or
    changed and re-hashed). "position": links are missing before it. "event": the event it
    names is gone (deleted) or is another legal entity's. "duplicate": a second link to an event
    already sealed. "unsealed": not a link but the oldest event left unsealed past the threshold.
    """

    legal_entity_id: str
    seq: int
    field: LinkProblem
    expected: bytes = b""
    found: bytes = b""
    position: int = 0
    detail: str = ""

    def __str__(self) -> str:
        where = f"legal entity {self.legal_entity_id!r}: event seq {self.seq}"
        if self.position:
            where += f" (link {self.position})"
        if self.expected or self.found:
            values = f"{self.field} is {self.found.hex()}, expected {self.expected.hex()}"
        else:
            values = self.detail or self.field
        return f"{where}: {values} ({_WHY[self.field]})"


@dataclasses.dataclass(frozen=True)
class ChainHead:
    """The last link of a chain: keep a copy elsewhere to detect a rewrite of the whole tail."""

    seq: int
    hash: bytes
    length: int


@dataclasses.dataclass(frozen=True)
class Unsealed:
    """A legal entity's events not linked yet: how many, and the oldest (by occurred_at)."""

    count: int
    oldest_seq: int
    oldest_at: dt.datetime


@dataclasses.dataclass(frozen=True)
class Verification:
    """What `verify` found: every chain's head, the first broken link of each broken chain, the
    events not sealed yet, and the entities whose oldest unsealed event is stale (in `broken`
    as field "unsealed" when their chain is otherwise sound)."""

    rows: int
    heads: dict[str, ChainHead]
    broken: dict[str, BrokenLink]
    unsealed: dict[str, Unsealed] = dataclasses.field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.broken

    @property
    def pending(self) -> int:
        """Events not sealed yet, every legal entity together."""
        return sum(u.count for u in self.unsealed.values())


async def verify(
    engine: AsyncEngine | AsyncConnection,
    table: sa.Table,
    *,
    legal_entity_id: str | None = None,
    legal_entity_ids: Iterable[str] | None = None,
    now: dt.datetime | None = None,
    stale_after: dt.timedelta = STALE_AFTER,
) -> Verification:
    """Walk every chain (or one legal entity's, or some) and report the first broken link of each.

    `now` (the caller's injected clock) makes an event unsealed for longer than `stale_after` a
    problem; without it unsealed events are only counted. Read in one snapshot.
    """
    entities: list[str] | None = None
    if legal_entity_id is not None:
        entities = [legal_entity_id]
    if legal_entity_ids is not None:
        wanted = set(legal_entity_ids)
        entities = sorted(wanted if entities is None else wanted & set(entities))
    if isinstance(engine, AsyncConnection):
        return await _verify(engine, table, entities, now, stale_after)
    async with engine.connect() as connection:
        # One snapshot: a sealer linking events meanwhile must not make one look both ways.
        await connection.execution_options(isolation_level="REPEATABLE READ")
        async with connection.begin():
            return await _verify(connection, table, entities, now, stale_after)


async def _verify(
    connection: AsyncConnection,
    events: sa.Table,
    entities: list[str] | None,
    now: dt.datetime | None,
    stale_after: dt.timedelta,
) -> Verification:
    e, c = events, chain_table_of(events)
    chain_entity = c.c.legal_entity_id.label("chain_legal_entity_id")
    walk = (
        sa.select(
            chain_entity,
            c.c.position,
            c.c.event_seq,
            c.c.prev_hash,
            c.c.hash,
            e.c.seq,
            *(e.c[name] for name in CANONICAL_FIELDS),
        )
        .select_from(c.outerjoin(e, e.c.seq == c.c.event_seq))
        .order_by(c.c.legal_entity_id, c.c.position)
    )
    # Links to an event already linked: the unique index refuses them, unless someone dropped it.
    duplicates = sa.select(c.c.legal_entity_id, c.c.position).where(
        sa.exists().where(
            sa.and_(
                (other := c.alias("earlier")).c.event_seq == c.c.event_seq,
                other.c.position < c.c.position,
            )
        )
    )
    pending = (
        sa.select(
            e.c.legal_entity_id,
            sa.func.count().label("events"),
            sa.func.min(e.c.occurred_at).label("oldest_at"),
            sa.literal_column(f"(array_agg({e.c.seq.name} ORDER BY occurred_at, seq))[1]").label(
                "oldest_seq"
            ),
        )
        .where(_unsealed(e, c))
        .group_by(e.c.legal_entity_id)
    )
    if entities is not None:
        walk = walk.where(c.c.legal_entity_id.in_(entities))
        duplicates = duplicates.where(c.c.legal_entity_id.in_(entities))
        pending = pending.where(e.c.legal_entity_id.in_(entities))
    doubled = {(r.legal_entity_id, int(r.position)) for r in await connection.execute(duplicates)}
    result = await _walk(connection, walk, doubled)
    for row in await connection.execute(pending):
        unsealed = Unsealed(int(row.events), int(row.oldest_seq), row.oldest_at)
        result.unsealed[row.legal_entity_id] = unsealed
        if (
            now is not None
            and now - unsealed.oldest_at > stale_after
            and row.legal_entity_id not in result.broken
        ):
            result.broken[row.legal_entity_id] = BrokenLink(
                row.legal_entity_id,
                unsealed.oldest_seq,
                "unsealed",
                detail=f"{unsealed.count} unsealed, the oldest since {_instant(unsealed.oldest_at)}",
            )
    return result


async def _walk(
    connection: AsyncConnection, query: sa.Select[Any], doubled: set[tuple[str, int]]
) -> Verification:
    rows = 0
    heads: dict[str, ChainHead] = {}
    broken: dict[str, BrokenLink] = {}
    last: dict[str, tuple[int, bytes]] = {}  # entity -> (position, hash) of its last good link
    # Streamed (a server-side cursor in one snapshot): the chain may be far larger than memory.
    result = await connection.stream(query.execution_options(yield_per=1000))
    async for row in result:
        rows += 1
        entity: str = row.chain_legal_entity_id
        position = int(row.position)
        heads[entity] = ChainHead(int(row.event_seq), bytes(row.hash), position)
        if entity in broken:
            continue
        before = last.get(entity, (0, GENESIS))
        problem = _check(row, entity, position, before, (entity, position) in doubled)
        if problem is not None:
            broken[entity] = problem
            continue
        last[entity] = (position, bytes(row.hash))
    return Verification(rows=rows, heads=heads, broken=broken)


def _check(
    row: Any, entity: str, position: int, before: tuple[int, bytes], doubled: bool
) -> BrokenLink | None:
    seq = int(row.event_seq)
    expected_position, expected_prev = before[0] + 1, before[1]
    if position != expected_position:
        return BrokenLink(
            entity,
            seq,
            "position",
            position=position,
            detail=f"link {expected_position} expected, found {position}",
        )
    found_prev = bytes(row.prev_hash)
    if found_prev != expected_prev:
        return BrokenLink(entity, seq, "prev_hash", expected_prev, found_prev, position)
    if doubled:
        return BrokenLink(
            entity, seq, "duplicate", position=position, detail="an earlier link names the same event"
        )
    if row.seq is None or row.legal_entity_id != entity:
        detail = (
            "no such event" if row.seq is None else f"the event is legal entity {row.legal_entity_id!r}'s"
        )
        return BrokenLink(entity, seq, "event", position=position, detail=detail)
    expected = chain_hash(found_prev, canonical(row._mapping))
    if expected != bytes(row.hash):
        return BrokenLink(entity, seq, "hash", expected, bytes(row.hash), position)
    return None


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


def _audit_table_v1(metadata: sa.MetaData, name: str) -> sa.Table:
    # The shape the first audit migrations created (each event carried its own link); frozen
    # here so those migrations keep creating exactly it. `upgrade_to_sealed_chain` moves on.
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
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("prev_hash", sa.LargeBinary, nullable=False),
        sa.Column("hash", sa.LargeBinary, nullable=False),
        sa.Index(f"{name}_chain", "legal_entity_id", "seq", unique=True),
        sa.Index(f"{name}_no_fork", "legal_entity_id", "prev_hash", unique=True),
        sa.Index(f"{name}_resource", "resource_type", "resource_id", "seq"),
    )


def create_audit_table(executor: Executor, schema: str, table: str = TABLE_NAME) -> None:
    """In a migration: the audit table as first released (version 1, each event its own link),
    its indexes and its triggers. Follow with `upgrade_to_sealed_chain` (a later revision)."""
    shape = _audit_table_v1(sa.MetaData(schema=schema), table)
    executor.execute(CreateTable(shape))
    for index in sorted(shape.indexes, key=lambda i: str(i.name)):
        executor.execute(CreateIndex(index))
    create_append_only_triggers(executor, schema, table)


def upgrade_to_sealed_chain(executor: Executor, schema: str, role: str) -> None:
    """In a migration (run as the owner): move the links out of the events into `audit_chain`.

    Existing events keep their chains: each becomes the link at its position (the version-1
    chains were in seq order). Then the events lose their link columns, so an append is a plain
    INSERT, and `audit_chain` gets the same triggers and grants (`role` may read and append).
    """
    events, chain = _qualified(schema, TABLE_NAME), _qualified(schema, CHAIN_TABLE_NAME)
    shape = chain_table(sa.MetaData(schema=schema))
    executor.execute(CreateTable(shape))
    for index in sorted(shape.indexes, key=lambda i: str(i.name)):
        executor.execute(CreateIndex(index))
    _run(
        executor,
        [
            # No sealer writes while this runs: the services migrate before they start.
            f"""INSERT INTO {chain} (legal_entity_id, position, event_seq, prev_hash, hash)
                SELECT legal_entity_id, row_number() OVER (PARTITION BY legal_entity_id ORDER BY seq),
                       seq, prev_hash, hash
                FROM {events} ORDER BY legal_entity_id, seq""",
            f'DROP INDEX "{schema}"."{TABLE_NAME}_no_fork"',
            f"ALTER TABLE {events} DROP COLUMN prev_hash, DROP COLUMN hash",
            *append_only_sql(schema, CHAIN_TABLE_NAME),
            *append_only_grants_sql(schema, role, CHAIN_TABLE_NAME),
        ],
    )


def downgrade_from_sealed_chain(executor: Executor, schema: str) -> None:
    """Undo `upgrade_to_sealed_chain`: unsealed events are left out, and a chain sealed out of seq
    order no longer verifies in version 1's seq order (the links themselves are copied back)."""
    events, chain = _qualified(schema, TABLE_NAME), _qualified(schema, CHAIN_TABLE_NAME)
    _run(
        executor,
        [
            f"ALTER TABLE {events} ADD COLUMN prev_hash bytea, ADD COLUMN hash bytea",
            f"ALTER TABLE {events} DISABLE TRIGGER {TABLE_NAME}_append_only",
            f"""UPDATE {events} e SET prev_hash = c.prev_hash, hash = c.hash
                FROM {chain} c WHERE c.event_seq = e.seq""",
            f"DELETE FROM {events} WHERE hash IS NULL",
            f"ALTER TABLE {events} ENABLE TRIGGER {TABLE_NAME}_append_only",
            f"ALTER TABLE {events} ALTER COLUMN prev_hash SET NOT NULL, ALTER COLUMN hash SET NOT NULL",
            f'CREATE UNIQUE INDEX "{TABLE_NAME}_no_fork" ON {events} (legal_entity_id, prev_hash)',
            *drop_append_only_sql(schema, CHAIN_TABLE_NAME),
            f"DROP TABLE {chain}",
        ],
    )


def create_append_only_triggers(executor: Executor, schema: str, table: str = TABLE_NAME) -> None:
    """In a migration: `create_append_only_triggers(op, "billing")` after creating the table."""
    _run(executor, append_only_sql(schema, table))


def drop_append_only_triggers(executor: Executor, schema: str, table: str = TABLE_NAME) -> None:
    """In a migration's downgrade, before dropping the table."""
    _run(executor, drop_append_only_sql(schema, table))


def grant_append_only(executor: Executor, schema: str, role: str, table: str = TABLE_NAME) -> None:
    """In a migration (run as the owner): the runtime role may only read and append."""
    _run(executor, append_only_grants_sql(schema, role, table))
