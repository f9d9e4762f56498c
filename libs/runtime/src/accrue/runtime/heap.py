"""Keep the garbage collector's full passes off the request path, and measure the rest.

A started service holds ~120,000 long-lived objects (descriptors, SQLAlchemy and gRPC
machinery, compiled plans). CPython's full collection walks all of them: ~60 ms on this
project's 2-core machine, a stall that lands on whichever requests are in flight and shows up
as their p99. They never become garbage, so once the service is started they are moved to the
permanent generation (`gc.freeze`) and later passes walk only what requests allocate.

Every pass after that is timed into `accrue_gc_pause_seconds{generation}`: the process stands
still while it runs, so a latency tail that lines up with it is the collector's.
"""

from __future__ import annotations

import gc
import time
from typing import Any

from prometheus_client import Histogram

GC_PAUSE = Histogram(
    "accrue_gc_pause_seconds",
    "Garbage-collector passes after start-up, by generation: how long the process stood still.",
    ["generation"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)

# The callback runs on every pass (hundreds a second under load): its series are bound once.
_BY_GENERATION = [GC_PAUSE.labels(str(generation)) for generation in range(3)]
_started: list[float] = [0.0]


def _time_pass(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _started[0] = time.perf_counter()
    else:
        _BY_GENERATION[info["generation"]].observe(time.perf_counter() - _started[0])


def freeze_startup_objects() -> None:
    """Collect once, then exempt everything that survived start-up from future collections."""
    gc.collect()
    gc.freeze()
    if _time_pass not in gc.callbacks:
        gc.callbacks.append(_time_pass)
