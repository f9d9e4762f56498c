"""The gRPC side of identity: every service's authentication and authorization interceptor, and
the client interceptor with which a service calls another as itself.

The server interceptor verifies the internal token in `authorization` metadata, checks the
access policy for the method, and binds the principal for the handler (accrue.runtime.identity).
A call without a valid token is UNAUTHENTICATED; a principal without a role the policy lists is
PERMISSION_DENIED. Health checks stay open (orchestrators probe them without credentials), and
so does reflection, which tells the schema and nothing stored.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import grpc
from grpc_status import rpc_status
from prometheus_client import Counter

from accrue.identity.errors import InvalidToken
from accrue.identity.internal import InternalSigner, InternalVerifier, load_signer, load_verifier
from accrue.identity.policy import Policy, load_policy
from accrue.runtime.clock import Clock
from accrue.runtime.errors import DomainError
from accrue.runtime.grpc_types import Context, Handler
from accrue.runtime.identity import Principal, bound_principal
from accrue.runtime.interceptors import status_for
from accrue.telemetry import get_logger

log = get_logger(__name__)

__all__ = ["OPEN_SERVICES", "AuthInterceptor", "ServiceAuth", "ServiceIdentity", "service_auth"]

OPEN_SERVICES = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)

REFUSED = Counter(
    "accrue_auth_refused_total",
    "Calls refused by authentication or authorization, by service method and reason.",
    ["grpc_service", "grpc_method", "reason"],
)

Behavior = Callable[[Any, Context], Awaitable[Any]]
Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]]
# Told of each refused call (principal None when the token was not valid), e.g. to audit it.
RefusalHook = Callable[[str, Principal | None, str, Context], Awaitable[None]]


def _authorization(context: Context) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            return value.decode() if isinstance(value, bytes) else str(value)
    return None


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Verifies the caller and applies the access policy to every RPC but health and reflection."""

    def __init__(
        self, verifier: InternalVerifier, policy: Policy, on_refused: RefusalHook | None = None
    ) -> None:
        self._verifier = verifier
        self._policy = policy
        self._on_refused = on_refused

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        full = handler_call_details.method.lstrip("/")
        service, _, method = full.partition("/")
        if handler is None or service in OPEN_SERVICES:
            return handler
        if handler.unary_unary is None:
            # Streaming RPCs have no policy path yet; refuse rather than let them through.
            return _refusing(handler, full)
        behavior = cast(Behavior, handler.unary_unary)
        verifier, policy, on_refused = self._verifier, self._policy, self._on_refused

        async def wrapped(request: Any, context: Context) -> Any:
            principal: Principal | None = None
            try:
                principal = verifier.principal(_authorization(context))
                policy.check(full, principal)
            except InvalidToken as exc:
                REFUSED.labels(service, method, exc.reason).inc()
                if on_refused is not None:
                    await on_refused(full, None, exc.reason, context)
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, f"invalid_token: {exc.reason}")
            except DomainError as exc:
                REFUSED.labels(service, method, exc.reason or exc.grpc_code).inc()
                if on_refused is not None:
                    await on_refused(full, principal, exc.reason, context)
                await context.abort_with_status(rpc_status.to_status(status_for(exc)))
            assert principal is not None
            with bound_principal(principal):
                return await behavior(request, context)

        return grpc.unary_unary_rpc_method_handler(
            wrapped,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _refusing(handler: Handler, method: str) -> Handler:
    async def refuse(request: Any, context: Context) -> Any:
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"{method} has no entry in the access policy")

    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            refuse,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return handler


class ServiceIdentity(grpc.aio.UnaryUnaryClientInterceptor):
    """Adds the calling service's own internal token to every unary call on a channel."""

    def __init__(self, signer: InternalSigner) -> None:
        self._signer = signer

    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        metadata = [
            (key, value) for key, value in (client_call_details.metadata or ()) if key != "authorization"
        ]
        metadata.extend(self._signer.metadata())
        details = client_call_details._replace(metadata=grpc.aio.Metadata(*metadata))
        return await continuation(details, request)


@dataclass(frozen=True)
class ServiceAuth:
    """What a service's bootstrap needs for identity: the server interceptor and its own signer."""

    interceptor: AuthInterceptor
    signer: InternalSigner

    @property
    def client_interceptors(self) -> Sequence[grpc.aio.ClientInterceptor]:
        """For channels to other services: every call carries this service's own identity."""
        return (ServiceIdentity(self.signer),)


class MissingKeys(RuntimeError):
    """The process has no internal keys configured, so it could neither verify nor call."""


def service_auth(
    name: str, keys_dir: Path | None, clock: Clock, on_refused: RefusalHook | None = None
) -> ServiceAuth:
    """Identity for service `name` from its keys directory (ACCRUE_INTERNAL_KEYS_DIR)."""
    if keys_dir is None:
        raise MissingKeys(
            "ACCRUE_INTERNAL_KEYS_DIR is not set: a service verifies every call's internal token "
            "and signs its own calls; `accrue run` and the tests make the keys, Kubernetes mounts them"
        )
    verifier = load_verifier(keys_dir, clock)
    return ServiceAuth(
        AuthInterceptor(verifier, load_policy(), on_refused), load_signer(keys_dir, name, clock)
    )
