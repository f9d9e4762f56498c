"""The gRPC entrypoint's batch parsing: the size limit counts every row of the request."""

from collections.abc import Sequence
from typing import Any, cast

import pytest

from accrue.runtime import InvalidArgument
from accrue.services.timekeeping.domain.model import Submission
from accrue.services.timekeeping.entrypoints.grpc_api import TimekeepingServicer
from accrue.services.timekeeping.service_layer.handlers import MAX_BATCH, SubmitResult, Timekeeping
from accrue.timekeeping.v1 import resources_pb2 as tk
from accrue.timekeeping.v1 import timekeeping_service_pb2 as api

pytestmark = pytest.mark.unit


class RecordingApp:
    """Stands in for the use cases: remembers what reached submit."""

    def __init__(self) -> None:
        self.submitted: list[Sequence[Submission]] = []

    async def submit(self, submissions: Sequence[Submission]) -> list[SubmitResult]:
        self.submitted.append(submissions)
        return []


def servicer(app: RecordingApp) -> TimekeepingServicer:
    return TimekeepingServicer(cast(Timekeeping, app))


def malformed(n: int) -> api.BatchSubmitTimeEntriesRequest:
    # No consultant, project, date or hours: nothing here parses.
    return api.BatchSubmitTimeEntriesRequest(time_entries=[tk.TimeEntry(notes=str(i)) for i in range(n)])


async def test_a_batch_over_the_limit_is_refused_before_parsing_even_if_no_row_parses() -> None:
    app = RecordingApp()
    with pytest.raises(InvalidArgument) as caught:
        await servicer(app).BatchSubmitTimeEntries(malformed(MAX_BATCH + 1), cast(Any, None))
    (violation,) = caught.value.violations
    assert (violation.field, violation.code) == ("time_entries", "BATCH_TOO_LARGE")
    assert str(MAX_BATCH) in violation.message
    assert app.submitted == []


async def test_a_batch_at_the_limit_answers_every_malformed_row() -> None:
    app = RecordingApp()
    reply = await servicer(app).BatchSubmitTimeEntries(malformed(MAX_BATCH), cast(Any, None))
    assert len(reply.results) == MAX_BATCH
    assert {r.time_entry.status for r in reply.results} == {tk.TIME_ENTRY_STATUS_REJECTED}
    assert app.submitted == []
