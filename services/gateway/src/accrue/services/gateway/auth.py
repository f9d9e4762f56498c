"""Who is calling: the bearer token of each request, verified, and the internal token for backends.

The gateway verifies the caller's OIDC access token (accrue.identity.verifier: RFC 8725, JWKS by
discovery, rotation without restart) and maps its claims to a principal. It then calls services
with an internal token it signs for that principal (accrue.identity.internal): services trust
no header the client sent, only the gateway's signature.

401s say why in `WWW-Authenticate` (RFC 6750) and problem+json, never echoing the token; 403s
come from the services' policy check and name the permission.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace

from accrue.identity.errors import InvalidToken
from accrue.identity.internal import InternalSigner
from accrue.identity.principal import ClaimsMapping
from accrue.identity.verifier import TokenVerifier, token_from_authorization
from accrue.runtime.clock import Clock
from accrue.runtime.identity import Principal
from accrue.services.gateway.problems import Problem

REALM = "accrue"


def unauthorized(error: InvalidToken) -> Problem:
    """The 401 for a refused token: reason in the problem and in WWW-Authenticate."""
    if error.reason == "provider_unavailable":
        # Not the caller's fault: the provider's keys could not be fetched. Retrying may work.
        return Problem(
            503,
            "The identity provider's keys could not be fetched; try again later.",
            "UNAVAILABLE",
            "PROVIDER_UNAVAILABLE",
            headers={"Retry-After": "5"},
        )
    if error.reason == "missing":
        # RFC 6750 §3.1: a request without credentials gets the challenge and no error code.
        challenge = f'Bearer realm="{REALM}"'
    else:
        challenge = f'Bearer realm="{REALM}", error="invalid_token", error_description="{error.reason}"'
    return Problem(
        401,
        f"Authentication failed: {error.description}.",
        "UNAUTHENTICATED",
        error.reason.upper(),
        headers={"WWW-Authenticate": challenge},
    )


# Finds the consultant whose external reference in `system` is `external_id`: their id, or None.
ConsultantLookup = Callable[[str, str], Awaitable[str | None]]


@dataclass
class SubjectMapping:
    """How a person's token subject becomes a consultant id (ACCRUE_GATEWAY_SUBJECT_MAPPING).

    `id`: the subject claim carries the consultant id itself. `external_ref:<system>`: it carries
    the consultant's id in that system (e.g. the HR system's worker id, which the provider also
    knows), looked up in master data once and remembered for `ttl`. Integration clients keep
    their subject. A person with no consultant record (finance, an auditor) keeps theirs too.
    """

    system: str | None
    lookup: ConsultantLookup | None
    clock: Clock
    ttl: dt.timedelta = dt.timedelta(minutes=5)
    _known: dict[str, tuple[str | None, dt.datetime]] = field(default_factory=dict)

    async def consultant(self, principal: Principal) -> Principal:
        if self.system is None or self.lookup is None or principal.system is not None:
            return principal
        now = self.clock()
        known = self._known.get(principal.subject)
        if known is None or known[1] <= now:
            known = (await self.lookup(self.system, principal.subject), now + self.ttl)
            self._known[principal.subject] = known
        return principal if known[0] is None else replace(principal, subject=known[0])


@dataclass(frozen=True)
class Authenticator:
    """Bearer token in, principal and the internal metadata for backends out."""

    verifier: TokenVerifier
    claims: ClaimsMapping
    signer: InternalSigner
    subjects: SubjectMapping | None = None

    async def principal(self, authorization: str | None) -> Principal:
        """The caller; raises Problem(401) for a missing or invalid token."""
        try:
            claims = await self.verifier.verify(token_from_authorization(authorization))
            principal = self.claims.principal(claims)
        except InvalidToken as error:
            raise unauthorized(error) from None
        return principal if self.subjects is None else await self.subjects.consultant(principal)

    def backend_metadata(self, principal: Principal) -> tuple[str, str]:
        return ("authorization", f"Bearer {self.signer.token(principal)}")
