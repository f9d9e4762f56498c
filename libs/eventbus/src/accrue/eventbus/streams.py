"""The streams (one per domain plus dead letters) and idempotent provisioning.

Every process that publishes or consumes calls `ensure_streams` at start; it creates what is
missing and updates what differs, so the definitions here are the single source of truth.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError

DUPLICATE_WINDOW_SECONDS = 300.0


@dataclass(frozen=True)
class StreamSpec:
    """A stream and the subjects it captures."""

    name: str
    subjects: tuple[str, ...]
    description: str


DLQ_STREAM = StreamSpec("DLQ", ("dlq.>",), "Messages a consumer gave up on, with the error.")
STREAMS: tuple[StreamSpec, ...] = (
    StreamSpec("MD", ("md.>",), "Master-data changes with the full new state."),
    StreamSpec("TIME", ("time.>",), "Time-entry lifecycle events, keyed by project."),
    StreamSpec("BILLING", ("billing.>",), "Invoices and billing exceptions, keyed by legal entity."),
    StreamSpec("FORECAST", ("forecast.>",), "Forecast versions."),
    StreamSpec("OBSERVABILITY", ("observability.>",), "Reconciliation mismatches, keyed by legal entity."),
    DLQ_STREAM,
)


def _config(spec: StreamSpec, replicas: int) -> StreamConfig:
    # Limits retention and no age limit: the streams are the history that replay reads.
    return StreamConfig(
        name=spec.name,
        description=spec.description,
        subjects=list(spec.subjects),
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        num_replicas=replicas,
        duplicate_window=DUPLICATE_WINDOW_SECONDS,
    )


async def ensure_streams(js: JetStreamContext, replicas: int = 1) -> None:
    """Create missing streams and bring existing ones to their definition."""
    for spec in STREAMS:
        config = _config(spec, replicas)
        try:
            await js.stream_info(spec.name)
        except NotFoundError:
            await js.add_stream(config)
        else:
            await js.update_stream(config)


async def ensure_consumer(
    js: JetStreamContext,
    *,
    stream: str,
    durable: str,
    filter_subjects: tuple[str, ...],
    ack_wait: float,
    max_ack_pending: int = 1000,
) -> None:
    """Create a durable pull consumer (explicit ack, from the start), or bring its settings current.

    Where an existing consumer starts delivering from (e.g. after a replay) is kept.
    """
    try:
        existing = (await js.consumer_info(stream, durable)).config
    except NotFoundError:
        existing = None
    config = ConsumerConfig(
        durable_name=durable,
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=existing.deliver_policy if existing else DeliverPolicy.ALL,
        opt_start_seq=existing.opt_start_seq if existing else None,
        opt_start_time=existing.opt_start_time if existing else None,
        ack_wait=ack_wait,
        # Redelivery is bounded by the runner, which dead-letters with the error; the server
        # keeps redelivering until then.
        max_deliver=-1,
        max_ack_pending=max_ack_pending,
        filter_subjects=list(filter_subjects) if len(filter_subjects) > 1 else None,
        filter_subject=filter_subjects[0] if len(filter_subjects) == 1 else None,
    )
    await js.add_consumer(stream, config)


async def reset_consumer(
    js: JetStreamContext,
    *,
    stream: str,
    durable: str,
    start_sequence: int | None = None,
    start_time: dt.datetime | None = None,
) -> None:
    """Replay: move a durable consumer back to a stream sequence or a point in time.

    The consumer is recreated with the same name and filters, so its inbox still drops events it
    already applied; to re-apply them, clear the consumer's inbox rows first (projection rebuild).
    """
    info = await js.consumer_info(stream, durable)
    old = info.config
    await js.delete_consumer(stream, durable)
    config = ConsumerConfig(
        durable_name=durable,
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=old.ack_wait,
        max_deliver=old.max_deliver,
        max_ack_pending=old.max_ack_pending,
        filter_subject=old.filter_subject,
        filter_subjects=old.filter_subjects,
    )
    if start_sequence is not None:
        config.deliver_policy, config.opt_start_seq = DeliverPolicy.BY_START_SEQUENCE, start_sequence
    elif start_time is not None:
        config.deliver_policy, config.opt_start_time = DeliverPolicy.BY_START_TIME, start_time
    await js.add_consumer(stream, config)
