"""Replaying the MD stream into the projection: the JetStream half of a rebuild."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from accrue.eventbus import reset_consumer
from accrue.services.timekeeping.adapters.tables import MASTERDATA_CONSUMER

MD_STREAM = "MD"


def masterdata_replay(js: JetStreamContext) -> Callable[[], Awaitable[int]]:
    """A callable that moves the projection's durable consumer back to the stream's start and
    returns the stream's last sequence at that moment."""

    async def replay() -> int:
        info = await js.stream_info(MD_STREAM)
        try:
            await reset_consumer(js, stream=MD_STREAM, durable=MASTERDATA_CONSUMER)
        except NotFoundError:
            pass  # never created yet: when it is, it starts from the beginning anyway
        return int(info.state.last_seq)

    return replay
