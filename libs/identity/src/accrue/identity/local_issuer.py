"""The embedded token issuer `make run` uses when no external OIDC provider is configured.

It keeps `make run` one command: an ES256 (EC P-256) key pair is made on first use and kept in
the data directory (a 0600 file in a 0700 directory), tokens are minted from it (`mint`), and
the public half is served like any provider's: `/.well-known/openid-configuration` and
`/jwks.json` (`LocalIssuer.app`). The gateway then verifies local tokens with the very same
`TokenVerifier` it uses for Keycloak or Entra ID; nothing trusts the local issuer specially.

Rotation: `rotate()` makes a new key the signing key and keeps the old one in the JWKS, so tokens
already minted keep verifying until `drop(kid)` removes it (after the longest token TTL).

Several processes share the key file (the gateway serves the JWKS, `accrue token` mints), so the
file is re-read whenever it changes on disk and every write replaces it atomically. Two
rotations racing each other could lose one; rotation is a rare, manual act.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import json
import os
import stat
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from accrue.identity.principal import DEFAULT_LEGAL_ENTITIES_CLAIM, DEFAULT_ROLES_CLAIM
from accrue.identity.verifier import DISCOVERY_PATH
from accrue.runtime.clock import Clock

__all__ = ["ALGORITHM", "KEY_FILE_NAME", "LOCAL_ISSUER_PATH", "LocalIssuer", "LocalKey"]

ALGORITHM: Final = "ES256"
KEY_FILE_NAME: Final = "local-issuer-keys.json"
JWKS_PATH: Final = "/jwks.json"
# Where the gateway serves the local issuer: its URL is the gateway's own plus this path.
LOCAL_ISSUER_PATH: Final = "/local-issuer"
_FILE_FORMAT: Final = 1


@dataclass(frozen=True)
class LocalKey:
    """One signing key of the local issuer; kid is its RFC 7638 thumbprint."""

    kid: str
    created: dt.datetime
    private_key: ec.EllipticCurvePrivateKey

    def public_jwk(self) -> dict[str, str]:
        return {**_public_members(self.private_key), "kid": self.kid, "alg": ALGORITHM, "use": "sig"}


class LocalIssuer:
    """The local issuer at `issuer` (its URL as tokens and discovery name it), keys in data_dir."""

    def __init__(self, data_dir: Path, issuer: str, clock: Clock) -> None:
        if not issuer:
            raise ValueError("the local issuer needs its URL")
        self.issuer = issuer
        self.key_file = data_dir / KEY_FILE_NAME
        self._clock = clock
        self._data_dir = data_dir
        self._seen: tuple[int, int, int] | None = None
        self._active = ""
        self._keys: dict[str, LocalKey] = {}
        self._load_or_create()

    # -- keys ------------------------------------------------------------------------------------

    @property
    def active_kid(self) -> str:
        """The kid new tokens are signed with."""
        self._reload_if_changed()
        return self._active

    @property
    def kids(self) -> list[str]:
        """Every kid published in the JWKS, the active one included."""
        self._reload_if_changed()
        return list(self._keys)

    def rotate(self) -> str:
        """Sign with a new key from now on; the old ones stay published. Returns the new kid."""
        self._reload_if_changed()
        key = _new_key(self._clock())
        self._keys[key.kid] = key
        self._active = key.kid
        self._write(exclusive=False)
        return key.kid

    def drop(self, kid: str) -> None:
        """Stop publishing a retired key: tokens it signed no longer verify."""
        self._reload_if_changed()
        if kid == self._active:
            raise ValueError("the active signing key cannot be dropped; rotate first")
        if kid not in self._keys:
            raise KeyError(kid)
        del self._keys[kid]
        self._write(exclusive=False)

    # -- tokens ----------------------------------------------------------------------------------

    def mint(
        self,
        subject: str,
        roles: Iterable[str],
        legal_entities: Iterable[str],
        ttl: dt.timedelta,
        audience: str,
        client_id: str | None = None,
        *,
        email: str | None = None,
    ) -> str:
        """A signed access token for subject, valid from now (the clock) for ttl."""
        if not subject:
            raise ValueError("a token needs a subject")
        if not audience:
            raise ValueError("a token needs an audience")
        if ttl <= dt.timedelta(0):
            raise ValueError("a token's ttl must be positive")
        self._reload_if_changed()
        key = self._keys[self._active]
        now = self._clock()
        issued = int(now.timestamp())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": subject,
            "aud": audience,
            "iat": issued,
            "nbf": issued,
            "exp": int((now + ttl).timestamp()),
            "jti": uuid.uuid4().hex,
            DEFAULT_ROLES_CLAIM: sorted(set(roles)),
            DEFAULT_LEGAL_ENTITIES_CLAIM: sorted(set(legal_entities)),
        }
        if client_id is not None:
            claims["client_id"] = client_id
        if email is not None:
            claims["email"] = email
            claims["email_verified"] = True
        # typ at+jwt: an access token (RFC 9068), explicitly typed as RFC 8725 §3.11 advises.
        return jwt.encode(
            claims, key.private_key, algorithm=ALGORITHM, headers={"kid": key.kid, "typ": "at+jwt"}
        )

    # -- what is served --------------------------------------------------------------------------

    @property
    def jwks_uri(self) -> str:
        return self.issuer.rstrip("/") + JWKS_PATH

    def discovery_document(self) -> dict[str, Any]:
        """The minimal OpenID configuration a verifier needs: who we are and where the keys are.

        There is no authorization or token endpoint: local tokens are minted by `accrue token`.
        """
        return {
            "issuer": self.issuer,
            "jwks_uri": self.jwks_uri,
            "id_token_signing_alg_values_supported": [ALGORITHM],
            "subject_types_supported": ["public"],
            "response_types_supported": [],
        }

    def jwks(self) -> dict[str, Any]:
        self._reload_if_changed()
        return {"keys": [key.public_jwk() for key in self._keys.values()]}

    def app(self) -> Starlette:
        """An ASGI app serving discovery and the JWKS; mount it where `issuer` points."""

        async def configuration(_: Request) -> JSONResponse:
            return JSONResponse(self.discovery_document(), headers={"cache-control": "max-age=300"})

        async def keys(_: Request) -> JSONResponse:
            # Short: a rotation should reach verifiers that honour caching within a minute.
            return JSONResponse(self.jwks(), headers={"cache-control": "max-age=60"})

        return Starlette(
            routes=[
                Route(DISCOVERY_PATH, configuration, methods=["GET"]),
                Route(JWKS_PATH, keys, methods=["GET"]),
            ]
        )

    # -- the key file ----------------------------------------------------------------------------

    def _load_or_create(self) -> None:
        if not self.key_file.exists():
            self._data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            key = _new_key(self._clock())
            self._keys = {key.kid: key}
            self._active = key.kid
            if self._write(exclusive=True):
                return
            # Another process made the key file first: use its key, not ours.
        self._reload_if_changed()

    def _reload_if_changed(self) -> None:
        info = self.key_file.stat()
        seen = (info.st_ino, info.st_mtime_ns, info.st_size)
        if seen == self._seen:
            return
        if os.name == "posix" and info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            # Like ssh with a private key: refuse rather than sign with a key others can read.
            raise PermissionError(f"{self.key_file} must be readable by its owner only (chmod 600)")
        document = json.loads(self.key_file.read_text())
        if document.get("format") != _FILE_FORMAT:
            raise ValueError(f"{self.key_file}: unknown format {document.get('format')!r}")
        keys: dict[str, LocalKey] = {}
        for entry in document["keys"]:
            private_key = serialization.load_pem_private_key(entry["private_key"].encode(), password=None)
            if not isinstance(private_key, ec.EllipticCurvePrivateKey) or not isinstance(
                private_key.curve, ec.SECP256R1
            ):
                raise ValueError(f"{self.key_file}: key {entry['kid']} is not an EC P-256 key")
            kid = _thumbprint(private_key)
            if kid != entry["kid"]:
                raise ValueError(f"{self.key_file}: key {entry['kid']} does not match its kid")
            keys[kid] = LocalKey(kid, dt.datetime.fromisoformat(entry["created"]), private_key)
        if document["active"] not in keys:
            raise ValueError(f"{self.key_file}: the active key {document['active']} is missing")
        self._keys, self._active, self._seen = keys, document["active"], seen

    def _write(self, *, exclusive: bool) -> bool:
        """Write the keys atomically; with exclusive, only if no key file exists yet."""
        document = {
            "format": _FILE_FORMAT,
            "active": self._active,
            "keys": [
                {
                    "kid": key.kid,
                    "created": key.created.isoformat(),
                    "private_key": key.private_key.private_bytes(
                        serialization.Encoding.PEM,
                        serialization.PrivateFormat.PKCS8,
                        serialization.NoEncryption(),
                    ).decode(),
                }
                for key in self._keys.values()
            ],
        }
        temporary = self.key_file.with_name(f".{KEY_FILE_NAME}.{uuid.uuid4().hex}")
        # Created 0600 from the start: the private key is never readable by others, not even briefly.
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(descriptor, "w") as file:
                json.dump(document, file, indent=2)
                file.flush()
                os.fsync(file.fileno())
            if exclusive:
                try:
                    os.link(temporary, self.key_file)
                except FileExistsError:
                    return False
            else:
                os.replace(temporary, self.key_file)
        finally:
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()
        self._seen = None  # re-read our own write, so its stat is what we compare against
        self._reload_if_changed()
        return True


def _new_key(created: dt.datetime) -> LocalKey:
    private_key = ec.generate_private_key(ec.SECP256R1())
    return LocalKey(_thumbprint(private_key), created, private_key)


def _public_members(private_key: ec.EllipticCurvePrivateKey) -> dict[str, str]:
    numbers = private_key.public_key().public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": _b64url(numbers.x.to_bytes(32, "big")),
        "y": _b64url(numbers.y.to_bytes(32, "big")),
    }


def _thumbprint(private_key: ec.EllipticCurvePrivateKey) -> str:
    # RFC 7638: SHA-256 of the required members, lexicographically ordered, without whitespace.
    members = _public_members(private_key)
    canonical = json.dumps(members, sort_keys=True, separators=(",", ":"))
    return _b64url(hashlib.sha256(canonical.encode()).digest())


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
