"""The gateway's settings, read once from ACCRUE_GATEWAY_* (and a few stack-wide ACCRUE_* values)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from accrue.runtime.tls import GrpcTls

# Values the whole stack shares and may set once as ACCRUE_<NAME>; nothing else falls back, so a
# stack-wide ACCRUE_PORT or ACCRUE_HOST can never move the gateway by accident.
_SHARED = frozenset(
    {
        "log_level",
        "log_format",
        "otlp_endpoint",
        "internal_keys_dir",
        "clock_start",
        "environment",
        "grpc_tls_cert_file",
        "grpc_tls_key_file",
        "grpc_tls_ca_file",
    }
)
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
    environment: Literal["development", "production"] = "development"
    # As every service's (accrue.runtime.clock); refused in production.
    clock_start: AwareDatetime | None = None

    # -- identity (docs/security.md) --------------------------------------------------------------
    # The external OIDC provider, e.g. https://keycloak.example/realms/acme. When unset, the
    # local issuer below is used (`make run`); one of the two is required.
    oidc_issuer: str | None = None
    # The audience Accrue's tokens must carry (Keycloak: an audience mapper; Entra: the app id URI).
    oidc_audience: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["accrue"])
    # Skip discovery and fetch keys here (some providers' discovery is not reachable from pods).
    oidc_jwks_url: str | None = None
    # Pinned algorithms (RFC 8725): never "none", never HS*.
    oidc_algorithms: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["RS256", "ES256", "EdDSA"]
    )
    # Where tokens carry each fact (dotted paths; Keycloak roles: realm_access.roles).
    claim_subject: str = "sub"
    claim_roles: str = "roles"
    claim_legal_entities: str = "accrue_legal_entities"
    # How a person's subject becomes a consultant id: "id" (the subject claim is the consultant
    # id) or "external_ref:<system>" (it is the consultant's id in that system, e.g. the HR
    # system's worker id; looked up in master data).
    subject_mapping: str = Field(default="id", pattern=r"^(id|external_ref:[A-Za-z0-9_.-]+)$")
    # client_id -> the system of record that integration client is (JSON), e.g. {"hr-sync": "workday"}.
    client_systems: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    # The local issuer's key directory (`accrue run` sets it to its data dir); ignored when an
    # external issuer is configured.
    local_issuer_dir: Path | None = None
    # The URL clients reach the gateway at, for the local issuer's own URL (default http://host:port).
    public_url: str | None = None
    # This gateway's internal signing key and the trusted keys (accrue.identity.internal).
    internal_keys_dir: Path | None = None
    # /metrics without a token (Prometheus scrapes it); false asks for a bearer token there too.
    metrics_open: bool = True
    # Mutual TLS towards the backends (accrue.runtime.tls): all three files or none.
    grpc_tls_cert_file: Path | None = None
    grpc_tls_key_file: Path | None = None
    grpc_tls_ca_file: Path | None = None

    def grpc_tls(self) -> GrpcTls | None:
        return GrpcTls.from_files(self.grpc_tls_cert_file, self.grpc_tls_key_file, self.grpc_tls_ca_file)

    @field_validator("oidc_audience", "oidc_algorithms", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("oidc_algorithms")
    @classmethod
    def _asymmetric_only(cls, value: list[str]) -> list[str]:
        allowed = {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
        wrong = sorted(set(value) - allowed)
        if wrong or not value:
            raise ValueError(
                f"{wrong or 'none'} not accepted; use asymmetric algorithms among {sorted(allowed)}"
            )
        return value

    @field_validator("client_systems", mode="before")
    @classmethod
    def _systems_from_json(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return json.loads(value) if value.strip() else {}
            except json.JSONDecodeError as exc:
                raise ValueError(f'not JSON ({exc.msg}); expected {{"<client id>": "<system>"}}') from None
        return value

    @model_validator(mode="after")
    def _identity_configured(self) -> GatewaySettings:
        if self.environment == "production" and self.clock_start is not None:
            raise ValueError("ACCRUE_CLOCK_START is for tests and demos; production runs on the system clock")
        if self.oidc_issuer is None and self.local_issuer_dir is None:
            raise ValueError(
                "no identity provider: set ACCRUE_GATEWAY_OIDC_ISSUER (your OIDC provider) or "
                "ACCRUE_GATEWAY_LOCAL_ISSUER_DIR (the embedded issuer `accrue run` uses)"
            )
        if self.internal_keys_dir is None:
            raise ValueError("ACCRUE_INTERNAL_KEYS_DIR is not set: the gateway signs its calls to services")
        return self

    @property
    def base_url(self) -> str:
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

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
