"""Observability settings: ACCRUE_OBSERVABILITY_* (shared values may come as ACCRUE_*)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from accrue.runtime import ServiceSettings


class ObservabilitySettings(ServiceSettings):
    """Read once at start; a missing or bad value stops the process with its name."""

    model_config = SettingsConfigDict(env_prefix="ACCRUE_OBSERVABILITY_", extra="ignore", frozen=True)

    database_url: str
    nats_url: str
    grpc_port: int = 50055
    metrics_port: int = 9105
    stream_replicas: int = 1
    # How often the KPI gauges are recomputed for Prometheus.
    metrics_interval_seconds: float = 10.0
    # Where the reconciliation reads the approved and billed stages (their gRPC contracts);
    # ACCRUE_TIMEKEEPING_ADDRESS / ACCRUE_BILLING_ADDRESS serve the whole stack.
    timekeeping_address: str = "127.0.0.1:50052"
    billing_address: str = "127.0.0.1:50053"
    # The audit trail (GET /v1/audit-events) reads every service's own: ACCRUE_MASTERDATA_ADDRESS
    # and ACCRUE_FORECASTING_ADDRESS too.
    masterdata_address: str = "127.0.0.1:50051"
    forecasting_address: str = "127.0.0.1:50054"
    # How often the current and previous months are reconciled; 0 turns the schedule off.
    reconciliation_interval_seconds: float = 3600.0
