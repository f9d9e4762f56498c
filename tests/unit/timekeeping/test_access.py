"""Timekeeping's resource rules as pure decisions (domain.access and the entry's transitions)."""

import datetime as dt
from decimal import Decimal

import pytest

from accrue.runtime import PermissionDenied
from accrue.runtime.identity import Principal, service_principal
from accrue.services.timekeeping.domain.access import (
    delegation_view,
    entry_view,
    reads_any_queue,
    reverses_any,
    sees,
    submits_only_own_time,
)
from accrue.services.timekeeping.domain.model import Status, Submission, TimeEntry

pytestmark = pytest.mark.unit

NOW = dt.datetime(2026, 11, 25, 12, tzinfo=dt.UTC)


def who(subject: str, *roles: str, entities: tuple[str, ...] = ("*",)) -> Principal:
    return Principal(subject, frozenset(roles), frozenset(entities))


def test_own_time_a_consultant_alone_submits_only_their_own_an_integration_client_for_others() -> None:
    assert submits_only_own_time(who("dev", "consultant"))
    assert submits_only_own_time(who("dev", "consultant", "approver"))
    assert not submits_only_own_time(who("client:harvest", "integration", entities=("uk",)))


def test_own_time_or_scope_a_consultant_reads_their_own_entries_in_any_entity() -> None:
    view = entry_view(who("dev", "consultant", entities=("uk",)))
    assert view.shows("dev", "fr")
    assert not view.shows("boss", "uk")


def test_own_time_or_scope_other_roles_read_within_their_entities() -> None:
    view = entry_view(who("boss", "consultant", "approver", entities=("uk",)))
    assert view.shows("anyone", "uk")
    assert not view.shows("boss", "fr")
    assert not entry_view(who("a", "auditor", entities=())).shows("x", "uk")  # scope fails closed
    assert entry_view(service_principal("observability")).shows("x", "fr")


def test_routed_approver_or_scope_only_finance_and_auditors_list_queues_not_their_own() -> None:
    assert not reads_any_queue(who("boss", "approver", "project_manager"))
    assert reads_any_queue(who("cfo", "finance", entities=("uk",)))
    assert reads_any_queue(who("aud", "auditor"))


def test_own_delegation_or_scope_approvers_read_delegations_they_are_party_to() -> None:
    mine = delegation_view(who("boss", "approver"))
    assert mine.shows("boss", "deputy", "uk")
    assert mine.shows("chef", "boss", "fr")
    assert not mine.shows("chef", "deputy", "uk")
    finance = delegation_view(who("cfo", "finance", entities=("uk",)))
    assert finance.shows("chef", "deputy", "uk")
    assert not finance.shows("chef", "deputy", "fr")


def test_legal_entity_scope_services_and_every_entity_principals_see_all() -> None:
    assert sees(service_principal("billing"), "fr")
    assert sees(who("cfo", "finance"), "fr")
    assert not sees(who("cfo", "finance", entities=("uk",)), "fr")
    assert reverses_any(who("cfo", "finance"))
    assert not reverses_any(who("pm", "project_manager"))


def approved() -> TimeEntry:
    sub = Submission("dev", "p1", dt.date(2026, 11, 2), Decimal("8"), None, None, "", None)
    entry = TimeEntry("e1", sub, Status.PENDING_APPROVAL, approver_id="boss")
    entry.approve("boss", NOW)
    return entry


def test_finance_reverses_time_it_did_not_approve_but_never_its_own() -> None:
    with pytest.raises(PermissionDenied) as denied:
        approved().reverse("cfo", "x", "r1", NOW)
    assert denied.value.reason == "NOT_APPROVER"
    reversal = approved().reverse("cfo", "booked twice", "r1", NOW, any_approver=True)
    assert reversal.decided_by_id == "cfo"
    with pytest.raises(PermissionDenied) as own:
        approved().reverse("dev", "x", "r1", NOW, any_approver=True)
    assert own.value.reason == "SELF_APPROVAL"
