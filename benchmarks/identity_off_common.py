"""MEASUREMENT DEVICE: run one process of the stack with identity switched OFF.

    python benchmarks/identity_off_common.py <process> [serve|migrate]

Used only by the benchmarks that print what identity costs (timekeeping_submit_latency,
timekeeping_ingest: auth ON and OFF in the same run). It is not a mode of the product: nothing
in services/ or libs/ can reach it, and no test uses it. It patches, inside this process only,
before the process's bootstrap is imported:

- services: `accrue.identity.grpc.service_auth` returns a ServiceAuth whose server interceptor
  wraps every unary RPC exactly as AuthInterceptor does and binds a fixed local administrator
  (every role, `service` included, every legal entity) without reading any token or checking
  the policy; calls to other services carry no token;
- the gateway: its Authenticator accepts any request as that administrator without looking at
  the Authorization header, and sends backends a constant placeholder instead of a signed token.

So ON minus OFF is the verification, the signing and the policy check, and nothing else: the
handler wrapping, the principal binding and the use cases' own resource rules run in both.
"""

from __future__ import annotations

import dataclasses
import runpy
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import grpc

from accrue.runtime.grpc_types import Context, Handler
from accrue.runtime.identity import SERVICE_ROLE, Principal, bound_principal
from accrue.testing.identity import admin

OFF_PRINCIPAL = dataclasses.replace(admin(), roles=admin().roles | {SERVICE_ROLE})
OFF_METADATA = ("authorization", "Bearer identity-off-benchmark")


class PassThroughInterceptor(grpc.aio.ServerInterceptor):
    """AuthInterceptor's shape without its work: wrap, bind OFF_PRINCIPAL, call."""

    async def intercept_service(self, continuation: Any, handler_call_details: Any) -> Handler | None:
        from accrue.identity.grpc import OPEN_SERVICES

        handler = await continuation(handler_call_details)
        service = handler_call_details.method.lstrip("/").partition("/")[0]
        if handler is None or service in OPEN_SERVICES or handler.unary_unary is None:
            return cast("Handler | None", handler)
        behavior = handler.unary_unary

        async def wrapped(request: Any, context: Context) -> Any:
            with bound_principal(OFF_PRINCIPAL):
                return await behavior(request, context)

        return grpc.unary_unary_rpc_method_handler(
            wrapped,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _patch_services() -> None:
    import accrue.identity.grpc as identity_grpc
    from accrue.identity.internal import load_signer

    @dataclasses.dataclass(frozen=True)
    class PassThroughAuth(identity_grpc.ServiceAuth):
        @property
        def client_interceptors(self) -> Sequence[grpc.aio.ClientInterceptor]:
            return ()

    def service_auth(name: str, keys_dir: Path | None, clock: Any, *args: Any, **kwargs: Any) -> Any:
        if keys_dir is None:
            raise identity_grpc.MissingKeys("ACCRUE_INTERNAL_KEYS_DIR is not set")
        signer = load_signer(keys_dir, name, clock)
        return PassThroughAuth(cast(Any, PassThroughInterceptor()), signer)

    identity_grpc.service_auth = service_auth  # type: ignore[assignment]


def _patch_gateway() -> None:
    import accrue.services.gateway.bootstrap as bootstrap
    from accrue.services.gateway.auth import Authenticator

    real = getattr(bootstrap, "_authenticator", None)
    if real is None:
        # The gateway's bootstrap changed: fail loudly rather than measure ON and call it OFF.
        raise SystemExit("identity_off_common: gateway bootstrap has no _authenticator to replace")

    @dataclasses.dataclass(frozen=True)
    class PassThroughAuthenticator(Authenticator):
        async def principal(self, authorization: str | None) -> Principal:
            return OFF_PRINCIPAL

        def backend_metadata(self, principal: Principal) -> tuple[str, str]:
            return OFF_METADATA

    def authenticator(*args: Any, **kwargs: Any) -> Any:
        built, local_issuer = real(*args, **kwargs)
        return PassThroughAuthenticator(built.verifier, built.claims, built.signer), local_issuer

    bootstrap._authenticator = authenticator


def main() -> None:
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    name, rest = sys.argv[1], sys.argv[2:]
    if name == "gateway":
        _patch_gateway()
    else:
        _patch_services()
    sys.stderr.write(f"*** {name}: IDENTITY OFF (benchmark measurement device, not a product mode) ***\n")
    sys.argv = [f"accrue.services.{name}", *rest]
    runpy.run_module(f"accrue.services.{name}", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
