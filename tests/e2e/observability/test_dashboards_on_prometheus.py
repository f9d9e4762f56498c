"""Proof on a real Prometheus: after the thin slice, every panel has data and every alert rule loads.

Debian's `prometheus` scrapes the running stack (free ports) every second, with the alert rules
of deploy/prometheus. The slice goes from master data to an ERP-confirmed invoice and a forecast
version (forecasting publishes it on FORECAST); a poison message, published by hand, is what
dead letters are for; a reconciliation runs.
"""

import asyncio
import datetime as dt
import json
import math
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
import yaml

from accrue.embedded import EmbeddedPrometheus, find_prometheus
from accrue.testing.rest import ok
from accrue.testing.stack import Stack

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        find_prometheus() is None,
        reason="prometheus not installed: `apt-get install prometheus` (CI installs it via .ci/run)",
    ),
]

ROOT = Path(__file__).resolve().parents[3]
RULES = sorted((ROOT / "deploy" / "prometheus" / "rules").glob("*.rules.yml"))
DASHBOARDS = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
FINANCE = {"actorId": "finance-lead"}
Firm = Callable[[str], Awaitable[dict[str, Any]]]


@pytest.fixture(scope="module")
def prometheus(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPrometheus]:
    assert stack.ports is not None
    with EmbeddedPrometheus(
        tmp_path_factory.mktemp("prometheus"),
        stack.ports,
        rule_files=RULES,
        scrape_interval="1s",
        evaluation_interval="1s",
    ) as running:
        yield running


@pytest.fixture
async def prom(prometheus: EmbeddedPrometheus) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=prometheus.url, timeout=10) as client:
        yield client


async def thin_slice(api: httpx.AsyncClient, f: dict[str, Any]) -> None:
    """Two entries approved, billed, approved and confirmed by the (file) ERP; one left unbilled."""
    ids = []
    for day, hours in (("2026-11-09", "6"), ("2026-11-10", "2"), ("2026-11-11", "3")):
        entry = await ok(
            api.post(
                "/v1/time-entries",
                json={
                    "consultantId": f["dev"]["id"],
                    "projectId": f["project"]["id"],
                    "workDate": day,
                    "hours": hours,
                },
            )
        )
        await ok(api.post(f"/v1/time-entries/{entry['id']}:approve", json={"approverId": f["boss"]["id"]}))
        ids.append(entry["id"])
    body = {"periodStart": "2026-11-01", "periodEnd": "2026-11-10", "legalEntityId": f["le"]["id"]}
    async with asyncio.timeout(30):
        while True:
            run = await ok(api.post("/v1/billing-runs", json=body))
            if run["invoices"]:
                (draft,) = run["invoices"]
                break
            await asyncio.sleep(0.2)
    await ok(api.post(f"/v1/invoices/{draft['id']}:approve", json=FINANCE))
    await ok(api.post(f"/v1/invoices/{draft['id']}:post", json=FINANCE))
    async with asyncio.timeout(30):
        while (await ok(api.get(f"/v1/invoices/{draft['id']}")))["status"] != "INVOICE_STATUS_POSTED":  # noqa: ASYNC110
            await asyncio.sleep(0.2)


async def publish_poison_message(nats_url: str, at: dt.datetime) -> None:
    """A body that does not decode: consumers of time.entry.approved dead-letter it at once."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await js.publish(
            f"time.entry.approved.poison-{uuid.uuid4().hex[:6]}",
            b"\xff\xff not a protobuf",
            headers=_headers("time.entry.approved", "accrue.events.v1.TimeEntryApproved", at),
        )
    finally:
        await nc.close()


def _headers(event_type: str, schema: str, at: dt.datetime) -> dict[str, str]:
    return {
        "Nats-Msg-Id": str(uuid.uuid4()),
        "Accrue-Event-Type": event_type,
        "Accrue-Schema": schema,
        "Accrue-Occurred-At": at.isoformat(),
    }


def panel_queries() -> list[tuple[str, str, str]]:
    """(dashboard, panel, expr) for every target of every panel of every dashboard."""
    found = []
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel["targets"]:
                found.append((board["uid"], panel["title"], target["expr"]))
    return found


def has_data(result: list[dict[str, Any]]) -> bool:
    return any(not math.isnan(float(series["value"][1])) for series in result)


async def test_every_panel_has_data_and_every_rule_loads(
    api: httpx.AsyncClient,
    firm: Firm,
    stack: Stack,
    module_nats_url: str,
    prom: httpx.AsyncClient,
    instant: dt.datetime,
) -> None:
    # Two rounds: a series is born with its first observation, and rate() cannot see that
    # first step; in the second round every series exists and only grows, as in production.
    for round_ in ("-prom-1", "-prom-2"):
        f = await firm(round_)
        # Legal entities exist long before their first invoice; let Prometheus see the entity's
        # series at zero (as it would), so rate() sees the slice's observations as increases.
        le = f["le"]["id"]
        async with asyncio.timeout(30):
            query = f'accrue_invoice_lag_seconds_count{{legal_entity="{le}"}}'
            while len((await ok(prom.get("/api/v1/query", params={"query": query})))["data"]["result"]) < 2:  # noqa: ASYNC110
                await asyncio.sleep(0.5)
        await thin_slice(api, f)
        # A forecast version from the forecasting service, published on FORECAST.
        await ok(api.post("/v1/forecast-versions", json={"name": f"proof {round_}"}))
        await asyncio.sleep(3)  # a few scrapes between the rounds
    await publish_poison_message(module_nats_url, instant)
    await ok(api.get("/v1/reconciliation", params={"periodStart": "2026-11-01", "periodEnd": "2026-11-30"}))

    queries = panel_queries()
    assert len(queries) > 30
    missing: dict[tuple[str, str, str], Any] = {}
    try:
        # Observability recomputes its gauges every 10 s; Prometheus scrapes every second.
        async with asyncio.timeout(90):
            while True:
                missing = {}
                for q in queries:
                    answer = await ok(prom.get("/api/v1/query", params={"query": q[2]}))
                    if not has_data(answer["data"]["result"]):
                        missing[q] = answer["data"]["result"]
                if not missing:
                    break
                await asyncio.sleep(2)
    except TimeoutError:
        pass
    assert not missing, "panels without data:\n" + "\n".join(
        f"{d} / {p}: {e} -> {r}" for (d, p, e), r in missing.items()
    )

    # Every alert rule of deploy/prometheus is loaded and evaluates without error.
    expected = {
        rule["alert"]
        for path in RULES
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
    }
    rules = (await ok(prom.get("/api/v1/rules")))["data"]["groups"]
    loaded = {r["name"]: r for g in rules for r in g["rules"]}
    assert set(loaded) == expected
    assert {name: r["health"] for name, r in loaded.items() if r["health"] != "ok"} == {}
    # The poison message is a dead letter, and the alert for it goes off (its `for: 1m` is too
    # long to wait here, so pending is the proof that the rule sees it; the gauge behind it is
    # recomputed every 10 s).
    async with asyncio.timeout(30):
        while loaded["AccrueDeadLettersPresent"]["state"] not in ("pending", "firing"):
            await asyncio.sleep(1)
            rules = (await ok(prom.get("/api/v1/rules")))["data"]["groups"]
            loaded = {r["name"]: r for g in rules for r in g["rules"]}
