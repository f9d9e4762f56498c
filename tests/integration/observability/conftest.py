"""The observability service started in-process on a real PostgreSQL and NATS, on free ports."""

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest

from accrue.runtime.server import RunningService, start
from accrue.services.observability import bootstrap
from accrue.services.observability.settings import ObservabilitySettings
from accrue.testing import identity


@pytest.fixture
async def start_service(
    database_url: str, nats_url: str
) -> AsyncIterator[Callable[..., Awaitable[RunningService]]]:
    """start_service("observability", **settings) migrates and starts it; it stops at teardown."""
    running: list[RunningService] = []

    async def _start(name: str, **overrides: Any) -> RunningService:
        assert name == "observability"
        settings = ObservabilitySettings(
            database_url=database_url,
            nats_url=nats_url,
            grpc_port=0,
            metrics_port=0,
            shutdown_grace_seconds=1,
            **overrides,
        )
        await bootstrap.migrate(settings)
        running.append(await start(await bootstrap.bootstrap(settings)))
        return running[-1]

    yield _start
    for service in reversed(running):
        await service.stop()


@pytest.fixture
async def channel_to(internal_signer: Any) -> AsyncIterator[Callable[[RunningService], grpc.aio.Channel]]:
    channels: list[grpc.aio.Channel] = []

    def _channel(service: RunningService) -> grpc.aio.Channel:
        channels.append(identity.channel(f"127.0.0.1:{service.grpc_port}", internal_signer))
        return channels[-1]

    yield _channel
    for channel in channels:
        await channel.close()
