"""gRPC mutual TLS: a service with TLS settings refuses callers without a certificate from its CA.

grpc's `require_client_auth=True` is silently off when the server has no root certificates, so
these tests do not trust the flag: each refusal is an actual call that fails, beside the same
call with a good certificate that succeeds.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import ValidationError

from accrue.runtime import client
from accrue.runtime.server import RunningService, Service, start
from accrue.runtime.settings import ServiceSettings
from accrue.runtime.tls import GrpcTls
from accrue.testing import identity
from accrue.testing.certs import CertificateAuthority, TlsFiles

pytestmark = pytest.mark.integration

SERVER_NAME = "masterdata"


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.create()


def _files(ca: CertificateAuthority, directory: Path, name: str) -> TlsFiles:
    return ca.issue(name, dns=[name, "localhost"], ips=["127.0.0.1"]).write(directory)


async def _serve(files: TlsFiles, *, health_port: int | None = None) -> RunningService:
    settings = ServiceSettings(
        grpc_port=0,
        metrics_port=-1,
        shutdown_grace_seconds=0.1,
        grpc_tls_cert_file=files.cert,
        grpc_tls_key_file=files.key,
        grpc_tls_ca_file=files.ca,
        grpc_health_port=health_port,
    )
    return await start(
        Service(
            name=SERVER_NAME,
            settings=settings,
            register=lambda server: None,
            service_names=[],
            auth=identity.run_auth().interceptor,
        )
    )


async def _check(channel: grpc.aio.Channel) -> health_pb2.HealthCheckResponse.ServingStatus.ValueType:
    async with channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    return reply.status


def _with_name(tls: GrpcTls) -> GrpcTls:
    return GrpcTls(tls.certificate_chain, tls.private_key, tls.root_certificates, SERVER_NAME)


async def test_a_client_with_a_certificate_from_the_ca_is_served(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    running = await _serve(_files(ca, tmp_path / "server", SERVER_NAME))
    try:
        files = _files(ca, tmp_path / "client", "timekeeping")
        tls = GrpcTls.from_files(files.cert, files.key, files.ca)
        assert tls is not None
        address = f"127.0.0.1:{running.grpc_port}"
        assert (
            await _check(client.channel(address, tls=_with_name(tls)))
            == health_pb2.HealthCheckResponse.SERVING
        )
    finally:
        await running.stop()


async def test_a_client_without_a_certificate_is_refused_by_the_server(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    running = await _serve(_files(ca, tmp_path / "server", SERVER_NAME))
    try:
        address = f"127.0.0.1:{running.grpc_port}"
        # Trusts the server (same CA, right name) but presents no certificate of its own: only
        # the server's demand for one can make this fail.
        no_cert = grpc.aio.secure_channel(
            address,
            grpc.ssl_channel_credentials(root_certificates=ca.pem),
            options=[("grpc.ssl_target_name_override", SERVER_NAME)],
        )
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _check(no_cert)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE

        # Plaintext is not served on the TLS port either.
        with pytest.raises(grpc.aio.AioRpcError) as plaintext:
            await _check(grpc.aio.insecure_channel(address))
        assert plaintext.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await running.stop()


async def test_a_client_certificate_from_another_ca_is_refused(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    running = await _serve(_files(ca, tmp_path / "server", SERVER_NAME))
    try:
        stranger = CertificateAuthority.create("Someone else's CA").issue("timekeeping")
        # The stranger trusts our CA for the server, so only its own certificate is wrong.
        tls = GrpcTls(stranger.cert_pem, stranger.key_pem, ca.pem, SERVER_NAME)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _check(client.channel(f"127.0.0.1:{running.grpc_port}", tls=tls))
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await running.stop()


async def test_a_server_certificate_from_another_ca_is_refused_by_the_client(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    impostor = CertificateAuthority.create("Impostor CA")
    running = await _serve(_files(impostor, tmp_path / "server", SERVER_NAME))
    try:
        files = _files(ca, tmp_path / "client", "timekeeping")
        tls = GrpcTls.from_files(files.cert, files.key, files.ca)
        assert tls is not None
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _check(client.channel(f"127.0.0.1:{running.grpc_port}", tls=_with_name(tls)))
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await running.stop()


async def test_the_plaintext_health_port_answers_health_and_nothing_else(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    running = await _serve(_files(ca, tmp_path / "server", SERVER_NAME), health_port=0)
    try:
        assert running.health_port is not None
        assert running.health_port != running.grpc_port
        address = f"127.0.0.1:{running.health_port}"
        assert await _check(grpc.aio.insecure_channel(address)) == health_pb2.HealthCheckResponse.SERVING
        async with grpc.aio.insecure_channel(address) as channel:
            reflection = channel.unary_unary(
                "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                request_serializer=lambda b: b,
                response_deserializer=lambda b: b,
            )
            with pytest.raises(grpc.aio.AioRpcError) as other:
                await reflection(b"", timeout=5)
        assert other.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        await running.stop()


def test_a_certificate_without_the_ca_is_refused_at_configuration(tmp_path: Path) -> None:
    # The trap: a server cert and key without client roots would serve every client.
    files = _files(CertificateAuthority.create(), tmp_path, SERVER_NAME)
    with pytest.raises(ValidationError, match="GRPC_TLS_CA_FILE missing"):
        ServiceSettings(grpc_tls_cert_file=files.cert, grpc_tls_key_file=files.key)
