"""Settings come from ACCRUE_GATEWAY_* (shared values from ACCRUE_*), and bad ones stop the start."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from accrue.runtime.settings import load_settings
from accrue.services.gateway.bootstrap import ConfigurationError, build_app
from accrue.services.gateway.settings import GatewaySettings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    keys = os.environ["ACCRUE_INTERNAL_KEYS_DIR"]
    for name in list(os.environ):
        if name.startswith("ACCRUE_"):
            monkeypatch.delenv(name)
    # Identity is required; these tests are about everything else.
    monkeypatch.setenv("ACCRUE_INTERNAL_KEYS_DIR", keys)
    monkeypatch.setenv("ACCRUE_GATEWAY_LOCAL_ISSUER_DIR", str(tmp_path / "issuer"))


def test_without_an_identity_provider_the_gateway_refuses_to_start(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("ACCRUE_GATEWAY_LOCAL_ISSUER_DIR")

    with pytest.raises(SystemExit):
        load_settings(GatewaySettings)

    assert "ACCRUE_GATEWAY_OIDC_ISSUER" in capsys.readouterr().err


@pytest.mark.parametrize("algorithms", ["HS256", "none", "RS256,HS512", ""])
def test_symmetric_or_no_algorithms_are_refused(monkeypatch: pytest.MonkeyPatch, algorithms: str) -> None:
    monkeypatch.setenv("ACCRUE_GATEWAY_OIDC_ALGORITHMS", algorithms)

    with pytest.raises(ValueError, match="asymmetric"):
        GatewaySettings()


def test_defaults_listen_on_localhost_8080() -> None:
    settings = GatewaySettings()

    assert (settings.host, settings.port) == ("127.0.0.1", 8080)
    assert settings.backends == {}
    assert settings.request_timeout_seconds == 30
    assert settings.max_body_bytes == 16 * 1024 * 1024
    assert settings.log_format == "json"


def test_values_come_from_the_gateway_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACCRUE_GATEWAY_PORT", "9090")
    backends = {
        "accrue.masterdata.v1.MasterDataService": "127.0.0.1:50051",
        "accrue.billing.v1.BillingService": "b:7",
    }
    monkeypatch.setenv("ACCRUE_GATEWAY_BACKENDS", json.dumps(backends))
    monkeypatch.setenv("ACCRUE_GATEWAY_REQUEST_TIMEOUT_SECONDS", "2.5")

    settings = GatewaySettings()

    assert settings.port == 9090
    assert settings.backends["accrue.masterdata.v1.MasterDataService"] == "127.0.0.1:50051"
    assert settings.backends["accrue.billing.v1.BillingService"] == "b:7"
    assert settings.request_timeout_seconds == 2.5


def test_shared_log_and_tracing_values_fall_back_to_the_stack_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACCRUE_LOG_FORMAT", "console")
    monkeypatch.setenv("ACCRUE_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("ACCRUE_OTLP_ENDPOINT", "127.0.0.1:4317")
    monkeypatch.setenv("ACCRUE_PORT", "1234")  # not shared: must not move the gateway

    settings = GatewaySettings()

    assert settings.log_format == "console"
    assert settings.log_level == "DEBUG"
    assert settings.otlp_endpoint == "127.0.0.1:4317"
    assert settings.port == 8080


def test_the_gateway_prefix_wins_over_the_stack_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACCRUE_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("ACCRUE_GATEWAY_LOG_LEVEL", "WARNING")

    assert GatewaySettings().log_level == "WARNING"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ACCRUE_GATEWAY_PORT", "http"),
        ("ACCRUE_GATEWAY_PORT", "70000"),
        ("ACCRUE_GATEWAY_BACKENDS", "not json"),
        ("ACCRUE_GATEWAY_BACKENDS", '{"accrue.masterdata.v1.MasterDataService": "no-port"}'),
        ("ACCRUE_GATEWAY_MAX_BODY_BYTES", "0"),
        ("ACCRUE_LOG_FORMAT", "xml"),
    ],
)
def test_a_bad_value_stops_the_start_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)

    with pytest.raises(SystemExit) as stopped:
        load_settings(GatewaySettings)

    assert stopped.value.code == 2
    assert name.removeprefix("ACCRUE_").removeprefix("GATEWAY_") in capsys.readouterr().err


def test_a_backend_for_a_service_the_contracts_lack_is_refused() -> None:
    settings = GatewaySettings(backends={"accrue.nothing.v1.NothingService": "127.0.0.1:1"})

    with pytest.raises(ConfigurationError, match=r"accrue\.nothing\.v1\.NothingService"):
        build_app(settings)
