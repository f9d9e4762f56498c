"""Bad input through the gateway: 400 problem+json naming the field, and nothing written."""

import uuid

import httpx
import pytest

from accrue.testing.rest import problem

pytestmark = pytest.mark.e2e


async def count(api: httpx.AsyncClient, path: str, collection: str, **filters: str) -> int:
    response = await api.get(path, params={"pageSize": 1000, **filters})
    assert response.status_code == 200, response.text
    return len(response.json()[collection])


async def test_malformed_json_wrong_types_and_unknown_fields_are_400(api: httpx.AsyncClient) -> None:
    before = await count(api, "/v1/legal-entities", "legalEntities")
    malformed = await api.post(
        "/v1/legal-entities", content=b'{"code": "X", "name": ', headers={"content-type": "application/json"}
    )
    problem(malformed, 400)
    wrong_type = await api.post("/v1/legal-entities", json={"code": 12, "name": "X", "baseCurrency": "EUR"})
    assert "code" in problem(wrong_type, 400)["detail"]
    unknown = await api.post(
        "/v1/legal-entities", json={"code": "X", "name": "X", "baseCurrency": "EUR", "colour": 1}
    )
    assert "colour" in problem(unknown, 400)["detail"]
    assert await count(api, "/v1/legal-entities", "legalEntities") == before


async def test_non_decimal_amounts_and_impossible_dates_name_their_fields(api: httpx.AsyncClient) -> None:
    lc = (await api.post("/v1/labor-categories", json={"code": "BAD-LC", "name": "x"})).json()
    before = await count(api, "/v1/rate-cards", "rateCards")
    response = await api.post(
        "/v1/rate-cards",
        json={
            "code": "BAD",
            "currency": "EUR",
            "rates": [{"laborCategoryId": lc["id"], "rate": "12,50", "effectiveFrom": "2026-02-30"}],
        },
    )
    body = problem(response, 400)
    fields = {v["field"]: v["code"] for v in body["violations"]}
    assert fields == {"rates[0].rate": "INVALID_DECIMAL", "rates[0].effectiveFrom": "INVALID_DATE"}
    assert await count(api, "/v1/rate-cards", "rateCards") == before


async def test_malformed_time_entries_are_refused_without_being_stored(api: httpx.AsyncClient) -> None:
    # Ids nobody else uses on the shared stack: a page of all entries caps at 1,000 and would
    # not show a write, entries filtered by this consultant would.
    consultant = f"bad-input-{uuid.uuid4()}"
    assert await count(api, "/v1/time-entries", "timeEntries", consultantId=consultant) == 0
    response = await api.post(
        "/v1/time-entries",
        json={"consultantId": consultant, "projectId": "p", "workDate": "2026-13-01", "hours": "seven"},
    )
    fields = {v["field"] for v in problem(response, 400)["violations"]}
    assert fields == {"workDate", "hours"}
    batch = await api.post(
        "/v1/time-entries:batchSubmit",
        json={"timeEntries": [{"consultantId": consultant, "projectId": "p", "workDate": "2026-11-02"}]},
    )
    assert batch.status_code == 200, batch.text
    (row,) = batch.json()["results"]
    assert (row["timeEntry"].get("id", ""), row["timeEntry"]["status"]) == ("", "TIME_ENTRY_STATUS_REJECTED")
    assert await count(api, "/v1/time-entries", "timeEntries", consultantId=consultant) == 0
    # The count does see a write: a well-formed entry for that unknown consultant is stored
    # (REJECTED, with its reasons).
    stored = await api.post(
        "/v1/time-entries",
        json={"consultantId": consultant, "projectId": "p", "workDate": "2026-11-02", "hours": "1"},
    )
    assert stored.status_code == 200, stored.text
    assert await count(api, "/v1/time-entries", "timeEntries", consultantId=consultant) == 1


async def test_unknown_paths_are_404_and_wrong_methods_405(api: httpx.AsyncClient) -> None:
    problem(await api.get("/v1/nothing-here"), 404)
    wrong = await api.delete("/v1/legal-entities")
    problem(wrong, 405)
    assert "POST" in wrong.headers["allow"]
    problem(await api.get("/v1/projects/00000000-0000-0000-0000-000000000000"), 404)


async def test_operations_endpoints_answer(api: httpx.AsyncClient) -> None:
    assert (await api.get("/healthz")).status_code == 200
    assert (await api.get("/readyz")).status_code == 200
    spec = (await api.get("/openapi.json")).json()
    assert spec["openapi"].startswith("3.1")
    assert "/v1/time-entries/{id}:approve" in spec["paths"]
    assert (await api.get("/docs")).status_code == 200
    assert "x-request-id" in (await api.get("/v1/kpis")).headers
