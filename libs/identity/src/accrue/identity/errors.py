"""The one error a bearer token can earn, with a reason callers may rely on.

The reasons are part of the API: the gateway puts them in `WWW-Authenticate` and problem+json,
dashboards count them. Messages are written here, never copied from the token or from the JOSE
library (whose messages may quote headers or keys), so an error never echoes a credential.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

Reason = Literal[
    "missing",
    "malformed",
    "bad_algorithm",
    "unknown_key",
    "bad_signature",
    "expired",
    "not_yet_valid",
    "wrong_issuer",
    "wrong_audience",
    "provider_unavailable",
]
REASONS: Final[tuple[Reason, ...]] = get_args(Reason)

_DESCRIPTIONS: Final[dict[Reason, str]] = {
    "missing": "no bearer token was presented",
    "malformed": "the token is not a well-formed signed JWT with the claims required",
    "bad_algorithm": "the token's signing algorithm is not accepted",
    "unknown_key": "the token names no signing key the issuer publishes",
    "bad_signature": "the token's signature does not verify",
    "expired": "the token has expired",
    "not_yet_valid": "the token is not valid yet",
    "wrong_issuer": "the token was issued by another issuer",
    "wrong_audience": "the token is meant for another audience",
    "provider_unavailable": "the identity provider's keys could not be fetched",
}


class InvalidToken(Exception):
    """A bearer token was refused; `reason` says why (one of REASONS)."""

    def __init__(self, reason: Reason) -> None:
        self.reason: Reason = reason
        self.description = _DESCRIPTIONS[reason]
        super().__init__(f"{reason}: {self.description}")
