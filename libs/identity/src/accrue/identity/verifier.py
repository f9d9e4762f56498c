"""Bearer-token verification following RFC 8725 (JWT Best Current Practices).

What a token must be to pass `TokenVerifier.verify`:

- a compact JWS (three segments), at most MAX_TOKEN_BYTES long, with no `crit` header (we
  understand no JOSE extension, RFC 7515 §4.1.11);
- signed with an algorithm the configuration accepts (RS*/PS*, ES*, EdDSA only). `none` and
  HS* can never be configured, so an attacker cannot make us treat a public key as an HMAC
  secret (RFC 8725 §2.1, §3.1): the algorithm list is ours, never the token's;
- signed by a key the issuer publishes: `kid` is looked up in the issuer's JWKS (discovered from
  `<issuer>/.well-known/openid-configuration` or configured), whose key type and curve must fit
  the algorithm. Keys in the token itself (`jwk`, `jku`, `x5u`) are ignored;
- with `iss` equal to the configured issuer, an `aud` naming one of the configured audiences,
  an `exp` in the future and no `nbf`/`iat` in the future, each within `leeway`.

Time comes from the injected clock (accrue.runtime.clock), never from the JOSE library, so a
pinned clock pins token validity too: PyJWT's own exp/nbf/iat checks are switched off.

The JWKS is cached. An unknown `kid` refreshes it (that is how a rotated key arrives without a
restart), as does age (`jwks_max_age`, so a key the provider withdrew stops being trusted).
Refreshes are at most one per `jwks_min_refresh_interval` by the clock, whatever the traffic, so
a flood of tokens naming made-up kids costs the provider one request per interval. When a
refresh fails the keys already held keep working: an outage at the provider does not log
everyone out, and a token whose key we cannot check is `provider_unavailable`, not `unknown_key`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import httpx
import jwt
from jwt.exceptions import (
    DecodeError,
    InvalidAlgorithmError,
    InvalidKeyError,
    InvalidSignatureError,
    PyJWKError,
    PyJWTError,
)
from jwt.types import Options

from accrue.identity.errors import REASONS, InvalidToken, Reason
from accrue.runtime.clock import Clock
from accrue.telemetry import get_logger

__all__ = [
    "ASYMMETRIC_ALGORITHMS",
    "DEFAULT_ALGORITHMS",
    "DISCOVERY_PATH",
    "MAX_TOKEN_BYTES",
    "REASONS",
    "InvalidToken",
    "Reason",
    "TokenVerifier",
    "VerifierConfig",
    "discovery_url",
    "token_from_authorization",
]

log = get_logger(__name__)

# The algorithms a configuration may name, each with the JWK key type (and curves) it needs.
# Asymmetric only: a verifier holds public keys, and an HS* "public key" would be a shared secret.
ASYMMETRIC_ALGORITHMS: Final[Mapping[str, tuple[str, frozenset[str] | None]]] = {
    "RS256": ("RSA", None),
    "RS384": ("RSA", None),
    "RS512": ("RSA", None),
    "PS256": ("RSA", None),
    "PS384": ("RSA", None),
    "PS512": ("RSA", None),
    "ES256": ("EC", frozenset({"P-256"})),
    "ES384": ("EC", frozenset({"P-384"})),
    "ES512": ("EC", frozenset({"P-521"})),
    "EdDSA": ("OKP", frozenset({"Ed25519", "Ed448"})),
}
DEFAULT_ALGORITHMS: Final = ("RS256", "ES256", "EdDSA")

# Real access tokens are a few KiB; anything far beyond is refused before any parsing work.
MAX_TOKEN_BYTES: Final = 16 * 1024

# JWK members that carry private or symmetric key material. A JWKS should have none; if a
# misconfigured provider publishes them we drop them, so we only ever hold public keys.
_SECRET_MEMBERS: Final = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})

# PyJWT decodes and checks the signature; every claim check is ours (below), against our clock.
_DECODE_OPTIONS: Final[Options] = {
    "verify_signature": True,
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "verify_iss": False,
    "verify_aud": False,
    "verify_sub": False,
    "verify_jti": False,
    "require": [],
    # An RSA key under 2048 bits is refused rather than merely warned about.
    "enforce_minimum_key_length": True,
}


DISCOVERY_PATH: Final = "/.well-known/openid-configuration"


def discovery_url(issuer: str) -> str:
    """Where an issuer's OpenID configuration lives (OIDC Discovery §4: no doubled slash)."""
    return issuer.rstrip("/") + DISCOVERY_PATH


@dataclass(frozen=True)
class VerifierConfig:
    """What a token must match; refused at construction if it would let a bad token through."""

    issuer: str
    audiences: frozenset[str]
    # Where the JWKS is, when the provider has no discovery document (or it should be bypassed).
    jwks_url: str | None = None
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    # Allowed clock difference between us and the issuer for exp, nbf and iat.
    leeway: dt.timedelta = dt.timedelta(seconds=30)
    # At most one JWKS (or discovery) fetch per interval, however many unknown kids arrive.
    jwks_min_refresh_interval: dt.timedelta = dt.timedelta(seconds=30)
    # Keys held longer than this are re-fetched at the next verification.
    jwks_max_age: dt.timedelta = dt.timedelta(minutes=15)
    http_timeout_seconds: float = 5.0

    def __post_init__(self) -> None:
        if not self.issuer:
            raise ValueError("an issuer is required")
        if not self.audiences or any(not audience for audience in self.audiences):
            raise ValueError("at least one non-empty audience is required (RFC 8725 §3.9)")
        if not self.algorithms:
            raise ValueError("at least one signing algorithm must be accepted")
        refused = [alg for alg in self.algorithms if alg not in ASYMMETRIC_ALGORITHMS]
        if refused:
            raise ValueError(
                f"algorithms {refused} cannot be accepted: only {sorted(ASYMMETRIC_ALGORITHMS)} "
                "(never 'none', never a symmetric HS* algorithm; RFC 8725 §2.1, §3.1)"
            )
        if self.leeway < dt.timedelta(0) or self.leeway > dt.timedelta(minutes=5):
            raise ValueError("leeway must be between 0 and 5 minutes")
        if self.jwks_min_refresh_interval <= dt.timedelta(0):
            raise ValueError("jwks_min_refresh_interval must be positive")
        if self.jwks_max_age < self.jwks_min_refresh_interval:
            raise ValueError("jwks_max_age must be at least jwks_min_refresh_interval")

    @classmethod
    def of(cls, issuer: str, audience: str | Iterable[str], **options: Any) -> VerifierConfig:
        """A config from one audience or several."""
        audiences = frozenset([audience] if isinstance(audience, str) else audience)
        return cls(issuer=issuer, audiences=audiences, **options)


def token_from_authorization(header: str | None) -> str:
    """The token in an `Authorization: Bearer <token>` header (RFC 6750 §2.1).

    No header, or another scheme (e.g. Basic), is `missing`; `Bearer` with nothing usable after
    it is `malformed`.
    """
    if not header:
        raise InvalidToken("missing")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer":
        raise InvalidToken("missing")
    token = token.strip()
    if not token or " " in token:
        raise InvalidToken("malformed")
    return token


_VERIFIED_CACHE_SIZE = 10_000


class _Refresh(enum.Enum):
    FETCHED = "fetched"
    FAILED = "failed"
    RATE_LIMITED = "rate_limited"


class _ProviderError(Exception):
    """Discovery or JWKS could not be fetched or made no sense; the message is for logs only."""


@dataclass
class _KeyCache:
    # kid -> the provider's public JWKs with that kid (normally one).
    keys: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # Keys built from JWKs, per (kid, algorithm, index), so a hot kid is parsed once.
    built: dict[tuple[str, str, int], Any] = field(default_factory=dict)
    fetched_at: dt.datetime | None = None
    attempted_at: dt.datetime | None = None
    last_attempt_failed: bool = False
    jwks_url: str | None = None


class TokenVerifier:
    """Verifies bearer tokens of one issuer and returns their claims.

    `http` is the client for discovery and JWKS (tests give it a transport); it is not closed
    here, as the caller owns it. Safe to share across concurrent requests of one event loop.
    """

    def __init__(self, config: VerifierConfig, http: httpx.AsyncClient, clock: Clock) -> None:
        self._config = config
        self._http = http
        self._clock = clock
        self._algorithms = frozenset(config.algorithms)
        self._cache = _KeyCache(jwks_url=config.jwks_url)
        # One refresh at a time: concurrent requests with a new kid wait for one fetch.
        self._refresh_lock = asyncio.Lock()
        # Tokens whose signature verified, with their kid: a portal sends the same token with
        # every request, and checking an ECDSA/RSA signature (and PyJWT's parsing) is most of
        # the gateway's cost per request. Forgotten whenever the keys are fetched again.
        self._verified: OrderedDict[str, tuple[str, dict[str, Any]]] = OrderedDict()

    @property
    def config(self) -> VerifierConfig:
        return self._config

    async def aclose(self) -> None:
        """Close the HTTP client (the gateway's, at shutdown)."""
        await self._http.aclose()

    async def verify(self, token: str | None) -> dict[str, Any]:
        """The token's claims if it passes every check; otherwise InvalidToken(reason)."""
        if not token:
            raise InvalidToken("missing")
        if len(token) > MAX_TOKEN_BYTES or token.count(".") != 2:
            raise InvalidToken("malformed")
        header = _header(token)
        algorithm = header.get("alg")
        if not isinstance(algorithm, str) or algorithm not in self._algorithms:
            raise InvalidToken("bad_algorithm")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            # Without a kid we would have to try every key; providers all send one.
            raise InvalidToken("unknown_key")
        remembered = self._verified.get(token)
        if remembered is not None and remembered[0] in self._cache.keys and not self._keys_stale():
            # The signature was checked with a key the provider still publishes: only time can
            # have changed (exp, nbf), and that is checked again on every use.
            claims = remembered[1]
            self._check_claims(claims)
            return dict(claims)
        key = await self._key(kid, algorithm)
        claims = _signed_claims(token, key, algorithm)
        self._check_claims(claims)
        self._verified[token] = (kid, claims)
        if len(self._verified) > _VERIFIED_CACHE_SIZE:
            self._verified.popitem(last=False)
        return dict(claims)

    def _keys_stale(self) -> bool:
        fetched = self._cache.fetched_at
        return fetched is None or self._clock() - fetched >= self._config.jwks_max_age

    # -- keys ------------------------------------------------------------------------------------

    async def _key(self, kid: str, algorithm: str) -> Any:
        cache = self._cache
        outcome: _Refresh | None = None
        stale = cache.fetched_at is None or self._clock() - cache.fetched_at >= self._config.jwks_max_age
        if stale or kid not in cache.keys:
            outcome = await self._refresh()
        if kid not in cache.keys:
            unavailable = (
                cache.fetched_at is None
                or outcome is _Refresh.FAILED
                or (outcome is _Refresh.RATE_LIMITED and cache.last_attempt_failed)
            )
            raise InvalidToken("provider_unavailable" if unavailable else "unknown_key")
        return self._built_key(kid, algorithm)

    def _built_key(self, kid: str, algorithm: str) -> Any:
        kty, curves = ASYMMETRIC_ALGORITHMS[algorithm]
        for index, jwk in enumerate(self._cache.keys[kid]):
            if jwk.get("kty") != kty or (curves is not None and jwk.get("crv") not in curves):
                continue
            if jwk.get("alg") not in (None, algorithm):
                continue
            slot = (kid, algorithm, index)
            if slot not in self._cache.built:
                try:
                    self._cache.built[slot] = jwt.PyJWK(jwk, algorithm).key
                except (PyJWKError, InvalidKeyError, ValueError, TypeError):
                    log.warning("jwks_key_unusable", issuer=self._config.issuer, kid=kid)
                    raise InvalidToken("unknown_key") from None
            return self._cache.built[slot]
        # The kid exists but for another kind of key: the token's alg does not fit it.
        raise InvalidToken("bad_algorithm")

    async def _refresh(self) -> _Refresh:
        async with self._refresh_lock:
            cache = self._cache
            now = self._clock()
            if (
                cache.attempted_at is not None
                and now - cache.attempted_at < self._config.jwks_min_refresh_interval
            ):
                return _Refresh.RATE_LIMITED
            cache.attempted_at = now
            try:
                if cache.jwks_url is None:
                    cache.jwks_url = await self._discover()
                keys = _public_keys(await self._get_json(cache.jwks_url))
            except _ProviderError as exc:
                cache.last_attempt_failed = True
                # Discover again next time: the provider may have moved its JWKS.
                cache.jwks_url = self._config.jwks_url
                log.warning("jwks_refresh_failed", issuer=self._config.issuer, error=str(exc))
                return _Refresh.FAILED
            cache.keys = keys
            cache.built = {}
            self._verified.clear()  # a withdrawn key's tokens must not outlive it here
            cache.fetched_at = now
            cache.last_attempt_failed = False
            log.info("jwks_refreshed", issuer=self._config.issuer, kids=sorted(keys))
            return _Refresh.FETCHED

    async def _discover(self) -> str:
        document = await self._get_json(discovery_url(self._config.issuer))
        # OIDC Discovery §4.3: the document must name exactly the issuer we asked, or an attacker
        # who controls one issuer's document could vouch for another's tokens.
        if document.get("issuer") != self._config.issuer:
            raise _ProviderError("discovery document names another issuer")
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str) or not jwks_uri:
            raise _ProviderError("discovery document has no jwks_uri")
        return jwks_uri

    async def _get_json(self, url: str) -> dict[str, Any]:
        try:
            response = await self._http.get(
                url, headers={"accept": "application/json"}, timeout=self._config.http_timeout_seconds
            )
            response.raise_for_status()
            document = response.json()
        except httpx.HTTPError as exc:
            raise _ProviderError(f"{url}: {type(exc).__name__}: {exc}") from exc
        except ValueError as exc:
            raise _ProviderError(f"{url}: not JSON") from exc
        if not isinstance(document, dict):
            raise _ProviderError(f"{url}: not a JSON object")
        return document

    # -- claims ----------------------------------------------------------------------------------

    def _check_claims(self, claims: Mapping[str, Any]) -> None:
        if claims.get("iss") != self._config.issuer:
            raise InvalidToken("wrong_issuer")
        audience = claims.get("aud")
        audiences = [audience] if isinstance(audience, str) else audience
        if not isinstance(audiences, list) or not any(
            isinstance(each, str) and each in self._config.audiences for each in audiences
        ):
            raise InvalidToken("wrong_audience")
        now = self._clock().timestamp()
        leeway = self._config.leeway.total_seconds()
        # RFC 8725 §3.10 and common sense: a bearer token that never expires is not accepted.
        expires = _numeric_date(claims, "exp", required=True)
        if expires is not None and now >= expires + leeway:
            raise InvalidToken("expired")
        not_before = _numeric_date(claims, "nbf", required=False)
        if not_before is not None and now + leeway < not_before:
            raise InvalidToken("not_yet_valid")
        # A token issued in the future means clocks disagree beyond the leeway: not valid yet.
        issued_at = _numeric_date(claims, "iat", required=False)
        if issued_at is not None and now + leeway < issued_at:
            raise InvalidToken("not_yet_valid")


def _header(token: str) -> dict[str, Any]:
    try:
        header = jwt.get_unverified_header(token)
    except PyJWTError:
        raise InvalidToken("malformed") from None
    # No JOSE extensions are understood, so any critical one must be refused (RFC 7515 §4.1.11);
    # that also refuses unencoded payloads (RFC 7797's b64=false needs crit).
    if "crit" in header or "b64" in header:
        raise InvalidToken("malformed")
    return header


def _signed_claims(token: str, key: Any, algorithm: str) -> dict[str, Any]:
    try:
        # algorithms=[algorithm]: the one already checked against our list and the key's type.
        claims = jwt.decode(token, key=key, algorithms=[algorithm], options=_DECODE_OPTIONS)
    except InvalidSignatureError:
        raise InvalidToken("bad_signature") from None
    except InvalidAlgorithmError:
        raise InvalidToken("bad_algorithm") from None
    except InvalidKeyError:
        raise InvalidToken("unknown_key") from None
    except (DecodeError, PyJWTError):
        raise InvalidToken("malformed") from None
    return claims


def _numeric_date(claims: Mapping[str, Any], name: str, *, required: bool) -> float | None:
    value = claims.get(name)
    if value is None:
        if required:
            raise InvalidToken("malformed")
        return None
    # bool is an int in Python, and not a NumericDate (RFC 7519 §2).
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidToken("malformed")
    return float(value)


def _public_keys(document: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The usable public signing keys of a JWKS document, by kid."""
    entries = document.get("keys")
    if not isinstance(entries, list):
        raise _ProviderError("JWKS has no keys list")
    usable_types = {kty for kty, _ in ASYMMETRIC_ALGORITHMS.values()}
    keys: dict[str, list[dict[str, Any]]] = {}
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        kid = entry.get("kid")
        # Symmetric ("oct") and unknown key types are never used, whatever a token's alg says.
        if not isinstance(kid, str) or not kid or entry.get("kty") not in usable_types:
            continue
        if entry.get("use", "sig") != "sig":
            continue  # an encryption key is not a signing key (RFC 7517 §4.2)
        key_ops = entry.get("key_ops")
        if key_ops is not None and (not isinstance(key_ops, list) or "verify" not in key_ops):
            continue
        public = {name: value for name, value in entry.items() if name not in _SECRET_MEMBERS}
        keys.setdefault(kid, []).append(public)
    return keys
