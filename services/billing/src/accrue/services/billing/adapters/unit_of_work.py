"""The billing unit of work: ledger, master-data reads and the outbox on one transaction."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from accrue.db import UnitOfWork
from accrue.eventbus import Outbox
from accrue.mdprojection import MasterDataReader
from accrue.services.billing.adapters.repository import BillingRepository
from accrue.services.billing.adapters.tables import outbox


class BillingUnitOfWork(UnitOfWork):
    """`async with uow:` gives `uow.billing`, `uow.masterdata` (a reader) and `uow.events`."""

    billing: BillingRepository
    events: Outbox

    def __init__(self, engine: AsyncEngine, reader: MasterDataReader) -> None:
        super().__init__(engine)
        self.masterdata = reader

    def on_enter(self) -> None:
        self.billing = BillingRepository(self.connection)
        self.events = Outbox(self, outbox)
