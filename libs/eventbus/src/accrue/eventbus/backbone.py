"""A service's connection to the event backbone, set up the same way by every bootstrap."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from nats.aio.client import Client
from nats.js import JetStreamContext
from sqlalchemy.ext.asyncio import AsyncEngine

from accrue.eventbus.connection import NatsAccess, connect_nats
from accrue.eventbus.outbox import OutboxRelay
from accrue.eventbus.streams import ensure_streams
from accrue.runtime.clock import Clock, system_clock


@dataclass
class Backbone:
    """A NATS connection with JetStream, the streams provisioned."""

    client: Client
    js: JetStreamContext
    clock: Clock = system_clock

    @classmethod
    async def connect(
        cls,
        url: str,
        name: str,
        *,
        replicas: int = 1,
        clock: Clock = system_clock,
        access: NatsAccess | None = None,
    ) -> Backbone:
        """Connect (waiting for the server) as `access` says (NatsAccess.from_settings: the
        service's own user and TLS) and make sure every stream exists."""
        client = await connect_nats(url, name, access=access)
        js = client.jetstream()
        await ensure_streams(js, replicas=replicas)
        return cls(client, js, clock)

    def relay(self, engine: AsyncEngine, outbox: sa.Table, *, coalesce: float = 0.0) -> OutboxRelay:
        """The outbox relay for a service's schema, woken by its own engine's commits that wrote
        outbox rows (see OutboxRelay for coalesce)."""
        return OutboxRelay(engine, outbox, self.js, coalesce=coalesce, clock=self.clock)

    async def close(self) -> None:
        """Flush outstanding acks, then disconnect.

        Not drain(): background consumers are already cancelled, and draining would wait for
        fetched-but-unprocessed messages that will now be redelivered anyway.
        """
        if self.client.is_closed:
            return
        try:
            await self.client.flush(timeout=2)
        except Exception:  # a connection that cannot flush has nothing worth waiting for
            pass
        await self.client.close()
