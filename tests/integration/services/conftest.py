"""Services started in-process on a real PostgreSQL and a real NATS JetStream, on free ports."""

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest

from accrue.runtime.server import RunningService, Service, start

Starter = Callable[..., Awaitable[RunningService]]


@pytest.fixture
async def start_service(database_url: str, nats_url: str) -> AsyncIterator[Starter]:
    """start_service(name, **settings) migrates and starts a service; all stop at teardown."""
    import importlib

    running: list[RunningService] = []

    async def _start(name: str, **overrides: Any) -> RunningService:
        bootstrap = importlib.import_module(f"accrue.services.{name}.bootstrap")
        settings_module = importlib.import_module(f"accrue.services.{name}.settings")
        settings_cls = next(
            getattr(settings_module, n)
            for n in dir(settings_module)
            if n.endswith("Settings") and n != "ServiceSettings"
        )
        settings = settings_cls(
            database_url=database_url,
            nats_url=nats_url,
            grpc_port=0,
            metrics_port=0,
            shutdown_grace_seconds=1,
            **overrides,
        )
        await bootstrap.migrate(settings)
        service: Service = await bootstrap.bootstrap(settings)
        running.append(await start(service))
        return running[-1]

    yield _start
    for service in reversed(running):
        await service.stop()


@pytest.fixture
async def channel_to() -> AsyncIterator[Callable[[RunningService], grpc.aio.Channel]]:
    channels: list[grpc.aio.Channel] = []

    def _channel(service: RunningService) -> grpc.aio.Channel:
        channels.append(grpc.aio.insecure_channel(f"127.0.0.1:{service.grpc_port}"))
        return channels[-1]

    yield _channel
    for channel in channels:
        await channel.close()
