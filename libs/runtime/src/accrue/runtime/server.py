"""The gRPC server lifecycle every service shares.

Health and reflection are always on. SIGTERM (or SIGINT) stops accepting RPCs, lets in-flight
ones finish within the grace period, stops background work (outbox relay, consumers), then
closes connections. A background task that dies takes the process down with a non-zero exit, so
the supervisor restarts it rather than leaving a half-working service.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry.instrumentation.grpc import aio_server_interceptor

from accrue.runtime.heap import freeze_startup_objects
from accrue.runtime.interceptors import ErrorAndMetricsInterceptor
from accrue.runtime.loop import watch_event_loop
from accrue.runtime.settings import ServiceSettings
from accrue.telemetry import MetricsServer, get_logger, start_metrics_server

log = get_logger(__name__)

MAX_MESSAGE_BYTES = 32 * 1024 * 1024

Background = Callable[[], Coroutine[Any, Any, None]]
Closer = Callable[[], Awaitable[None]]


@dataclass
class Service:
    """What a service's bootstrap hands to the runtime."""

    name: str
    settings: ServiceSettings
    register: Callable[[grpc.aio.Server], None]
    service_names: Sequence[str]
    background: Sequence[Background] = ()
    on_stop: Sequence[Closer] = ()
    # Run once before the service reports SERVING (e.g. filling its database pool).
    warm_up: Sequence[Closer] = ()
    interceptors: Sequence[grpc.aio.ServerInterceptor] = ()
    # Verifies every call's identity and applies the access policy (accrue.identity.grpc);
    # required: `start` refuses a service without one.
    auth: grpc.aio.ServerInterceptor | None = None


@dataclass
class RunningService:
    """A started service: its bound ports and what it takes to stop it."""

    service: Service
    server: grpc.aio.Server
    health: health.aio.HealthServicer
    grpc_port: int
    metrics: MetricsServer | None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    # With TLS: the plaintext server answering grpc.health.v1 only (settings.grpc_health_port).
    health_server: grpc.aio.Server | None = None
    health_port: int | None = None
    # How long one cancellation round waits for the background tasks, and how many rounds
    # there are before giving up on a task that will not stop.
    stop_wait_seconds: float = 5.0
    stop_rounds: int = 3

    async def stop(self) -> None:
        """Graceful stop: NOT_SERVING, drain RPCs, stop background work, close resources."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(self.service.settings.shutdown_grace_seconds)
        if self.health_server is not None:
            await self.health_server.stop(0)
        await self._stop_background()
        for close in self.service.on_stop:
            try:
                await close()
            except Exception:
                log.exception("close_failed", service=self.service.name)
        if self.metrics is not None:
            self.metrics.stop()
        log.info("service_stopped", service=self.service.name)

    async def _stop_background(self) -> None:
        """Cancel every background task, again and again, until all have ended or rounds run out.

        One cancel is not enough: a task that swallows CancelledError (a library catching it
        in a retry loop, or a cancel landing while the task is already unwinding) would keep
        `stop` waiting forever. So each round waits a bounded time and cancels what is left.
        """
        pending = {t for t in self.tasks if not t.done()}
        for _ in range(self.stop_rounds):
            if not pending:
                break
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=self.stop_wait_seconds)
        for task in self.tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                log.warning("background_task_failed", service=self.service.name, task=task.get_name())
        if pending:
            log.error(
                "background_tasks_would_not_stop",
                service=self.service.name,
                tasks=sorted(t.get_name() for t in pending),
            )


async def start(service: Service) -> RunningService:
    """Start serving gRPC (and /metrics) and launch the background tasks."""
    settings = service.settings
    if service.auth is None:
        raise RuntimeError(f"{service.name} has no authentication interceptor; refusing to serve")
    server = grpc.aio.server(
        interceptors=[
            aio_server_interceptor(),  # type: ignore[no-untyped-call]
            ErrorAndMetricsInterceptor(),
            service.auth,  # before the service's own: nothing runs for an unverified caller
            *service.interceptors,
        ],
        options=[
            # One process per port: a second instance must fail to bind, not share the port.
            ("grpc.so_reuseport", 0),
            # The gateway accepts bodies up to 16 MiB; let them through.
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ],
    )
    for warm in service.warm_up:
        await warm()
    service.register(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [*service.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME]
    reflection.enable_server_reflection(names, server)
    tls = settings.grpc_tls()
    address = f"{settings.grpc_host}:{settings.grpc_port}"
    port = (
        server.add_secure_port(address, tls.server_credentials())
        if tls
        else server.add_insecure_port(address)
    )
    if port == 0:
        raise RuntimeError(f"could not bind gRPC to {address}")
    health_server, health_port = None, None
    if tls is not None and settings.grpc_health_port is not None:
        health_server, health_port = _plaintext_health(
            settings.grpc_host, settings.grpc_health_port, health_servicer
        )
    metrics = (
        start_metrics_server(settings.metrics_host, settings.metrics_port)
        if settings.metrics_port >= 0
        else None
    )
    await server.start()
    if health_server is not None:
        await health_server.start()
    running = RunningService(
        service, server, health_servicer, port, metrics, health_server=health_server, health_port=health_port
    )
    for name in ("", *service.service_names):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    running.tasks = [asyncio.create_task(job(), name=f"{service.name}:{job}") for job in service.background]
    log.info(
        "service_started",
        service=service.name,
        grpc=f"{settings.grpc_host}:{port}",
        tls=tls is not None,
        health=f"{settings.grpc_host}:{health_port}" if health_port is not None else None,
        metrics=f"http://{settings.metrics_host}:{metrics.port}/metrics" if metrics else None,
    )
    return running


def _plaintext_health(
    host: str, port: int, servicer: health.aio.HealthServicer
) -> tuple[grpc.aio.Server, int]:
    """A second server with only the health service, for probes that cannot speak TLS.

    It shares the servicer, so it says NOT_SERVING as soon as the real server starts draining.
    No interceptors: health is not authenticated on the real port either.
    """
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise RuntimeError(f"could not bind the gRPC health port to {host}:{port}")
    return server, bound


async def serve(service: Service) -> None:
    """Run until SIGTERM/SIGINT, then stop gracefully; exit non-zero if background work dies."""
    running = await start(service)
    freeze_startup_objects()
    watcher = asyncio.create_task(watch_event_loop(), name=f"{service.name}:event-loop-lag")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    stopper = asyncio.create_task(stop.wait())
    waiting: set[asyncio.Task[None] | asyncio.Task[bool]] = {stopper, *running.tasks}
    done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    crashed = [t for t in done if t is not stopper]
    for task in crashed:
        exc = task.exception() if not task.cancelled() else None
        log.error("background_task_died", service=service.name, task=task.get_name(), error=repr(exc))
    stopper.cancel()
    watcher.cancel()
    await running.stop()
    if crashed:
        raise SystemExit(1)
