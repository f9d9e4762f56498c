"""Billing settings: ACCRUE_BILLING_* (shared values may come as ACCRUE_*)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from accrue.runtime import ServiceSettings


class BillingSettings(ServiceSettings):
    """Read once at start; a missing or bad value stops the process with its name."""

    model_config = SettingsConfigDict(env_prefix="ACCRUE_BILLING_", extra="ignore", frozen=True)

    database_url: str
    nats_url: str
    masterdata_address: str = "127.0.0.1:50051"
    grpc_port: int = 50053
    metrics_port: int = 9103
    stream_replicas: int = 1
