"""Master data settings: ACCRUE_MASTERDATA_* (shared values may come as ACCRUE_*)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from accrue.runtime import ServiceSettings


class MasterDataSettings(ServiceSettings):
    """Read once at start; a missing or bad value stops the process with its name."""

    model_config = SettingsConfigDict(env_prefix="ACCRUE_MASTERDATA_", extra="ignore", frozen=True)

    database_url: str
    nats_url: str
    grpc_port: int = 50051
    metrics_port: int = 9101
    stream_replicas: int = 1
