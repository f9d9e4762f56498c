"""The forecasting unit of work."""

from __future__ import annotations

from accrue.db import UnitOfWork
from accrue.services.forecasting.adapters.work import WorkTable


class ForecastingUnitOfWork(UnitOfWork):
    """`async with uow:` gives `uow.work`."""

    work: WorkTable

    def on_enter(self) -> None:
        self.work = WorkTable(self.connection)
