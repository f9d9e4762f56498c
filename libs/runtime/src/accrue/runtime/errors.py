"""The error vocabulary the domain and service layers raise.

Pure Python on purpose: domain code raises these without knowing about gRPC. The runtime's
error interceptor maps each to a gRPC status (and the gateway maps that to HTTP).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Violation:
    """One reason input or a rule was not met: the field, a stable code and a sentence."""

    field: str
    code: str
    message: str


class DomainError(Exception):
    """Base of every expected failure; anything else is a bug and maps to INTERNAL."""

    grpc_code = "UNKNOWN"

    def __init__(self, message: str, violations: Sequence[Violation] = (), reason: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.violations = tuple(violations)
        # A stable machine-readable code for the whole error, e.g. "NOT_APPROVER".
        self.reason = reason


class InvalidArgument(DomainError):
    """The request is malformed; nothing was written. Carries every violation found."""

    grpc_code = "INVALID_ARGUMENT"


class NotFound(DomainError):
    """A named resource does not exist."""

    grpc_code = "NOT_FOUND"


class AlreadyExists(DomainError):
    """A resource with the same identity exists with different content."""

    grpc_code = "ALREADY_EXISTS"


class FailedPrecondition(DomainError):
    """The resource is not in a state that allows the operation."""

    grpc_code = "FAILED_PRECONDITION"


class Aborted(DomainError):
    """A concurrent change won (stale etag, lost race); retrying with fresh data may work."""

    grpc_code = "ABORTED"


class Unauthenticated(DomainError):
    """The call carries no identity this service can verify."""

    grpc_code = "UNAUTHENTICATED"


class PermissionDenied(DomainError):
    """The caller may not do this."""

    grpc_code = "PERMISSION_DENIED"


class Unavailable(DomainError):
    """A dependency is down; retrying later may work."""

    grpc_code = "UNAVAILABLE"
