"""Master data settings: ACCRUE_MASTERDATA_* (shared values may come as ACCRUE_*)."""

from __future__ import annotations

from pydantic import field_validator
from pydantic_settings import SettingsConfigDict

from accrue.runtime import ServiceSettings
from accrue.services.masterdata.domain.kinds import KINDS


class MasterDataSettings(ServiceSettings):
    """Read once at start; a missing or bad value stops the process with its name."""

    model_config = SettingsConfigDict(env_prefix="ACCRUE_MASTERDATA_", extra="ignore", frozen=True)

    database_url: str
    nats_url: str
    grpc_port: int = 50051
    metrics_port: int = 9101
    stream_replicas: int = 1
    # The system of record per entity type, as JSON: {"consultant": "workday", "customer": "crm"}.
    # A kind that is not named accepts writes from any source.
    owners: dict[str, str] = {}

    @field_validator("owners")
    @classmethod
    def _known_kinds(cls, owners: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(owners) - set(KINDS))
        if unknown:
            raise ValueError(f"unknown entity types {unknown}; the types are {sorted(KINDS)}")
        empty = sorted(k for k, v in owners.items() if not v.strip())
        if empty:
            raise ValueError(f"no system named for {empty}")
        return owners
