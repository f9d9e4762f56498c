"""Identity for tests: real keys and real tokens, and who a test acts as.

Every test run gets one keyring of internal keys (`session_keys`, exported as
ACCRUE_INTERNAL_KEYS_DIR so in-process services verify with it) and every stack its own local
issuer, so tests call services the way the gateway and portals do: with signed tokens, never
through a bypass.

Tests that are *not* about identity act as whoever their request names (`acting_as_named`):
a request with `approverId`/`actorId`/... is sent with a token for that person holding every
role, a request naming a `source` with a token for that system's integration client, anything
else as a local administrator holding every role in every legal entity. That keeps the
thousand-odd workflow assertions about workflows. What identity itself must refuse (a body
naming someone else, a missing role, another legal entity, a forged or expired token) is tested
with explicit principals and tokens in tests/*/identity and tests/e2e/test_identity*.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Generator, Iterable, Mapping
from pathlib import Path
from typing import Any, Final

import grpc
import httpx
from google.protobuf.message import Message

from accrue.identity.internal import GATEWAY, InternalSigner, ensure_keys, load_signer
from accrue.identity.local_issuer import LocalIssuer
from accrue.identity.policy import load_policy
from accrue.runtime.clock import Clock
from accrue.runtime.identity import ALL_LEGAL_ENTITIES, Principal

KEYS_ENV: Final = "ACCRUE_INTERNAL_KEYS_DIR"
# Every process that signs internal tokens (accrue.embedded.stack.PROCESS_NAMES).
PROCESSES: Final = ("masterdata", "timekeeping", "billing", "forecasting", "observability", "gateway")
ADMIN_SUBJECT: Final = "local-admin"
AUDIENCE: Final = "accrue"


def all_roles() -> frozenset[str]:
    """Every role the access policy knows but `service` (which only Accrue's processes hold)."""
    return frozenset(load_policy().roles) - {"service"}


def admin() -> Principal:
    return Principal(ADMIN_SUBJECT, all_roles(), frozenset({ALL_LEGAL_ENTITIES}))


def person(subject: str, *roles: str, legal_entities: Iterable[str] = (ALL_LEGAL_ENTITIES,)) -> Principal:
    """A person holding roles (every role when none is given) in legal_entities."""
    return Principal(subject, frozenset(roles) or all_roles(), frozenset(legal_entities))


def system_client(system: str, legal_entities: Iterable[str] = (ALL_LEGAL_ENTITIES,)) -> Principal:
    """The integration client of a system of record."""
    return Principal(
        f"client:{system}",
        frozenset({"integration"}),
        frozenset(legal_entities),
        client_id=system,
        system=system,
    )


def make_keys(directory: Path) -> Path:
    ensure_keys(directory, PROCESSES)
    return directory


def gateway_signer(directory: Path, clock: Clock) -> InternalSigner:
    """The gateway's signer: in-process tests call services as the gateway would."""
    return load_signer(directory, GATEWAY, clock)


# -- acting as whoever the request names ------------------------------------------------------------

_ACTOR_FIELDS: Final = ("approver_id", "actor_id", "delegator_id", "locked_by_id", "actor", "resolved_by")
_JSON_ACTOR_FIELDS: Final = ("approverId", "actorId", "delegatorId", "lockedById", "actor", "resolvedBy")


def named_principal(actor: str | None, source: str | None) -> Principal:
    if source:
        client = system_client(source)
        # A sync run by a named account of that system (e.g. a service user "sync-bot").
        return dataclasses.replace(client, subject=actor) if actor else client
    if actor:
        return person(actor)
    return admin()


def _named_in_message(message: Message) -> tuple[str | None, str | None]:
    actor = source = None
    fields = [message, *(value for _, value in message.ListFields() if isinstance(value, Message))]
    for part in fields:
        for name in _ACTOR_FIELDS:
            if name in part.DESCRIPTOR.fields_by_name and getattr(part, name) and actor is None:
                actor = getattr(part, name)
        if "source" in part.DESCRIPTOR.fields_by_name and part is message and message.source:  # type: ignore[attr-defined]
            source = message.source  # type: ignore[attr-defined]
    return actor, source


def _named_in_json(body: Any) -> tuple[str | None, str | None]:
    if not isinstance(body, Mapping):
        return None, None
    parts = [body, *(v for v in body.values() if isinstance(v, Mapping))]
    actor = next(
        (p[n] for p in parts for n in _JSON_ACTOR_FIELDS if isinstance(p.get(n), str) and p[n]), None
    )
    source = body.get("source") if isinstance(body.get("source"), str) and body.get("source") else None
    return actor, source


class ActingAsNamed(grpc.aio.UnaryUnaryClientInterceptor):
    """gRPC client interceptor: each call carries an internal token for whoever it names."""

    def __init__(self, signer: InternalSigner, principal: Principal | None = None) -> None:
        self._signer = signer
        self._principal = principal

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        metadata = [(k, v) for k, v in (details.metadata or ()) if k != "authorization"]
        if not any(k == "authorization" for k, _ in (details.metadata or ())):
            principal = self._principal or named_principal(*_named_in_message(request))
            metadata.extend(self._signer.metadata(principal))
        else:
            metadata.extend((k, v) for k, v in details.metadata if k == "authorization")
        return await continuation(details._replace(metadata=grpc.aio.Metadata(*metadata)), request)


def channel(address: str, signer: InternalSigner, principal: Principal | None = None) -> grpc.aio.Channel:
    """A channel to a service whose calls act as principal (default: whoever the request names)."""
    return grpc.aio.insecure_channel(address, interceptors=[ActingAsNamed(signer, principal)])


class LocalTokens:
    """Tokens from a stack's local issuer, as `accrue token` mints them."""

    def __init__(self, issuer: LocalIssuer, ttl: dt.timedelta = dt.timedelta(hours=12)) -> None:
        self.issuer = issuer
        self.ttl = ttl
        self._cache: dict[Principal, str] = {}

    def token(self, principal: Principal) -> str:
        found = self._cache.get(principal)
        if found is None:
            found = self.issuer.mint(
                principal.subject,
                principal.roles,
                principal.legal_entity_ids,
                self.ttl,
                AUDIENCE,
                client_id=principal.client_id,
            )
            self._cache[principal] = found
        return found

    def headers(self, principal: Principal) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(principal)}"}


class ActingAsNamedAuth(httpx.Auth):
    """httpx auth: each request carries a bearer token for whoever its JSON body names."""

    def __init__(self, tokens: LocalTokens) -> None:
        self._tokens = tokens

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if "authorization" not in request.headers:
            body: Any = None
            try:
                body = json.loads(request.content) if request.content else None
            except (ValueError, httpx.RequestNotRead):  # not JSON, or a stream (admin then)
                body = None
            principal = named_principal(*_named_in_json(body))
            request.headers["Authorization"] = f"Bearer {self._tokens.token(principal)}"
        yield request


def run_signer() -> InternalSigner:
    """The gateway's signer from the run's keyring, on the clock in-process services use
    (ACCRUE_CLOCK_START, which the plugin pins): tokens it signs are fresh to them."""
    import os

    from accrue.runtime.clock import clock_for

    start = os.environ.get("ACCRUE_CLOCK_START")
    clock = clock_for(dt.datetime.fromisoformat(start) if start else None)
    return gateway_signer(Path(os.environ[KEYS_ENV]), clock)


def run_auth(name: str = "masterdata") -> Any:
    """A real ServiceAuth for a test's own Service, from the run's keyring (as service `name`)."""
    import os

    from accrue.identity.grpc import service_auth
    from accrue.runtime.clock import clock_for

    start = os.environ.get("ACCRUE_CLOCK_START")
    return service_auth(
        name, Path(os.environ[KEYS_ENV]), clock_for(dt.datetime.fromisoformat(start) if start else None)
    )


class InProcessIssuer:
    """A local issuer for a gateway built in-process (unit tests): its keys in a directory, its
    discovery and JWKS reachable through `http` (an ASGI transport, no socket), tokens from
    `tokens`. `settings` are the gateway settings that point at it."""

    def __init__(self, directory: Path, base_url: str = "http://127.0.0.1:8080") -> None:
        import os

        from starlette.applications import Starlette
        from starlette.routing import Mount

        from accrue.identity.local_issuer import LOCAL_ISSUER_PATH
        from accrue.runtime.clock import clock_for

        start = os.environ.get("ACCRUE_CLOCK_START")
        clock = clock_for(dt.datetime.fromisoformat(start) if start else None)
        self.issuer = LocalIssuer(directory, base_url + LOCAL_ISSUER_PATH, clock)
        self.tokens = LocalTokens(self.issuer)
        app = Starlette(routes=[Mount(LOCAL_ISSUER_PATH, app=self.issuer.app())])
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app))
        self.settings = {
            "local_issuer_dir": directory,
            "internal_keys_dir": Path(os.environ[KEYS_ENV]),
            "public_url": base_url,
        }

    def auth(self) -> httpx.Auth:
        """Acting as whoever each request names."""
        return ActingAsNamedAuth(self.tokens)
