"""Forecasting settings: ACCRUE_FORECASTING_* (shared values may come as ACCRUE_*)."""

from __future__ import annotations

from pydantic import field_validator
from pydantic_settings import SettingsConfigDict

from accrue.money import is_currency
from accrue.runtime import ServiceSettings


class ForecastingSettings(ServiceSettings):
    """Read once at start; a missing or bad value stops the process with its name."""

    model_config = SettingsConfigDict(env_prefix="ACCRUE_FORECASTING_", extra="ignore", frozen=True)

    database_url: str
    nats_url: str
    grpc_port: int = 50054
    metrics_port: int = 9104
    stream_replicas: int = 1

    # How many months ahead (the current one included) scheduled time is projected.
    horizon_months: int = 12
    # The currency of the firm-wide roll-up (legal entities' base currencies converted by FX).
    reporting_currency: str = "EUR"
    # The weekly version: how often to check whether this ISO week's is taken (0 turns it off).
    version_schedule_seconds: float = 3600.0

    @field_validator("horizon_months")
    @classmethod
    def _horizon(cls, value: int) -> int:
        if not 1 <= value <= 60:
            raise ValueError("must be between 1 and 60 months")
        return value

    @field_validator("reporting_currency")
    @classmethod
    def _currency(cls, value: str) -> str:
        if not is_currency(value):
            raise ValueError(f"{value!r} is not an ISO 4217 currency code")
        return value

    @field_validator("version_schedule_seconds")
    @classmethod
    def _schedule(cls, value: float) -> float:
        if value < 0:
            raise ValueError("must not be negative (0 turns the weekly version off)")
        return value
