"""Is it up yet? The two readiness probes the stack uses, and a loop that waits on many at once."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import grpc  # type: ignore[import-untyped, unused-ignore]
from grpc_health.v1 import health_pb2, health_pb2_grpc

# Probes go straight to 127.0.0.1: an http(s)_proxy in the environment must not intercept them.
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def grpc_serving(address: str, service: str = "", timeout: float = 1.0) -> bool:
    """Whether grpc.health.v1.Health/Check at address answers SERVING for service."""
    with grpc.insecure_channel(address, options=[("grpc.enable_http_proxy", 0)]) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def http_ok(url: str, timeout: float = 1.0) -> bool:
    """Whether GET url answers 200."""
    try:
        with _NO_PROXY.open(url, timeout=timeout) as response:
            return int(response.status) == 200
    except (OSError, urllib.error.URLError):
        return False


@dataclass(frozen=True)
class GrpcHealth:
    """Ready when the standard gRPC health check (service "") says SERVING."""

    address: str
    service: str = ""

    def __call__(self) -> bool:
        return grpc_serving(self.address, self.service)

    def __str__(self) -> str:
        return f"gRPC health at {self.address}"


@dataclass(frozen=True)
class HttpReady:
    """Ready when GET url answers 200."""

    url: str

    def __call__(self) -> bool:
        return http_ok(self.url)

    def __str__(self) -> str:
        return f"GET {self.url}"


Readiness = GrpcHealth | HttpReady


class NotReadyError(RuntimeError):
    """Some processes did not become ready: which, and which of them exited (with their code)."""

    def __init__(
        self,
        pending: list[str],
        *,
        exited: dict[str, int] | None = None,
        timeout: float = 0.0,
        detail: str = "",
    ) -> None:
        self.pending = pending
        self.exited = exited or {}
        self.timeout = timeout
        self.detail = detail
        super().__init__(str(self))

    def __str__(self) -> str:
        if self.exited:
            parts = [
                f"{name} exited with code {code} before it was ready" for name, code in self.exited.items()
            ]
        else:
            parts = [f"{', '.join(self.pending)} did not become ready within {self.timeout:.0f}s"]
        return "; ".join(parts) + (f"\n{self.detail}" if self.detail else "")


def wait_until_ready(
    checks: Mapping[str, Callable[[], bool]],
    *,
    timeout: float,
    exit_code: Callable[[str], int | None] | None = None,
    interval: float = 0.1,
    cancelled: Callable[[], bool] | None = None,
) -> None:
    """Poll every check until all pass; fail at once if a process exits, else at the deadline.

    exit_code(name) returns the process's exit code once it has exited, else None.
    """
    pending = dict(checks)
    deadline = time.monotonic() + timeout
    while pending:
        if cancelled is not None and cancelled():
            raise NotReadyError(sorted(pending), timeout=timeout, detail="cancelled")
        if exit_code is not None:
            exited = {name: code for name in pending if (code := exit_code(name)) is not None}
            if exited:
                raise NotReadyError(sorted(pending), exited=exited, timeout=timeout)
        for name in list(pending):
            if pending[name]():
                del pending[name]
        if not pending:
            return
        if time.monotonic() >= deadline:
            raise NotReadyError(sorted(pending), timeout=timeout)
        time.sleep(interval)
