"""What travels from HTTP to gRPC besides the request: idempotency key, request id, trace context."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import httpx
import pytest

if TYPE_CHECKING:
    from conftest import Recorder


ENTRY = {"consultantId": "c-1", "projectId": "p-1", "workDate": "2025-01-15", "hours": "7.75"}


async def test_idempotency_key_is_forwarded_on_writes(client: httpx.AsyncClient, recorder: Recorder) -> None:
    reply = await client.post("/v1/time-entries", json=ENTRY, headers={"Idempotency-Key": "submit-42"})

    assert reply.status_code == 200, reply.text
    assert recorder.last("SubmitTimeEntry").metadata["idempotency-key"] == "submit-42"


async def test_idempotency_key_is_not_forwarded_on_reads(
    client: httpx.AsyncClient, recorder: Recorder
) -> None:
    reply = await client.get("/v1/projects/p-1", headers={"Idempotency-Key": "read-1"})

    assert reply.status_code == 200, reply.text
    assert "idempotency-key" not in recorder.last("GetProject").metadata


async def test_write_without_a_key_sends_none(client: httpx.AsyncClient, recorder: Recorder) -> None:
    await client.post("/v1/time-entries", json=ENTRY)

    assert "idempotency-key" not in recorder.last("SubmitTimeEntry").metadata


async def test_incoming_request_id_is_forwarded_and_echoed(
    client: httpx.AsyncClient, recorder: Recorder
) -> None:
    reply = await client.get("/v1/projects/p-1", headers={"X-Request-Id": "req-abc.123"})

    assert reply.headers["x-request-id"] == "req-abc.123"
    assert recorder.last("GetProject").metadata["x-request-id"] == "req-abc.123"


@pytest.mark.parametrize("incoming", [None, "", "has spaces", "x" * 200, "<script>"])
async def test_missing_or_unusable_request_id_is_replaced_by_a_uuid(
    client: httpx.AsyncClient, recorder: Recorder, incoming: str | None
) -> None:
    headers = {"X-Request-Id": incoming} if incoming is not None else {}

    reply = await client.get("/v1/projects/p-1", headers=headers)

    assigned = reply.headers["x-request-id"]
    assert assigned != incoming
    assert str(uuid.UUID(assigned)) == assigned
    assert recorder.last("GetProject").metadata["x-request-id"] == assigned


async def test_each_request_gets_its_own_id(client: httpx.AsyncClient, recorder: Recorder) -> None:
    first = await client.get("/healthz")
    second = await client.get("/healthz")

    assert first.headers["x-request-id"] != second.headers["x-request-id"]


async def test_request_id_is_in_problem_bodies(client: httpx.AsyncClient) -> None:
    reply = await client.get("/v1/nowhere", headers={"X-Request-Id": "trace-me"})

    assert reply.status_code == 404
    assert reply.headers["x-request-id"] == "trace-me"
    assert reply.json()["requestId"] == "trace-me"


async def test_trace_context_reaches_the_backend_in_the_same_trace(
    client: httpx.AsyncClient, recorder: Recorder
) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    parent_span = "00f067aa0ba902b7"

    reply = await client.get("/v1/projects/p-1", headers={"traceparent": f"00-{trace_id}-{parent_span}-01"})

    assert reply.status_code == 200, reply.text
    traceparent = recorder.last("GetProject").metadata["traceparent"]
    version, seen_trace, seen_span, flags = traceparent.split("-")
    assert (version, seen_trace, flags) == ("00", trace_id, "01")
    # The gateway's own spans sit between the caller and the backend.
    assert seen_span != parent_span


async def test_without_incoming_trace_a_new_trace_starts(
    client: httpx.AsyncClient, recorder: Recorder
) -> None:
    await client.get("/v1/projects/p-1")
    await client.get("/v1/projects/p-2")

    traces = [c.metadata["traceparent"].split("-")[1] for c in recorder.calls]
    assert len(traces) == 2
    assert traces[0] != traces[1]
    assert all(t != "0" * 32 for t in traces)
