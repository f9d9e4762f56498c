"""/openapi.json: a valid OpenAPI 3.1 document generated from the descriptors the router serves."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator, ValidationError
from openapi_spec_validator import validate

REF = "#/components/schemas/"


@pytest.fixture
async def document(client: httpx.AsyncClient) -> dict[str, Any]:
    reply = await client.get("/openapi.json")
    assert reply.status_code == 200
    doc: dict[str, Any] = reply.json()
    return doc


def schema(doc: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = doc["components"]["schemas"][name]
    return found


def test_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"] == "3.1.0"
    validate(document)  # raises on any violation of the OpenAPI 3.1 schema


def test_every_binding_is_an_operation_named_after_its_rpc(document: dict[str, Any]) -> None:
    paths = document["paths"]
    assert paths["/v1/time-entries/{id}:approve"]["post"]["operationId"] == "ApproveTimeEntry"
    assert paths["/v1/time-entries:batchSubmit"]["post"]["operationId"] == "BatchSubmitTimeEntries"
    assert paths["/v1/rates:resolve"]["get"]["operationId"] == "ResolveRate"
    assert set(paths["/v1/time-entries"]) == {"get", "post"}
    ids = [op["operationId"] for item in paths.values() for op in item.values()]
    assert len(ids) == len(set(ids))
    assert "/healthz" not in paths


def test_summary_and_description_come_from_proto_comments(document: dict[str, Any]) -> None:
    submit = document["paths"]["/v1/time-entries"]["post"]

    assert submit["summary"] == "Submits one time entry."
    assert submit["description"].startswith("Submits one time entry. The reply carries its status")
    assert submit["tags"] == ["TimekeepingService"]
    tags = {t["name"]: t["description"] for t in document["tags"]}
    assert tags["TimekeepingService"].startswith("TimekeepingService captures time")


def test_path_and_query_parameters_have_schemas(document: dict[str, Any]) -> None:
    approve = document["paths"]["/v1/time-entries/{id}:approve"]["post"]
    listing = document["paths"]["/v1/time-entries"]["get"]
    resolve = document["paths"]["/v1/rates:resolve"]["get"]

    path_params = [p for p in approve["parameters"] if p["in"] == "path"]
    assert path_params == [
        {
            "name": "id",
            "in": "path",
            "required": True,
            "schema": {"type": "string"},
            "description": "The entry's id.",
        }
    ]
    query = {p["name"]: p for p in listing["parameters"] if p["in"] == "query"}
    assert set(query) == {
        "pageSize",
        "pageToken",
        "consultantId",
        "projectId",
        "status",
        "workDateFrom",
        "workDateTo",
    }
    assert query["status"]["schema"] == {"$ref": REF + "accrue.timekeeping.v1.TimeEntryStatus"}
    assert query["pageSize"]["schema"] == {"type": "integer", "format": "int32"}
    assert query["status"]["description"] == "Only entries in this status."
    resolve_query = {p["name"]: p["required"] for p in resolve["parameters"] if p["in"] == "query"}
    assert resolve_query == {"projectId": True, "consultantId": True, "laborCategoryId": True, "date": True}


def test_writes_document_the_idempotency_key_header(document: dict[str, Any]) -> None:
    submit = document["paths"]["/v1/time-entries"]["post"]
    listing = document["paths"]["/v1/time-entries"]["get"]

    assert "Idempotency-Key" in [p["name"] for p in submit["parameters"] if p["in"] == "header"]
    assert "Idempotency-Key" not in [p["name"] for p in listing["parameters"]]


def test_request_and_response_bodies_respect_body_and_response_body(document: dict[str, Any]) -> None:
    paths = document["paths"]
    submit = paths["/v1/time-entries"]["post"]
    batch = paths["/v1/time-entries:batchSubmit"]["post"]
    approve = paths["/v1/time-entries/{id}:approve"]["post"]
    listing = paths["/v1/time-entries"]["get"]

    def body(op: dict[str, Any]) -> Any:
        return op["requestBody"]["content"]["application/json"]["schema"]

    def ok(op: dict[str, Any]) -> Any:
        return op["responses"]["200"]["content"]["application/json"]["schema"]

    # body: "time_entry", response_body: "time_entry"
    assert body(submit) == {"$ref": REF + "accrue.timekeeping.v1.TimeEntry"}
    assert ok(submit) == {"$ref": REF + "accrue.timekeeping.v1.TimeEntry"}
    assert submit["requestBody"]["required"] is True
    # body: "*", whole response
    assert body(batch) == {"$ref": REF + "accrue.timekeeping.v1.BatchSubmitTimeEntriesRequest"}
    assert ok(batch) == {"$ref": REF + "accrue.timekeeping.v1.BatchSubmitTimeEntriesResponse"}
    # body: "*" with a path variable: the body is the request without the path field
    assert set(body(approve)["properties"]) == {"approverId"}
    # The approver is the caller (from the token): approverId is optional, checked when given.
    assert "required" not in body(approve)
    assert "requestBody" not in listing
    assert ok(listing) == {"$ref": REF + "accrue.timekeeping.v1.ListTimeEntriesResponse"}


def test_errors_are_problem_details(document: dict[str, Any]) -> None:
    responses = document["paths"]["/v1/time-entries"]["post"]["responses"]

    assert responses["4XX"] == {"$ref": "#/components/responses/Problem"}
    assert responses["5XX"] == {"$ref": "#/components/responses/Problem"}
    problem = document["components"]["responses"]["Problem"]["content"]["application/problem+json"]["schema"]
    assert problem == {"$ref": REF + "Problem"}
    properties = schema(document, "Problem")["properties"]
    assert {
        "type",
        "title",
        "status",
        "detail",
        "instance",
        "code",
        "reason",
        "requestId",
        "violations",
    } <= set(properties)


def test_message_schemas_follow_proto3_json_and_field_behavior(document: dict[str, Any]) -> None:
    entry = schema(document, "accrue.timekeeping.v1.TimeEntry")
    props = entry["properties"]

    assert entry["description"] == "TimeEntry is hours a consultant worked on a project on one day."
    assert props["hours"] == {
        "type": "string",
        "description": 'Hours as a decimal string in quarter hours, e.g. "7.75".',
    }
    assert props["createTime"]["type"] == "string"
    assert props["createTime"]["format"] == "date-time"
    assert props["id"]["readOnly"] is True
    assert "readOnly" not in props["consultantId"]
    assert props["status"]["$ref"] == REF + "accrue.timekeeping.v1.TimeEntryStatus"
    assert props["violations"]["type"] == "array"
    assert props["violations"]["items"] == {"$ref": REF + "accrue.type.v1.Violation"}
    assert props["billable"]["type"] == "boolean"
    assert set(entry["required"]) == {"consultantId", "projectId", "workDate", "hours"}
    assert "id" not in entry["required"]
    assert "externalRef" in props  # lowerCamelCase names
    assert "external_ref" not in props


def test_enums_are_string_enums_with_value_comments(document: dict[str, Any]) -> None:
    status = schema(document, "accrue.masterdata.v1.ProjectStatus")

    assert status["type"] == "string"
    assert status["enum"][:3] == [
        "PROJECT_STATUS_UNSPECIFIED",
        "PROJECT_STATUS_PLANNED",
        "PROJECT_STATUS_ACTIVE",
    ]
    assert "`PROJECT_STATUS_ACTIVE`: Running; time can be recorded." in status["description"]


def test_every_reference_resolves(document: dict[str, Any]) -> None:
    refs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "$ref" in node:
                refs.append(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)
    names = set(document["components"]["schemas"])
    missing = {r for r in refs if r.startswith(REF) and r.removeprefix(REF) not in names}
    assert refs
    assert missing == set()


async def test_a_real_reply_validates_against_its_documented_schema(
    client: httpx.AsyncClient, document: dict[str, Any], recorder: Any
) -> None:
    reply = await client.post(
        "/v1/time-entries:batchSubmit",
        json={
            "timeEntries": [{"consultantId": "c", "projectId": "p", "workDate": "2025-01-01", "hours": "1"}]
        },
    )
    problem = await client.get("/v1/projects?colour=red")

    components = {"components": document["components"]}

    def check(instance: Any, name: str) -> None:
        Draft202012Validator({"$ref": REF + name, **components}).validate(instance)

    check(reply.json(), "accrue.timekeeping.v1.BatchSubmitTimeEntriesResponse")
    check(problem.json(), "Problem")
    with pytest.raises(ValidationError, match="is not of type"):
        check(
            {"results": [{"timeEntry": {"hours": 1}}]}, "accrue.timekeeping.v1.BatchSubmitTimeEntriesResponse"
        )
