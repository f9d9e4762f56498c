"""Per-request plumbing every endpoint shares: request id, server span, metrics, log context.

A pure ASGI middleware (no BaseHTTPMiddleware) so the endpoint runs in the same task and the
span it opens is the current one when the gRPC client interceptor injects `traceparent`.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import structlog
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from accrue.services.gateway.metrics import UNMATCHED_ROUTE, GatewayMetrics
from accrue.telemetry import extract_context

# An incoming id is kept only if it is short and plain enough to log and pass as gRPC metadata.
_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}$")
_TRACE_HEADERS = (b"traceparent", b"tracestate", b"baggage")
# Label values must stay bounded: any method a client makes up is counted as OTHER.
_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def request_id_of(scope: Scope) -> str:
    """The request id the middleware assigned."""
    state: dict[str, Any] = scope.get("state", {})
    return str(state.get("request_id", ""))


def set_route(scope: Scope, route: str) -> None:
    """Name the matched route template for metrics and the span (never the raw path)."""
    scope.setdefault("state", {})["route"] = route


class ObserveMiddleware:
    """Assigns X-Request-Id, runs the request in a SERVER span and records RED metrics."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics
        self.tracer = trace.get_tracer("accrue.services.gateway")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        incoming_id = ""
        carrier: dict[str, str] = {}
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                incoming_id = value.decode("latin-1")
            elif name in _TRACE_HEADERS:
                carrier[name.decode()] = value.decode("latin-1")
        request_id = incoming_id if _SANE_REQUEST_ID.match(incoming_id) else str(uuid.uuid4())
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        method: str = scope["method"] if scope["method"] in _KNOWN_METHODS else "OTHER"
        status = 500
        id_header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        context = extract_context(carrier) if carrier else None
        with (
            self.tracer.start_as_current_span(
                method,
                context=context,
                kind=SpanKind.SERVER,
                attributes={
                    "http.request.method": method,
                    "url.path": scope["path"],
                    "request.id": request_id,
                },
            ) as span,
            structlog.contextvars.bound_contextvars(request_id=request_id),
        ):
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                route = str(state.get("route", UNMATCHED_ROUTE))
                span.update_name(f"{method} {route}")
                span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
                self.metrics.observe(method, route, status, time.perf_counter() - start)
