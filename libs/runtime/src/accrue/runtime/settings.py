"""Typed settings, read once from the environment at start.

Each service subclasses ServiceSettings with its own prefix (ACCRUE_BILLING_...). Values shared
by the whole stack (ACCRUE_DATABASE_URL, ACCRUE_NATS_URL) may be given once without the service
part; the service-specific variable wins when both are set.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import AwareDatetime, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

from accrue.runtime.tls import GrpcTls, NatsTls, check_complete

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
    # Mutual TLS for gRPC, served and called (accrue.runtime.tls): all three files or none.
    # None for `make run` on loopback; the production overlay sets them.
    grpc_tls_cert_file: Path | None = None
    grpc_tls_key_file: Path | None = None
    grpc_tls_ca_file: Path | None = None
    # With TLS on, grpc.health.v1 alone is also served in plaintext on this port: the kubelet's
    # gRPC probes cannot speak TLS. Nothing else answers there.
    grpc_health_port: int | None = Field(default=None, ge=0, le=65535)
    # This service's own NATS user; the server gives it only its subjects
    # (accrue.eventbus.permissions). None: connect without credentials.
    nats_user: str | None = None
    nats_password: SecretStr | None = None
    # TLS towards NATS (use a tls:// URL): the server's CA, and a client certificate if the
    # server verifies clients.
    nats_tls_ca_file: Path | None = None
    nats_tls_cert_file: Path | None = None
    nats_tls_key_file: Path | None = None

    @model_validator(mode="after")
    def _no_made_up_time_in_production(self) -> ServiceSettings:
        if self.environment == "production" and self.clock_start is not None:
            raise ValueError("ACCRUE_CLOCK_START is for tests and demos; production runs on the system clock")
        return self

    @model_validator(mode="after")
    def _transport_settings_complete(self) -> ServiceSettings:
        check_complete("GRPC_TLS_", self.grpc_tls_cert_file, self.grpc_tls_key_file, self.grpc_tls_ca_file)
        if (self.nats_user is None) != (self.nats_password is None):
            raise ValueError("NATS_USER and NATS_PASSWORD go together; one is missing")
        return self

    def grpc_tls(self) -> GrpcTls | None:
        """The certificates gRPC serves and calls with, read now; None for plaintext."""
        return GrpcTls.from_files(self.grpc_tls_cert_file, self.grpc_tls_key_file, self.grpc_tls_ca_file)

    def nats_tls(self) -> NatsTls | None:
        return NatsTls.from_files(self.nats_tls_ca_file, self.nats_tls_cert_file, self.nats_tls_key_file)

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
