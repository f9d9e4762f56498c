"""The observability unit of work: the ledger and the outbox on one transaction."""

from __future__ import annotations

from collections.abc import Callable

from accrue.db import UnitOfWork
from accrue.eventbus import Outbox
from accrue.services.observability.adapters.ledger import WorkLedger
from accrue.services.observability.adapters.tables import outbox


class ObservabilityUnitOfWork(UnitOfWork):
    """`async with uow:` gives `uow.ledger` and `uow.events`; `after_commit` runs once committed."""

    ledger: WorkLedger
    events: Outbox
    _after: list[Callable[[], None]]

    def on_enter(self) -> None:
        self.ledger = WorkLedger(self.connection)
        self.events = Outbox(self, outbox)
        self._after = []

    def after_commit(self, hook: Callable[[], None]) -> None:
        """Run hook once the transaction committed (metrics: a rolled-back event counts nothing)."""
        self._after.append(hook)

    async def commit(self) -> None:
        await super().commit()
        hooks, self._after = self._after, []
        for hook in hooks:
            hook()
