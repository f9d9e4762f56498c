"""Identity: OIDC bearer-token verification, the verified principal, and the embedded issuer.

- `accrue.identity.verifier`: `TokenVerifier` checks a JWT against a provider's discovery
  document and JWKS (RFC 8725), reading "now" from an injected clock.
- `accrue.identity.principal`: `Principal` and `ClaimsMapping`, who a verified token names.
- `accrue.identity.local_issuer`: the issuer `make run` uses when no external one is configured.

Not wired into the gateway or the services yet (see docs/security.md, "Tokens").
"""
