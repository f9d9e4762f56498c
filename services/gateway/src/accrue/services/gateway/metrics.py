"""The gateway's Prometheus metrics, in a registry of its own (one per app, none global)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from accrue.runtime.heap import GC_PAUSE
from accrue.runtime.loop import LOOP_LAG

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

# Requests that matched no route share one label value, so scanners cannot grow the series.
UNMATCHED_ROUTE = "unmatched"


class GatewayMetrics:
    """HTTP RED metrics by route template, and gRPC client metrics by method and code."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        # The process's collector pauses and event-loop lag (one histogram each per process,
        # shown in every app's registry).
        self.registry.register(GC_PAUSE)
        self.registry.register(LOOP_LAG)
        self.requests = Counter(
            "http_requests_total",
            "HTTP requests handled, by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "http_request_duration_seconds",
            "Time to handle an HTTP request, by method and route template.",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        # Names follow go-grpc-prometheus, like the services' server-side metrics.
        self.rpcs = Counter(
            "grpc_client_handled_total",
            "RPCs the gateway made, by status code.",
            ["grpc_service", "grpc_method", "grpc_code"],
            registry=self.registry,
        )

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.duration.labels(method, route).observe(seconds)

    def rpc_done(self, service: str, method: str, code: str) -> None:
        self.rpcs.labels(service, method, code).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
