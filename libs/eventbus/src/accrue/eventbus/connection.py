"""Connecting to NATS without hanging on a server that is not up yet."""

from __future__ import annotations

import asyncio

import nats
from nats.aio.client import Client
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential

from accrue.telemetry import get_logger

log = get_logger(__name__)


async def connect_nats(url: str, name: str, *, give_up_after: float = 60.0) -> Client:
    """Connect, retrying with backoff; once connected, reconnect forever."""

    async def _connect() -> Client:
        # nats.connect can wait indefinitely on a half-up server, so bound each try.
        return await asyncio.wait_for(
            nats.connect(
                url,
                name=name,
                connect_timeout=2,
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
            ),
            timeout=5,
        )

    async for attempt in AsyncRetrying(
        stop=stop_after_delay(give_up_after),
        wait=wait_exponential(multiplier=0.2, max=3),
        retry=retry_if_exception_type((OSError, asyncio.TimeoutError, nats.errors.NoServersError)),
        reraise=True,
    ):
        with attempt:
            client = await _connect()
            log.info("nats_connected", url=url, client=name)
            return client
    raise AssertionError("unreachable")  # pragma: no cover
