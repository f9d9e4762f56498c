"""The composition root: the only place that builds the catalog, channels, metrics and the app.

Tests call `build_app` with their own settings (fake backends' addresses) and, if they like, a
channel factory; `main` reads the environment, configures telemetry and serves with uvicorn.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Sequence
from importlib import metadata
from types import FrameType

import httpx
import uvicorn
from google.protobuf import descriptor_pb2
from starlette.applications import Starlette

from accrue.contracts import PUBLIC_SERVICES, descriptor_set
from accrue.identity.internal import InternalSigner, load_signer
from accrue.identity.local_issuer import LOCAL_ISSUER_PATH, LocalIssuer
from accrue.identity.policy import load_policy
from accrue.identity.principal import ClaimsMapping
from accrue.identity.verifier import TokenVerifier, VerifierConfig, discovery_url
from accrue.masterdata.v1 import masterdata_service_pb2 as md_api
from accrue.runtime.clock import Clock, clock_for
from accrue.runtime.heap import freeze_startup_objects
from accrue.runtime.loop import watch_event_loop
from accrue.runtime.settings import load_settings
from accrue.services.gateway.app import FIXED_PATHS, create_app, openapi_bytes
from accrue.services.gateway.auth import Authenticator, ConsultantLookup, SubjectMapping
from accrue.services.gateway.backends import Backends, ChannelFactory, instrumented_channel
from accrue.services.gateway.catalog import load_catalog
from accrue.services.gateway.docs import swagger_ui_directory
from accrue.services.gateway.endpoint import Gateway, Limits
from accrue.services.gateway.metrics import GatewayMetrics
from accrue.services.gateway.openapi import build_openapi
from accrue.services.gateway.refusals import RefusalReporter
from accrue.services.gateway.routing import Router
from accrue.services.gateway.settings import GatewaySettings
from accrue.services.gateway.transcoding import Binding, Transcoder, compile_binding
from accrue.telemetry import configure_logging, configure_tracing, get_logger

log = get_logger(__name__)

TITLE = "Accrue API"
MASTERDATA_SERVICE = "accrue.masterdata.v1.MasterDataService"
_STANDARD_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")


class ConfigurationError(ValueError):
    """The settings name something the contracts do not have."""


def build_app(
    settings: GatewaySettings,
    *,
    channel_factory: ChannelFactory | None = None,
    files: descriptor_pb2.FileDescriptorSet | None = None,
    services: Sequence[str] = PUBLIC_SERVICES,
    http: httpx.AsyncClient | None = None,
) -> Starlette:
    """Everything the gateway serves, from the contracts' descriptors and the settings.

    http is the client the token verifier fetches discovery and JWKS with (tests pass one
    that reaches an in-process provider).
    """
    unknown = sorted(set(settings.backends) - set(services))
    if unknown:
        raise ConfigurationError(
            f"backends for unknown services {unknown}; the public services are {list(services)}"
        )
    catalog = load_catalog(files if files is not None else descriptor_set(), services)
    bindings = [compile_binding(catalog, rpc, rule) for rpc in catalog.methods for rule in rpc.rules]
    router: Router[Binding] = Router((b.http_method, b.template, b) for b in bindings)
    tls = settings.grpc_tls()
    backends = Backends(settings.backends, channel_factory or (lambda a: instrumented_channel(a, tls)))
    clock = clock_for(settings.clock_start)
    authenticator, local_issuer = _authenticator(settings, clock, http, backends)
    refusals = RefusalReporter(backends, authenticator.signer, clock)
    metrics = GatewayMetrics()
    fixed = {path: ("GET", "HEAD") for path in FIXED_PATHS}
    gateway = Gateway(
        catalog=catalog,
        router=router,
        transcoder=Transcoder(catalog),
        backends=backends,
        metrics=metrics,
        limits=Limits(settings.request_timeout_seconds, settings.max_body_bytes),
        fixed_routes=fixed,
        authenticator=authenticator,
        refusals=refusals,
    )
    document = build_openapi(
        catalog,
        bindings,
        title=TITLE,
        version=_version(),
        policy=load_policy(),
        discovery_url=discovery_url(authenticator.verifier.config.issuer),
    )
    methods = sorted({*_STANDARD_METHODS, *(b.http_method for b in bindings)})
    return create_app(
        gateway=gateway,
        backends=backends,
        metrics=metrics,
        openapi=openapi_bytes(document),
        title=TITLE,
        readiness_timeout=settings.readiness_timeout_seconds,
        swagger_ui=swagger_ui_directory(),
        methods=methods,
        authenticator=authenticator,
        metrics_open=settings.metrics_open,
        local_issuer=local_issuer.app() if local_issuer is not None else None,
        on_shutdown=[refusals.drain, *([authenticator.verifier.aclose] if http is None else [])],
    )


def _authenticator(
    settings: GatewaySettings, clock: Clock, http: httpx.AsyncClient | None, backends: Backends
) -> tuple[Authenticator, LocalIssuer | None]:
    """The external provider's verifier, or the embedded issuer's when none is configured."""
    assert settings.internal_keys_dir is not None  # the settings refuse to load without it
    local_issuer = None
    issuer = settings.oidc_issuer
    if issuer is None:
        assert settings.local_issuer_dir is not None
        issuer = settings.base_url + LOCAL_ISSUER_PATH
        local_issuer = LocalIssuer(settings.local_issuer_dir, issuer, clock)
    config = VerifierConfig.of(
        issuer,
        settings.oidc_audience,
        jwks_url=settings.oidc_jwks_url,
        algorithms=tuple(settings.oidc_algorithms),
    )
    verifier = TokenVerifier(config, http or httpx.AsyncClient(timeout=config.http_timeout_seconds), clock)
    claims = ClaimsMapping(
        subject=settings.claim_subject,
        roles=settings.claim_roles,
        legal_entities=settings.claim_legal_entities,
        client_systems=settings.client_systems,
    )
    signer = load_signer(settings.internal_keys_dir, "gateway", clock)
    subjects = None
    if settings.subject_mapping.startswith("external_ref:"):
        system = settings.subject_mapping.removeprefix("external_ref:")
        subjects = SubjectMapping(system, _consultant_lookup(backends, signer, settings), clock)
    return Authenticator(verifier, claims, signer, subjects), local_issuer


def _consultant_lookup(
    backends: Backends, signer: InternalSigner, settings: GatewaySettings
) -> ConsultantLookup:
    """Master data's answer to "which consultant is this worker id in that system?", asked as
    the gateway itself (a service may read master data)."""

    async def lookup(system: str, external_id: str) -> str | None:
        reply = await backends.call(
            MASTERDATA_SERVICE,
            f"/{MASTERDATA_SERVICE}/ListConsultants",
            md_api.ListConsultantsRequest(
                external_ref_system=system, external_ref_id=external_id, page_size=2
            ),
            md_api.ListConsultantsResponse,
            metadata=signer.metadata(),
            timeout_seconds=settings.request_timeout_seconds,
        )
        assert isinstance(reply, md_api.ListConsultantsResponse)
        found = list(reply.consultants)
        return found[0].id if len(found) == 1 else None

    return lookup


def _version() -> str:
    try:
        return metadata.version("accrue-gateway")
    except metadata.PackageNotFoundError:
        return "0.0.0"


async def serve(settings: GatewaySettings) -> None:
    """Serve until SIGTERM/SIGINT; uvicorn drains requests, then the lifespan closes channels."""
    app = build_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        lifespan="on",
        log_config=None,  # logging is configured once, by accrue.telemetry
        access_log=False,  # metrics and traces cover access; a line per request costs throughput
        server_header=False,
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds),
    )
    server = uvicorn.Server(config)
    log.info(
        "gateway_starting",
        url=f"http://{settings.host}:{settings.port}",
        docs=f"http://{settings.host}:{settings.port}/docs",
        backends=settings.backends,
    )
    freeze_startup_objects()
    watcher = asyncio.create_task(watch_event_loop(), name="gateway:event-loop-lag")
    try:
        await server.serve()
    finally:
        watcher.cancel()


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:  # not on Windows; the standard loop works, only slower
        return None
    return uvloop.new_event_loop


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def main() -> None:
    """Entry point of `python -m accrue.services.gateway`."""
    # uvicorn drains on SIGTERM and then re-raises it to the handler it found. With Python's
    # default that kills the process before atexit, losing unexported spans; this handler turns
    # it (or one arriving during start-up) into a normal exit instead.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    settings = load_settings(GatewaySettings)
    configure_logging("gateway", settings.log_level, settings.log_format)
    configure_tracing("gateway", settings.otlp_endpoint)
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(serve(settings))
    except ConfigurationError as exc:
        log.error("invalid_configuration", error=str(exc))
        raise SystemExit(2) from None
