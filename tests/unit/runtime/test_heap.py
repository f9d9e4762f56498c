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


def test_every_pass_after_start_up_is_timed_by_generation() -> None:
    from prometheus_client import REGISTRY

    def passes(generation: str) -> float:
        return REGISTRY.get_sample_value("accrue_gc_pause_seconds_count", {"generation": generation}) or 0.0

    try:
        freeze_startup_objects()
        before = passes("0"), passes("2")
        gc.collect(0)
        gc.collect(2)
        # At least these two: reading the registry allocates, and may start passes of its own.
        assert passes("0") >= before[0] + 1
        assert passes("2") >= before[1] + 1
    finally:
        gc.unfreeze()
