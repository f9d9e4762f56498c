"""Settings are read once with a per-service prefix; bad input stops the start naming the variable."""

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2
from pydantic_settings import SettingsConfigDict

from accrue.runtime import InvalidArgument, ServiceSettings, Violation, load_settings
from accrue.runtime.interceptors import status_for
from accrue.runtime.validation import Violations


class DemoSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ACCRUE_DEMO_", extra="ignore", frozen=True)
    database_url: str
    grpc_port: int = 5000


def test_service_prefix_wins_over_the_stack_wide_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACCRUE_DATABASE_URL", "postgresql://shared/db")
    monkeypatch.setenv("ACCRUE_DEMO_GRPC_PORT", "6000")
    settings = load_settings(DemoSettings)
    assert (settings.database_url, settings.grpc_port) == ("postgresql://shared/db", 6000)
    monkeypatch.setenv("ACCRUE_DEMO_DATABASE_URL", "postgresql://own/db")
    assert load_settings(DemoSettings).database_url == "postgresql://own/db"


def test_a_bad_setting_stops_the_start_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ACCRUE_DATABASE_URL", "postgresql://shared/db")
    monkeypatch.setenv("ACCRUE_DEMO_GRPC_PORT", "not-a-port")
    with pytest.raises(SystemExit) as stop:
        load_settings(DemoSettings)
    assert stop.value.code == 2
    assert "ACCRUE_DEMO_GRPC_PORT" in capsys.readouterr().err


def test_violations_are_collected_and_raised_together() -> None:
    v = Violations("time_entry")
    v.decimal("hours", "7,5")
    v.date("work_date", "2026-02-30")
    v.currency("currency", "EURO")
    with pytest.raises(InvalidArgument) as error:
        v.raise_if_any()
    assert [(x.field, x.code) for x in error.value.violations] == [
        ("time_entry.hours", "INVALID_DECIMAL"),
        ("time_entry.work_date", "INVALID_DATE"),
        ("time_entry.currency", "INVALID_CURRENCY"),
    ]


def test_domain_errors_become_grpc_status_with_field_violations() -> None:
    status = status_for(
        InvalidArgument("bad", [Violation("hours", "INVALID_DECIMAL", "hours is not a number")])
    )
    assert status.code == code_pb2.INVALID_ARGUMENT == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    detail = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(detail)
    assert (detail.field_violations[0].field, detail.field_violations[0].reason) == (
        "hours",
        "INVALID_DECIMAL",
    )
