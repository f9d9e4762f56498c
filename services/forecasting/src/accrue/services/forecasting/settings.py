"""Forecasting settings: ACCRUE_FORECASTING_* (shared values may come as ACCRUE_*)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from accrue.runtime import ServiceSettings


class ForecastingSettings(ServiceSettings):
    """Read once at start; a missing or bad value stops the process with its name."""

    model_config = SettingsConfigDict(env_prefix="ACCRUE_FORECASTING_", extra="ignore", frozen=True)

    database_url: str
    nats_url: str
    grpc_port: int = 50054
    metrics_port: int = 9104
    stream_replicas: int = 1
