"""Forecasting's legal-entity scope on the running service, with explicit principals: the live
forecast, its roll-ups (the firm's included), versions, comparisons and utilization hold only
the caller's legal entities; roles the policy does not list are refused.

Two legal entities, UK and DE, both keeping their books in GBP (the reporting currency here, so
the firm's roll-up needs no FX rate): approved time of 1125.00 on UK's project, 200.00 on DE's.
"""

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import nats
import pytest

from accrue.events.v1 import time_events_pb2 as tev
from accrue.forecasting.v1 import forecasting_service_pb2 as fa
from accrue.forecasting.v1 import forecasting_service_pb2_grpc as fg
from accrue.masterdata.v1 import masterdata_service_pb2 as mda
from accrue.masterdata.v1 import masterdata_service_pb2_grpc as mdg
from accrue.masterdata.v1 import resources_pb2 as md
from accrue.runtime.identity import Principal
from accrue.runtime.server import RunningService
from accrue.testing import identity
from accrue.timekeeping.v1 import resources_pb2 as tk
from accrue.type.v1 import types_pb2

pytestmark = pytest.mark.integration

MONTH = "2026-11"


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 20.0) -> None:
    async with asyncio.timeout(within):
        while not await check():  # noqa: ASYNC110 - waiting for an asynchronous consumer
            await asyncio.sleep(0.05)


async def _second_entity(stub: mdg.MasterDataServiceStub, firm: dict[str, Any]) -> dict[str, Any]:
    le = (
        await stub.CreateLegalEntity(
            mda.CreateLegalEntityRequest(
                legal_entity=md.LegalEntity(code="DE", name="DE", base_currency="GBP")
            )
        )
    ).legal_entity
    cu = (
        await stub.CreateCustomer(
            mda.CreateCustomerRequest(
                customer=md.Customer(code="DE-CU", name="Kunde", legal_entity_id=le.id, currency="GBP")
            )
        )
    ).customer
    person = (
        await stub.CreateConsultant(
            mda.CreateConsultantRequest(
                consultant=md.Consultant(
                    code="DE-E1",
                    name="Kim",
                    legal_entity_id=le.id,
                    labor_category_id=firm["lc"].id,
                    active_from="2020-01-01",
                )
            )
        )
    ).consultant
    project = (
        await stub.CreateProject(
            mda.CreateProjectRequest(
                project=md.Project(
                    code="DE-P",
                    name="Projekt",
                    customer_id=cu.id,
                    legal_entity_id=le.id,
                    manager_id=person.id,
                    status=md.PROJECT_STATUS_ACTIVE,
                    start_date="2026-01-01",
                )
            )
        )
    ).project
    await stub.CreateContract(
        mda.CreateContractRequest(
            contract=md.Contract(
                code="DE-K",
                customer_id=cu.id,
                currency="GBP",
                lines=[
                    md.ContractLine(
                        project_id=project.id,
                        billing_model=md.BILLING_MODEL_TIME_AND_MATERIALS,
                        rate_card_id=firm["card"].id,
                    )
                ],
            )
        )
    )
    return {"le": le, "cu": cu, "dev": person, "project": project}


def _entry(who: Any, project: Any, le: Any, cu: Any, lc: Any, hours: str, rate: str) -> tk.TimeEntry:
    e = tk.TimeEntry(
        id=str(uuid.uuid4()),
        consultant_id=who.id,
        project_id=project.id,
        labor_category_id=lc.id,
        work_date=f"{MONTH}-02",
        hours=hours,
        billable=True,
        status=tk.TIME_ENTRY_STATUS_APPROVED,
        legal_entity_id=le.id,
        customer_id=cu.id,
        indicative_rate=types_pb2.Money(amount=rate, currency="GBP"),
    )
    return e


@pytest.fixture
async def world(
    start_service: Any,
    channel_to: Callable[[RunningService], grpc.aio.Channel],
    build_firm: Any,
    nats_url: str,
    internal_signer: Any,
    instant: dt.datetime,
) -> AsyncIterator[dict[str, Any]]:
    masterdata = await start_service("masterdata", clock_start=instant)
    forecasting = await start_service(
        "forecasting", version_schedule_seconds=0, clock_start=instant, reporting_currency="GBP"
    )
    admin_md = mdg.MasterDataServiceStub(channel_to(masterdata))
    uk = await build_firm(admin_md)
    de = await _second_entity(admin_md, uk)
    nc = await nats.connect(nats_url)
    js = nc.jetstream()

    async def approve(e: tk.TimeEntry) -> None:
        e.approve_time.FromDatetime(instant)
        message = tev.TimeEntryApproved(time_entry=e)
        await js.publish(
            f"time.entry.approved.{e.project_id}",
            message.SerializeToString(),
            headers={
                "Nats-Msg-Id": str(uuid.uuid4()),
                "Accrue-Event-Type": "time.entry.approved",
                "Accrue-Schema": message.DESCRIPTOR.full_name,
                "Accrue-Occurred-At": instant.isoformat(),
            },
        )

    await approve(_entry(uk["dev"], uk["project"], uk["le"], uk["cu"], uk["lc"], "7.5", "150.00"))
    await approve(_entry(de["dev"], de["project"], de["le"], de["cu"], uk["lc"], "2", "100.00"))
    admin = fg.ForecastingServiceStub(channel_to(forecasting))
    channels: list[grpc.aio.Channel] = []

    def as_(principal: Principal) -> fg.ForecastingServiceStub:
        channels.append(identity.channel(f"127.0.0.1:{forecasting.grpc_port}", internal_signer, principal))
        return fg.ForecastingServiceStub(channels[-1])

    async def both_in() -> bool:
        f = (await admin.GetForecast(fa.GetForecastRequest(month_from=MONTH, month_to=MONTH))).forecast
        wip = {r.project_id: r.amounts.wip for r in f.rows}
        return wip == {uk["project"].id: "1125.00", de["project"].id: "200.00"}

    await eventually(both_in)
    yield {"uk": uk, "de": de, "admin": admin, "as_": as_, "approve": approve}
    for channel in channels:
        await channel.close()
    await nc.close()


def totals(f: fa.Forecast) -> dict[tuple[int, str], str]:
    return {(t.scope, t.id): t.amounts.wip for t in f.totals if t.month == MONTH}


async def test_legal_entity_scope_the_forecast_and_its_roll_ups_hold_only_the_callers_entities(
    world: dict[str, Any],
) -> None:
    uk, de = world["uk"], world["de"]
    whole = (
        await world["admin"].GetForecast(fa.GetForecastRequest(month_from=MONTH, month_to=MONTH))
    ).forecast
    assert totals(whole)[(fa.ROLLUP_SCOPE_FIRM, "")] == "1325.00"
    viewer = world["as_"](identity.person("v1", "viewer", legal_entities=[uk["le"].id]))
    mine = (await viewer.GetForecast(fa.GetForecastRequest(month_from=MONTH, month_to=MONTH))).forecast
    assert [r.project_id for r in mine.rows] == [uk["project"].id]
    assert totals(mine) == {
        (fa.ROLLUP_SCOPE_CUSTOMER, uk["cu"].id): "1125.00",
        (fa.ROLLUP_SCOPE_LEGAL_ENTITY, uk["le"].id): "1125.00",
        (fa.ROLLUP_SCOPE_FIRM, ""): "1125.00",  # the firm as this caller may see it
    }
    assert [p.project_id for p in mine.projects] == [uk["project"].id]
    # Asking for the other entity's project or entity finds nothing of it.
    for request in (
        fa.GetForecastRequest(project_id=de["project"].id),
        fa.GetForecastRequest(legal_entity_id=de["le"].id),
        fa.GetForecastRequest(customer_id=de["cu"].id),
    ):
        other = (await viewer.GetForecast(request)).forecast
        assert (list(other.rows), list(other.totals), list(other.projects)) == ([], [], [])


async def test_legal_entity_scope_versions_and_comparisons_show_only_the_callers_entities(
    world: dict[str, Any],
) -> None:
    uk, de = world["uk"], world["de"]
    finance = world["as_"](identity.person("f1", "finance", legal_entities=[uk["le"].id]))
    taken = (
        await finance.CreateForecastVersion(
            fa.CreateForecastVersionRequest(forecast_version=fa.ForecastVersion(name="uk"))
        )
    ).forecast_version
    # The version is the firm's snapshot: the administrator sees both entities in it.
    full = (
        await world["admin"].GetForecastVersion(fa.GetForecastVersionRequest(id=taken.id))
    ).forecast_version
    assert {r.project_id for r in full.forecast.rows if r.month == MONTH} == {
        uk["project"].id,
        de["project"].id,
    }
    assert totals(full.forecast)[(fa.ROLLUP_SCOPE_FIRM, "")] == "1325.00"
    # The scoped caller, from Create and from Get alike, sees its entity's part and no firm total.
    seen = (await finance.GetForecastVersion(fa.GetForecastVersionRequest(id=taken.id))).forecast_version
    for version in (taken, seen):
        assert {r.project_id for r in version.forecast.rows} == {uk["project"].id}
        assert totals(version.forecast) == {
            (fa.ROLLUP_SCOPE_CUSTOMER, uk["cu"].id): "1125.00",
            (fa.ROLLUP_SCOPE_LEGAL_ENTITY, uk["le"].id): "1125.00",
        }
        assert {p.project_id for p in version.forecast.projects} == {uk["project"].id}
    # More time on both projects, then a second version: the comparison shows UK's change only.
    await world["approve"](_entry(uk["dev"], uk["project"], uk["le"], uk["cu"], uk["lc"], "1", "150.00"))
    await world["approve"](_entry(de["dev"], de["project"], de["le"], de["cu"], uk["lc"], "1", "100.00"))

    async def both_moved() -> bool:
        f = (
            await world["admin"].GetForecast(fa.GetForecastRequest(month_from=MONTH, month_to=MONTH))
        ).forecast
        return totals(f).get((fa.ROLLUP_SCOPE_FIRM, ""), "") == "1575.00"

    await eventually(both_moved)
    later = (await finance.CreateForecastVersion(fa.CreateForecastVersionRequest())).forecast_version
    compared = await finance.CompareForecastVersions(
        fa.CompareForecastVersionsRequest(id=taken.id, other_id=later.id)
    )
    assert [(r.project_id, r.change) for r in compared.rows if r.month == MONTH] == [
        (uk["project"].id, "150.00")
    ]
    everything = await world["admin"].CompareForecastVersions(
        fa.CompareForecastVersionsRequest(id=taken.id, other_id=later.id)
    )
    assert {r.project_id for r in everything.rows if r.month == MONTH} == {uk["project"].id, de["project"].id}


async def test_legal_entity_scope_utilization_lists_only_the_callers_consultants(
    world: dict[str, Any],
) -> None:
    uk, de = world["uk"], world["de"]
    everyone = await world["admin"].GetUtilization(fa.GetUtilizationRequest(month_from=MONTH, month_to=MONTH))
    assert {r.consultant_id for r in everyone.rows} == {uk["boss"].id, uk["dev"].id, de["dev"].id}
    viewer = world["as_"](identity.person("v1", "viewer", legal_entities=[uk["le"].id]))
    mine = await viewer.GetUtilization(fa.GetUtilizationRequest(month_from=MONTH, month_to=MONTH))
    assert {r.consultant_id for r in mine.rows} == {uk["boss"].id, uk["dev"].id}
    other = await viewer.GetUtilization(
        fa.GetUtilizationRequest(consultant_id=de["dev"].id, month_from=MONTH, month_to=MONTH)
    )
    assert list(other.rows) == []


async def test_forecast_reads_need_a_role_the_policy_lists(world: dict[str, Any]) -> None:
    uk = world["uk"]
    consultant = world["as_"](identity.person("c1", "consultant", legal_entities=[uk["le"].id]))
    viewer = world["as_"](identity.person("v1", "viewer", legal_entities=[uk["le"].id]))
    for call in (
        consultant.GetForecast(fa.GetForecastRequest()),
        consultant.GetUtilization(fa.GetUtilizationRequest()),
        viewer.CreateForecastVersion(fa.CreateForecastVersionRequest()),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await call
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
