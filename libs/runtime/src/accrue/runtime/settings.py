"""Typed settings, read once from the environment at start.

Each service subclasses ServiceSettings with its own prefix (ACCRUE_BILLING_...). Values shared
by the whole stack (ACCRUE_DATABASE_URL, ACCRUE_NATS_URL) may be given once without the service
part; the service-specific variable wins when both are set.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import AwareDatetime, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

S = TypeVar("S", bound=BaseSettings)


class ServiceSettings(BaseSettings):
    """Settings every service process has."""

    model_config = SettingsConfigDict(env_prefix="ACCRUE_SERVICE_", extra="ignore", frozen=True)

    grpc_host: str = "127.0.0.1"
    grpc_port: int = 0
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 0
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "console"] = "json"
    otlp_endpoint: str | None = None
    shutdown_grace_seconds: float = 10.0
    # Database connections opened at start-up, before SERVING, instead of under the first burst
    # (at most the pool's size; 0 for none).
    database_pool_warm: int = Field(default=4, ge=0)
    # "production" makes the process refuse anything meant only for tests and demos (below).
    environment: Literal["development", "production"] = "development"
    # Start the process's clock at this instant (RFC 3339 with an offset) instead of the system
    # clock; it then runs at real speed. For the pinned test stack and demos; refused in
    # production. See accrue.runtime.clock.
    clock_start: AwareDatetime | None = None
    # Internal keys (accrue.identity.internal): this process's `<name>.key.pem` and every
    # trusted `<name>.pub.pem`. Required to serve; `accrue run` and the tests make them.
    internal_keys_dir: Path | None = None

    @model_validator(mode="after")
    def _no_made_up_time_in_production(self) -> ServiceSettings:
        if self.environment == "production" and self.clock_start is not None:
            raise ValueError("ACCRUE_CLOCK_START is for tests and demos; production runs on the system clock")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Service prefix first, then the stack-wide ACCRUE_ prefix as a fallback.
        return (init_settings, env_settings, EnvSettingsSource(settings_cls, env_prefix="ACCRUE_"))


def describe_errors(exc: ValidationError, prefix: str) -> str:
    """One line per bad setting, naming the environment variable and the reason."""
    lines = []
    for error in exc.errors():
        name = "_".join(str(part) for part in error["loc"]).upper()
        lines.append(f"  {prefix}{name}: {error['msg']}")
    return "\n".join(lines)


def load_settings(cls: type[S]) -> S:
    """Read settings from the environment, or stop the process saying which variable is wrong."""
    try:
        return cls()
    except ValidationError as exc:
        prefix = str(cls.model_config.get("env_prefix", ""))
        # Settings fail before logging is configured, so this goes straight to stderr.
        message = f"accrue: invalid configuration for {cls.__name__}:\n{describe_errors(exc, prefix)}"
        print(message, file=sys.stderr)  # noqa: T201
        raise SystemExit(2) from None
