"""Every service verifies its caller: no token is UNAUTHENTICATED, a role the policy does not list
is PERMISSION_DENIED, a service acts only as itself, and health checks stay open."""

from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from accrue.identity.grpc import ServiceIdentity
from accrue.masterdata.v1 import masterdata_service_pb2 as md
from accrue.masterdata.v1 import masterdata_service_pb2_grpc as md_grpc
from accrue.masterdata.v1 import resources_pb2 as res
from accrue.testing import identity

pytestmark = pytest.mark.integration


async def test_a_call_without_a_token_is_unauthenticated(start_service: Any) -> None:
    masterdata = await start_service("masterdata")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{masterdata.grpc_port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await md_grpc.MasterDataServiceStub(channel).ListLegalEntities(md.ListLegalEntitiesRequest())

    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "missing" in (refused.value.details() or "")


async def test_a_forged_authorization_header_is_unauthenticated(start_service: Any) -> None:
    masterdata = await start_service("masterdata")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{masterdata.grpc_port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await md_grpc.MasterDataServiceStub(channel).ListLegalEntities(
                md.ListLegalEntitiesRequest(), metadata=[("authorization", "Bearer eyJhbGciOiJub25lIn0.e30.")]
            )

    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_health_is_open_to_probes(start_service: Any) -> None:
    masterdata = await start_service("masterdata")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{masterdata.grpc_port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))

    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_a_role_the_policy_does_not_list_is_denied_naming_the_permission(
    start_service: Any, internal_signer: Any
) -> None:
    masterdata = await start_service("masterdata")
    viewer = identity.person("vic", "viewer")
    async with identity.channel(f"127.0.0.1:{masterdata.grpc_port}", internal_signer, viewer) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await md_grpc.MasterDataServiceStub(channel).CreateLaborCategory(
                md.CreateLaborCategoryRequest(labor_category=res.LaborCategory(code="X", name="X"))
            )

    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "accrue.masterdata.v1.MasterDataService/CreateLaborCategory" in (refused.value.details() or "")


async def test_a_service_calls_as_itself_and_only_what_services_may(start_service: Any) -> None:
    masterdata = await start_service("masterdata")
    timekeeping = identity.run_auth("timekeeping")
    channel = grpc.aio.insecure_channel(
        f"127.0.0.1:{masterdata.grpc_port}", interceptors=[ServiceIdentity(timekeeping.signer)]
    )
    async with channel:
        stub = md_grpc.MasterDataServiceStub(channel)
        await stub.ListLegalEntities(md.ListLegalEntitiesRequest())  # a read-through: allowed
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.CreateLaborCategory(
                md.CreateLaborCategoryRequest(labor_category=res.LaborCategory(code="X", name="X"))
            )

    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
