"""Prometheus exposition on a per-service /metrics port."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import REGISTRY, CollectorRegistry, start_http_server


@dataclass
class MetricsServer:
    """A running /metrics endpoint."""

    port: int
    _server: WSGIServer
    _thread: threading.Thread

    def stop(self) -> None:
        """Stop serving and free the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def start_metrics_server(host: str, port: int, registry: CollectorRegistry = REGISTRY) -> MetricsServer:
    """Serve the registry at http://host:port/metrics; port 0 picks a free port."""
    server, thread = start_http_server(port, addr=host, registry=registry)
    return MetricsServer(port=server.server_port, _server=server, _thread=thread)
