"""Telemetry built in once: structured logs, Prometheus exposition and OpenTelemetry.

Services call these from their bootstrap; nothing else configures logging, metrics or tracing.
"""

from accrue.telemetry.logging import configure_logging, get_logger
from accrue.telemetry.metrics import MetricsServer, start_metrics_server
from accrue.telemetry.tracing import configure_tracing, extract_context, inject_context, tracer

__all__ = [
    "MetricsServer",
    "configure_logging",
    "configure_tracing",
    "extract_context",
    "get_logger",
    "inject_context",
    "start_metrics_server",
    "tracer",
]
