"""The service runtime: typed settings, the error vocabulary, and the gRPC server lifecycle."""

from accrue.runtime.errors import (
    Aborted,
    AlreadyExists,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
    Violation,
)
from accrue.runtime.settings import ServiceSettings, load_settings

__all__ = [
    "Aborted",
    "AlreadyExists",
    "DomainError",
    "FailedPrecondition",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "ServiceSettings",
    "Unavailable",
    "Violation",
    "load_settings",
]
