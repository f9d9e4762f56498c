"""The Starlette application: the fixed operational routes, then the transcoding catch-all."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from accrue.identity.local_issuer import LOCAL_ISSUER_PATH
from accrue.services.gateway.auth import Authenticator
from accrue.services.gateway.backends import Backends
from accrue.services.gateway.docs import ASSETS_PATH, docs_page
from accrue.services.gateway.endpoint import Gateway
from accrue.services.gateway.metrics import GatewayMetrics
from accrue.services.gateway.observe import ObserveMiddleware, request_id_of, set_route
from accrue.services.gateway.problems import Problem, render
from accrue.telemetry import get_logger

log = get_logger(__name__)

Endpoint = Callable[[Request], Awaitable[Response]]
FIXED_PATHS = ("/healthz", "/readyz", "/metrics", "/openapi.json", "/docs")


def _labelled(route: str, endpoint: Endpoint) -> Endpoint:
    async def wrapped(request: Request) -> Response:
        set_route(request.scope, route)
        return await endpoint(request)

    return wrapped


def _labelled_asgi(route: str, app: ASGIApp) -> ASGIApp:
    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        set_route(scope, route)
        await app(scope, receive, send)

    return wrapped


async def _http_problem(request: Request, exc: Exception) -> Response:
    # Starlette's own 404/405 (static assets, a wrong method on a fixed route) as problem+json.
    assert isinstance(exc, HTTPException)
    code = {404: "NOT_FOUND", 405: "UNIMPLEMENTED"}.get(exc.status_code, "INVALID_ARGUMENT")
    problem = Problem(exc.status_code, str(exc.detail), code, headers=dict(exc.headers or {}))
    return render(problem, request_id=request_id_of(request.scope), instance=request.url.path)


def create_app(
    *,
    gateway: Gateway,
    backends: Backends,
    metrics: GatewayMetrics,
    openapi: bytes,
    title: str,
    readiness_timeout: float,
    swagger_ui: Path,
    methods: list[str],
    authenticator: Authenticator,
    metrics_open: bool = True,
    local_issuer: ASGIApp | None = None,
    on_shutdown: Sequence[Callable[[], Awaitable[None]]] = (),
) -> Starlette:
    """Wire the endpoints; everything they use is built by the bootstrap and passed in."""
    docs_html = docs_page(title)

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(_: Request) -> Response:
        results = await backends.check_all(readiness_timeout)
        ready = all(result.serving for result in results)
        # Only the status goes out: transport details name internal addresses, so they are logged.
        body = {
            "status": "ready" if ready else "not ready",
            "backends": {r.service: {"status": r.status} for r in results},
        }
        for result in results:
            if not result.serving:
                log.debug(
                    "backend_not_ready", backend=result.service, status=result.status, detail=result.detail
                )
        return JSONResponse(body, status_code=200 if ready else 503)

    async def prometheus(request: Request) -> Response:
        if not metrics_open:
            try:
                await authenticator.principal(request.headers.get("authorization"))
            except Problem as problem:
                return render(problem, request_id=request_id_of(request.scope), instance=request.url.path)
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    async def openapi_json(_: Request) -> Response:
        return Response(openapi, media_type="application/json")

    async def docs(_: Request) -> Response:
        return HTMLResponse(docs_html)

    endpoints: dict[str, Endpoint] = {
        "/healthz": healthz,
        "/readyz": readyz,
        "/metrics": prometheus,
        "/openapi.json": openapi_json,
        "/docs": docs,
    }
    routes: list[BaseRoute] = [
        Route(path, _labelled(path, endpoints[path]), methods=["GET"]) for path in FIXED_PATHS
    ]
    assets = StaticFiles(directory=swagger_ui)
    routes.append(
        Mount(ASSETS_PATH, app=_labelled_asgi(f"{ASSETS_PATH}/{{path}}", assets), name="docs-assets")
    )
    if local_issuer is not None:
        # The embedded issuer's discovery and JWKS, verified like any provider's.
        routes.append(
            Mount(LOCAL_ISSUER_PATH, app=_labelled_asgi(f"{LOCAL_ISSUER_PATH}/{{path}}", local_issuer))
        )
    routes.append(Route("/{path:path}", gateway.handle, methods=methods))

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        for close in on_shutdown:  # reports in flight first: they still need the channels
            await close()
        await backends.close()  # uvicorn got SIGTERM and drained; now the channels go

    return Starlette(
        routes=routes,
        middleware=[Middleware(ObserveMiddleware, metrics=metrics)],
        exception_handlers={HTTPException: _http_problem},
        lifespan=lifespan,
    )


def openapi_bytes(document: dict[str, object]) -> bytes:
    """The document as served: compact UTF-8 JSON, rendered once at start."""
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
