"""gRPC entrypoint: decode, call the use case, encode. No rules here.

Who acts is the verified principal (the use cases read it); a request field naming the actor
(approver_id, actor_id, delegator_id, locked_by_id) is optional and, when given, must name the
caller (acting_principal: PERMISSION_DENIED naming the field otherwise).
"""

from __future__ import annotations

from decimal import Decimal

from accrue.money import DecimalError, format_decimal, parse_decimal
from accrue.runtime import AlreadyExists, InvalidArgument, Violation
from accrue.runtime.grpc_types import Context
from accrue.runtime.identity import acting_principal
from accrue.runtime.validation import Violations
from accrue.services.timekeeping.adapters.proto import delegation_to_proto, lock_to_proto, to_proto
from accrue.services.timekeeping.domain.model import Submission, TimeEntry
from accrue.services.timekeeping.service_layer.handlers import MAX_BATCH, Decision, SubmitResult, Timekeeping
from accrue.timekeeping.v1 import resources_pb2 as tk
from accrue.timekeeping.v1 import timekeeping_service_pb2 as api
from accrue.timekeeping.v1 import timekeeping_service_pb2_grpc as api_grpc
from accrue.type.v1 import types_pb2


def parse_submission(msg: tk.TimeEntry, v: Violations) -> Submission | None:
    """The wire entry as domain values; malformed fields are violations (the entry is not stored)."""
    consultant_id = v.required("consultant_id", msg.consultant_id)
    project_id = v.required("project_id", msg.project_id)
    work_date = v.date("work_date", msg.work_date)
    hours = None
    if not msg.hours:
        v.add("hours", "REQUIRED", "hours is required")
    else:
        try:
            hours = parse_decimal(msg.hours)
        except DecimalError as exc:
            v.add("hours", "INVALID_DECIMAL", f"hours {exc}")
    ref = None
    if msg.HasField("external_ref"):
        if not msg.external_ref.system or not msg.external_ref.id:
            v.add("external_ref", "INCOMPLETE", "external_ref needs both system and id")
        else:
            ref = (msg.external_ref.system, msg.external_ref.id)
    if v or consultant_id is None or project_id is None or work_date is None or hours is None:
        return None
    return Submission(
        consultant_id=consultant_id,
        project_id=project_id,
        work_date=work_date,
        hours=hours,
        labor_category_id=msg.labor_category_id or None,
        billable=msg.billable if msg.HasField("billable") else None,
        notes=msg.notes,
        external_ref=ref,
    )


class TimekeepingServicer(api_grpc.TimekeepingServiceServicer):
    """The TimekeepingService RPCs."""

    def __init__(self, app: Timekeeping) -> None:
        self.app = app

    async def SubmitTimeEntry(
        self, request: api.SubmitTimeEntryRequest, context: Context
    ) -> api.SubmitTimeEntryResponse:
        v = Violations("time_entry")
        sub = parse_submission(request.time_entry, v)
        v.raise_if_any("the time entry is malformed")
        assert sub is not None
        (result,) = await self.app.submit([sub])
        if result.conflict:
            raise AlreadyExists(
                f"external_ref {sub.external_ref} already names {_named(result)} with other content",
                reason="EXTERNAL_REF_CONFLICT",
            )
        return api.SubmitTimeEntryResponse(time_entry=result.wire or to_proto(result.entry))

    async def BatchSubmitTimeEntries(
        self, request: api.BatchSubmitTimeEntriesRequest, context: Context
    ) -> api.BatchSubmitTimeEntriesResponse:
        # Counted before parsing: malformed rows cost work too, and a limit that only counted
        # the rows that parse would let any number of them through.
        if len(request.time_entries) > MAX_BATCH:
            raise InvalidArgument(
                f"a batch holds at most {MAX_BATCH} entries, got {len(request.time_entries)}",
                [
                    Violation(
                        "time_entries",
                        "BATCH_TOO_LARGE",
                        f"at most {MAX_BATCH} entries, got {len(request.time_entries)}",
                    )
                ],
            )
        parsed: list[Submission | None] = []
        malformed: dict[int, list[Violation]] = {}
        for i, msg in enumerate(request.time_entries):
            v = Violations()
            parsed.append(parse_submission(msg, v))
            if v:
                malformed[i] = v.items
        valid = [s for s in parsed if s is not None]
        stored = iter(await self.app.submit(valid)) if valid else iter(())
        results = []
        for i, msg in enumerate(request.time_entries):
            if i in malformed:
                # Not stored: the reply echoes the entry as REJECTED with why, and no id.
                echo = tk.TimeEntry()
                echo.CopyFrom(msg)
                echo.ClearField("id")
                echo.status = tk.TIME_ENTRY_STATUS_REJECTED
                del echo.violations[:]
                echo.violations.extend(_violations(malformed[i]))
                results.append(api.TimeEntrySubmitResult(time_entry=echo))
                continue
            result = next(stored)
            entry = result.wire or to_proto(result.entry)
            if result.conflict:
                conflict = tk.TimeEntry()
                conflict.CopyFrom(msg)
                conflict.ClearField("id")
                conflict.status = tk.TIME_ENTRY_STATUS_REJECTED
                del conflict.violations[:]
                conflict.violations.extend(
                    _violations(
                        [
                            Violation(
                                "external_ref",
                                "EXTERNAL_REF_CONFLICT",
                                f"external_ref already names {_named(result)} with other content",
                            )
                        ]
                    )
                )
                entry = conflict
            results.append(api.TimeEntrySubmitResult(time_entry=entry))
        return api.BatchSubmitTimeEntriesResponse(results=results)

    async def GetTimeEntry(
        self, request: api.GetTimeEntryRequest, context: Context
    ) -> api.GetTimeEntryResponse:
        return api.GetTimeEntryResponse(time_entry=to_proto(await self.app.get(request.id)))

    async def ListTimeEntries(
        self, request: api.ListTimeEntriesRequest, context: Context
    ) -> api.ListTimeEntriesResponse:
        v = Violations()
        filters = {
            "consultant_id": request.consultant_id,
            "project_id": request.project_id,
            "status": _status_name(request.status),
            "work_date_from": v.date("work_date_from", request.work_date_from, required=False),
            "work_date_to": v.date("work_date_to", request.work_date_to, required=False),
        }
        v.raise_if_any("the filter is invalid")
        entries, token = await self.app.list_entries(filters, request.page_size, request.page_token)
        return api.ListTimeEntriesResponse(time_entries=[to_proto(e) for e in entries], next_page_token=token)

    async def ApproveTimeEntry(
        self, request: api.ApproveTimeEntryRequest, context: Context
    ) -> api.ApproveTimeEntryResponse:
        acting_principal(context, request.approver_id, "approver_id")
        entry = await self.app.approve(request.id)
        return api.ApproveTimeEntryResponse(time_entry=to_proto(entry))

    async def DeclineTimeEntry(
        self, request: api.DeclineTimeEntryRequest, context: Context
    ) -> api.DeclineTimeEntryResponse:
        acting_principal(context, request.approver_id, "approver_id")
        entry = await self.app.decline(request.id, request.reason)
        return api.DeclineTimeEntryResponse(time_entry=to_proto(entry))

    async def ListApprovals(
        self, request: api.ListApprovalsRequest, context: Context
    ) -> api.ListApprovalsResponse:
        # approver_id here chooses a queue (finance and auditors may name anyone's): the use case
        # judges it (routed-approver-or-scope).
        entries, token = await self.app.approvals(request.approver_id, request.page_size, request.page_token)
        return api.ListApprovalsResponse(time_entries=[to_proto(e) for e in entries], next_page_token=token)

    async def BatchApproveTimeEntries(
        self, request: api.BatchApproveTimeEntriesRequest, context: Context
    ) -> api.BatchApproveTimeEntriesResponse:
        acting_principal(context, request.approver_id, "approver_id")
        decisions = await self.app.decide_many(list(request.ids), None)
        return api.BatchApproveTimeEntriesResponse(results=[_decision(d) for d in decisions])

    async def BatchDeclineTimeEntries(
        self, request: api.BatchDeclineTimeEntriesRequest, context: Context
    ) -> api.BatchDeclineTimeEntriesResponse:
        acting_principal(context, request.approver_id, "approver_id")
        decisions = await self.app.decide_many(list(request.ids), request.reason)
        return api.BatchDeclineTimeEntriesResponse(results=[_decision(d) for d in decisions])

    async def ReverseTimeEntry(
        self, request: api.ReverseTimeEntryRequest, context: Context
    ) -> api.ReverseTimeEntryResponse:
        acting_principal(context, request.actor_id, "actor_id")
        replacement = None
        if request.HasField("replacement"):
            v = Violations("replacement")
            replacement = parse_submission(request.replacement, v)
            v.raise_if_any("the replacement is malformed")
        correction = await self.app.reverse(request.id, request.reason, replacement)
        reply = api.ReverseTimeEntryResponse(
            original=to_proto(correction.original), reversal=to_proto(correction.reversal)
        )
        if correction.replacement is not None:
            reply.replacement.CopyFrom(to_proto(correction.replacement))
        return reply

    async def CreateApprovalDelegation(
        self, request: api.CreateApprovalDelegationRequest, context: Context
    ) -> api.CreateApprovalDelegationResponse:
        body = request.approval_delegation
        v = Violations("approval_delegation")
        v.required("delegate_id", body.delegate_id)
        start = v.date("start_date", body.start_date)
        end = v.date("end_date", body.end_date)
        v.raise_if_any("the delegation is invalid")
        assert start is not None
        assert end is not None
        # The delegator grants the delegation: it is the caller, named or not.
        acting_principal(context, body.delegator_id, "approval_delegation.delegator_id")
        delegation = await self.app.delegate(body.delegate_id, start, end, body.reason)
        return api.CreateApprovalDelegationResponse(approval_delegation=delegation_to_proto(delegation))

    async def GetApprovalDelegation(
        self, request: api.GetApprovalDelegationRequest, context: Context
    ) -> api.GetApprovalDelegationResponse:
        delegation = await self.app.get_delegation(request.id)
        return api.GetApprovalDelegationResponse(approval_delegation=delegation_to_proto(delegation))

    async def ListApprovalDelegations(
        self, request: api.ListApprovalDelegationsRequest, context: Context
    ) -> api.ListApprovalDelegationsResponse:
        v = Violations()
        filters = {
            "delegator_id": request.delegator_id,
            "delegate_id": request.delegate_id,
            "active_on": v.date("active_on", request.active_on, required=False),
        }
        v.raise_if_any("the filter is invalid")
        found, token = await self.app.list_delegations(filters, request.page_size, request.page_token)
        return api.ListApprovalDelegationsResponse(
            approval_delegations=[delegation_to_proto(d) for d in found], next_page_token=token
        )

    async def RevokeApprovalDelegation(
        self, request: api.RevokeApprovalDelegationRequest, context: Context
    ) -> api.RevokeApprovalDelegationResponse:
        acting_principal(context, request.actor_id, "actor_id")
        delegation = await self.app.revoke_delegation(request.id)
        return api.RevokeApprovalDelegationResponse(approval_delegation=delegation_to_proto(delegation))

    async def SummarizeApprovedTime(
        self, request: api.SummarizeApprovedTimeRequest, context: Context
    ) -> api.SummarizeApprovedTimeResponse:
        entries = await self.app.approved_time(
            request.period_start, request.period_end, request.legal_entity_id
        )
        by_project: dict[str, list[TimeEntry]] = {}
        for entry in entries:
            by_project.setdefault(entry.submission.project_id, []).append(entry)
        summaries = []
        for project_id, group in sorted(by_project.items()):
            hours = sum((e.submission.hours for e in group), Decimal(0))
            billable = sum((e.submission.hours for e in group if e.billable), Decimal(0))
            summaries.append(
                api.ApprovedTimeSummary(
                    project_id=project_id,
                    legal_entity_id=group[0].legal_entity_id,
                    entry_count=len(group),
                    hours=format_decimal(hours, 2),
                    billable_hours=format_decimal(billable, 2),
                    entries=[
                        api.ApprovedEntry(
                            time_entry_id=e.id,
                            hours=format_decimal(e.submission.hours, 2),
                            billable=e.billable,
                        )
                        for e in group
                    ],
                )
            )
        return api.SummarizeApprovedTimeResponse(projects=summaries)

    async def CreatePeriodLock(
        self, request: api.CreatePeriodLockRequest, context: Context
    ) -> api.CreatePeriodLockResponse:
        lock = request.period_lock
        v = Violations("period_lock")
        v.required("legal_entity_id", lock.legal_entity_id)
        through = v.date("locked_through", lock.locked_through)
        v.raise_if_any("the period lock is invalid")
        assert through is not None
        acting_principal(context, lock.locked_by_id, "period_lock.locked_by_id")
        stored = await self.app.lock_period(lock.legal_entity_id, through, lock.reason)
        return api.CreatePeriodLockResponse(period_lock=lock_to_proto(stored))

    async def GetPeriodLock(
        self, request: api.GetPeriodLockRequest, context: Context
    ) -> api.GetPeriodLockResponse:
        return api.GetPeriodLockResponse(period_lock=lock_to_proto(await self.app.get_lock(request.id)))

    async def ListPeriodLocks(
        self, request: api.ListPeriodLocksRequest, context: Context
    ) -> api.ListPeriodLocksResponse:
        locks, token = await self.app.list_locks(
            request.legal_entity_id, request.page_size, request.page_token
        )
        return api.ListPeriodLocksResponse(
            period_locks=[lock_to_proto(x) for x in locks], next_page_token=token
        )

    async def ReopenPeriodLock(
        self, request: api.ReopenPeriodLockRequest, context: Context
    ) -> api.ReopenPeriodLockResponse:
        acting_principal(context, request.actor_id, "actor_id")
        lock = await self.app.reopen_lock(request.id, request.reason)
        return api.ReopenPeriodLockResponse(period_lock=lock_to_proto(lock))

    async def RebuildMasterDataProjection(
        self, request: api.RebuildMasterDataProjectionRequest, context: Context
    ) -> api.RebuildMasterDataProjectionResponse:
        cleared, through = await self.app.rebuild_projection()
        return api.RebuildMasterDataProjectionResponse(
            records_cleared=cleared, replay_through_sequence=through
        )


def _named(result: SubmitResult) -> str:
    # An entry the caller may not read is not named, so a conflict tells nothing of it.
    return "another time entry" if result.hidden else f"time entry {result.entry.id}"


def _decision(decision: Decision) -> api.TimeEntryDecisionResult:
    result = api.TimeEntryDecisionResult(id=decision.entry_id)
    if decision.entry is not None:
        result.time_entry.CopyFrom(to_proto(decision.entry))
    if decision.error is not None:
        result.error.CopyFrom(
            api.DecisionError(
                code=decision.error.grpc_code, reason=decision.error.reason, message=decision.error.message
            )
        )
    return result


def _status_name(value: int) -> str:
    if value == tk.TIME_ENTRY_STATUS_UNSPECIFIED:
        return ""
    return tk.TimeEntryStatus.Name(tk.TimeEntryStatus.ValueType(value)).removeprefix("TIME_ENTRY_STATUS_")


def _violations(items: list[Violation]) -> list[types_pb2.Violation]:
    return [types_pb2.Violation(field=v.field, code=v.code, message=v.message) for v in items]
