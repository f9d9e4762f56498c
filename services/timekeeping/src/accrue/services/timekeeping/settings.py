"""Timekeeping settings: ACCRUE_TIMEKEEPING_* (shared values may come as ACCRUE_*)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from accrue.runtime import ServiceSettings


class TimekeepingSettings(ServiceSettings):
    """Read once at start; a missing or bad value stops the process with its name."""

    model_config = SettingsConfigDict(env_prefix="ACCRUE_TIMEKEEPING_", extra="ignore", frozen=True)

    database_url: str
    nats_url: str
    masterdata_address: str = "127.0.0.1:50051"
    grpc_port: int = 50052
    metrics_port: int = 9102
    stream_replicas: int = 1
    # How many days ahead of today time may be recorded (0: up to today).
    future_allowance_days: int = Field(default=0, ge=0, le=366)
