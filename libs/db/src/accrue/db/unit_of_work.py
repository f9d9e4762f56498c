"""The unit of work: one explicit transaction, rolled back unless committed.

    async with uow:
        ...                    # reads and writes through uow.connection / repositories
        uow.events.add(...)    # outbox rows, written in the same transaction
        await uow.commit()

Leaving the block without `commit()` rolls everything back, events included.

When a request runs under an idempotency key, the runtime opens the transaction first and the
unit of work joins it as a savepoint, so the stored response, the state change and its events
all commit together or not at all (see accrue.db.idempotency).
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Self

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncTransaction

# The transaction a request already runs in (set by the idempotency interceptor).
ambient_connection: contextvars.ContextVar[AsyncConnection | None] = contextvars.ContextVar(
    "accrue_ambient_connection", default=None
)

BeforeCommit = Callable[[AsyncConnection], Awaitable[None]]


class UnitOfWork:
    """A transaction with before-commit hooks; subclass it to add repositories."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._connection: AsyncConnection | None = None
        self._owns_connection = False
        self._transaction: AsyncTransaction | None = None
        self._committed = False
        self._before_commit: list[BeforeCommit] = []

    @property
    def connection(self) -> AsyncConnection:
        """The connection of the open transaction."""
        if self._connection is None:
            raise RuntimeError("unit of work used outside `async with`")
        return self._connection

    def before_commit(self, hook: BeforeCommit) -> None:
        """Run hook inside the transaction just before it commits (e.g. flush the outbox)."""
        self._before_commit.append(hook)

    async def __aenter__(self) -> Self:
        ambient = ambient_connection.get()
        if ambient is not None:
            self._connection, self._owns_connection = ambient, False
            self._transaction = await ambient.begin_nested()
        else:
            self._connection, self._owns_connection = await self._engine.connect(), True
            self._transaction = await self._connection.begin()
        self._committed = False
        self._before_commit = []
        self.on_enter()
        return self

    def on_enter(self) -> None:
        """Hook for subclasses: build repositories on self.connection."""

    async def commit(self) -> None:
        """Run the before-commit hooks, then commit."""
        assert self._transaction is not None
        for hook in self._before_commit:
            await hook(self.connection)
        await self._transaction.commit()
        self._committed = True

    async def rollback(self) -> None:
        """Discard everything done in this unit of work."""
        if self._transaction is not None and self._transaction.is_active:
            await self._transaction.rollback()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if not self._committed:
                await self.rollback()
        finally:
            if self._owns_connection and self._connection is not None:
                await self._connection.close()
            self._connection = None
            self._transaction = None
