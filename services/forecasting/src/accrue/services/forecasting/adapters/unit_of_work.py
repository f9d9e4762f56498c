"""The forecasting unit of work: facts, versions and the outbox on one transaction."""

from __future__ import annotations

from collections.abc import Callable

from accrue.db import UnitOfWork
from accrue.eventbus import Outbox
from accrue.services.forecasting.adapters.repository import ForecastRepository
from accrue.services.forecasting.adapters.tables import outbox


class ForecastingUnitOfWork(UnitOfWork):
    """`async with uow:` gives `uow.forecast` and `uow.events`; `after_commit` callbacks run once
    the transaction is committed (the refresh-lag metric measures to that moment)."""

    forecast: ForecastRepository
    events: Outbox

    def on_enter(self) -> None:
        self.forecast = ForecastRepository(self.connection)
        self.events = Outbox(self, outbox)
        self.before_commit(lambda _: self.forecast.flush())
        self._after_commit: list[Callable[[], None]] = []

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Call callback once this unit of work has committed."""
        self._after_commit.append(callback)

    async def commit(self) -> None:
        await super().commit()
        for callback in self._after_commit:
            callback()
