"""Mutual TLS between the processes of the stack (gRPC) and towards NATS.

One certificate per process serves both ways: it proves the server to its callers and the
caller to the servers it calls. Every certificate is issued by one CA, whose certificate each
process holds to check the other side.

A gRPC server asked to require client certificates without root certificates to check them
against does not fail: grpc silently accepts every client. So the CA is mandatory here: a cert
and key without a CA are refused when the settings are read, never half-applied.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import grpc


class TlsConfigError(ValueError):
    """TLS settings that are incomplete or unreadable; the message names the setting."""


def _read(path: Path, setting: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TlsConfigError(f"{setting}: cannot read {path}: {exc.strerror or exc}") from None
    if not data.strip():
        raise TlsConfigError(f"{setting}: {path} is empty")
    return data


def check_complete(prefix: str, cert: Path | None, key: Path | None, ca: Path | None) -> None:
    """All three of cert, key and CA, or none: say which is missing otherwise."""
    given = {"CERT_FILE": cert, "KEY_FILE": key, "CA_FILE": ca}
    missing = [name for name, value in given.items() if value is None]
    if missing and len(missing) < len(given):
        names = ", ".join(f"{prefix}{name}" for name in missing)
        raise TlsConfigError(
            f"{names} missing: mutual TLS needs a certificate, its key and the CA "
            "(without the CA, peers' certificates would not be checked)"
        )


@dataclass(frozen=True)
class GrpcTls:
    """This process's certificate chain and key, and the CA every peer's certificate must chain to."""

    certificate_chain: bytes
    private_key: bytes
    root_certificates: bytes
    # For tests and addresses without a name in the certificate (e.g. 127.0.0.1 in a cert for
    # "masterdata"): the name the server's certificate is checked against instead of the host.
    server_name_override: str | None = None

    @classmethod
    def from_files(
        cls, cert: Path | None, key: Path | None, ca: Path | None, *, prefix: str = "ACCRUE_GRPC_TLS_"
    ) -> GrpcTls | None:
        """None when no file is given (plaintext, `make run` on loopback); all three otherwise."""
        check_complete(prefix, cert, key, ca)
        if cert is None or key is None or ca is None:
            return None
        return cls(
            _read(cert, f"{prefix}CERT_FILE"),
            _read(key, f"{prefix}KEY_FILE"),
            _read(ca, f"{prefix}CA_FILE"),
        )

    def server_credentials(self) -> grpc.ServerCredentials:
        """Serve with this certificate and refuse any client without one the CA issued."""
        return grpc.ssl_server_credentials(
            [(self.private_key, self.certificate_chain)],
            root_certificates=self.root_certificates,
            require_client_auth=True,
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """Check the server against the CA and present this process's certificate."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.root_certificates,
            private_key=self.private_key,
            certificate_chain=self.certificate_chain,
        )

    def channel_options(self) -> list[tuple[str, str]]:
        if self.server_name_override is None:
            return []
        return [("grpc.ssl_target_name_override", self.server_name_override)]


@dataclass(frozen=True)
class NatsTls:
    """TLS towards NATS: the CA that issued the server's certificate, and optionally a client
    certificate (for a server that verifies clients, `verify: true` in its tls block)."""

    ca_file: Path
    cert_file: Path | None = None
    key_file: Path | None = None

    @classmethod
    def from_files(
        cls, ca: Path | None, cert: Path | None, key: Path | None, *, prefix: str = "ACCRUE_NATS_TLS_"
    ) -> NatsTls | None:
        if (cert is None) != (key is None):
            raise TlsConfigError(f"{prefix}CERT_FILE and {prefix}KEY_FILE go together; one is missing")
        if ca is None:
            if cert is not None:
                raise TlsConfigError(f"{prefix}CA_FILE missing: a client certificate needs the server's CA")
            return None
        for path, name in ((ca, "CA_FILE"), (cert, "CERT_FILE"), (key, "KEY_FILE")):
            if path is not None:
                _read(path, f"{prefix}{name}")
        return cls(ca, cert, key)

    def context(self) -> ssl.SSLContext:
        """Verify the server's certificate and name (TLS 1.2 at least); present ours if we have one."""
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.ca_file))
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert_file is not None and self.key_file is not None:
            context.load_cert_chain(str(self.cert_file), str(self.key_file))
        return context
