"""Server interceptors: domain errors to gRPC status, and RED metrics for every RPC."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from prometheus_client import Counter, Histogram

from accrue.runtime.errors import DomainError
from accrue.runtime.grpc_types import Context, Handler
from accrue.telemetry import get_logger

log = get_logger(__name__)

# Names follow go-grpc-prometheus, which every gRPC dashboard already knows.
STARTED = Counter("grpc_server_started_total", "RPCs started on the server.", ["grpc_service", "grpc_method"])
HANDLED = Counter(
    "grpc_server_handled_total",
    "RPCs completed on the server, by status code.",
    ["grpc_service", "grpc_method", "grpc_code"],
)
LATENCY = Histogram(
    "grpc_server_handling_seconds",
    "Time to handle an RPC on the server.",
    ["grpc_service", "grpc_method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


def status_for(exc: DomainError) -> status_pb2.Status:
    """The google.rpc.Status for a domain error, with field violations as BadRequest details."""
    status = status_pb2.Status(code=getattr(code_pb2, exc.grpc_code), message=exc.message)
    if exc.violations:
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=v.field, description=v.message, reason=v.code
                )
                for v in exc.violations
            ]
        )
        detail = any_pb2.Any()
        detail.Pack(bad_request)
        status.details.append(detail)
    if exc.reason:
        info = any_pb2.Any()
        info.Pack(error_details_pb2.ErrorInfo(reason=exc.reason, domain="accrue"))
        status.details.append(info)
    return status


def _split(method: str) -> tuple[str, str]:
    _, service, name = method.split("/", 2)
    return service, name


Behavior = Callable[[Any, Context], Awaitable[Any]]
Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]]


class ErrorAndMetricsInterceptor(grpc.aio.ServerInterceptor):
    """Maps DomainError to its status (anything else to INTERNAL) and records RED metrics."""

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        service, method = _split(handler_call_details.method)
        behavior = cast(Behavior, handler.unary_unary)

        async def wrapped(request: Any, context: Context) -> Any:
            STARTED.labels(service, method).inc()
            start = time.perf_counter()
            code = "OK"
            try:
                return await behavior(request, context)
            except DomainError as exc:
                code = exc.grpc_code
                await context.abort_with_status(rpc_status.to_status(status_for(exc)))
            except grpc.aio.AbortError:
                code = context.code().name if context.code() else "UNKNOWN"
                raise
            except Exception:
                code = "INTERNAL"
                log.exception("rpc_failed", grpc_service=service, grpc_method=method)
                await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the service log")
            finally:
                HANDLED.labels(service, method, code).inc()
                LATENCY.labels(service, method).observe(time.perf_counter() - start)

        return grpc.unary_unary_rpc_method_handler(
            wrapped,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
