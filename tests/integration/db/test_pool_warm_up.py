"""A service's database pool is filled at start-up, before it reports SERVING."""

import pytest

from accrue.db import create_engine, fill_pool
from accrue.runtime.server import Service, start
from accrue.runtime.settings import ServiceSettings
from accrue.testing import identity

pytestmark = pytest.mark.integration


async def test_fill_pool_leaves_open_connections_waiting_in_the_pool(database_url: str) -> None:
    engine = create_engine(database_url, pool_size=5)
    try:
        assert engine.pool.checkedin() == 0  # type: ignore[attr-defined]
        await fill_pool(engine, 3)
        assert engine.pool.checkedin() == 3  # type: ignore[attr-defined]
        await fill_pool(engine, 50)  # never more than the pool keeps
        assert engine.pool.checkedin() == 5  # type: ignore[attr-defined]
    finally:
        await engine.dispose()


async def test_start_runs_the_warm_up_before_it_returns_with_the_default_pool_fill(database_url: str) -> None:
    engine = create_engine(database_url)
    settings = ServiceSettings(grpc_port=0, metrics_port=-1, shutdown_grace_seconds=0.1)
    seen: list[int] = []

    async def warm() -> None:
        await fill_pool(engine, settings.database_pool_warm)
        seen.append(engine.pool.checkedin())  # type: ignore[attr-defined]

    service = Service(
        name="warm",
        settings=settings,
        register=lambda server: None,
        service_names=[],
        warm_up=[warm],
        auth=identity.run_auth().interceptor,
    )
    running = await start(service)
    try:
        assert seen == [4]  # the default
    finally:
        await running.stop()
        await engine.dispose()
