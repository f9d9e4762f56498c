"""gRPC client channels for service-to-service calls, traced like everything else."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
from opentelemetry.instrumentation.grpc import aio_client_interceptors

from accrue.runtime.tls import GrpcTls


def channel(
    address: str,
    *,
    interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
    max_message_bytes: int = 32 * 1024 * 1024,
    tls: GrpcTls | None = None,
) -> grpc.aio.Channel:
    """A channel whose calls carry the trace context (traceparent) and, through `interceptors`,
    the calling service's identity (accrue.identity.grpc.ServiceAuth.client_interceptors);
    with `tls` (settings.grpc_tls()), mutual TLS: the server is checked against the CA and this
    process presents its own certificate."""
    chain: list[Any] = [*aio_client_interceptors(), *interceptors]  # type: ignore[no-untyped-call]
    options: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
    ]
    if tls is None:
        return grpc.aio.insecure_channel(address, options=options, interceptors=chain)
    return grpc.aio.secure_channel(
        address, tls.channel_credentials(), options=[*options, *tls.channel_options()], interceptors=chain
    )
