"""The transcoding endpoint: match a route, build the RPC request, call the backend, reply."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import grpc
from starlette.requests import Request
from starlette.responses import Response

from accrue.audit.v1 import audit_service_pb2 as audit_pb
from accrue.runtime.identity import Principal
from accrue.services.gateway.auth import Authenticator
from accrue.services.gateway.backends import BackendNotConfigured, Backends
from accrue.services.gateway.catalog import Catalog
from accrue.services.gateway.fieldpaths import client_field_path
from accrue.services.gateway.metrics import GatewayMetrics
from accrue.services.gateway.observe import request_id_of, set_route
from accrue.services.gateway.problems import (
    HTTP_STATUS,
    FieldViolation,
    Problem,
    bad_request,
    read_rpc_error,
    render,
)
from accrue.services.gateway.refusals import RefusalReporter
from accrue.services.gateway.routing import MethodNotAllowed, Router
from accrue.services.gateway.transcoding import Binding, Transcoder
from accrue.telemetry import get_logger

log = get_logger(__name__)

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# gRPC metadata values must be printable ASCII; keys are opaque to the gateway otherwise.
_SANE_IDEMPOTENCY_KEY = re.compile(r"^[!-~](?:[ -~]{0,253}[!-~])?$")
_JSON_TYPE = re.compile(r"^application/(?:[\w.+-]+\+)?json$")
# Transport failures carry internal addresses in their message; clients get these instead.
_TRANSPORT_DETAIL = {
    grpc.StatusCode.UNAVAILABLE: "The {service} backend is unavailable; try again later.",
    grpc.StatusCode.DEADLINE_EXCEEDED: "The {service} backend did not answer in time.",
    grpc.StatusCode.CANCELLED: "The {service} backend cancelled the call; try again later.",
    grpc.StatusCode.UNKNOWN: "The {service} backend failed.",
    grpc.StatusCode.INTERNAL: "The {service} backend failed.",
}


@dataclass(frozen=True)
class Limits:
    """Per-request limits from the settings."""

    timeout_seconds: float
    max_body_bytes: int


class Gateway:
    """Serves every route the catalog's http rules declare."""

    def __init__(
        self,
        *,
        catalog: Catalog,
        router: Router[Binding],
        transcoder: Transcoder,
        backends: Backends,
        metrics: GatewayMetrics,
        limits: Limits,
        fixed_routes: Mapping[str, Sequence[str]],
        authenticator: Authenticator,
        refusals: RefusalReporter,
    ) -> None:
        self._auth = authenticator
        self._refusals = refusals
        self._catalog = catalog
        self._router = router
        self._transcoder = transcoder
        self._backends = backends
        self._metrics = metrics
        self._limits = limits
        # The hand-written routes (/healthz, ...), so a wrong method on them is a 405 too.
        self._fixed_routes = fixed_routes

    async def handle(self, request: Request) -> Response:
        """The Starlette endpoint behind every path that is not a fixed route."""
        try:
            return await self._handle(request)
        except Problem as problem:
            return self._problem(request, problem)
        except Exception:
            log.exception("request_failed", method=request.method, path=request.url.path)
            return self._problem(request, Problem(500, "The gateway failed; see its log.", "INTERNAL"))

    def _problem(self, request: Request, problem: Problem) -> Response:
        return render(problem, request_id=request_id_of(request.scope), instance=request.url.path)

    async def _handle(self, request: Request) -> Response:
        scope = request.scope
        raw = bytes(scope.get("raw_path") or scope["path"].encode())
        raw_path = raw.split(b"?", 1)[0].decode("utf-8", "replace")
        method = request.method
        found = self._router.match(method, raw_path)
        if found is None:
            fixed = self._fixed_routes.get(scope["path"])
            if fixed is None:
                raise Problem(
                    404, f"No operation has the path {scope['path']}.", "NOT_FOUND", "ROUTE_NOT_FOUND"
                )
            found = MethodNotAllowed(tuple(fixed))
        if isinstance(found, MethodNotAllowed):
            allowed = ", ".join(found.allowed)
            raise Problem(
                405,
                f"{method} is not allowed here; use {allowed}.",
                "UNIMPLEMENTED",
                "METHOD_NOT_ALLOWED",
                headers={"Allow": allowed},
            )
        binding = found.target
        set_route(scope, binding.route)
        # Before the body is read: an unauthenticated caller costs a header check, not a parse.
        try:
            principal = await self._auth.principal(request.headers.get("authorization"))
        except Problem as refused:
            if refused.status == 401:
                self._refusals.report(
                    audit_pb.RecordRefusalRequest(
                        http_method=method,
                        path=scope["path"][:500],
                        reason=refused.reason.lower(),
                        operation=binding.rpc.grpc_path.lstrip("/"),
                        client_address=(request.client.host if request.client else ""),
                        request_id=request_id_of(scope),
                    )
                )
            raise
        body = await self._read_body(request) if binding.body else b""
        rpc_request = self._transcoder.request(
            binding, found.path_params, scope.get("query_string", b"").decode("utf-8", "replace"), body
        )
        metadata = self._metadata(request, principal)
        rpc = binding.rpc
        try:
            reply = await self._backends.call(
                rpc.service,
                rpc.grpc_path,
                rpc_request,
                binding.response_cls,
                metadata=metadata,
                timeout_seconds=self._limits.timeout_seconds,
            )
        except BackendNotConfigured:
            raise Problem(
                503, f"No backend is configured for {rpc.service}.", "UNAVAILABLE", "BACKEND_NOT_CONFIGURED"
            ) from None
        except grpc.aio.AioRpcError as err:
            self._metrics.rpc_done(rpc.service, rpc.method.name, err.code().name)
            raise self._from_rpc_error(binding, err) from None
        self._metrics.rpc_done(rpc.service, rpc.method.name, "OK")
        return Response(self._transcoder.response(binding, reply), media_type="application/json")

    def _metadata(self, request: Request, principal: Principal) -> list[tuple[str, str]]:
        # The one place that decides what travels from HTTP headers to gRPC metadata. The
        # caller's own Authorization header never does: backends get the gateway's internal token.
        metadata = [("x-request-id", request_id_of(request.scope)), self._auth.backend_metadata(principal)]
        if request.method in WRITE_METHODS:
            key = request.headers.get("idempotency-key")
            if key is not None:
                if not _SANE_IDEMPOTENCY_KEY.match(key):
                    raise bad_request(
                        "Idempotency-Key must be 1 to 255 printable ASCII characters.",
                        "INVALID_IDEMPOTENCY_KEY",
                        [
                            FieldViolation(
                                "Idempotency-Key", "INVALID_VALUE", "1 to 255 printable ASCII characters."
                            )
                        ],
                    )
                metadata.append(("idempotency-key", key))
        return metadata

    async def _read_body(self, request: Request) -> bytes:
        limit = self._limits.max_body_bytes
        too_large = Problem(
            413, f"The request body is larger than {limit} bytes.", "INVALID_ARGUMENT", "BODY_TOO_LARGE"
        )
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise too_large
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
        body = b"".join(chunks)
        if body.strip():
            media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
            if not _JSON_TYPE.match(media_type):
                raise Problem(
                    415,
                    f"The request body must be application/json, not {media_type or 'untyped'}.",
                    "INVALID_ARGUMENT",
                    "UNSUPPORTED_MEDIA_TYPE",
                )
        return body

    def _from_rpc_error(self, binding: Binding, err: grpc.aio.AioRpcError) -> Problem:
        failure = read_rpc_error(err)
        status = HTTP_STATUS.get(failure.code, 500)
        detail = failure.message
        template = _TRANSPORT_DETAIL.get(failure.code)
        if template is not None and not failure.rich:
            log.warning(
                "backend_call_failed", service=binding.service, code=failure.code.name, detail=failure.message
            )
            detail = template.format(service=binding.service)
        violations = [
            FieldViolation(
                client_field_path(self._catalog, binding.request_descriptor, binding.body_chain, v.field),
                v.reason,
                v.description,
            )
            for v in failure.violations
        ]
        return Problem(status, detail or failure.code.name, failure.code.name, failure.reason, violations)
