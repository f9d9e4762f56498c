"""The event backbone: JetStream streams, the transactional outbox and idempotent consumers.

Producers never publish directly: a state change and its event commit together in the
producer's database (`Outbox`), and a relay (`OutboxRelay`) moves committed events to JetStream
with `Nats-Msg-Id` = event id. Consumers (`ConsumerRunner`) are durable pull consumers that
record each event id in an inbox in the same transaction as its effect, ack only after commit,
retry with backoff and dead-letter what keeps failing.
"""

from accrue.eventbus.backbone import Backbone
from accrue.eventbus.connection import NatsAccess, connect_nats
from accrue.eventbus.consumer import ConsumerRunner, Handler, Received, Subscription
from accrue.eventbus.envelope import Event, Headers
from accrue.eventbus.outbox import Outbox, OutboxRelay, inbox_table, outbox_table
from accrue.eventbus.streams import DLQ_STREAM, STREAMS, ensure_consumer, ensure_streams, reset_consumer

__all__ = [
    "DLQ_STREAM",
    "STREAMS",
    "Backbone",
    "ConsumerRunner",
    "Event",
    "Handler",
    "Headers",
    "NatsAccess",
    "Outbox",
    "OutboxRelay",
    "Received",
    "Subscription",
    "connect_nats",
    "ensure_consumer",
    "ensure_streams",
    "inbox_table",
    "outbox_table",
    "reset_consumer",
]
