"""Identity for the benchmarks: real tokens from the stack's local issuer, and the auth-OFF variant.

Every benchmark calls the gateway as a local administrator holding every role in every legal
entity (accrue.testing.identity.admin), with a bearer token the stack's own local issuer signs,
exactly as `accrue token` would: the gateway verifies it like any OIDC provider's token and the
services verify the internal token it signs. Benchmarks that call a service directly over gRPC
sign internal tokens with the gateway's key from the stack's keyring, as the gateway does.

AUTH OFF (`auth_off_command`) is a MEASUREMENT DEVICE, nothing more: each process is started
through benchmarks/identity_off_common.py, which replaces verification by a pass-through before
the service starts, so one run can print what identity costs. Product code and tests never use
it; a stack started with it must never hold data anyone cares about.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import httpx

from accrue.runtime.clock import system_clock
from accrue.runtime.identity import Principal
from accrue.testing.identity import admin
from accrue.testing.stack import Stack

OFF_LAUNCHER: Final = Path(__file__).resolve().parent / "identity_off_common.py"

# The two ways a benchmark may start the stack, in the order they run when both are asked for.
AUTH_VARIANTS: Final = ("on", "off")


def admin_headers(stack: Stack, principal: Principal | None = None) -> dict[str, str]:
    """`Authorization: Bearer ...` for principal (default: the local admin), from the stack's
    local issuer. The stack's processes run on the system clock (no ACCRUE_CLOCK_START), so the
    token is minted on it too; it lives 12 hours, longer than any benchmark."""
    return stack.tokens(system_clock).headers(principal or admin())


def admin_client(stack: Stack, **options: object) -> httpx.AsyncClient:
    """An httpx client to the gateway that authenticates as the local admin."""
    return httpx.AsyncClient(base_url=stack.gateway_url, headers=admin_headers(stack), **options)  # type: ignore[arg-type]


def auth_off_command(name: str) -> Sequence[str]:
    """The argv that starts process `name` with identity replaced by a pass-through (a
    `command=` factory for Stack.from_catalogue; see identity_off_common.py)."""
    return [sys.executable, str(OFF_LAUNCHER), name]


def check_auth(gateway_url: str, variant: str) -> str:
    """Prove the variant is what it claims: without a token, ON answers 401 and OFF serves the
    request. Returns a line for the report; raises if the stack is not in the asked-for mode."""
    response = httpx.get(f"{gateway_url}/v1/kpis", timeout=30)
    expected = 401 if variant == "on" else 200
    if response.status_code != expected:
        raise RuntimeError(
            f"auth {variant.upper()}: GET /v1/kpis without a token answered {response.status_code}, "
            f"expected {expected}: the stack is not in the mode this run measures"
        )
    return f"auth {variant.upper()} checked: GET /v1/kpis without a token -> {response.status_code}"
