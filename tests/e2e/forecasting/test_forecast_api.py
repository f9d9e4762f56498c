"""The forecast through REST on the running stack: approved time reaches the live forecast over
JetStream, versions are taken and compared, bad filters are problem+json naming the field."""

import asyncio
import calendar
import datetime as dt
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest

from accrue.runtime.clock import local_date
from accrue.testing.rest import approved_time, ok

pytestmark = pytest.mark.e2e

Firm = Callable[[str], Awaitable[dict[str, Any]]]


async def november(api: httpx.AsyncClient, project_id: str, **expected: str) -> dict[str, Any]:
    """Wait until the project's November row shows the expected figures."""
    params = {"projectId": project_id, "monthFrom": "2026-11", "monthTo": "2026-11"}
    seen: dict[str, Any] = {}
    try:
        async with asyncio.timeout(20):
            while True:
                forecast = await ok(api.get("/v1/forecast", params=params))
                rows = [r for r in forecast.get("rows", []) if r.get("projectId") == project_id]
                if rows:
                    seen = rows[0]
                    if all(seen.get(k, seen.get("amounts", {}).get(k)) == v for k, v in expected.items()):
                        return forecast
                await asyncio.sleep(0.2)
    except TimeoutError:
        raise AssertionError(f"November: expected {expected}, last seen {seen}") from None


async def test_approved_time_shows_in_the_forecast_and_versions_compare(
    api: httpx.AsyncClient, firm: Firm
) -> None:
    f = await firm("-FC1")
    project = f["project"]["id"]
    await approved_time(api, f, "2026-11-02", "7.5")
    forecast = await november(api, project, approvedHours="7.50", wip="1125.00")
    row = forecast["rows"][0]
    assert (row["currency"], row["baseAmounts"]["currency"], row["baseAmounts"]["wip"]) == (
        "GBP",
        "GBP",
        "1125.00",
    )
    (summary,) = forecast["projects"]
    assert summary["approvedHours"] == "7.50"

    first = await ok(api.post("/v1/forecast-versions", json={"name": "before more time"}))
    assert first["kind"] == "FORECAST_VERSION_KIND_ON_DEMAND"
    assert set(first["watermark"]) == {"TIME", "BILLING", "MD"}
    await approved_time(api, f, "2026-11-03", "8")
    await november(api, project, approvedHours="15.50", wip="2325.00")
    second = await ok(api.post("/v1/forecast-versions", json={}))
    assert second["previousVersionId"] == first["id"]

    compared = await ok(
        api.get(f"/v1/forecast-versions/{first['id']}:compare", params={"otherId": second["id"]})
    )
    changed = {r["month"]: r for r in compared["rows"] if r.get("projectId") == project}
    nov = changed["2026-11"]
    assert (nov["baseHours"], nov["otherHours"]) == (
        _hours(first, project, "2026-11"),
        _hours(second, project, "2026-11"),
    )
    # The split adds up to the change; the extra time is volume at the month's rate.
    parts = [Decimal(nov.get(k, "0")) for k in ("volume", "rate", "timing")]
    assert abs(sum(parts) - Decimal(nov["change"])) <= Decimal("0.01")

    listed = await ok(api.get("/v1/forecast-versions", params={"pageSize": 1}))
    assert [v["id"] for v in listed["forecastVersions"]] == [second["id"]]
    got = await ok(api.get(f"/v1/forecast-versions/{first['id']}"))
    assert got["forecast"] == first["forecast"]


def _hours(version: dict[str, Any], project: str, month: str) -> str:
    row = next(
        r for r in version["forecast"]["rows"] if r.get("projectId") == project and r["month"] == month
    )
    return str(Decimal(row["approvedHours"]) + Decimal(row.get("scheduledHours", "0")))


@pytest.mark.dates
async def test_utilization_and_bad_filters(api: httpx.AsyncClient, firm: Firm, instant: dt.datetime) -> None:
    f = await firm("-FC2")
    # Next month in the legal entity's zone (the stack's clock started at the pinned instant): all
    # of it still to come, so all of it is scheduled.
    this_month = local_date(instant, f["le"].get("timeZone", "")).replace(day=1)
    first = (this_month + dt.timedelta(days=31)).replace(day=1)
    month = f"{first:%Y-%m}"
    params = {"consultantId": f["dev"]["id"], "monthFrom": month, "monthTo": month}
    async with asyncio.timeout(20):
        while True:
            rows = (await ok(api.get("/v1/utilization", params=params))).get("rows", [])
            if rows and rows[0].get("scheduledHours") not in (None, "0.00"):
                break
            await asyncio.sleep(0.2)
    # The month's weekdays x 8 h; the assignment is 100 % and billable.
    days = calendar.monthrange(first.year, first.month)[1]
    weekdays = sum(1 for n in range(days) if (first + dt.timedelta(days=n)).weekday() < 5)
    hours = f"{8 * weekdays}.00"
    assert (rows[0]["capacityHours"], rows[0]["scheduledBillableHours"]) == (hours, hours)
    assert rows[0]["utilizationForecast"] == "1.0000"

    bad = await api.get("/v1/forecast", params={"monthFrom": "2026-13"})
    assert bad.status_code == 400
    assert bad.headers["content-type"].startswith("application/problem+json")
    assert "month" in bad.text.lower()
    missing = await api.get("/v1/forecast-versions/no-such-version")
    assert missing.status_code == 404
