"""The observability unit of work: the work ledger on one transaction."""

from __future__ import annotations

from accrue.db import UnitOfWork
from accrue.services.observability.adapters.ledger import WorkLedger


class ObservabilityUnitOfWork(UnitOfWork):
    """`async with uow:` gives `uow.ledger`."""

    ledger: WorkLedger

    def on_enter(self) -> None:
        self.ledger = WorkLedger(self.connection)
