"""The background task that escalates entries waiting past the approval SLA."""

from __future__ import annotations

import asyncio

from accrue.services.timekeeping.service_layer.handlers import Timekeeping
from accrue.telemetry import get_logger

log = get_logger(__name__)

BATCH = 200


async def run_escalations(app: Timekeeping, interval_seconds: float) -> None:
    """Sweep every interval until cancelled; a full batch means more may be due, so sweep again.

    Every replica runs one; they share the work through FOR UPDATE SKIP LOCKED.
    """
    while True:
        try:
            looked_at = await app.escalate_due(BATCH)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a database blip must not stop escalation for good
            log.warning("escalation_sweep_failed", error=repr(exc))
            looked_at = 0
        if looked_at < BATCH:
            await asyncio.sleep(interval_seconds)
