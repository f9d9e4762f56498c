"""The gateway's settings, read once from ACCRUE_GATEWAY_* (and a few stack-wide ACCRUE_* values)."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

# Values the whole stack shares and may set once as ACCRUE_<NAME>; nothing else falls back, so a
# stack-wide ACCRUE_PORT or ACCRUE_HOST can never move the gateway by accident.
_SHARED = frozenset({"log_level", "log_format", "otlp_endpoint"})
_ADDRESS = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-_]+):\d{1,5}$")


class _SharedEnvSource(EnvSettingsSource):
    """ACCRUE_LOG_LEVEL, ACCRUE_LOG_FORMAT and ACCRUE_OTLP_ENDPOINT, as a fallback."""

    def __call__(self) -> dict[str, Any]:
        return {key: value for key, value in super().__call__().items() if key in _SHARED}


class GatewaySettings(BaseSettings):
    """Where to listen, which backend serves each gRPC service, and request limits."""

    model_config = SettingsConfigDict(env_prefix="ACCRUE_GATEWAY_", extra="ignore", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    # gRPC service full name -> "host:port", e.g.
    # {"accrue.masterdata.v1.MasterDataService": "127.0.0.1:50051"}. A service without an entry
    # has its routes answer 503.
    # NoDecode: the JSON is parsed by the validator below, so a typo is a clear validation error
    # (pydantic-settings' own decoding would raise a SettingsError that load_settings cannot name).
    backends: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    request_timeout_seconds: float = Field(default=30.0, gt=0)
    readiness_timeout_seconds: float = Field(default=2.0, gt=0)
    max_body_bytes: int = Field(default=16 * 1024 * 1024, gt=0)
    shutdown_grace_seconds: float = Field(default=10.0, ge=0)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "console"] = "json"
    otlp_endpoint: str | None = None

    @field_validator("backends", mode="before")
    @classmethod
    def _backends_from_json(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return json.loads(value) if value.strip() else {}
            except json.JSONDecodeError as exc:
                raise ValueError(
                    f'not JSON ({exc.msg}); expected {{"<service full name>": "host:port"}}'
                ) from None
        return value

    @field_validator("backends")
    @classmethod
    def _addresses_are_host_port(cls, value: dict[str, str]) -> dict[str, str]:
        for service, address in value.items():
            if not _ADDRESS.match(address):
                raise ValueError(f"{service}: {address!r} is not host:port")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The gateway's own prefix wins; the stack-wide ACCRUE_ prefix fills in shared values.
        return (init_settings, env_settings, _SharedEnvSource(settings_cls, env_prefix="ACCRUE_"))
