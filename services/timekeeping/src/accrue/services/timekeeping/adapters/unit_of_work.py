"""The timekeeping unit of work: entries, projection reads and the outbox on one transaction."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from accrue.db import UnitOfWork
from accrue.eventbus import Outbox
from accrue.mdprojection import MasterDataReader
from accrue.services.timekeeping.adapters.facts import FactsLoader
from accrue.services.timekeeping.adapters.repository import (
    DelegationRepository,
    PeriodLockRepository,
    ProjectionMaintenance,
    TimeEntryRepository,
)
from accrue.services.timekeeping.adapters.tables import MASTERDATA_CONSUMER, outbox


class TimekeepingUnitOfWork(UnitOfWork):
    """`async with uow:` gives `uow.entries`, `uow.locks`, `uow.delegations`, `uow.facts`, `uow.events`."""

    entries: TimeEntryRepository
    locks: PeriodLockRepository
    delegations: DelegationRepository
    projection: ProjectionMaintenance
    facts: FactsLoader
    events: Outbox

    def __init__(self, engine: AsyncEngine, reader: MasterDataReader) -> None:
        super().__init__(engine)
        self._reader = reader

    def on_enter(self) -> None:
        self.entries = TimeEntryRepository(self.connection)
        self.locks = PeriodLockRepository(self.connection)
        self.delegations = DelegationRepository(self.connection)
        self.projection = ProjectionMaintenance(self.connection, MASTERDATA_CONSUMER)
        self.facts = FactsLoader(self._reader, self.connection)
        self.events = Outbox(self, outbox)
