"""Billing settings: ACCRUE_BILLING_* (shared values may come as ACCRUE_*)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from accrue.runtime import ServiceSettings


class BillingSettings(ServiceSettings):
    """Read once at start; a missing or bad value stops the process with its name."""

    model_config = SettingsConfigDict(env_prefix="ACCRUE_BILLING_", extra="ignore", frozen=True)

    database_url: str
    nats_url: str
    masterdata_address: str = "127.0.0.1:50051"
    grpc_port: int = 50053
    metrics_port: int = 9103
    stream_replicas: int = 1

    # Where approved invoices are posted: "file" (JSON + CSV per invoice) or "tryton".
    erp_adapter: Literal["file", "tryton"] = "file"
    erp_file_dir: Path = Path(".accrue/erp-files")
    tryton_url: str = ""
    tryton_database: str = ""
    tryton_user: str = "admin"
    tryton_password: str = ""
    tryton_company_id: int = 0
    tryton_revenue_account: str = ""
    tryton_receivable_account: str = ""
    # Posting: calls per second to the ERP (shared by every replica), retries with backoff.
    erp_rate_per_second: float = 5.0
    erp_max_attempts: int = 8
    erp_retry_first_seconds: float = 5.0
    erp_retry_max_seconds: float = 1800.0
    posting_poll_seconds: float = 1.0
    # One ERP posting (all its round trips) is cut off after this long and retried later; a
    # claimed job is leased for longer, so no second worker takes it while the call may run.
    erp_call_timeout_seconds: float = 120.0
    posting_lease_seconds: float = 300.0

    # Scheduled runs: how often to look for due periods (0 turns the scheduler off), and how
    # long after a period ends it is billed.
    schedule_interval_seconds: float = 300.0
    schedule_cutoff_hours: float = 48.0
    # Percentages of a CAPPED line's cap that announce billing.cap.threshold_reached.
    cap_thresholds: list[int] = [80, 90, 100]
    # Four eyes: in these legal entities ("*": every one) whoever approved an invoice may not
    # also post it. Comma-separated ids (or a JSON list); empty: off.
    four_eyes_legal_entities: Annotated[list[str], NoDecode] = []

    @field_validator("four_eyes_legal_entities", mode="before")
    @classmethod
    def _split_ids(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @model_validator(mode="after")
    def _tryton_needs_its_server(self) -> BillingSettings:
        if self.erp_adapter == "tryton":
            missing = [
                n for n in ("tryton_url", "tryton_database", "tryton_password") if not getattr(self, n)
            ]
            if missing:
                raise ValueError(f"erp_adapter=tryton needs {', '.join(missing)}")
        if self.posting_lease_seconds <= self.erp_call_timeout_seconds:
            raise ValueError("posting_lease_seconds must be longer than erp_call_timeout_seconds")
        if any(not 0 < t <= 1000 for t in self.cap_thresholds):
            raise ValueError("cap_thresholds are percentages between 1 and 1000")
        return self
