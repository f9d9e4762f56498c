"""Every binding style of the real contracts, through HTTP to fake gRPC backends."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from conftest import Recorder


from accrue.masterdata.v1 import resources_pb2 as md_res
from accrue.timekeeping.v1 import resources_pb2 as tk_res


async def test_body_field_with_response_body_sends_the_body_as_that_field_and_replies_with_it(
    client: httpx.AsyncClient, recorder: Recorder
) -> None:
    reply = await client.post(
        "/v1/time-entries",
        json={
            "consultantId": "c-1",
            "project_id": "p-1",  # both spellings are accepted on the way in
            "workDate": "2025-01-15",
            "hours": "7.75",
            "billable": False,
            "externalRef": {"system": "psa", "id": "x-1"},
        },
    )

    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "application/json"
    sent = recorder.last("SubmitTimeEntry").request
    assert sent.time_entry.consultant_id == "c-1"
    assert sent.time_entry.project_id == "p-1"
    assert sent.time_entry.hours == "7.75"
    assert sent.time_entry.HasField("billable")
    assert sent.time_entry.billable is False
    assert sent.time_entry.external_ref.system == "psa"
    body = reply.json()
    # The reply is the response_body field itself, lowerCamelCase, absent strings as "".
    assert body["id"] == "te-1"
    assert body["status"] == "TIME_ENTRY_STATUS_PENDING_APPROVAL"
    assert body["workDate"] == "2025-01-15"
    assert body["notes"] == ""
    assert body["billable"] is False
    assert "timeEntry" not in body


async def test_body_star_batch_round_trips_every_row_in_order(
    client: httpx.AsyncClient, recorder: Recorder
) -> None:
    rows = [
        {"consultantId": f"c-{i}", "projectId": "p-1", "workDate": "2025-01-15", "hours": "1.00"}
        for i in range(50)
    ]

    reply = await client.post("/v1/time-entries:batchSubmit", json={"timeEntries": rows})

    assert reply.status_code == 200, reply.text
    sent = recorder.last("BatchSubmitTimeEntries").request
    assert [e.consultant_id for e in sent.time_entries] == [f"c-{i}" for i in range(50)]
    results = reply.json()["results"]
    assert [r["timeEntry"]["id"] for r in results] == [f"te-{i}" for i in range(50)]
    assert results[3]["timeEntry"]["consultantId"] == "c-3"


async def test_masterdata_batch_upsert_replies_with_outcomes(
    client: httpx.AsyncClient, recorder: Recorder
) -> None:
    rows = [
        {
            "code": "ACME-UK",
            "name": "Acme UK",
            "baseCurrency": "GBP",
            "externalRef": {"system": "erp", "id": "1"},
        }
    ]

    reply = await client.post("/v1/legal-entities:batchUpsert", json={"legalEntities": rows})

    assert reply.status_code == 200, reply.text
    assert recorder.last("BatchUpsertLegalEntities").request.legal_entities[0].base_currency == "GBP"
    assert reply.json()["results"][0]["outcome"] == "UPSERT_OUTCOME_CREATED"
    assert reply.json()["results"][0]["legalEntity"]["baseCurrency"] == "GBP"


async def test_create_returns_timestamps_as_rfc3339(client: httpx.AsyncClient, recorder: Recorder) -> None:
    reply = await client.post(
        "/v1/legal-entities", json={"code": "A", "name": "A Ltd", "baseCurrency": "EUR"}
    )

    assert reply.status_code == 200, reply.text
    assert reply.json()["createTime"] == "2023-11-14T22:13:20Z"
    assert reply.json()["id"] == "le-1"


async def test_get_with_path_variable_and_response_body(
    client: httpx.AsyncClient, recorder: Recorder
) -> None:
    reply = await client.get("/v1/projects/p-42")

    assert reply.status_code == 200, reply.text
    assert recorder.last("GetProject").request.id == "p-42"
    assert reply.json()["id"] == "p-42"
    assert reply.json()["status"] == "PROJECT_STATUS_ACTIVE"


async def test_path_variable_is_percent_decoded(client: httpx.AsyncClient, recorder: Recorder) -> None:
    reply = await client.get("/v1/projects/p%2042")

    assert reply.status_code == 200, reply.text
    assert recorder.last("GetProject").request.id == "p 42"


async def test_get_list_takes_filters_from_query_in_both_spellings_and_enums_by_name(
    client: httpx.AsyncClient, recorder: Recorder
) -> None:
    reply = await client.get(
        "/v1/projects",
        params={
            "status": "PROJECT_STATUS_ACTIVE",
            "customerId": "cu-1",
            "legal_entity_id": "le-1",
            "pageSize": "25",
        },
    )

    assert reply.status_code == 200, reply.text
    sent = recorder.last("ListProjects").request
    assert sent.status == md_res.PROJECT_STATUS_ACTIVE
    assert sent.customer_id == "cu-1"
    assert sent.legal_entity_id == "le-1"
    assert sent.page_size == 25
    body = reply.json()
    assert body["projects"][0]["status"] == "PROJECT_STATUS_ACTIVE"
    assert body["nextPageToken"] == ""


async def test_enum_query_parameter_accepts_its_number(client: httpx.AsyncClient, recorder: Recorder) -> None:
    reply = await client.get("/v1/time-entries", params={"status": "3", "work_date_from": "2025-01-01"})

    assert reply.status_code == 200, reply.text
    sent = recorder.last("ListTimeEntries").request
    assert sent.status == tk_res.TIME_ENTRY_STATUS_APPROVED
    assert sent.work_date_from == "2025-01-01"


async def test_path_variable_with_custom_verb_and_body_star(
    client: httpx.AsyncClient, recorder: Recorder
) -> None:
    reply = await client.post("/v1/time-entries/te-9:approve", json={"approverId": "c-7"})

    assert reply.status_code == 200, reply.text
    sent = recorder.last("ApproveTimeEntry").request
    assert sent.id == "te-9"
    assert sent.approver_id == "c-7"
    assert reply.json()["status"] == "TIME_ENTRY_STATUS_APPROVED"
    assert reply.json()["approverId"] == "c-7"


async def test_path_variable_wins_over_the_same_field_in_a_star_body(
    client: httpx.AsyncClient, recorder: Recorder
) -> None:
    reply = await client.post("/v1/time-entries/te-9:approve", json={"id": "other", "approverId": "c-7"})

    assert reply.status_code == 200, reply.text
    assert recorder.last("ApproveTimeEntry").request.id == "te-9"


async def test_empty_body_on_a_star_binding_is_an_empty_message(
    client: httpx.AsyncClient, recorder: Recorder
) -> None:
    reply = await client.post("/v1/time-entries/te-9:approve")

    assert reply.status_code == 200, reply.text
    sent = recorder.last("ApproveTimeEntry").request
    assert sent.id == "te-9"
    assert sent.approver_id == ""


async def test_collection_custom_verb_get_with_query(client: httpx.AsyncClient, recorder: Recorder) -> None:
    reply = await client.get(
        "/v1/rates:resolve",
        params={"projectId": "p-1", "consultantId": "c-1", "laborCategoryId": "lc-1", "date": "2025-01-15"},
    )

    assert reply.status_code == 200, reply.text
    sent = recorder.last("ResolveRate").request
    assert (sent.project_id, sent.consultant_id, sent.labor_category_id, sent.date) == (
        "p-1",
        "c-1",
        "lc-1",
        "2025-01-15",
    )
    body = reply.json()
    assert body["rate"] == "150.00"
    assert body["rateCardId"] == "rc-1"
    assert body["billingModel"] == "BILLING_MODEL_TIME_AND_MATERIALS"
    assert body["consultantOverride"] is True
    assert body["effectiveTo"] == ""


async def test_blank_non_string_query_values_mean_unset(
    client: httpx.AsyncClient, recorder: Recorder
) -> None:
    reply = await client.get("/v1/time-entries?status=&pageSize=&projectId=")

    assert reply.status_code == 200, reply.text
    sent = recorder.last("ListTimeEntries").request
    assert sent.status == tk_res.TIME_ENTRY_STATUS_UNSPECIFIED
    assert sent.page_size == 0
    assert sent.project_id == ""
