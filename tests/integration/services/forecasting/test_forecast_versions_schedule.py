"""The weekly version on real PostgreSQL: one per ISO week however often (and by how many
replicas) it is asked for, published through the outbox."""

import asyncio
import datetime as dt

import pytest
import sqlalchemy as sa

from accrue.db import create_engine
from accrue.events.v1 import forecast_events_pb2 as fev
from accrue.forecasting.v1 import forecasting_service_pb2 as fa
from accrue.runtime.clock import FixedClock
from accrue.services.forecasting.adapters.tables import forecast_versions, outbox
from accrue.services.forecasting.adapters.unit_of_work import ForecastingUnitOfWork
from accrue.services.forecasting.bootstrap import migrate
from accrue.services.forecasting.service_layer.handlers import Forecasting
from accrue.services.forecasting.settings import ForecastingSettings

pytestmark = pytest.mark.integration

WEDNESDAY = dt.datetime(2026, 11, 25, 9, 0, tzinfo=dt.UTC)


async def test_one_scheduled_version_per_iso_week_even_when_replicas_race(database_url: str) -> None:
    await migrate(ForecastingSettings(database_url=database_url, nats_url="nats://unused:4222"))
    engine = create_engine(database_url)
    clock = FixedClock(WEDNESDAY)

    async def watermark() -> dict[str, int]:
        return {"TIME": 7, "MD": 3}

    def replica() -> Forecasting:
        return Forecasting(lambda: ForecastingUnitOfWork(engine), clock=clock, watermark=watermark)

    try:
        taken = await asyncio.gather(*(replica().scheduled_version() for _ in range(4)))
        made = [v for v in taken if v is not None]
        assert len(made) == 1
        (first,) = made
        assert (first.name, first.kind) == ("weekly 2026-W48", fa.FORECAST_VERSION_KIND_SCHEDULED)
        assert dict(first.watermark) == {"TIME": 7, "MD": 3}
        clock.set(WEDNESDAY + dt.timedelta(days=5))  # Monday of the next week
        second = await replica().scheduled_version()
        assert second is not None
        assert (second.name, second.previous_version_id) == ("weekly 2026-W49", first.id)
        assert await replica().scheduled_version() is None

        async with engine.connect() as conn:
            kinds = (await conn.execute(sa.select(forecast_versions.c.kind))).scalars().all()
            events = (
                await conn.execute(
                    sa.select(outbox.c.subject, outbox.c.payload).where(
                        outbox.c.event_type == "forecast.version.published"
                    )
                )
            ).all()
        assert kinds == ["SCHEDULED", "SCHEDULED"]
        assert sorted(e.subject for e in events) == sorted(
            f"forecast.version.published.{v.id}" for v in (first, second)
        )
        published = fev.ForecastVersionPublished.FromString(
            next(e.payload for e in events if e.subject.endswith(second.id))
        )
        assert (published.name, published.previous_version_id) == ("weekly 2026-W49", first.id)
    finally:
        await engine.dispose()
