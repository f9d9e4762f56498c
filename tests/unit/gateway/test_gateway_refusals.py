"""Refusals are reported in the background, at most at the rate; the rest are counted and the
next report says how many."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from accrue.audit.v1 import audit_service_pb2 as audit_pb
from accrue.runtime.clock import FixedClock
from accrue.services.gateway.refusals import RefusalReporter
from accrue.testing.identity import gateway_signer, make_keys

pytestmark = pytest.mark.unit


class Calls:
    def __init__(self) -> None:
        self.sent: list[tuple[str, Any, Any]] = []

    async def call(self, service: str, path: str, request: Any, response_cls: Any, **kw: Any) -> Any:
        self.sent.append((path, request, kw["metadata"]))
        return response_cls()


async def test_over_the_rate_refusals_are_counted_and_the_next_report_says_how_many(tmp_path: Path) -> None:
    clock = FixedClock(dt.datetime(2027, 1, 1, tzinfo=dt.UTC))
    backends = Calls()
    signer = gateway_signer(make_keys(tmp_path), clock)
    reporter = RefusalReporter(backends, signer, clock, rate=1, burst=2)  # type: ignore[arg-type]

    for n in range(5):
        reporter.report(audit_pb.RecordRefusalRequest(reason="expired", path=f"/v1/x/{n}"))
    clock.advance(dt.timedelta(seconds=1))
    reporter.report(audit_pb.RecordRefusalRequest(reason="missing", path="/v1/y"))
    await reporter.drain()

    assert [r.path for _, r, _ in backends.sent] == ["/v1/x/0", "/v1/x/1", "/v1/y"]
    assert [r.unreported_before for _, r, _ in backends.sent] == [0, 0, 3]
    assert {p for p, _, _ in backends.sent} == {"/accrue.audit.v1.AuditTrailService/RecordRefusal"}
    # The gateway reports as itself, never with the refused token.
    assert all(dict(m)["authorization"].startswith("Bearer ") for _, _, m in backends.sent)
