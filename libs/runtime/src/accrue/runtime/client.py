"""gRPC client channels for service-to-service calls, traced like everything else."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
from opentelemetry.instrumentation.grpc import aio_client_interceptors


def channel(
    address: str,
    *,
    interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
    max_message_bytes: int = 32 * 1024 * 1024,
) -> grpc.aio.Channel:
    """A channel whose calls carry the trace context (traceparent) and, through `interceptors`,
    the calling service's identity (accrue.identity.grpc.ServiceAuth.client_interceptors)."""
    chain: list[Any] = [*aio_client_interceptors(), *interceptors]  # type: ignore[no-untyped-call]
    return grpc.aio.insecure_channel(
        address,
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ],
        interceptors=chain,
    )
