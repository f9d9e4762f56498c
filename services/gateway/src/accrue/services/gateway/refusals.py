"""Requests the gateway refuses for want of a valid token, handed to the audit trail.

The gateway keeps no database, so each 401 is reported to observability's audit trail
(accrue.audit.v1.AuditTrailService/RecordRefusal), the gateway calling as itself. Reporting never
delays or changes the 401: it runs in the background, at most `rate` a second (a flood of bad
tokens must not become a flood of writes); refusals beyond that are counted, and the next report
says how many went unreported. The token is never part of a report.
"""

from __future__ import annotations

import asyncio

import grpc
from prometheus_client import Counter

from accrue.audit.v1 import audit_service_pb2 as audit_pb
from accrue.identity.internal import InternalSigner
from accrue.runtime.clock import Clock
from accrue.runtime.ratelimit import TokenBucket
from accrue.services.gateway.backends import BackendNotConfigured, Backends
from accrue.telemetry import get_logger

log = get_logger(__name__)

OBSERVABILITY = "accrue.observability.v1.ObservabilityService"
RECORD_REFUSAL = "/accrue.audit.v1.AuditTrailService/RecordRefusal"
REFUSED = Counter(
    "gateway_auth_refused_total", "Requests refused for want of a valid token, by reason.", ["reason"]
)
UNREPORTED = Counter(
    "gateway_auth_refusals_unreported_total", "Refusals over the reporting rate, not reported one by one."
)


class RefusalReporter:
    """Reports refused requests to the audit trail in the background, rate-limited."""

    def __init__(
        self,
        backends: Backends,
        signer: InternalSigner,
        clock: Clock,
        *,
        rate: float = 10.0,
        burst: int = 20,
        timeout_seconds: float = 5.0,
    ) -> None:
        self._backends = backends
        self._signer = signer
        self._bucket = TokenBucket(rate, burst, clock)
        self._timeout = timeout_seconds
        self._unreported = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def report(self, request: audit_pb.RecordRefusalRequest) -> None:
        REFUSED.labels(request.reason).inc()
        if not self._bucket.take():
            self._unreported += 1
            UNREPORTED.inc()
            return
        request.unreported_before, self._unreported = self._unreported, 0
        task = asyncio.create_task(self._send(request), name="gateway:report-refusal")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, request: audit_pb.RecordRefusalRequest) -> None:
        try:
            await self._backends.call(
                OBSERVABILITY,
                RECORD_REFUSAL,
                request,
                audit_pb.RecordRefusalResponse,
                metadata=self._signer.metadata(),
                timeout_seconds=self._timeout,
            )
        except (grpc.aio.AioRpcError, BackendNotConfigured) as err:
            # The 401 stands either way; the log and the counter still have it.
            log.warning("refusal_not_recorded", reason=request.reason, path=request.path, error=str(err))

    async def drain(self) -> None:
        """Wait for reports in flight (at shutdown, and in tests)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
