"""OpenTelemetry: one tracer provider per process, W3C trace context across every hop.

Spans are always created (so traceparent flows from the gateway through gRPC, the outbox and
NATS into consumers); they are exported only when an OTLP endpoint is configured.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

_configured = False


def configure_tracing(service: str, otlp_endpoint: str | None = None) -> None:
    """Install the SDK tracer provider; export over OTLP/gRPC when an endpoint is given."""
    global _configured  # the OTel provider is process-global by design; set it once
    if _configured:
        return
    provider = TracerProvider(resource=Resource.create({"service.name": f"accrue-{service}"}))
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint, insecure=True))
        )
    trace.set_tracer_provider(provider)
    _configured = True


def tracer(name: str) -> trace.Tracer:
    """A tracer for a module."""
    return trace.get_tracer(name)


def inject_context(carrier: MutableMapping[str, str]) -> MutableMapping[str, str]:
    """Write the current trace context (traceparent, tracestate) into carrier."""
    propagate.inject(carrier)
    return carrier


def extract_context(carrier: Mapping[str, str]) -> otel_context.Context:
    """Read a trace context from carrier (e.g. NATS headers)."""
    return propagate.extract(dict(carrier))
