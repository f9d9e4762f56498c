"""Bearer tokens for the CLI: `accrue token`, and how `accrue seed` / `accrue import` authenticate.

Three ways to a token, in this order of preference:

1. one given (`--token` / `ACCRUE_TOKEN`), used as is;
2. OAuth2 client credentials against an external OIDC provider (`--client-id`, `--client-secret`
   or `ACCRUE_CLIENT_ID` / `ACCRUE_CLIENT_SECRET`); the token endpoint comes from the provider's
   discovery document, found from `--issuer` / `ACCRUE_OIDC_ISSUER` or else from the gateway's
   own OpenAPI document (its `oidc` security scheme names the discovery URL);
3. minted from the local issuer whose keys `accrue run` keeps in `<data dir>/identity/issuer`
   (local stack only: refused when the gateway verifies tokens from an external provider).

The local issuer's URL is whatever the gateway serves as its issuer (read from the gateway's
local discovery document when it answers), so a token minted here names the same `iss` the
gateway checks. Times come from the injected clock (`ACCRUE_CLOCK_START` as for every process).
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

import httpx

from accrue.embedded.stack import local_issuer_dir
from accrue.identity.local_issuer import KEY_FILE_NAME, LOCAL_ISSUER_PATH, LocalIssuer
from accrue.identity.policy import load_policy
from accrue.identity.verifier import DISCOVERY_PATH
from accrue.runtime.clock import Clock, clock_for
from accrue.runtime.identity import ALL_LEGAL_ENTITIES

TOKEN_VAR: Final = "ACCRUE_TOKEN"
CLIENT_ID_VAR: Final = "ACCRUE_CLIENT_ID"
CLIENT_SECRET_VAR: Final = "ACCRUE_CLIENT_SECRET"
ISSUER_VAR: Final = "ACCRUE_OIDC_ISSUER"
# The gateway's own settings: when the CLI runs where the gateway's environment is set, an
# external issuer there means local tokens would be refused.
GATEWAY_ISSUER_VAR: Final = "ACCRUE_GATEWAY_OIDC_ISSUER"
GATEWAY_AUDIENCE_VAR: Final = "ACCRUE_GATEWAY_OIDC_AUDIENCE"
CLOCK_START_VAR: Final = "ACCRUE_CLOCK_START"
# The gateway's default audience (GatewaySettings.oidc_audience).
DEFAULT_AUDIENCE: Final = "accrue"
DEFAULT_TTL: Final = dt.timedelta(hours=8)
MAX_TTL: Final = dt.timedelta(days=30)
ADMIN_SUBJECT: Final = "local-admin"
# The integration client `accrue seed` is: its client id maps to the system of record "seed"
# (ACCRUE_GATEWAY_CLIENT_SYSTEMS, which `accrue run` sets), so master data accepts its rows.
SEED_CLIENT_ID: Final = "seed"
SEED_SYSTEM: Final = "seed"
IDENTITY_DIR_NAME: Final = "identity"
_TTL = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


class TokenError(RuntimeError):
    """No token can be had as asked; the message says why and what to do instead."""


def identity_dir(data_dir: Path) -> Path:
    """Where `accrue run` keeps the stack's keys: <data dir>/identity (internal/, issuer/)."""
    return data_dir / IDENTITY_DIR_NAME


def issuer_dir(data_dir: Path) -> Path:
    """The local issuer's keys, where the stack's gateway keeps them."""
    return local_issuer_dir(identity_dir(data_dir))


def cli_clock(environ: Mapping[str, str] | None = None) -> Clock:
    """The clock tokens are dated by: the system clock, or one started at ACCRUE_CLOCK_START (as the
    stack's processes are), so a token minted for a pinned stack is valid on its clock."""
    env = os.environ if environ is None else environ
    raw = env.get(CLOCK_START_VAR, "").strip()
    if not raw:
        return clock_for(None)
    try:
        start = dt.datetime.fromisoformat(raw)
    except ValueError:
        raise TokenError(f"{CLOCK_START_VAR}={raw!r} is not an ISO 8601 instant") from None
    if start.tzinfo is None:
        raise TokenError(f"{CLOCK_START_VAR}={raw!r} needs a UTC offset")
    return clock_for(start)


def admin_roles() -> list[str]:
    """Every role of the access policy but `service`, which only Accrue's own processes hold."""
    return sorted(set(load_policy().roles) - {"service"})


def parse_ttl(text: str) -> dt.timedelta:
    """'90s', '30m', '8h', '2d' or plain seconds; positive and at most 30 days."""
    match = _TTL.match(text)
    if match is None:
        raise TokenError(f"--ttl {text!r} is not a duration: use e.g. 30m, 8h, 2d or seconds")
    ttl = dt.timedelta(seconds=int(match[1]) * _UNITS[match[2]])
    if not dt.timedelta(0) < ttl <= MAX_TTL:
        raise TokenError(f"--ttl {text!r} must be more than 0 and at most {MAX_TTL.days} days")
    return ttl


def check_roles(roles: Iterable[str]) -> list[str]:
    """The roles, each one the policy knows; `service` is not for people or tools."""
    wanted = sorted(set(roles))
    known = admin_roles()
    unknown = [r for r in wanted if r not in known]
    if unknown:
        raise TokenError(f"--role {', '.join(unknown)}: not a role; the roles are {', '.join(known)}")
    return wanted


# -- the local issuer ------------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalMinter:
    """Mints tokens from the local issuer of a stack `accrue run` started in a data dir."""

    issuer: LocalIssuer
    audience: str

    @classmethod
    def open(
        cls,
        data_dir: Path,
        url: str,
        *,
        clock: Clock,
        environ: Mapping[str, str] | None = None,
        http: httpx.Client | None = None,
    ) -> LocalMinter:
        env = os.environ if environ is None else environ
        if env.get(GATEWAY_ISSUER_VAR, "").strip():
            raise TokenError(
                f"{GATEWAY_ISSUER_VAR} is set: the gateway verifies tokens from "
                f"{env[GATEWAY_ISSUER_VAR].strip()}, not the local issuer; get a token from that "
                "provider (pass it with --token, or use client credentials)"
            )
        # The gateway first: one that verifies an external provider's tokens says so plainly.
        issuer = local_issuer_url(url, http)
        keys = issuer_dir(data_dir)
        if not (keys / KEY_FILE_NAME).is_file():
            raise TokenError(
                f"no local issuer keys in {keys}: start the stack with `accrue run` (it makes them), "
                "or point --data-dir / ACCRUE_DATA_DIR at the data dir of the running stack"
            )
        audience = env.get(GATEWAY_AUDIENCE_VAR, "").split(",")[0].strip() or DEFAULT_AUDIENCE
        return cls(LocalIssuer(keys, issuer, clock), audience)

    def person(
        self,
        subject: str,
        roles: Iterable[str],
        legal_entities: Iterable[str],
        ttl: dt.timedelta,
        *,
        email: str | None = None,
    ) -> str:
        return self.issuer.mint(subject, roles, legal_entities, ttl, self.audience, email=email or None)

    def admin(self, ttl: dt.timedelta) -> str:
        """A local administrator: every role, every legal entity."""
        return self.person(ADMIN_SUBJECT, admin_roles(), [ALL_LEGAL_ENTITIES], ttl)

    def client(self, client_id: str, ttl: dt.timedelta, legal_entities: Iterable[str] = ("*",)) -> str:
        """An integration client, as a client-credentials grant gives it: sub = client_id."""
        return self.issuer.mint(
            client_id, ["integration"], legal_entities, ttl, self.audience, client_id=client_id
        )


def local_issuer_url(url: str, http: httpx.Client | None = None) -> str:
    """The issuer the gateway at url serves locally (what its tokens' `iss` must be).

    Asked of the gateway when it answers; a gateway without the local issuer (an external
    provider is configured) is refused. Unreachable: the URL the gateway derives by default.
    """
    base = url.rstrip("/")
    discovery = f"{base}{LOCAL_ISSUER_PATH}{DISCOVERY_PATH}"
    try:
        response = (http or httpx).get(discovery, timeout=5)
    except httpx.TransportError:
        return base + LOCAL_ISSUER_PATH
    if response.status_code == 404:
        raise TokenError(
            f"the gateway at {base} does not run the local issuer (it verifies tokens from an external "
            "OIDC provider): get a token from that provider (--token, or --client-id/--client-secret)"
        )
    if response.status_code != 200:
        raise TokenError(f"{discovery} answered {response.status_code}: {response.text[:200]}")
    issuer = response.json().get("issuer")
    if not isinstance(issuer, str) or not issuer:
        raise TokenError(f"{discovery} names no issuer")
    return issuer


# -- consultants -----------------------------------------------------------------------------------


def find_consultant(client: httpx.Client, wanted: str, token: str) -> dict[str, Any]:
    """The consultant whose id or code (employee number) is `wanted`, through the REST API."""
    headers = {"Authorization": f"Bearer {token}"}
    try:
        if _UUID.match(wanted):
            response = client.get(f"/v1/consultants/{wanted}", headers=headers)
            if response.status_code == 200:
                found: dict[str, Any] = response.json()
                return found
            if response.status_code != 404:
                raise TokenError(f"looking up consultant {wanted} answered {response.status_code}")
        response = client.get(
            "/v1/consultants", params={"code": wanted, "showDeactivated": "true"}, headers=headers
        )
    except httpx.TransportError as exc:
        raise TokenError(
            f"cannot reach Accrue at {client.base_url} to look up consultant {wanted!r} ({exc}); "
            "is the stack running (`make run`)?"
        ) from exc
    if response.status_code != 200:
        raise TokenError(
            f"looking up consultant {wanted!r} answered {response.status_code}: {response.text[:200]}"
        )
    people: list[dict[str, Any]] = response.json().get("consultants", [])
    if not people:
        raise TokenError(f"--as {wanted!r}: no consultant has that code or id")
    return people[0]


# -- client credentials ----------------------------------------------------------------------------


def discover(client: httpx.Client, discovery_url: str) -> dict[str, Any]:
    try:
        response = client.get(discovery_url)
    except httpx.TransportError as exc:
        raise TokenError(f"cannot reach the OIDC provider at {discovery_url} ({exc})") from exc
    if response.status_code != 200:
        raise TokenError(f"{discovery_url} answered {response.status_code}")
    document: dict[str, Any] = response.json()
    return document


def provider_discovery_url(client: httpx.Client, api_url: str, issuer: str | None) -> str:
    """The provider's discovery URL: from the issuer, else from the gateway's OpenAPI document."""
    if issuer:
        return issuer.rstrip("/") + DISCOVERY_PATH
    try:
        response = client.get(api_url.rstrip("/") + "/openapi.json")
    except httpx.TransportError as exc:
        raise TokenError(
            f"cannot reach Accrue at {api_url} to find its OIDC provider ({exc}); pass --issuer"
        ) from exc
    try:
        url = response.json()["components"]["securitySchemes"]["oidc"]["openIdConnectUrl"]
    except (ValueError, KeyError, TypeError):
        raise TokenError(f"{api_url}/openapi.json names no OIDC provider; pass --issuer") from None
    return str(url)


def client_credentials_token(
    client: httpx.Client,
    *,
    api_url: str,
    client_id: str,
    client_secret: str,
    issuer: str | None = None,
    scope: str | None = None,
    resource: str | None = None,
) -> str:
    """An access token for an integration client by the OAuth2 client-credentials grant
    (RFC 6749 §4.4), the client authenticated with HTTP Basic (client_secret_basic)."""
    document = discover(client, provider_discovery_url(client, api_url, issuer))
    endpoint = document.get("token_endpoint")
    if not isinstance(endpoint, str) or not endpoint:
        raise TokenError(f"the provider {document.get('issuer', '')} has no token_endpoint")
    form = {"grant_type": "client_credentials"}
    if scope:
        form["scope"] = scope
    if resource:
        form["resource"] = resource
    # RFC 6749 §2.3.1: id and secret are form-urlencoded before they go into Basic.
    auth = httpx.BasicAuth(quote(client_id, safe=""), quote(client_secret, safe=""))
    try:
        response = client.post(endpoint, data=form, auth=auth)
    except httpx.TransportError as exc:
        raise TokenError(f"cannot reach the token endpoint {endpoint} ({exc})") from exc
    body: dict[str, Any] = {}
    try:
        body = response.json()
    except ValueError:
        pass
    if response.status_code != 200 or not isinstance(body.get("access_token"), str):
        reason = body.get("error_description") or body.get("error") or response.text[:200]
        raise TokenError(f"the provider refused client {client_id!r} ({response.status_code}): {reason}")
    token: str = body["access_token"]
    return token


# -- what seed and import send ---------------------------------------------------------------------


@dataclass(frozen=True)
class AuthOptions:
    """How `accrue seed` / `accrue import` get their bearer token (see the module docstring)."""

    token: str | None = None
    client_id: str | None = None
    client_secret: str | None = None
    issuer: str | None = None
    scope: str | None = None
    resource: str | None = None
    data_dir: Path | None = None


@dataclass(frozen=True)
class Auth:
    """The token seed or import send, how it was had, and the local issuer when it minted it."""

    token: str
    how: str
    minter: LocalMinter | None = None

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def authenticate(
    options: AuthOptions,
    *,
    api_url: str,
    local: LocalDefault,
    environ: Mapping[str, str] | None = None,
    http: httpx.Client | None = None,
) -> Auth:
    """The bearer token for seed or import: given, by client credentials, else minted locally."""
    env = os.environ if environ is None else environ
    if options.token and options.token.strip():
        return Auth(options.token.strip(), "the given token")
    if options.client_id or options.client_secret:
        if not (options.client_id and options.client_secret):
            raise TokenError(
                f"client credentials need both --client-id ({CLIENT_ID_VAR}) and --client-secret "
                f"({CLIENT_SECRET_VAR})"
            )
        with _client(http) as client:
            token = client_credentials_token(
                client,
                api_url=api_url,
                client_id=options.client_id,
                client_secret=options.client_secret,
                issuer=options.issuer,
                scope=options.scope,
                resource=options.resource,
            )
        return Auth(token, f"client credentials of {options.client_id}")
    if options.data_dir is None:
        raise TokenError("no token: pass --token, client credentials, or the stack's --data-dir")
    with _client(http) as client:
        try:
            minter = LocalMinter.open(
                options.data_dir, api_url, clock=cli_clock(env), environ=env, http=client
            )
        except TokenError as exc:
            raise TokenError(
                f"{exc}\n(or authenticate: --token / {TOKEN_VAR}, or --client-id/--client-secret)"
            ) from None
    return Auth(local.mint(minter), local.describe, minter)


@dataclass(frozen=True)
class LocalDefault:
    """Who seed or import act as when they mint their own token from the local issuer."""

    describe: str
    client_id: str | None = None
    subject: str | None = None
    roles: Sequence[str] = ()
    ttl: dt.timedelta = dt.timedelta(hours=1)

    def mint(self, minter: LocalMinter) -> str:
        if self.client_id is not None:
            return minter.client(self.client_id, self.ttl)
        return minter.person(
            self.subject or ADMIN_SUBJECT, self.roles or admin_roles(), [ALL_LEGAL_ENTITIES], self.ttl
        )


class _client:
    """The given httpx client, or a short-lived one."""

    def __init__(self, http: httpx.Client | None) -> None:
        self._given = http
        self._own: httpx.Client | None = None

    def __enter__(self) -> httpx.Client:
        if self._given is not None:
            return self._given
        self._own = httpx.Client(timeout=httpx.Timeout(30, connect=5))
        return self._own

    def __exit__(self, *exc: object) -> None:
        if self._own is not None:
            self._own.close()
