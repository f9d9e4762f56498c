"""Services started in-process on a real PostgreSQL and a real NATS JetStream, on free ports."""

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest

from accrue.masterdata.v1 import masterdata_service_pb2 as api
from accrue.masterdata.v1 import masterdata_service_pb2_grpc as api_grpc
from accrue.masterdata.v1 import resources_pb2 as md
from accrue.runtime.server import RunningService, Service, start
from accrue.testing import identity

Starter = Callable[..., Awaitable[RunningService]]


@pytest.fixture
async def start_service(database_url: str, nats_url: str) -> AsyncIterator[Starter]:
    """start_service(name, **settings) migrates and starts a service; all stop at teardown."""
    import importlib

    running: list[RunningService] = []

    async def _start(name: str, **overrides: Any) -> RunningService:
        bootstrap = importlib.import_module(f"accrue.services.{name}.bootstrap")
        settings_module = importlib.import_module(f"accrue.services.{name}.settings")
        settings_cls = next(
            getattr(settings_module, n)
            for n in dir(settings_module)
            if n.endswith("Settings") and n != "ServiceSettings"
        )
        settings = settings_cls(
            database_url=database_url,
            nats_url=nats_url,
            grpc_port=0,
            metrics_port=0,
            shutdown_grace_seconds=1,
            **overrides,
        )
        await bootstrap.migrate(settings)
        service: Service = await bootstrap.bootstrap(settings)
        running.append(await start(service))
        return running[-1]

    yield _start
    for service in reversed(running):
        await service.stop()


@pytest.fixture
async def channel_to(internal_signer: Any) -> AsyncIterator[Callable[[RunningService], grpc.aio.Channel]]:
    channels: list[grpc.aio.Channel] = []

    def _channel(service: RunningService) -> grpc.aio.Channel:
        channels.append(identity.channel(f"127.0.0.1:{service.grpc_port}", internal_signer))
        return channels[-1]

    yield _channel
    for channel in channels:
        await channel.close()


async def _build_firm(stub: api_grpc.MasterDataServiceStub) -> dict[str, Any]:
    """A legal entity, customer, role, two consultants (one managing the other), an ACTIVE project,
    a rate card with a mid-November rate change and an override, and a T&M contract."""
    le = (
        await stub.CreateLegalEntity(
            api.CreateLegalEntityRequest(
                legal_entity=md.LegalEntity(code="UK", name="Acme UK", base_currency="GBP")
            )
        )
    ).legal_entity
    cu = (
        await stub.CreateCustomer(
            api.CreateCustomerRequest(
                customer=md.Customer(code="GLOBEX", name="Globex", legal_entity_id=le.id, currency="GBP")
            )
        )
    ).customer
    lc = (
        await stub.CreateLaborCategory(
            api.CreateLaborCategoryRequest(
                labor_category=md.LaborCategory(code="SC", name="Senior Consultant")
            )
        )
    ).labor_category
    boss = (
        await stub.CreateConsultant(
            api.CreateConsultantRequest(
                consultant=md.Consultant(
                    code="E1",
                    name="Boss",
                    legal_entity_id=le.id,
                    labor_category_id=lc.id,
                    active_from="2020-01-01",
                )
            )
        )
    ).consultant
    dev = (
        await stub.CreateConsultant(
            api.CreateConsultantRequest(
                consultant=md.Consultant(
                    code="E2",
                    name="Dev",
                    legal_entity_id=le.id,
                    labor_category_id=lc.id,
                    manager_id=boss.id,
                    active_from="2020-01-01",
                )
            )
        )
    ).consultant
    project = (
        await stub.CreateProject(
            api.CreateProjectRequest(
                project=md.Project(
                    code="P1",
                    name="Platform",
                    customer_id=cu.id,
                    legal_entity_id=le.id,
                    manager_id=boss.id,
                    status=md.PROJECT_STATUS_ACTIVE,
                    start_date="2026-01-01",
                )
            )
        )
    ).project
    card = (
        await stub.CreateRateCard(
            api.CreateRateCardRequest(
                rate_card=md.RateCard(
                    code="RC",
                    currency="GBP",
                    rates=[
                        md.RateCardEntry(
                            labor_category_id=lc.id,
                            rate="150.00",
                            effective_from="2026-01-01",
                            effective_to="2026-11-14",
                        ),
                        md.RateCardEntry(labor_category_id=lc.id, rate="160.00", effective_from="2026-11-15"),
                        md.RateCardEntry(
                            labor_category_id=lc.id,
                            consultant_id=boss.id,
                            rate="200.00",
                            effective_from="2026-01-01",
                        ),
                    ],
                )
            )
        )
    ).rate_card
    contract = (
        await stub.CreateContract(
            api.CreateContractRequest(
                contract=md.Contract(
                    code="K1",
                    customer_id=cu.id,
                    currency="GBP",
                    lines=[
                        md.ContractLine(
                            project_id=project.id,
                            billing_model=md.BILLING_MODEL_TIME_AND_MATERIALS,
                            rate_card_id=card.id,
                        )
                    ],
                )
            )
        )
    ).contract
    return {
        "le": le,
        "cu": cu,
        "lc": lc,
        "boss": boss,
        "dev": dev,
        "project": project,
        "card": card,
        "contract": contract,
    }


@pytest.fixture
def build_firm() -> Callable[[api_grpc.MasterDataServiceStub], Awaitable[dict[str, Any]]]:
    """The seed firm, created through master data's API."""
    return _build_firm
