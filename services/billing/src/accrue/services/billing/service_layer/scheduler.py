"""Scheduled billing runs: every period of every billing frequency, at its cut-off.

Every replica may run the scheduler: each scheduled run is unique per (legal entity, period,
frequency) and made once under an advisory lock, so replicas racing for it make one run.
"""

from __future__ import annotations

import asyncio

from accrue.services.billing.service_layer.handlers import Billing
from accrue.telemetry import get_logger

log = get_logger(__name__)


class Scheduler:
    """Calls `Billing.run_due` every interval until cancelled."""

    def __init__(self, app: Billing, interval: float) -> None:
        self._app = app
        self._interval = interval

    async def run(self) -> None:
        """Tick forever; a failed tick is logged and tried again at the next one."""
        while True:
            try:
                made = await self._app.run_due()
                if made:
                    log.info("scheduled_runs", runs=len(made), entries=sum(r.entries_billed for r in made))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("scheduled_run_failed", error=repr(exc))
            await asyncio.sleep(self._interval)
