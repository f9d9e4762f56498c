"""What an event looks like on the wire: a protobuf body and DESIGN §5 headers."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field

from google.protobuf.message import Message


class Headers:
    """Header names. Nats-Msg-Id makes the broker drop a republished duplicate."""

    MSG_ID = "Nats-Msg-Id"
    EVENT_TYPE = "Accrue-Event-Type"
    SCHEMA = "Accrue-Schema"
    OCCURRED_AT = "Accrue-Occurred-At"
    TRACEPARENT = "traceparent"
    TRACESTATE = "tracestate"
    # Added when a message is dead-lettered.
    DLQ_REASON = "Accrue-Dead-Letter-Reason"
    DLQ_CONSUMER = "Accrue-Dead-Letter-Consumer"
    DLQ_SUBJECT = "Accrue-Original-Subject"
    DLQ_STREAM = "Accrue-Original-Stream"
    DLQ_SEQUENCE = "Accrue-Original-Sequence"
    DLQ_DELIVERIES = "Accrue-Deliveries"


@dataclass(frozen=True)
class Event:
    """An event to publish: `event_type` is e.g. "time.entry.approved", `key` orders it.

    The subject is `<event_type>.<key>`, so consumers can keep per-key order (DESIGN §5).
    """

    event_type: str
    key: str
    message: Message
    event_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    # When it happened, by the service's clock (accrue.runtime.clock): required, so an event can
    # never carry a wall-clock instant that a pinned clock did not see.
    occurred_at: dt.datetime = field(kw_only=True)

    @property
    def subject(self) -> str:
        """The NATS subject the event is published on."""
        return f"{self.event_type}.{self.key}"

    @property
    def schema(self) -> str:
        """The protobuf message's full name."""
        return self.message.DESCRIPTOR.full_name
