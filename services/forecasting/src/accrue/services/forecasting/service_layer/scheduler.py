"""The weekly version: every replica checks now and then; the version is unique per ISO week,
so replicas racing for it take one (an advisory lock serialises snapshots)."""

from __future__ import annotations

import asyncio

from accrue.services.forecasting.service_layer.handlers import Forecasting
from accrue.telemetry import get_logger

log = get_logger(__name__)

FIRST_TICK_SECONDS = 300.0


class VersionScheduler:
    """Calls `Forecasting.scheduled_version` every interval until cancelled."""

    def __init__(self, app: Forecasting, interval: float) -> None:
        self._app = app
        self._interval = interval

    async def run(self) -> None:
        """Tick forever; a failed tick is logged and tried again at the next one. The first tick
        waits a little (FIRST_TICK_SECONDS at most), so a starting replica's consumers catch up
        before it snapshots, yet a replica restarted more often than the interval still ticks."""
        delay = min(self._interval, FIRST_TICK_SECONDS)
        while True:
            await asyncio.sleep(delay)
            delay = self._interval
            try:
                version = await self._app.scheduled_version()
                if version is not None:
                    log.info("scheduled_version", version_id=version.id, name=version.name)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("scheduled_version_failed", error=repr(exc))
