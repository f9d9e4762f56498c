"""The access policy covers every operation of every service, with known roles and rules."""

from __future__ import annotations

import pytest

from accrue.contracts import descriptor_set
from accrue.identity.policy import load_policy, parse_policy
from accrue.runtime.errors import PermissionDenied
from accrue.runtime.identity import Principal

pytestmark = pytest.mark.unit


def _operations() -> set[str]:
    return {
        f"{file.package}.{service.name}/{method.name}"
        for file in descriptor_set().file
        if file.package.startswith("accrue.")
        for service in file.service
        for method in service.method
    }


def test_every_operation_has_a_policy_entry_and_no_entry_is_stale() -> None:
    policy = load_policy()
    operations = _operations()

    assert sorted(operations - set(policy.entries)) == [], "operations without an access policy entry"
    assert sorted(set(policy.entries) - operations) == [], "policy entries for operations that do not exist"


def test_only_services_hold_the_service_role_and_no_human_role_is_unused() -> None:
    policy = load_policy()
    used = {role for entry in policy.entries.values() for role in entry.roles}

    assert used == set(policy.roles)


def test_the_auditor_reads_everything_and_changes_nothing() -> None:
    policy = load_policy()
    auditor_may = {name for name, entry in policy.entries.items() if "auditor" in entry.roles}

    writes = {
        n
        for n in auditor_may
        if n.split("/")[1].startswith(
            (
                "Create",
                "Update",
                "Deactivate",
                "Approve",
                "Post",
                "Void",
                "Resolve",
                "Submit",
                "Batch",
                "Reverse",
                "Revoke",
                "Reopen",
                "Complete",
                "Rebuild",
                "Decline",
            )
        )
    }
    # Resolve/Convert* reads of master data (rates, tax, amounts) are lookups, not changes.
    assert {n for n in writes if not n.split("/")[1].startswith(("ResolveRate", "ResolveTaxRate"))} == set()
    reads = {n for n in policy.entries if n.split("/")[1].startswith(("Get", "List"))}
    assert reads - auditor_may == set()


def test_a_role_not_listed_is_refused_naming_the_permission() -> None:
    policy = load_policy()
    consultant = Principal("dana", frozenset({"consultant"}))

    with pytest.raises(PermissionDenied, match=r"accrue\.billing\.v1\.BillingService/PostInvoice"):
        policy.check("accrue.billing.v1.BillingService/PostInvoice", consultant)
    assert (
        policy.check("accrue.timekeeping.v1.TimekeepingService/SubmitTimeEntry", consultant).rule
        == "own-time"
    )


def test_an_operation_without_an_entry_is_nobodys() -> None:
    everyone = Principal("root", frozenset(load_policy().roles))

    with pytest.raises(PermissionDenied) as refused:
        load_policy().check("accrue.billing.v1.BillingService/DropDatabase", everyone)
    assert refused.value.reason == "NO_POLICY"


def test_a_policy_naming_an_unknown_role_or_rule_does_not_load() -> None:
    base = '[roles]\nfinance = "f"\n[rules]\nr = "x"\n'
    with pytest.raises(ValueError, match="unknown roles"):
        parse_policy(base + '[operations."a.B"]\nC = { roles = ["wizard"] }\n')
    with pytest.raises(ValueError, match="unknown rule"):
        parse_policy(base + '[operations."a.B"]\nC = { roles = ["finance"], rule = "nope" }\n')
