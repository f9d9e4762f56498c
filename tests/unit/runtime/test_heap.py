"""Start-up objects leave the garbage collector's full passes."""

import gc
import time

from accrue.runtime.heap import freeze_startup_objects


def test_objects_alive_at_start_up_are_frozen_and_full_passes_get_cheap() -> None:
    ballast = [[n] for n in range(200_000)]  # stands in for a started service's objects
    try:
        started = time.perf_counter()
        gc.collect()
        before = time.perf_counter() - started

        freeze_startup_objects()
        started = time.perf_counter()
        gc.collect()
        after = time.perf_counter() - started

        assert gc.get_freeze_count() >= len(ballast)
        assert after < before
    finally:
        gc.unfreeze()
        del ballast
