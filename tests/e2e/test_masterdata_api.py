"""Master data over REST through the gateway, on the whole stack: the public surface of issue 3."""

import asyncio
import calendar
import dataclasses
import datetime as dt
import json
from typing import Any

import asyncpg
import httpx
import pytest

from accrue.db.engine import asyncpg_dsn
from accrue.runtime.clock import clock_for, local_date
from accrue.testing import identity
from accrue.testing.rest import ok, problem
from accrue.testing.stack import Stack

pytestmark = pytest.mark.e2e


def ref(system: str, ext_id: str) -> dict[str, str]:
    return {"system": system, "id": ext_id}


async def upsert(
    api: httpx.AsyncClient, collection: str, field: str, rows: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = (await ok(api.post(f"/v1/{collection}:batchUpsert", json={field: rows})))[
        "results"
    ]
    return results


async def firm(api: httpx.AsyncClient, tag: str, time_zone: str = "") -> dict[str, Any]:
    """A legal entity (in time_zone when given), role, customer, manager and project, synced by
    external_ref."""
    entity = {"externalRef": ref("erp", tag), "code": tag, "name": tag, "baseCurrency": "EUR"}
    if time_zone:
        entity["timeZone"] = time_zone
    await upsert(api, "legal-entities", "legalEntities", [entity])
    await upsert(
        api,
        "labor-categories",
        "laborCategories",
        [{"externalRef": ref("hr", tag), "code": tag, "name": "Role"}],
    )
    await upsert(
        api,
        "customers",
        "customers",
        [
            {
                "externalRef": ref("crm", tag),
                "code": tag,
                "name": "Customer",
                "legalEntityRef": ref("erp", tag),
                "currency": "EUR",
            }
        ],
    )
    people = await upsert(
        api,
        "consultants",
        "consultants",
        [
            {
                "externalRef": ref("hr", f"{tag}-E1"),
                "code": f"{tag}-E1",
                "name": "Manager",
                "legalEntityRef": ref("erp", tag),
                "laborCategoryRef": ref("hr", tag),
                "activeFrom": "2020-01-01",
            }
        ],
    )
    projects = await upsert(
        api,
        "projects",
        "projects",
        [
            {
                "externalRef": ref("psa", tag),
                "code": tag,
                "name": "Project",
                "customerRef": ref("crm", tag),
                "legalEntityRef": ref("erp", tag),
                "managerRef": ref("hr", f"{tag}-E1"),
                "status": "PROJECT_STATUS_ACTIVE",
                "startDate": "2026-01-01",
            }
        ],
    )
    return {"consultant": people[0]["consultant"], "project": projects[0]["project"]}


async def test_a_patch_changes_the_masked_fields_and_a_stale_etag_is_409(api: httpx.AsyncClient) -> None:
    f = await firm(api, "PATCH")
    project = f["project"]
    path = f"/v1/projects/{project['id']}"
    renamed = await ok(
        api.patch(
            path,
            params={"updateMask": "name,budgetHours"},
            json={"name": "Renamed", "budgetHours": "120", "etag": "1"},
        )
    )
    assert (renamed["name"], renamed["budgetHours"], renamed["etag"]) == ("Renamed", "120", "2")
    assert renamed["customerId"] == project["customerId"]
    stale = problem(
        await api.patch(path, params={"updateMask": "name"}, json={"name": "Again", "etag": "1"}), 409
    )
    assert (stale["code"], stale["reason"]) == ("ABORTED", "STALE_ETAG")
    bad = problem(
        await api.patch(path, json={"endDate": "2025-12-31", "status": "PROJECT_STATUS_CLOSED"}), 400
    )
    assert [(v["field"], v["code"]) for v in bad["violations"]] == [("endDate", "INVALID_RANGE")]
    assert (await ok(api.get(path)))["etag"] == "2"


async def test_deactivation_and_history_over_rest(
    api: httpx.AsyncClient, stack: Stack, instant: dt.datetime
) -> None:
    f = await firm(api, "HIST")
    consultant = f["consultant"]
    path = f"/v1/consultants/{consultant['id']}"
    # The HR system's sync account: actor and source must be the caller's own.
    hr_sync = dataclasses.replace(identity.system_client("hr"), subject="dana")
    await ok(
        api.patch(
            path,
            params={"updateMask": "email", "actor": "dana", "source": "hr"},
            json={"email": "m@acme.test"},
            headers=stack.tokens(clock_for(instant)).headers(hr_sync),
        )
    )
    gone = await ok(api.post(f"{path}:deactivate", json={"reason": "left the firm", "actor": "dana"}))
    assert gone["deactivateTime"]
    listed = await ok(api.get("/v1/consultants", params={"code": consultant["code"]}))
    assert listed["consultants"] == []
    shown = await ok(
        api.get("/v1/consultants", params={"code": consultant["code"], "showDeactivated": "true"})
    )
    assert [c["id"] for c in shown["consultants"]] == [consultant["id"]]
    changes = (await ok(api.get(f"{path}/changes")))["changes"]
    assert [(c["kind"], c["actor"], c["source"]) for c in changes] == [
        # Created by a batch the administrator sent: a person writes as "api", whatever system
        # the row's external_ref names.
        ("CHANGE_KIND_CREATED", "local-admin", "api"),
        ("CHANGE_KIND_UPDATED", "dana", "hr"),
        ("CHANGE_KIND_DEACTIVATED", "dana", "api"),
    ]
    assert changes[1]["before"]["consultant"]["email"] == ""
    assert changes[1]["after"]["consultant"]["email"] == "m@acme.test"
    assert changes[1]["changedFields"] == ["email"]
    assert changes[2]["reason"] == "left the firm"


async def test_rows_name_references_by_external_ref_and_report_each_outcome(api: httpx.AsyncClient) -> None:
    await firm(api, "SYNC")
    rows = [
        {
            "externalRef": ref("psa", f"SYNC-A{i}"),
            "projectRef": ref("psa", "SYNC"),
            "consultantRef": ref("hr", consultant),
            "laborCategoryRef": ref("hr", "SYNC"),
            "startDate": "2026-01-01",
            "allocationPercent": pct,
        }
        for i, (consultant, pct) in enumerate([("SYNC-E1", "50"), ("SYNC-NOBODY", "50"), ("SYNC-E1", "150")])
    ]
    first = await upsert(api, "assignments", "assignments", rows)
    assert [r["outcome"] for r in first] == [
        "UPSERT_OUTCOME_CREATED",
        "UPSERT_OUTCOME_REJECTED",
        "UPSERT_OUTCOME_REJECTED",
    ]
    assert [(v["field"], v["code"]) for v in first[1]["reasons"]] == [
        ("consultant_ref", "REFERENCE_NOT_FOUND")
    ]
    assert [(v["field"], v["code"]) for v in first[2]["reasons"]] == [("allocation_percent", "OUT_OF_RANGE")]
    again = await upsert(api, "assignments", "assignments", rows[:1])
    assert again[0]["outcome"] == "UPSERT_OUTCOME_UNCHANGED"
    assert again[0]["assignment"] == first[0]["assignment"]


async def test_fx_tax_and_rate_resolution_over_rest(api: httpx.AsyncClient) -> None:
    f = await firm(api, "RES")
    await upsert(
        api,
        "fx-rates",
        "fxRates",
        [
            {
                "externalRef": ref("ecb", "RES-1"),
                "base": "CHF",
                "quote": "EUR",
                "rate": "1.0650",
                "effectiveDate": "2026-01-01",
            },
            {
                "externalRef": ref("ecb", "RES-2"),
                "base": "CHF",
                "quote": "EUR",
                "rate": "1.0712",
                "effectiveDate": "2026-07-01",
            },
        ],
    )
    converted = await ok(
        api.get(
            "/v1/fx-rates:convert",
            params={"amount": "250.00", "fromCurrency": "CHF", "toCurrency": "EUR", "date": "2026-07-15"},
        )
    )
    assert (converted["amount"], converted["rate"], converted["fxRate"]["effectiveDate"]) == (
        "267.80",
        "1.0712",
        "2026-07-01",
    )
    missing = problem(
        await api.get(
            "/v1/fx-rates:convert",
            params={"amount": "1", "fromCurrency": "CHF", "toCurrency": "JPY", "date": "2026-07-15"},
        ),
        404,
    )
    assert missing["reason"] == "NO_FX_RATE"
    await upsert(
        api,
        "tax-rates",
        "taxRates",
        [
            {
                "externalRef": ref("erp", "RES-VAT"),
                "taxCode": "VAT-CH",
                "rate": "0.081",
                "effectiveFrom": "2024-01-01",
            }
        ],
    )
    tax = await ok(
        api.get(
            "/v1/tax-rates:resolve",
            params={"taxCode": "VAT-CH", "date": "2026-07-15", "amount": "1000", "currency": "CHF"},
        )
    )
    assert (tax["rate"], tax["taxAmount"], tax["taxRate"]["taxCode"]) == ("0.081", "81.00", "VAT-CH")
    no_line = problem(
        await api.get(
            "/v1/rates:resolve",
            params={
                "projectId": f["project"]["id"],
                "consultantId": f["consultant"]["id"],
                "laborCategoryId": f["consultant"]["laborCategoryId"],
                "date": "2026-07-15",
            },
        ),
        404,
    )
    assert no_line["reason"] == "NO_CONTRACT_LINE"


@pytest.mark.dates
async def test_a_completed_milestone_is_billable_through_rest(
    api: httpx.AsyncClient, instant: dt.datetime
) -> None:
    # A Brisbane (UTC+10) entity: the milestone is billed in the month it completes there.
    zone = "Australia/Brisbane"
    await firm(api, "MS", zone)
    contract = await upsert(
        api,
        "contracts",
        "contracts",
        [
            {
                "externalRef": ref("crm", "MS-K"),
                "code": "MS-K",
                "customerRef": ref("crm", "MS"),
                "currency": "EUR",
                "lines": [
                    {
                        "projectRef": ref("psa", "MS"),
                        "billingModel": "BILLING_MODEL_FIXED_FEE",
                        "feeAmount": "5000",
                    }
                ],
            }
        ],
    )
    assert contract[0]["outcome"] == "UPSERT_OUTCOME_CREATED", contract[0]["reasons"]
    milestone = (
        await upsert(
            api,
            "milestones",
            "milestones",
            [
                {
                    "externalRef": ref("psa", "MS-1"),
                    "projectRef": ref("psa", "MS"),
                    "name": "Handover",
                    "amount": "5000",
                    "dueDate": "2026-09-30",
                }
            ],
        )
    )[0]["milestone"]
    assert milestone["status"] == "MILESTONE_STATUS_PENDING"
    done = await ok(api.post(f"/v1/milestones/{milestone['id']}:complete", json={"etag": milestone["etag"]}))
    assert (done["status"], done["etag"]) == ("MILESTONE_STATUS_COMPLETED", "2")
    # Completed "now" on the stack's clock, which started at the run's pinned instant.
    completed = dt.datetime.fromisoformat(done["completeTime"])
    assert instant <= completed < instant + dt.timedelta(hours=1), (instant, completed)
    day = local_date(completed, zone)
    month = (day.replace(day=1), day.replace(day=calendar.monthrange(day.year, day.month)[1]))

    # Billing drafts it (the completion reaches billing as an event, so run until it is there);
    # billing's event in turn makes it INVOICED here, and a void makes it COMPLETED again.
    (le,) = [
        e
        for e in (await ok(api.get("/v1/legal-entities?pageSize=1000")))["legalEntities"]
        if e["code"] == "MS"
    ]
    assert le["timeZone"] == zone
    run = {"periodStart": month[0].isoformat(), "periodEnd": month[1].isoformat(), "legalEntityId": le["id"]}
    async with asyncio.timeout(20):
        while True:
            invoices = (await ok(api.post("/v1/billing-runs", json=run)))["invoices"]
            drafts = [i for i in invoices if any(ln["milestoneId"] == milestone["id"] for ln in i["lines"])]
            if drafts:
                break
            await asyncio.sleep(0.2)
    (draft,) = drafts
    assert (await milestone_status(api, milestone["id"], "MILESTONE_STATUS_INVOICED"))["etag"] == "3"
    await ok(api.post(f"/v1/invoices/{draft['id']}:void", json={"actorId": "finance", "reason": "wrong fee"}))
    await milestone_status(api, milestone["id"], "MILESTONE_STATUS_COMPLETED")
    changes = await ok(api.get(f"/v1/milestones/{milestone['id']}/changes"))
    billing = [c for c in changes["changes"] if c["source"] == "billing"]
    assert [c["reason"] for c in billing] == [
        f"invoice {draft['id']} drafted",
        f"invoice {draft['id']} voided",
    ]


async def milestone_status(api: httpx.AsyncClient, milestone_id: str, status: str) -> dict[str, Any]:
    async with asyncio.timeout(20):
        while True:
            milestone = await ok(api.get(f"/v1/milestones/{milestone_id}"))
            if milestone["status"] == status:
                break
            await asyncio.sleep(0.1)
    return milestone


async def test_the_new_operations_are_in_the_openapi_document(api: httpx.AsyncClient) -> None:
    paths = (await ok(api.get("/openapi.json")))["paths"]
    for path, method in (
        ("/v1/consultants/{id}", "patch"),
        ("/v1/consultants/{id}:deactivate", "post"),
        ("/v1/consultants/{id}/changes", "get"),
        ("/v1/calendars:batchUpsert", "post"),
        ("/v1/milestones/{id}:complete", "post"),
        ("/v1/fx-rates:convert", "get"),
        ("/v1/tax-rates:resolve", "get"),
    ):
        assert method in paths[path], path


async def test_a_batch_killed_mid_write_is_all_or_nothing_and_a_resend_applies_once(
    api: httpx.AsyncClient, stack: Stack
) -> None:
    """kill -9 master data while a 1,000-row batch is being written, restart it, send again."""
    await firm(api, "KILL")
    rows = [
        {
            "externalRef": ref("psa", f"KILL-{i:04d}"),
            "projectRef": ref("psa", "KILL"),
            "consultantRef": ref("hr", "KILL-E1"),
            "laborCategoryRef": ref("hr", "KILL"),
            "startDate": "2026-01-01",
            "allocationPercent": "10",
        }
        for i in range(1000)
    ]
    body = json.dumps({"assignments": rows})
    sending = asyncio.create_task(
        api.post("/v1/assignments:batchUpsert", content=body, headers={"content-type": "application/json"})
    )
    await asyncio.sleep(0.15)
    stack.kill("masterdata")
    first = await sending
    stack.start("masterdata")

    conn = await asyncpg.connect(asyncpg_dsn(stack.database_url or ""))
    try:
        query = "SELECT count(*) FROM masterdata.assignments WHERE external_ref_id LIKE 'KILL-%'"
        written = await conn.fetchval(query)
        # Either the whole batch committed before the kill, or none of it did.
        assert written in (0, 1000), (first.status_code, written)
        results = await upsert(api, "assignments", "assignments", rows)
        outcomes = {r["outcome"] for r in results}
        assert outcomes == ({"UPSERT_OUTCOME_UNCHANGED"} if written else {"UPSERT_OUTCOME_CREATED"})
        assert await conn.fetchval(query) == 1000
        history = await conn.fetchval(
            "SELECT count(*) FROM masterdata.changes c JOIN masterdata.assignments a ON a.id = c.resource_id "
            "WHERE a.external_ref_id LIKE 'KILL-%'"
        )
        events = await conn.fetchval(
            "SELECT count(*) FROM masterdata.outbox o JOIN masterdata.assignments a "
            "ON o.subject = 'md.assignment.upserted.' || a.id::text WHERE a.external_ref_id LIKE 'KILL-%'"
        )
        assert (history, events) == (1000, 1000)  # one entry and one event per row, none twice
    finally:
        await conn.close()
