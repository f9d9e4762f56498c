"""One trace from the REST request, through gRPC and the outbox, onto the NATS message."""

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import nats
import pytest
from nats.js.errors import NotFoundError

from accrue.eventbus import Headers

pytestmark = pytest.mark.e2e

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


async def test_the_caller_trace_reaches_the_published_event(
    api: httpx.AsyncClient, firm: Callable[[str], Awaitable[dict[str, Any]]], module_nats_url: str
) -> None:
    f = await firm("-trace")
    entry = (
        await api.post(
            "/v1/time-entries",
            json={
                "consultantId": f["dev"]["id"],
                "projectId": f["project"]["id"],
                "workDate": "2026-11-05",
                "hours": "1",
            },
        )
    ).json()
    approved = await api.post(
        f"/v1/time-entries/{entry['id']}:approve",
        json={"approverId": f["boss"]["id"]},
        headers={"traceparent": TRACEPARENT},
    )
    assert approved.status_code == 200, approved.text
    nc = await nats.connect(module_nats_url)
    try:
        js = nc.jetstream()
        async with asyncio.timeout(10):
            while True:  # the relay publishes just after the commit
                try:
                    msg = await js.get_last_msg("TIME", f"time.entry.approved.{f['project']['id']}")
                    break
                except NotFoundError:
                    await asyncio.sleep(0.05)
    finally:
        await nc.close()
    assert msg.headers is not None
    assert msg.headers[Headers.TRACEPARENT].split("-")[1] == TRACE_ID
