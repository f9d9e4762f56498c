"""gRPC client channels for service-to-service calls, traced like everything else."""

from __future__ import annotations

from typing import Any

import grpc
from opentelemetry.instrumentation.grpc import aio_client_interceptors


def channel(address: str, *, max_message_bytes: int = 32 * 1024 * 1024) -> grpc.aio.Channel:
    """An insecure channel whose calls carry the current trace context (traceparent)."""
    interceptors: list[Any] = aio_client_interceptors()  # type: ignore[no-untyped-call]
    return grpc.aio.insecure_channel(
        address,
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ],
        interceptors=interceptors,
    )
