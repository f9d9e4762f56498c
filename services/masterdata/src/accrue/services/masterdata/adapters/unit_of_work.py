"""The masterdata unit of work: records and the outbox on one transaction."""

from __future__ import annotations

from accrue.db import UnitOfWork
from accrue.eventbus import Outbox
from accrue.services.masterdata.adapters.repository import RecordRepository
from accrue.services.masterdata.adapters.tables import outbox


class MasterDataUnitOfWork(UnitOfWork):
    """`async with uow:` gives `uow.records` and `uow.events`."""

    records: RecordRepository
    events: Outbox

    def on_enter(self) -> None:
        self.records = RecordRepository(self.connection)
        self.events = Outbox(self, outbox)
