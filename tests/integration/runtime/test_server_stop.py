"""Stopping a service ends its background work, even work that swallows a cancellation."""

import asyncio

import pytest
from structlog.testing import capture_logs

from accrue.runtime.server import Service, start
from accrue.runtime.settings import ServiceSettings
from accrue.testing import identity

pytestmark = pytest.mark.integration


def _service(*background: object) -> Service:
    settings = ServiceSettings(grpc_port=0, metrics_port=-1, shutdown_grace_seconds=0.1)
    return Service(
        name="stopper",
        settings=settings,
        register=lambda server: None,
        service_names=[],
        background=background,  # type: ignore[arg-type]
        auth=identity.run_auth().interceptor,
    )


async def test_a_task_that_swallows_the_first_cancel_is_cancelled_again() -> None:
    ended = asyncio.Event()

    async def stubborn_once() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            pass  # e.g. a retry loop that catches too much: the first cancel is lost
        try:
            await asyncio.sleep(3600)
        finally:
            ended.set()

    async def polite() -> None:
        await asyncio.sleep(3600)

    running = await start(_service(stubborn_once, polite))
    running.stop_wait_seconds = 0.2
    await asyncio.sleep(0.05)
    async with asyncio.timeout(5):
        await running.stop()
    assert ended.is_set()
    assert all(t.done() for t in running.tasks)


async def test_a_task_that_never_stops_is_reported_and_stop_still_returns() -> None:
    release = asyncio.Event()

    async def deaf() -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                continue

    running = await start(_service(deaf))
    running.stop_wait_seconds, running.stop_rounds = 0.1, 2
    (task,) = running.tasks
    try:
        await asyncio.sleep(0.05)
        with capture_logs() as logs:
            async with asyncio.timeout(5):
                await running.stop()
        assert not task.done()
        assert [e["tasks"] for e in logs if e["event"] == "background_tasks_would_not_stop"] == [
            [task.get_name()]
        ]
    finally:
        # Let the deaf task go, or it would hold up the test session's event loop.
        release.set()
        task.cancel()
        await asyncio.wait([task], timeout=1)
    assert task.done()
