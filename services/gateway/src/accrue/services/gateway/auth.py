"""Who is calling: the bearer token of each request, verified, and the internal token for backends.

The gateway verifies the caller's OIDC access token (accrue.identity.verifier: RFC 8725, JWKS by
discovery, rotation without restart) and maps its claims to a principal. It then calls services
with an internal token it signs for that principal (accrue.identity.internal): services trust
no header the client sent, only the gateway's signature.

401s say why in `WWW-Authenticate` (RFC 6750) and problem+json, never echoing the token; 403s
come from the services' policy check and name the permission.
"""

from __future__ import annotations

from dataclasses import dataclass

from accrue.identity.errors import InvalidToken
from accrue.identity.internal import InternalSigner
from accrue.identity.principal import ClaimsMapping
from accrue.identity.verifier import TokenVerifier, token_from_authorization
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


@dataclass(frozen=True)
class Authenticator:
    """Bearer token in, principal and the internal metadata for backends out."""

    verifier: TokenVerifier
    claims: ClaimsMapping
    signer: InternalSigner

    async def principal(self, authorization: str | None) -> Principal:
        """The caller; raises Problem(401) for a missing or invalid token."""
        try:
            claims = await self.verifier.verify(token_from_authorization(authorization))
            return self.claims.principal(claims)
        except InvalidToken as error:
            raise unauthorized(error) from None

    def backend_metadata(self, principal: Principal) -> tuple[str, str]:
        return ("authorization", f"Bearer {self.signer.token(principal)}")
