"""How long the process's event loop was kept from running anything.

One coroutine per process sleeps 50 ms at a time and records how late it woke. A request that
arrives while the loop is held up (a long synchronous step, a collector pass, the process not
getting a CPU) waits at least that long, so a latency tail that lines up with this histogram is
the process's own, and one that does not is elsewhere (the database, the network).
"""

from __future__ import annotations

import asyncio

from prometheus_client import Histogram

LOOP_LAG = Histogram(
    "accrue_event_loop_lag_seconds",
    "How late a 50 ms timer fired: time the event loop could run nothing else.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)

INTERVAL = 0.05


async def watch_event_loop() -> None:
    """Measure the loop's lag until cancelled."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + INTERVAL
        await asyncio.sleep(INTERVAL)
        LOOP_LAG.observe(max(0.0, loop.time() - due))
