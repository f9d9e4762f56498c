"""The gRPC side: one long-lived channel per backend, calls, and the standard health check.

Channels are created on first use rather than at build time because a `grpc.aio` channel binds
to the event loop that is running when it is made, and that is uvicorn's loop, not the one (if
any) the app was built in.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2
from opentelemetry.instrumentation.grpc import aio_client_interceptors, filters

from accrue.runtime.tls import GrpcTls

ChannelFactory = Callable[[str], grpc.aio.Channel]
Metadata = Sequence[tuple[str, str]]

# Large batches (1000 entries and their replies) must fit; the default receive cap is 4 MiB.
_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_CHANNEL_OPTIONS: Sequence[tuple[str, Any]] = (
    ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
)
_HEALTH_CHECK = "/grpc.health.v1.Health/Check"


# The instrumentation's factories are unannotated; this is the signature the gateway relies on.
_client_interceptors: Callable[..., Sequence[grpc.aio.ClientInterceptor]] = aio_client_interceptors


def _not_health_check() -> Any:
    return filters.negate(filters.health_check())


def instrumented_channel(address: str, tls: GrpcTls | None = None) -> grpc.aio.Channel:
    """A channel whose calls carry the current trace context (traceparent); mutual TLS with
    `tls` (settings.grpc_tls()), plaintext without."""
    # Health probes are not part of any request; tracing them would only add noise.
    interceptors = _client_interceptors(filter_=_not_health_check())
    if tls is None:
        return grpc.aio.insecure_channel(address, options=_CHANNEL_OPTIONS, interceptors=interceptors)
    options = [*_CHANNEL_OPTIONS, *tls.channel_options()]
    credentials = tls.channel_credentials()
    return grpc.aio.secure_channel(address, credentials, options=options, interceptors=interceptors)


class BackendNotConfigured(LookupError):
    """No address was configured for the service a route belongs to."""


@dataclass(frozen=True)
class BackendHealth:
    """What one backend answered to Health/Check."""

    service: str
    status: str
    detail: str = ""

    @property
    def serving(self) -> bool:
        return self.status == "SERVING"


class Backends:
    """One channel per backend address (services sharing a process share it), one stub per method."""

    def __init__(
        self, addresses: Mapping[str, str], channel_factory: ChannelFactory = instrumented_channel
    ) -> None:
        self._addresses = dict(addresses)
        self._factory = channel_factory
        self._channels: dict[str, grpc.aio.Channel] = {}  # by address
        self._stubs: dict[str, grpc.aio.UnaryUnaryMultiCallable[Any, Any]] = {}

    @property
    def services(self) -> list[str]:
        return sorted(self._addresses)

    def _channel(self, service: str) -> grpc.aio.Channel:
        address = self._addresses.get(service)
        if address is None:
            raise BackendNotConfigured(service)
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = self._factory(address)
        return channel

    async def call(
        self,
        service: str,
        grpc_path: str,
        request: Message,
        response_cls: type[Message],
        *,
        metadata: Metadata,
        timeout_seconds: float,
    ) -> Message:
        """Invoke a unary RPC; gRPC failures raise grpc.aio.AioRpcError."""
        stub = self._stubs.get(grpc_path)
        if stub is None:
            stub = self._stubs[grpc_path] = self._channel(service).unary_unary(
                grpc_path,
                request_serializer=_serialize,
                response_deserializer=response_cls.FromString,
            )
        response: Message = await stub(request, timeout=timeout_seconds, metadata=metadata)
        return response

    async def check(self, service: str, timeout_seconds: float) -> BackendHealth:
        """The standard gRPC health check for the service's own name on its backend."""
        check = self._channel(service).unary_unary(
            _HEALTH_CHECK,
            request_serializer=_serialize,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        try:
            reply = await check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_seconds)
        except grpc.aio.AioRpcError as err:
            return BackendHealth(service, err.code().name, err.details() or "")
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        return BackendHealth(service, status)

    async def check_all(self, timeout_seconds: float) -> list[BackendHealth]:
        """Every configured backend, probed concurrently."""
        return list(
            await asyncio.gather(*(self.check(service, timeout_seconds) for service in self.services))
        )

    async def close(self) -> None:
        """Close every channel; in-flight calls are cancelled."""
        channels = list(self._channels.values())
        self._channels.clear()
        self._stubs.clear()
        await asyncio.gather(*(channel.close() for channel in channels), return_exceptions=True)


def _serialize(message: Message) -> bytes:
    return message.SerializeToString()
