"""Errors as application/problem+json (RFC 9457), and gRPC status to HTTP status.

Every problem has `type: "about:blank"`, so `title` is the HTTP reason phrase and the machine-
readable meaning travels in the extension members: `code` (the gRPC code name), `reason` (a
stable code for the whole error) and `violations` (one per field, with a stable code each).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status
from starlette.responses import Response

PROBLEM_JSON = "application/problem+json"

HTTP_STATUS: Mapping[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 422,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    # The gateway only sees CANCELLED while its client is still there, so the backend gave up
    # (it is shutting down, say): retrying elsewhere may work, hence 503 rather than nginx's 499.
    grpc.StatusCode.CANCELLED: 503,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.DATA_LOSS: 500,
}


@dataclass(frozen=True)
class FieldViolation:
    """One field that was wrong, named as the client spelled it (JSON path)."""

    field: str
    code: str
    message: str


@dataclass(eq=False)  # exceptions compare and hash by identity
class Problem(Exception):
    """An error response waiting to be rendered; raised anywhere in request handling."""

    status: int
    detail: str
    code: str
    reason: str = ""
    violations: Sequence[FieldViolation] = ()
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.detail}"


def bad_request(detail: str, reason: str, violations: Sequence[FieldViolation] = ()) -> Problem:
    """A 400 the gateway itself found, before any backend was called."""
    return Problem(400, detail, "INVALID_ARGUMENT", reason, violations)


def render(problem: Problem, *, request_id: str, instance: str) -> Response:
    """The problem+json response."""
    try:
        title = HTTPStatus(problem.status).phrase
    except ValueError:
        title = "Error"
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title,
        "status": problem.status,
        "detail": problem.detail,
        "instance": instance,
        "code": problem.code,
    }
    if problem.reason:
        body["reason"] = problem.reason
    body["requestId"] = request_id
    body["violations"] = [
        {"field": v.field, "code": v.code, "message": v.message} for v in problem.violations
    ]
    content = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    return Response(content, status_code=problem.status, headers=problem.headers, media_type=PROBLEM_JSON)


@dataclass(frozen=True)
class RpcFailure:
    """What a failed RPC said: its code, message and the rich details, if any."""

    code: grpc.StatusCode
    message: str
    reason: str
    violations: tuple[error_details_pb2.BadRequest.FieldViolation, ...]
    rich: bool


def read_rpc_error(err: grpc.aio.AioRpcError) -> RpcFailure:
    """Unpack google.rpc.Status (BadRequest, ErrorInfo) from the grpc-status-details-bin trailer."""
    try:
        status: status_pb2.Status | None = rpc_status.from_call(err)
    except ValueError:
        status = None  # trailer and status line disagree; trust the status line
    code = err.code()
    if status is None:
        return RpcFailure(code, err.details() or "", "", (), rich=False)
    reason = ""
    violations: list[error_details_pb2.BadRequest.FieldViolation] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request_detail = error_details_pb2.BadRequest()
            detail.Unpack(bad_request_detail)
            violations.extend(bad_request_detail.field_violations)
        elif detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = reason or info.reason
    return RpcFailure(code, status.message, reason, tuple(violations), rich=True)
