"""The timekeeping unit of work: entries, projection reads and the outbox on one transaction."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from accrue.db import UnitOfWork
from accrue.eventbus import Outbox
from accrue.mdprojection import MasterDataReader
from accrue.services.timekeeping.adapters.facts import FactsLoader
from accrue.services.timekeeping.adapters.repository import TimeEntryRepository
from accrue.services.timekeeping.adapters.tables import outbox


class TimekeepingUnitOfWork(UnitOfWork):
    """`async with uow:` gives `uow.entries`, `uow.facts` and `uow.events`."""

    entries: TimeEntryRepository
    facts: FactsLoader
    events: Outbox

    def __init__(self, engine: AsyncEngine, reader: MasterDataReader) -> None:
        super().__init__(engine)
        self._reader = reader

    def on_enter(self) -> None:
        self.entries = TimeEntryRepository(self.connection)
        self.facts = FactsLoader(self._reader, self.connection)
        self.events = Outbox(self, outbox)
