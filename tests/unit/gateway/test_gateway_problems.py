"""Errors as application/problem+json: backend statuses, violations, and the gateway's own 4xx."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc
import httpx
import pytest
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

if TYPE_CHECKING:
    from conftest import Recorder

MASTERDATA = "accrue.masterdata.v1.MasterDataService"


ENTRY = {"consultantId": "c-1", "projectId": "p-1", "workDate": "2025-01-15", "hours": "7.75"}


def rich_status(
    code: int, message: str, violations: tuple[tuple[str, str, str], ...] = (), reason: str = ""
) -> status_pb2.Status:
    status = status_pb2.Status(code=code, message=message)
    if violations:
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=f, reason=r, description=d)
                for f, r, d in violations
            ]
        )
        packed = any_pb2.Any()
        packed.Pack(bad)
        status.details.append(packed)
    if reason:
        info = any_pb2.Any()
        info.Pack(error_details_pb2.ErrorInfo(reason=reason, domain="accrue"))
        status.details.append(info)
    return status


def assert_problem(reply: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = reply.json()
    assert body["type"] == "about:blank"
    assert body["status"] == status
    assert body["code"] == code
    assert body["requestId"] == reply.headers["x-request-id"]
    assert body["instance"] == reply.request.url.path
    assert isinstance(body["violations"], list)
    return body


async def test_backend_violations_are_renamed_to_the_json_fields_the_client_sent(
    client: httpx.AsyncClient, recorder: Recorder
) -> None:
    recorder.fail["SubmitTimeEntry"] = rich_status(
        code_pb2.INVALID_ARGUMENT,
        "The time entry is invalid.",
        (
            ("time_entry.hours", "HOURS_NOT_QUARTER", "Hours must be in quarter hours."),
            ("time_entry.external_ref.system", "REQUIRED", "The system is required."),
            ("time_entry", "DUPLICATE", "The entry exists."),
            ("work_date", "IN_FUTURE", "Too far ahead."),
        ),
    )

    reply = await client.post("/v1/time-entries", json=ENTRY)

    body = assert_problem(reply, 400, "INVALID_ARGUMENT")
    assert body["title"] == "Bad Request"
    assert body["detail"] == "The time entry is invalid."
    assert body["violations"] == [
        {"field": "hours", "code": "HOURS_NOT_QUARTER", "message": "Hours must be in quarter hours."},
        {"field": "externalRef.system", "code": "REQUIRED", "message": "The system is required."},
        {"field": "", "code": "DUPLICATE", "message": "The entry exists."},
        {"field": "workDate", "code": "IN_FUTURE", "message": "Too far ahead."},
    ]


async def test_violation_in_a_star_body_keeps_its_path_with_index_in_camel_case(
    client: httpx.AsyncClient, recorder: Recorder
) -> None:
    recorder.fail["BatchSubmitTimeEntries"] = rich_status(
        code_pb2.INVALID_ARGUMENT,
        "Too many.",
        (("time_entries[3].labor_category_id", "UNKNOWN", "No such role."),),
    )

    reply = await client.post("/v1/time-entries:batchSubmit", json={"timeEntries": [ENTRY]})

    body = assert_problem(reply, 400, "INVALID_ARGUMENT")
    assert body["violations"][0]["field"] == "timeEntries[3].laborCategoryId"


async def test_masterdata_violation_base_currency_becomes_camel_case(
    client: httpx.AsyncClient, recorder: Recorder
) -> None:
    recorder.fail["CreateLegalEntity"] = rich_status(
        code_pb2.INVALID_ARGUMENT,
        "Invalid legal entity.",
        (("legal_entity.base_currency", "UNKNOWN_CURRENCY", "XXX is not an ISO 4217 code."),),
    )

    reply = await client.post("/v1/legal-entities", json={"code": "A", "name": "A", "baseCurrency": "XXX"})

    body = assert_problem(reply, 400, "INVALID_ARGUMENT")
    assert body["violations"] == [
        {"field": "baseCurrency", "code": "UNKNOWN_CURRENCY", "message": "XXX is not an ISO 4217 code."}
    ]


@pytest.mark.parametrize(
    ("code", "http_status"),
    [
        ("INVALID_ARGUMENT", 400),
        ("OUT_OF_RANGE", 400),
        ("UNAUTHENTICATED", 401),
        ("PERMISSION_DENIED", 403),
        ("NOT_FOUND", 404),
        ("ALREADY_EXISTS", 409),
        ("ABORTED", 409),
        ("FAILED_PRECONDITION", 422),
        ("RESOURCE_EXHAUSTED", 429),
        ("UNIMPLEMENTED", 501),
        ("UNAVAILABLE", 503),
        ("DEADLINE_EXCEEDED", 504),
        ("INTERNAL", 500),
        ("UNKNOWN", 500),
        ("DATA_LOSS", 500),
    ],
)
async def test_grpc_status_maps_to_http_status(
    client: httpx.AsyncClient, recorder: Recorder, code: str, http_status: int
) -> None:
    recorder.fail["GetProject"] = rich_status(getattr(code_pb2, code), f"backend says {code}")

    reply = await client.get("/v1/projects/p-1")

    body = assert_problem(reply, http_status, code)
    assert body["detail"] == f"backend says {code}"


async def test_error_info_reason_is_the_problem_reason(client: httpx.AsyncClient, recorder: Recorder) -> None:
    recorder.fail["SubmitTimeEntry"] = rich_status(
        code_pb2.FAILED_PRECONDITION,
        "That key was used for another request.",
        reason="IDEMPOTENCY_KEY_REUSED",
    )

    reply = await client.post("/v1/time-entries", json=ENTRY, headers={"Idempotency-Key": "k-1"})

    body = assert_problem(reply, 422, "FAILED_PRECONDITION")
    assert body["reason"] == "IDEMPOTENCY_KEY_REUSED"
    assert body["title"] in ("Unprocessable Content", "Unprocessable Entity")  # renamed in Python 3.13


async def test_unreachable_backend_is_503_without_leaking_its_address(
    make_client: Any, recorder: Recorder, closed_port: int
) -> None:
    client = make_client(backends={MASTERDATA: f"127.0.0.1:{closed_port}"}, request_timeout_seconds=5)

    reply = await client.get("/v1/projects/p-1")

    body = assert_problem(reply, 503, "UNAVAILABLE")
    assert str(closed_port) not in body["detail"]
    assert MASTERDATA in body["detail"]


async def test_slow_backend_past_the_deadline_is_504(make_client: Any, recorder: Recorder) -> None:
    client = make_client(request_timeout_seconds=0.2)
    recorder.delay["GetProject"] = 2.0

    reply = await client.get("/v1/projects/p-1")

    assert_problem(reply, 504, "DEADLINE_EXCEEDED")


async def test_service_without_a_configured_backend_is_503(make_client: Any, fake_backends: Any) -> None:
    client = make_client(backends={MASTERDATA: fake_backends.address})

    reply = await client.get("/v1/time-entries")

    body = assert_problem(reply, 503, "UNAVAILABLE")
    assert body["reason"] == "BACKEND_NOT_CONFIGURED"


# -- what the gateway rejects before calling anything ------------------------------------------


async def test_malformed_json_is_400(client: httpx.AsyncClient, recorder: Recorder) -> None:
    reply = await client.post(
        "/v1/time-entries", content=b'{"hours": "1",', headers={"content-type": "application/json"}
    )

    body = assert_problem(reply, 400, "INVALID_ARGUMENT")
    assert body["reason"] == "MALFORMED_JSON"
    assert recorder.calls == []


@pytest.mark.parametrize(
    ("path", "payload", "field", "fragment"),
    [
        ("/v1/time-entries", {**ENTRY, "hours": 7.5}, "hours", "expected a string"),
        ("/v1/time-entries", {**ENTRY, "billable": "yes"}, "billable", "expected true or false"),
        ("/v1/time-entries", {**ENTRY, "externalRef": "psa"}, "externalRef", "expected a JSON object"),
        ("/v1/time-entries", {**ENTRY, "status": "NOPE"}, "status", "TIME_ENTRY_STATUS_APPROVED"),
        ("/v1/time-entries", {**ENTRY, "createTime": "yesterday"}, "createTime", ""),
        (
            "/v1/time-entries:batchSubmit",
            {"timeEntries": [ENTRY, {**ENTRY, "hours": 2}]},
            "timeEntries[1].hours",
            "expected a string",
        ),
        ("/v1/time-entries:batchSubmit", {"timeEntries": {"a": 1}}, "timeEntries", "expected a JSON array"),
        ("/v1/time-entries/te-1:approve", {"approverId": 7}, "approverId", "expected a string"),
    ],
)
async def test_wrong_json_type_is_400_naming_the_field(
    client: httpx.AsyncClient, recorder: Recorder, path: str, payload: Any, field: str, fragment: str
) -> None:
    reply = await client.post(path, json=payload)

    body = assert_problem(reply, 400, "INVALID_ARGUMENT")
    assert body["reason"] == "INVALID_JSON_BODY"
    assert [v["field"] for v in body["violations"]] == [field]
    assert body["violations"][0]["code"] == "INVALID_VALUE"
    assert fragment in body["violations"][0]["message"]
    assert field in body["detail"]
    assert recorder.calls == []


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({**ENTRY, "hourz": "1"}, "hourz"),
        ({**ENTRY, "externalRef": {"sys": "psa"}}, "externalRef.sys"),
    ],
)
async def test_unknown_json_field_is_400_naming_it(
    client: httpx.AsyncClient, recorder: Recorder, payload: Any, field: str
) -> None:
    reply = await client.post("/v1/time-entries", json=payload)

    body = assert_problem(reply, 400, "INVALID_ARGUMENT")
    assert body["violations"] == [
        {"field": field, "code": "UNKNOWN_FIELD", "message": body["violations"][0]["message"]}
    ]
    assert field.rsplit(".", 1)[-1] in body["violations"][0]["message"]


@pytest.mark.parametrize("payload", [[ENTRY], "entry", 12])
async def test_body_that_is_not_an_object_is_400(
    client: httpx.AsyncClient, recorder: Recorder, payload: Any
) -> None:
    for path in ("/v1/time-entries", "/v1/time-entries:batchSubmit"):
        reply = await client.post(path, json=payload)

        body = assert_problem(reply, 400, "INVALID_ARGUMENT")
        assert body["reason"] == "INVALID_JSON_BODY"
        assert "JSON object" in body["detail"]
    assert recorder.calls == []


@pytest.mark.parametrize(
    ("path", "param"),
    [
        ("/v1/projects?colour=red", "colour"),
        ("/v1/projects?status=PROJECT_STATUS_ACTIVE&external_ref.system=x", "external_ref.system"),
        ("/v1/time-entries:batchSubmit?dryRun=true", "dryRun"),
        ("/v1/time-entries?timeEntry.hours=1", "timeEntry.hours"),
        ("/v1/projects/p-1?id=p-2", "id"),
    ],
)
async def test_unknown_query_parameter_is_400_naming_it(
    client: httpx.AsyncClient, recorder: Recorder, path: str, param: str
) -> None:
    method = "POST" if "batchSubmit" in path else "GET"
    reply = await client.request(method, path, json={} if method == "POST" else None)

    body = assert_problem(reply, 400, "INVALID_ARGUMENT")
    assert body["reason"] == "UNKNOWN_QUERY_PARAMETER"
    assert body["violations"][0]["field"] == param
    assert param in body["detail"]
    assert recorder.calls == []


async def test_query_parameter_of_a_body_field_binding_is_rejected(
    client: httpx.AsyncClient, recorder: Recorder
) -> None:
    reply = await client.post("/v1/time-entries?timeEntry.hours=1", json=ENTRY)

    body = assert_problem(reply, 400, "INVALID_ARGUMENT")
    assert body["violations"][0]["field"] == "timeEntry.hours"
    assert "body" in body["detail"]


@pytest.mark.parametrize(
    ("query", "param", "fragment"),
    [
        ("pageSize=abc", "pageSize", "expected an integer"),
        ("page_size=99999999999", "page_size", "out of range"),
        ("status=PROJECT_STATUS_NOPE", "status", "PROJECT_STATUS_ACTIVE"),
    ],
)
async def test_bad_query_value_is_400_naming_the_parameter(
    client: httpx.AsyncClient, recorder: Recorder, query: str, param: str, fragment: str
) -> None:
    reply = await client.get(f"/v1/projects?{query}")

    body = assert_problem(reply, 400, "INVALID_ARGUMENT")
    assert body["reason"] == "INVALID_QUERY_PARAMETER"
    assert body["violations"][0]["field"] == param
    assert fragment in body["violations"][0]["message"]


async def test_singular_query_parameter_given_twice_is_400(
    client: httpx.AsyncClient, recorder: Recorder
) -> None:
    reply = await client.get("/v1/projects?pageSize=1&page_size=2")

    body = assert_problem(reply, 400, "INVALID_ARGUMENT")
    assert body["violations"][0]["code"] == "REPEATED_PARAMETER"


@pytest.mark.parametrize("path", ["/v2/projects", "/v1/projects/p-1/extra", "/v1/nothing", "/"])
async def test_unknown_path_is_404_problem(client: httpx.AsyncClient, path: str) -> None:
    reply = await client.get(path)

    body = assert_problem(reply, 404, "NOT_FOUND")
    assert body["reason"] == "ROUTE_NOT_FOUND"


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("DELETE", "/v1/projects", "GET, POST"),
        ("PUT", "/v1/time-entries/te-1", "GET"),
        ("GET", "/v1/time-entries:batchSubmit", "POST"),
        ("GET", "/v1/time-entries/te-1:approve", "POST"),
        ("POST", "/v1/rates:resolve", "GET"),
        ("POST", "/healthz", "GET, HEAD"),
        ("DELETE", "/openapi.json", "GET, HEAD"),
    ],
)
async def test_known_path_with_wrong_method_is_405_with_allow(
    client: httpx.AsyncClient, method: str, path: str, allow: str
) -> None:
    reply = await client.request(method, path)

    assert_problem(reply, 405, "UNIMPLEMENTED")
    assert reply.headers["allow"] == allow


async def test_body_over_the_limit_is_413_by_content_length(make_client: Any, recorder: Recorder) -> None:
    client = make_client(max_body_bytes=64)

    reply = await client.post("/v1/time-entries", json={**ENTRY, "notes": "x" * 100})

    body = assert_problem(reply, 413, "INVALID_ARGUMENT")
    assert body["reason"] == "BODY_TOO_LARGE"
    assert recorder.calls == []


async def test_body_over_the_limit_is_413_when_streamed_without_length(
    make_client: Any, recorder: Recorder
) -> None:
    client = make_client(max_body_bytes=64)

    async def chunks() -> Any:
        for _ in range(10):
            yield b'{"notes": "xxxxxxxxxxxxxxxxxxxxxxxxx"}'

    reply = await client.post(
        "/v1/time-entries", content=chunks(), headers={"content-type": "application/json"}
    )

    assert_problem(reply, 413, "INVALID_ARGUMENT")
    assert recorder.calls == []


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
async def test_non_json_body_is_415(
    client: httpx.AsyncClient, recorder: Recorder, content_type: str | None
) -> None:
    headers = {"content-type": content_type} if content_type else {}

    reply = await client.post("/v1/time-entries", content=b'{"hours": "1"}', headers=headers)

    body = assert_problem(reply, 415, "INVALID_ARGUMENT")
    assert body["reason"] == "UNSUPPORTED_MEDIA_TYPE"
    assert recorder.calls == []


async def test_json_with_charset_and_vendor_json_types_are_accepted(
    client: httpx.AsyncClient, recorder: Recorder
) -> None:
    for content_type in ("application/json; charset=utf-8", "application/vnd.accrue+json"):
        reply = await client.post(
            "/v1/time-entries", content=b'{"hours": "1.00"}', headers={"content-type": content_type}
        )
        assert reply.status_code == 200, reply.text


async def test_bad_idempotency_key_is_400(client: httpx.AsyncClient, recorder: Recorder) -> None:
    reply = await client.post("/v1/time-entries", json=ENTRY, headers={"Idempotency-Key": "k" * 300})

    body = assert_problem(reply, 400, "INVALID_ARGUMENT")
    assert body["reason"] == "INVALID_IDEMPOTENCY_KEY"
    assert recorder.calls == []


def test_every_grpc_code_has_an_http_status() -> None:
    from accrue.services.gateway.problems import HTTP_STATUS

    assert set(HTTP_STATUS) == set(grpc.StatusCode)
