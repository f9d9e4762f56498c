"""What JetStream says about the backbone: consumer backlogs and dead letters."""

from __future__ import annotations

from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from accrue.eventbus import DLQ_STREAM, STREAMS


@dataclass(frozen=True)
class Backlog:
    """How far one durable consumer is behind, and how much it has been through."""

    stream: str
    consumer: str
    num_pending: int
    num_ack_pending: int
    delivered: int = 0
    redelivered: int = 0

    @property
    def total(self) -> int:
        """Not yet processed: undelivered plus delivered-but-unacknowledged."""
        return self.num_pending + self.num_ack_pending


class StreamState:
    """Reads consumer and stream state from JetStream."""

    def __init__(self, js: JetStreamContext) -> None:
        self._js = js

    async def backlogs(self) -> list[Backlog]:
        """Every durable consumer on every domain stream."""
        out: list[Backlog] = []
        for spec in STREAMS:
            if spec is DLQ_STREAM:
                continue
            try:
                consumers = await self._js.consumers_info(spec.name)
            except NotFoundError:
                continue
            for info in consumers:
                out.append(
                    Backlog(
                        spec.name,
                        info.name,
                        info.num_pending or 0,
                        info.num_ack_pending or 0,
                        info.delivered.consumer_seq if info.delivered else 0,
                        info.num_redelivered or 0,
                    )
                )
        return sorted(out, key=lambda b: (b.stream, b.consumer))

    async def dead_letters(self) -> dict[str, int]:
        """Messages in the dead-letter stream, per consumer that gave up (dlq.<consumer>.<subject>)."""
        try:
            info = await self._js.stream_info(DLQ_STREAM.name, subjects_filter=">")
        except NotFoundError:
            return {}
        by_consumer: dict[str, int] = {}
        for subject, count in (info.state.subjects or {}).items():
            consumer = subject.split(".")[1] if subject.count(".") >= 1 else subject
            by_consumer[consumer] = by_consumer.get(consumer, 0) + int(count)
        return by_consumer
