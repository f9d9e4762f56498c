"""End-to-end helpers: a REST client on the running stack and the seed firm built through it."""

import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from accrue.runtime.clock import clock_for
from accrue.testing.identity import ActingAsNamedAuth
from accrue.testing.stack import Stack


@pytest.fixture
async def api(stack: Stack, instant: dt.datetime) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on the gateway, acting as whoever each request names (accrue.testing.identity)."""
    auth = ActingAsNamedAuth(stack.tokens(clock_for(instant)))
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30, auth=auth) as client:
        yield client


async def post(api: httpx.AsyncClient, path: str, body: dict[str, Any], **kw: Any) -> dict[str, Any]:
    """POST and insist on success, showing the problem document if there is one."""
    response = await api.post(path, json=body, **kw)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def build_firm(api: httpx.AsyncClient, suffix: str) -> dict[str, Any]:
    """The thin slice's master data, created through the public REST API."""
    le = await post(
        api, "/v1/legal-entities", {"code": f"UK{suffix}", "name": "Acme UK", "baseCurrency": "GBP"}
    )
    cu = await post(
        api,
        "/v1/customers",
        {"code": f"GLOBEX{suffix}", "name": "Globex", "legalEntityId": le["id"], "currency": "GBP"},
    )
    lc = await post(api, "/v1/labor-categories", {"code": f"SC{suffix}", "name": "Senior Consultant"})
    boss = await post(
        api,
        "/v1/consultants",
        {
            "code": f"E1{suffix}",
            "name": "Morgan Manager",
            "legalEntityId": le["id"],
            "laborCategoryId": lc["id"],
            "activeFrom": "2020-01-01",
            "weeklyCapacityHours": "40",
        },
    )
    dev = await post(
        api,
        "/v1/consultants",
        {
            "code": f"E2{suffix}",
            "name": "Dana Developer",
            "legalEntityId": le["id"],
            "laborCategoryId": lc["id"],
            "managerId": boss["id"],
            "activeFrom": "2020-01-01",
            "weeklyCapacityHours": "40",
        },
    )
    project = await post(
        api,
        "/v1/projects",
        {
            "code": f"P1{suffix}",
            "name": "Platform rebuild",
            "customerId": cu["id"],
            "legalEntityId": le["id"],
            "managerId": boss["id"],
            "status": "PROJECT_STATUS_ACTIVE",
            "startDate": "2026-01-01",
        },
    )
    card = await post(
        api,
        "/v1/rate-cards",
        {
            "code": f"RC{suffix}",
            "currency": "GBP",
            "rates": [{"laborCategoryId": lc["id"], "rate": "150.00", "effectiveFrom": "2026-01-01"}],
        },
    )
    contract = await post(
        api,
        "/v1/contracts",
        {
            "code": f"K1{suffix}",
            "customerId": cu["id"],
            "currency": "GBP",
            "lines": [
                {
                    "projectId": project["id"],
                    "billingModel": "BILLING_MODEL_TIME_AND_MATERIALS",
                    "rateCardId": card["id"],
                    "billingPeriod": "BILLING_PERIOD_MONTHLY",
                }
            ],
        },
    )
    assignment = await post(
        api,
        "/v1/assignments",
        {
            "projectId": project["id"],
            "consultantId": dev["id"],
            "laborCategoryId": lc["id"],
            "startDate": "2026-01-01",
            "allocationPercent": "100",
        },
    )
    return {
        "le": le,
        "cu": cu,
        "lc": lc,
        "boss": boss,
        "dev": dev,
        "project": project,
        "card": card,
        "contract": contract,
        "assignment": assignment,
    }


@pytest.fixture
def firm(api: httpx.AsyncClient) -> Callable[[str], Awaitable[dict[str, Any]]]:
    """firm(suffix) builds the seed firm; the suffix keeps codes unique within the shared stack."""

    async def _firm(suffix: str) -> dict[str, Any]:
        return await build_firm(api, suffix)

    return _firm
