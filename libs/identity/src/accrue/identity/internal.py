"""Identity between Accrue's own processes: short-lived internal tokens only Accrue can sign.

The gateway verifies a caller's OIDC token once, then calls services with an *internal* token it
signs with a key only it holds, naming the same principal. Every other service signs internal
tokens too, but only for itself (`service:<name>`, role `service`): the verifier refuses any
other subject from a key that is not the gateway's, so a service cannot act for a person, and a
client without a key cannot act at all.

Keys: each process has an EC P-256 key pair, `<name>.key.pem` (private, 0600) and
`<name>.pub.pem`, in one directory (the embedded stack and the tests make them; in Kubernetes
each pod mounts its own private key from a Secret and every public key from a ConfigMap). A
verifier trusts exactly the public keys in that directory. ES256 with the process name as kid.

Tokens live two minutes; the signer reuses one for a principal for half of that, and the
verifier remembers tokens it has verified until they expire, so the cost per call is a dict
lookup (measured in docs/performance.md).
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from accrue.identity.errors import InvalidToken
from accrue.runtime.clock import Clock
from accrue.runtime.identity import SERVICE_ROLE, Principal, service_principal

__all__ = [
    "AUDIENCE",
    "GATEWAY",
    "InternalSigner",
    "InternalVerifier",
    "ensure_keys",
    "load_signer",
    "load_verifier",
]

ALGORITHM: Final = "ES256"
AUDIENCE: Final = "accrue-internal"
ISSUER: Final = "accrue-internal"
TOKEN_TYPE: Final = "accrue-internal+jwt"
GATEWAY: Final = "gateway"
TTL: Final = dt.timedelta(minutes=2)
LEEWAY: Final = dt.timedelta(seconds=30)
_NAME: Final = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
_CACHE_SIZE: Final = 4096


def _private_path(directory: Path, name: str) -> Path:
    return directory / f"{name}.key.pem"


def _public_path(directory: Path, name: str) -> Path:
    return directory / f"{name}.pub.pem"


def ensure_keys(directory: Path, names: Iterable[str]) -> None:
    """Make a key pair for each name that has none (private keys 0600, the directory 0700)."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    for name in names:
        if not _NAME.match(name):
            raise ValueError(f"{name!r} is not a process name (lowercase letters, digits, '-')")
        private = _private_path(directory, name)
        if private.exists():
            continue
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        fd = os.open(private.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
        _public_path(directory, name).write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        private.with_suffix(".tmp").replace(private)


class InternalSigner:
    """Signs internal tokens as process `name`."""

    def __init__(self, name: str, private_key: ec.EllipticCurvePrivateKey, clock: Clock) -> None:
        self.name = name
        self._key = private_key
        self._clock = clock
        self._cache: OrderedDict[Principal, tuple[str, dt.datetime]] = OrderedDict()
        self.own_principal = service_principal(name)

    def token(self, principal: Principal | None = None) -> str:
        """A token for principal (the process's own identity when None)."""
        principal = principal or self.own_principal
        if self.name != GATEWAY and principal != self.own_principal:
            raise ValueError(f"only the gateway may act for a caller; {self.name} acts as itself")
        now = self._clock()
        cached = self._cache.get(principal)
        if cached is not None and now < cached[1]:
            self._cache.move_to_end(principal)
            return cached[0]
        issued = int(now.timestamp())
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": principal.subject,
            "iat": issued,
            "exp": int((now + TTL).timestamp()),
            "roles": sorted(principal.roles),
            "les": sorted(principal.legal_entity_ids),
        }
        for name in ("client_id", "system", "email"):
            if (value := getattr(principal, name)) is not None:
                claims[name] = value
        token = jwt.encode(
            claims, self._key, algorithm=ALGORITHM, headers={"kid": self.name, "typ": TOKEN_TYPE}
        )
        self._cache[principal] = (token, now + TTL / 2)
        if len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        return token

    def metadata(self, principal: Principal | None = None) -> tuple[tuple[str, str], ...]:
        """gRPC metadata carrying the token."""
        return (("authorization", f"Bearer {self.token(principal)}"),)


class InternalVerifier:
    """Verifies internal tokens against the trusted public keys, reading "now" from the clock."""

    def __init__(self, trusted: Mapping[str, ec.EllipticCurvePublicKey], clock: Clock) -> None:
        if not trusted:
            raise ValueError("an internal verifier needs at least one trusted key")
        self._trusted = dict(trusted)
        self._clock = clock
        self._cache: OrderedDict[str, tuple[Principal, float]] = OrderedDict()

    @property
    def trusted(self) -> frozenset[str]:
        return frozenset(self._trusted)

    def principal(self, authorization: str | None) -> Principal:
        """The principal an `authorization` metadata value names; InvalidToken(reason) if none."""
        if not authorization:
            raise InvalidToken("missing")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise InvalidToken("malformed")
        token = token.strip()
        now = self._clock().timestamp()
        cached = self._cache.get(token)
        if cached is not None:
            principal, expires = cached
            if now <= expires + LEEWAY.total_seconds():
                return principal
            del self._cache[token]
        principal, expires = self._verify(token, now)
        self._cache[token] = (principal, expires)
        if len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        return principal

    def _verify(self, token: str, now: float) -> tuple[Principal, float]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidToken("malformed") from None
        if header.get("alg") != ALGORITHM or header.get("typ") != TOKEN_TYPE:
            raise InvalidToken("bad_algorithm")
        signer = header.get("kid")
        if not isinstance(signer, str) or signer not in self._trusted:
            raise InvalidToken("unknown_key")
        key = self._trusted[signer]
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                issuer=ISSUER,
                # Time is judged on the injected clock below, not PyJWT's wall clock.
                options={
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "require": ["exp", "iat", "sub", "aud", "iss"],
                },
            )
        except jwt.InvalidAudienceError:
            raise InvalidToken("wrong_audience") from None
        except jwt.InvalidIssuerError:
            raise InvalidToken("wrong_issuer") from None
        except jwt.InvalidSignatureError:
            raise InvalidToken("bad_signature") from None
        except jwt.PyJWTError:
            raise InvalidToken("malformed") from None
        exp, iat = claims["exp"], claims["iat"]
        if not isinstance(exp, int | float) or not isinstance(iat, int | float):
            raise InvalidToken("malformed")
        leeway = LEEWAY.total_seconds()
        if now > exp + leeway:
            raise InvalidToken("expired")
        if iat > now + leeway:
            raise InvalidToken("not_yet_valid")
        principal = _principal(claims)
        # Only the gateway speaks for callers; any other key speaks for its own process only.
        if signer != GATEWAY and principal != service_principal(signer):
            raise InvalidToken("bad_signature")
        return principal, float(exp)


def _strings(value: Any) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise InvalidToken("malformed")
    return frozenset(value)


def _principal(claims: Mapping[str, Any]) -> Principal:
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise InvalidToken("malformed")
    optional = {}
    for name in ("client_id", "system", "email"):
        value = claims.get(name)
        if value is not None and not isinstance(value, str):
            raise InvalidToken("malformed")
        optional[name] = value
    return Principal(
        subject=subject,
        roles=_strings(claims.get("roles", [])),
        legal_entity_ids=_strings(claims.get("les", [])),
        **optional,
    )


def load_signer(directory: Path, name: str, clock: Clock) -> InternalSigner:
    """The signer of process `name` from its private key in directory."""
    path = _private_path(directory, name)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no internal signing key for {name}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path} is not an EC private key")
    return InternalSigner(name, key, clock)


def load_verifier(directory: Path, clock: Clock) -> InternalVerifier:
    """A verifier trusting every `<name>.pub.pem` in directory."""
    trusted: dict[str, ec.EllipticCurvePublicKey] = {}
    for path in sorted(directory.glob("*.pub.pem")):
        key = serialization.load_pem_public_key(path.read_bytes())
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise ValueError(f"{path} is not an EC public key")
        trusted[path.name.removesuffix(".pub.pem")] = key
    if not trusted:
        raise FileNotFoundError(f"{directory}: no trusted internal keys (*.pub.pem)")
    return InternalVerifier(trusted, clock)


__all__ += ["ALGORITHM", "ISSUER", "SERVICE_ROLE", "TOKEN_TYPE", "TTL"]
