"""The fixed routes: /healthz, /readyz, /metrics, /openapi.json and /docs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
from grpc_health.v1 import health_pb2

if TYPE_CHECKING:
    from conftest import FakeBackends, Recorder

MASTERDATA = "accrue.masterdata.v1.MasterDataService"
TIMEKEEPING = "accrue.timekeeping.v1.TimekeepingService"


async def test_healthz_is_200_without_any_backend(make_client: Any, closed_port: int) -> None:
    client = make_client(backends={MASTERDATA: f"127.0.0.1:{closed_port}"})

    reply = await client.get("/healthz")

    assert reply.status_code == 200
    assert reply.json() == {"status": "ok"}


async def test_readyz_is_200_when_every_backend_serves(client: httpx.AsyncClient) -> None:
    reply = await client.get("/readyz")

    assert reply.status_code == 200, reply.text
    assert reply.json()["backends"] == {MASTERDATA: {"status": "SERVING"}, TIMEKEEPING: {"status": "SERVING"}}


async def test_readyz_is_503_naming_the_backend_that_is_not_serving(
    client: httpx.AsyncClient, fake_backends: FakeBackends
) -> None:
    await fake_backends.health.set(TIMEKEEPING, health_pb2.HealthCheckResponse.NOT_SERVING)
    try:
        reply = await client.get("/readyz")
    finally:
        await fake_backends.health.set(TIMEKEEPING, health_pb2.HealthCheckResponse.SERVING)

    assert reply.status_code == 503
    body = reply.json()
    assert body["status"] == "not ready"
    assert body["backends"][TIMEKEEPING]["status"] == "NOT_SERVING"
    assert body["backends"][MASTERDATA]["status"] == "SERVING"


async def test_readyz_is_503_when_a_backend_is_unreachable(
    make_client: Any, fake_backends: FakeBackends, closed_port: int
) -> None:
    client = make_client(
        backends={MASTERDATA: fake_backends.address, TIMEKEEPING: f"127.0.0.1:{closed_port}"},
        readiness_timeout_seconds=2,
    )

    reply = await client.get("/readyz")

    assert reply.status_code == 503
    assert reply.json()["backends"][TIMEKEEPING]["status"] == "UNAVAILABLE"
    assert str(closed_port) not in reply.text  # internal addresses stay in the log


async def test_readyz_checks_each_backend_for_its_own_service_name(
    make_client: Any, fake_backends: FakeBackends
) -> None:
    # The fake registers health for the two services only; BillingService is unknown there.
    client = make_client(backends={"accrue.billing.v1.BillingService": fake_backends.address})

    reply = await client.get("/readyz")

    assert reply.status_code == 503
    assert reply.json()["backends"]["accrue.billing.v1.BillingService"]["status"] == "NOT_FOUND"


def _sample(exposition: str, name: str, labels: dict[str, str]) -> float | None:
    """The value of the sample with this name and (at least) these labels, if exposed."""
    for line in exposition.splitlines():
        if line.startswith(f"{name}{{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


async def test_metrics_count_requests_by_route_template_not_raw_path(
    client: httpx.AsyncClient, recorder: Recorder
) -> None:
    for entry_id in ("te-1", "te-2", "te-3"):
        await client.post(f"/v1/time-entries/{entry_id}:approve", json={"approverId": "c-1"})
    await client.get("/v1/not-a-route/123")

    reply = await client.get("/metrics")

    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain")
    text = reply.text
    route = "/v1/time-entries/{id}:approve"
    assert _sample(text, "http_requests_total", {"method": "POST", "route": route, "status": "200"}) == 3.0
    assert _sample(text, "http_request_duration_seconds_count", {"method": "POST", "route": route}) == 3.0
    assert (
        _sample(text, "http_requests_total", {"method": "GET", "route": "unmatched", "status": "404"}) == 1.0
    )
    assert "te-1" not in text
    assert "not-a-route" not in text
    assert (
        _sample(
            text,
            "grpc_client_handled_total",
            {"grpc_service": TIMEKEEPING, "grpc_method": "ApproveTimeEntry", "grpc_code": "OK"},
        )
        == 3.0
    )


async def test_metrics_label_fixed_routes_by_their_path(client: httpx.AsyncClient) -> None:
    await client.get("/healthz")

    text = (await client.get("/metrics")).text

    assert (
        _sample(text, "http_requests_total", {"method": "GET", "route": "/healthz", "status": "200"}) == 1.0
    )


async def test_docs_is_an_offline_swagger_ui_page_over_openapi_json(client: httpx.AsyncClient) -> None:
    reply = await client.get("/docs")

    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/html")
    html = reply.text
    assert 'url: "openapi.json"' in html
    assert "http://" not in html
    assert "https://" not in html
    for asset in ("docs/assets/swagger-ui-bundle.js", "docs/assets/swagger-ui.css"):
        assert asset in html
        served = await client.get(f"/{asset}")
        assert served.status_code == 200, asset
        assert len(served.content) > 10_000


async def test_openapi_json_is_served(client: httpx.AsyncClient) -> None:
    reply = await client.get("/openapi.json")

    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/json"
    assert reply.json()["openapi"] == "3.1.0"
    assert "/v1/time-entries/{id}:approve" in reply.json()["paths"]


async def test_made_up_methods_are_405_and_counted_under_one_label(client: httpx.AsyncClient) -> None:
    reply = await client.request("BREW", "/v1/projects")

    assert reply.status_code == 405
    assert reply.headers["content-type"] == "application/problem+json"
    text = (await client.get("/metrics")).text
    assert _sample(text, "http_requests_total", {"method": "OTHER", "status": "405"}) == 1.0
    assert "BREW" not in text


async def test_services_on_one_address_share_one_channel(make_client: Any, recorder: Recorder) -> None:
    from accrue.services.gateway.backends import instrumented_channel

    opened: list[str] = []

    def counting(address: str) -> Any:
        opened.append(address)
        return instrumented_channel(address)

    client = make_client(build_kwargs={"channel_factory": counting})

    assert (await client.get("/v1/projects/p-1")).status_code == 200
    assert (await client.get("/v1/time-entries")).status_code == 200
    assert (await client.get("/readyz")).status_code == 200
    assert len(opened) == 1
