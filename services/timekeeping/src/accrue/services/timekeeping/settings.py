"""Timekeeping settings: ACCRUE_TIMEKEEPING_* (shared values may come as ACCRUE_*)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from accrue.runtime import ServiceSettings
from accrue.services.timekeeping.domain.working_time import hours


class TimekeepingSettings(ServiceSettings):
    """Read once at start; a missing or bad value stops the process with its name."""

    model_config = SettingsConfigDict(env_prefix="ACCRUE_TIMEKEEPING_", extra="ignore", frozen=True)

    database_url: str
    nats_url: str
    masterdata_address: str = "127.0.0.1:50051"
    grpc_port: int = 50052
    metrics_port: int = 9102
    stream_replicas: int = 1
    # How many days ahead of today time may be recorded (0: up to today), today being the
    # consultant's (their time zone, else their legal entity's).
    future_allowance_days: int = Field(default=0, ge=0, le=366)
    # How long an entry may wait for its approver before it escalates to the next level, in
    # working hours of the project's legal entity's calendar (weekends and holidays not counted).
    approval_sla_hours: Decimal = Field(default=Decimal(48), gt=0)

    @property
    def approval_sla(self) -> dt.timedelta:
        """The SLA as an exact duration."""
        return hours(self.approval_sla_hours)

    # How often each replica looks for entries past the SLA.
    escalation_interval_seconds: float = Field(default=60.0, gt=0)
    # How many levels above the resolved approver an entry may climb (0: never escalate).
    max_escalation_level: int = Field(default=3, ge=0, le=20)
