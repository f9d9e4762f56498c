"""`accrue seed` and `accrue import` against the whole stack, as a user runs them, with tokens:
minted by the CLI from the stack's local issuer (the default), or given (--token, ACCRUE_TOKEN)."""

import base64
import csv
import datetime as dt
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from accrue.runtime.clock import clock_for
from accrue.testing import identity
from accrue.testing.stack import Stack

pytestmark = pytest.mark.e2e


def accrue(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    # The CLI dates its tokens by ACCRUE_CLOCK_START, as the stack's processes do (the plugin
    # pins it for the run); no token or data dir leaks in from the developer's shell.
    base = {
        k: v for k, v in os.environ.items() if k not in ("ACCRUE_TOKEN", "ACCRUE_DATA_DIR", "ACCRUE_API_URL")
    }
    return subprocess.run(
        [sys.executable, "-m", "accrue.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        check=False,
        env={**base, **(env or {})},
    )


def data_dir(stack: Stack) -> str:
    """The stack's identity dir is <data dir>/identity, as `accrue run` lays it out."""
    assert stack.identity_dir is not None
    return str(stack.identity_dir.parent)


def claims(token: str) -> dict[str, Any]:
    """The payload of a JWT, unverified: what the token says it is (the gateway verifies it)."""
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def get_all(api: httpx.Client, path: str, field: str, **params: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    token = ""
    while True:
        page = api.get(path, params={"pageSize": "1000", "pageToken": token, **params}).json()
        found += page[field]
        token = page["nextPageToken"]
        if not token:
            return found


@pytest.fixture(scope="module")
def api(stack: Stack, instant: dt.datetime) -> Any:
    """The REST API as a local administrator."""
    headers = stack.tokens(clock_for(instant)).headers(identity.admin())
    with httpx.Client(base_url=stack.gateway_url, timeout=30, headers=headers) as client:
        yield client


def test_seed_builds_a_realistic_firm_through_the_api_and_can_run_again(
    stack: Stack, api: httpx.Client
) -> None:
    done = accrue("seed", "--consultants", "40", "--url", stack.gateway_url, "--data-dir", data_dir(stack))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "milestones completed" in done.stdout
    assert "/v1/rates:resolve?projectId=" in done.stdout
    assert '-H "Authorization: Bearer $FINANCE_TOKEN"' in done.stdout

    entities = get_all(api, "/v1/legal-entities", "legalEntities")
    assert sorted(e["baseCurrency"] for e in entities) == ["EUR", "GBP", "USD"]
    people = get_all(api, "/v1/consultants", "consultants")
    assert len(people) == 40
    ids = {p["id"] for p in people}
    managed = [p for p in people if p["managerId"]]
    assert len(managed) == 40 - 3  # one partner per legal entity heads the chain
    assert all(p["managerId"] in ids for p in managed)

    contracts = get_all(api, "/v1/contracts", "contracts")
    models = {line["billingModel"] for c in contracts for line in c["lines"]}
    assert models == {"BILLING_MODEL_TIME_AND_MATERIALS", "BILLING_MODEL_CAPPED", "BILLING_MODEL_FIXED_FEE"}
    cards = get_all(api, "/v1/rate-cards", "rateCards")
    assert {c["currency"] for c in cards} == {"EUR", "GBP", "USD"}
    for card in cards:
        # A rate change mid-period: the first half ends on 30 June, the new rate starts 1 July.
        assert any(r["effectiveTo"] == "2026-06-30" for r in card["rates"])
        assert any(r["effectiveFrom"] == "2026-07-01" for r in card["rates"])
    milestones = get_all(api, "/v1/milestones", "milestones")
    statuses = {m["status"] for m in milestones}
    assert statuses == {"MILESTONE_STATUS_PENDING", "MILESTONE_STATUS_COMPLETED"}
    assert get_all(api, "/v1/assignments", "assignments")
    assert get_all(api, "/v1/opportunities", "opportunities")
    assert get_all(api, "/v1/calendars", "calendars")
    assert {t["taxCode"] for t in get_all(api, "/v1/tax-rates", "taxRates")} == {
        "VAT-GB-STD",
        "VAT-DE-STD",
        "US-EXEMPT",
    }

    # The firm prices time and converts currencies: a rate before and after the change.
    assignment = get_all(api, "/v1/assignments", "assignments")[0]
    before, after = (
        api.get(
            "/v1/rates:resolve",
            params={
                "projectId": assignment["projectId"],
                "consultantId": assignment["consultantId"],
                "laborCategoryId": assignment["laborCategoryId"],
                "date": day,
            },
        )
        for day in ("2026-06-30", "2026-07-01")
    )
    if before.status_code == 200:  # fixed-fee projects have no rate card
        assert after.status_code == 200
        assert before.json()["rate"] != after.json()["rate"]
    converted = api.get(
        "/v1/fx-rates:convert",
        params={"amount": "100", "fromCurrency": "USD", "toCurrency": "EUR", "date": "2026-08-03"},
    )
    assert converted.status_code == 200, converted.text

    # Again: everything is already there, nothing changes.
    again = accrue("seed", "--consultants", "40", "--url", stack.gateway_url, "--data-dir", data_dir(stack))
    assert again.returncode == 0, again.stdout + again.stderr
    assert [p["etag"] for p in get_all(api, "/v1/consultants", "consultants")] == [p["etag"] for p in people]
    history = api.get(f"/v1/consultants/{people[0]['id']}/changes").json()["changes"]
    assert [c["kind"] for c in history] == ["CHANGE_KIND_CREATED"]
    # The seed wrote as its integration client: source and actor come from its token.
    assert (history[0]["source"], history[0]["actor"]) == ("seed", "seed")


def test_seed_prints_ready_tokens_for_each_kind_of_user_and_each_works_as_that_user(
    stack: Stack, api: httpx.Client
) -> None:
    done = accrue("seed", "--consultants", "12", "--url", stack.gateway_url, "--data-dir", data_dir(stack))
    assert done.returncode == 0, done.stdout + done.stderr
    tokens = dict(re.findall(r"^export ([A-Z_]+)=(\S+)$", done.stdout, re.MULTILINE))
    assert set(tokens) == {
        "CONSULTANT_TOKEN",
        "PM_TOKEN",
        "FINANCE_TOKEN",
        "MASTERDATA_ADMIN_TOKEN",
        "AUDITOR_TOKEN",
        "INTEGRATION_TOKEN",
    }
    said = {name: claims(token) for name, token in tokens.items()}
    assert said["CONSULTANT_TOKEN"]["roles"] == ["consultant"]
    assert set(said["PM_TOKEN"]["roles"]) == {"approver", "project_manager"}
    assert said["FINANCE_TOKEN"]["roles"] == ["finance"]
    assert said["MASTERDATA_ADMIN_TOKEN"]["roles"] == ["masterdata_admin"]
    assert said["AUDITOR_TOKEN"]["roles"] == ["auditor"]
    assert (said["INTEGRATION_TOKEN"]["roles"], said["INTEGRATION_TOKEN"]["client_id"]) == (
        ["integration"],
        "seed",
    )

    # The consultant and the project manager are people of the firm, in their own legal entity.
    consultant = api.get(f"/v1/consultants/{said['CONSULTANT_TOKEN']['sub']}").json()
    manager = api.get(f"/v1/consultants/{said['PM_TOKEN']['sub']}").json()
    assert said["CONSULTANT_TOKEN"]["accrue_legal_entities"] == [consultant["legalEntityId"]]
    assert said["PM_TOKEN"]["accrue_legal_entities"] == [manager["legalEntityId"]]

    def call(name: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return api.request(method, path, headers={"Authorization": f"Bearer {tokens[name]}"}, **kwargs)

    # Each is accepted by the gateway as who it says, and gets what its roles allow.
    assert call("CONSULTANT_TOKEN", "GET", f"/v1/consultants/{consultant['id']}").status_code == 200
    assert call("FINANCE_TOKEN", "GET", "/v1/kpis").status_code == 200
    assert call("AUDITOR_TOKEN", "GET", "/v1/legal-entities").status_code == 200
    refused = call(
        "AUDITOR_TOKEN",
        "POST",
        "/v1/legal-entities",
        json={"code": "AUD", "name": "No", "baseCurrency": "EUR"},
    )
    assert refused.status_code == 403, refused.text
    made = call(
        "MASTERDATA_ADMIN_TOKEN",
        "POST",
        "/v1/labor-categories",
        json={"code": "SEED-TOK", "name": "By the admin"},
    )
    assert made.status_code == 200, made.text
    upserted = call(
        "INTEGRATION_TOKEN",
        "POST",
        "/v1/labor-categories:batchUpsert",
        json={
            "laborCategories": [
                {"externalRef": {"system": "seed", "id": "LC-TOK"}, "code": "LC-TOK", "name": "X"}
            ],
            "source": "seed",
        },
    )
    assert upserted.status_code == 200, upserted.text
    assert upserted.json()["results"][0]["outcome"] == "UPSERT_OUTCOME_CREATED"


def test_seed_and_import_refuse_clearly_without_a_way_to_authenticate(stack: Stack, tmp_path: Path) -> None:
    # No token, no client, and a data dir with no local issuer in it.
    done = accrue("seed", "--consultants", "3", "--url", stack.gateway_url, "--data-dir", str(tmp_path))
    assert done.returncode == 1
    assert "no local issuer keys" in done.stdout
    assert "--token" in done.stdout
    (tmp_path / "consultants.csv").write_text("code,name\nX,Y\n")
    imported = accrue(
        "import", str(tmp_path / "consultants.csv"), "--url", stack.gateway_url, "--token", "not-a-jwt"
    )
    assert imported.returncode == 1
    assert "401" in imported.stdout


def test_seed_with_a_token_that_may_not_write_names_the_refusal(stack: Stack, instant: dt.datetime) -> None:
    auditor = stack.tokens(clock_for(instant)).token(identity.person("aud-1", "auditor"))
    done = accrue("seed", "--consultants", "3", "--url", stack.gateway_url, env={"ACCRUE_TOKEN": auditor})
    assert done.returncode == 1
    assert "answered 403" in done.stdout


def test_import_takes_csv_per_type_and_json_bundles_reports_rejections_and_reruns(
    stack: Stack, api: httpx.Client, tmp_path: Path, instant: dt.datetime
) -> None:
    bundle = {
        "legalEntities": [
            {
                "externalRef": {"system": "erp", "id": "IMP-LE"},
                "code": "IMP-LE",
                "name": "Import Ltd",
                "baseCurrency": "GBP",
            }
        ],
        "laborCategories": [
            {"externalRef": {"system": "hr", "id": "IMP-LC"}, "code": "IMP-LC", "name": "Engineer"}
        ],
        "customers": [
            {
                "externalRef": {"system": "crm", "id": "IMP-C1"},
                "code": "IMP-C1",
                "name": "Good customer",
                "legalEntityRef": {"system": "erp", "id": "IMP-LE"},
                "currency": "GBP",
            },
            {
                "externalRef": {"system": "crm", "id": "IMP-C2"},
                "code": "IMP-C2",
                "name": "Bad currency",
                "legalEntityRef": {"system": "erp", "id": "IMP-LE"},
                "currency": "POUNDS",
            },
        ],
    }
    (tmp_path / "bundle.json").write_text(json.dumps(bundle))
    with (tmp_path / "consultants.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            [
                "externalRef.system",
                "externalRef.id",
                "code",
                "name",
                "legalEntityRef.system",
                "legalEntityRef.id",
                "laborCategoryRef.system",
                "laborCategoryRef.id",
                "managerRef.system",
                "managerRef.id",
                "activeFrom",
            ]
        )
        # The report comes before the manager, who is in the same file.
        writer.writerow(
            [
                "hr",
                "IMP-E2",
                "IMP-E2",
                "Report",
                "erp",
                "IMP-LE",
                "hr",
                "IMP-LC",
                "hr",
                "IMP-E1",
                "2024-01-01",
            ]
        )
        writer.writerow(
            ["hr", "IMP-E1", "IMP-E1", "Manager", "erp", "IMP-LE", "hr", "IMP-LC", "", "", "2019-01-01"]
        )
        writer.writerow(
            ["hr", "IMP-E3", "IMP-E3", "", "erp", "IMP-NOPE", "hr", "IMP-LC", "", "", "2024-02-30"]
        )
    report = tmp_path / "rejected.csv"

    first = accrue(
        "import",
        "consultants.csv",
        "bundle.json",
        "--url",
        stack.gateway_url,
        "--report",
        str(report),
        "--data-dir",
        data_dir(stack),
        cwd=tmp_path,
    )
    assert first.returncode == 1, first.stdout + first.stderr  # rows were rejected
    assert "2 rows rejected" in first.stdout
    with report.open() as handle:
        rejected = list(csv.DictReader(handle))
    assert {(r["row"], r["external_ref"], r["field"], r["code"]) for r in rejected} == {
        ("bundle.json#customers:2", "crm/IMP-C2", "currency", "INVALID_CURRENCY"),
        ("consultants.csv:4", "hr/IMP-E3", "name", "REQUIRED"),
        ("consultants.csv:4", "hr/IMP-E3", "active_from", "INVALID_DATE"),
        ("consultants.csv:4", "hr/IMP-E3", "legal_entity_ref", "REFERENCE_NOT_FOUND"),
    }
    people = {p["code"]: p for p in get_all(api, "/v1/consultants", "consultants", externalRefSystem="hr")}
    assert people["IMP-E2"]["managerId"] == people["IMP-E1"]["id"]
    assert "IMP-E3" not in people

    # Fix the bad rows and run again: what was imported is unchanged, the fixed rows go in.
    bundle["customers"][1]["currency"] = "GBP"
    (tmp_path / "bundle.json").write_text(json.dumps(bundle))
    # This time with a token given in the environment, as a script would.
    admin = stack.tokens(clock_for(instant)).token(identity.admin())
    second = accrue(
        "import",
        "consultants.csv",
        "bundle.json",
        "--url",
        stack.gateway_url,
        "--report",
        str(report),
        cwd=tmp_path,
        env={"ACCRUE_TOKEN": admin},
    )
    assert second.returncode == 1  # the consultant row is still bad
    with report.open() as handle:
        assert {r["external_ref"] for r in csv.DictReader(handle)} == {"hr/IMP-E3"}
    after = {p["code"]: p for p in get_all(api, "/v1/consultants", "consultants", externalRefSystem="hr")}
    assert after["IMP-E1"]["etag"] == people["IMP-E1"]["etag"] == "1"
    customers = {c["code"] for c in get_all(api, "/v1/customers", "customers")}
    assert {"IMP-C1", "IMP-C2"} <= customers


def test_import_refuses_files_it_cannot_read(tmp_path: Path, stack: Stack) -> None:
    (tmp_path / "people.csv").write_text("code,name\nX,Y\n")
    unknown = accrue("import", str(tmp_path / "people.csv"), "--url", stack.gateway_url)
    assert unknown.returncode == 2
    assert "cannot tell the entity type" in unknown.stdout
    (tmp_path / "bundle.json").write_text('{"employees": []}')
    wrong = accrue("import", str(tmp_path / "bundle.json"), "--url", stack.gateway_url)
    assert (wrong.returncode, "'employees' is not an entity type" in wrong.stdout) == (2, True)
    down = accrue(
        "import", str(tmp_path / "people.csv"), "--kind", "consultants", "--url", "http://127.0.0.1:9"
    )
    assert down.returncode == 1
    assert "cannot reach Accrue" in down.stdout
