"""gRPC entrypoint: decode, call the use case, encode. No rules here."""

from __future__ import annotations

from decimal import Decimal

from accrue.money import DecimalError, format_decimal, parse_decimal
from accrue.runtime import AlreadyExists, Violation
from accrue.runtime.grpc_types import Context
from accrue.runtime.identity import acting_principal
from accrue.runtime.validation import Violations
from accrue.services.timekeeping.adapters.proto import to_proto
from accrue.services.timekeeping.domain.model import Status, Submission, TimeEntry
from accrue.services.timekeeping.service_layer.handlers import Timekeeping
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
                f"external_ref {sub.external_ref} already names time entry {result.entry.id} "
                "with other content",
                reason="EXTERNAL_REF_CONFLICT",
            )
        return api.SubmitTimeEntryResponse(time_entry=to_proto(result.entry))

    async def BatchSubmitTimeEntries(
        self, request: api.BatchSubmitTimeEntriesRequest, context: Context
    ) -> api.BatchSubmitTimeEntriesResponse:
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
            entry = to_proto(result.entry)
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
                                f"external_ref already names time entry {result.entry.id} with other content",
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
        actor = acting_principal(context, request.approver_id, "approver_id")
        entry = await self.app.approve(request.id, actor.subject)
        return api.ApproveTimeEntryResponse(time_entry=to_proto(entry))

    async def DeclineTimeEntry(
        self, request: api.DeclineTimeEntryRequest, context: Context
    ) -> api.DeclineTimeEntryResponse:
        actor = acting_principal(context, request.approver_id, "approver_id")
        entry = await self.app.decline(request.id, actor.subject, request.reason)
        return api.DeclineTimeEntryResponse(time_entry=to_proto(entry))

    async def ListApprovals(
        self, request: api.ListApprovalsRequest, context: Context
    ) -> api.ListApprovalsResponse:
        actor = acting_principal(context, request.approver_id, "approver_id")
        filters = {"approver_id": actor.subject, "status": str(Status.PENDING_APPROVAL)}
        entries, token = await self.app.list_entries(filters, request.page_size, request.page_token)
        return api.ListApprovalsResponse(time_entries=[to_proto(e) for e in entries], next_page_token=token)

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
        lock_id, created = await self.app.lock_period(lock.legal_entity_id, through, lock.reason)
        stored = tk.PeriodLock(
            id=lock_id,
            legal_entity_id=lock.legal_entity_id,
            locked_through=through.isoformat(),
            reason=lock.reason,
        )
        stored.create_time.FromDatetime(created)
        return api.CreatePeriodLockResponse(period_lock=stored)


def _status_name(value: int) -> str:
    if value == tk.TIME_ENTRY_STATUS_UNSPECIFIED:
        return ""
    return tk.TimeEntryStatus.Name(tk.TimeEntryStatus.ValueType(value)).removeprefix("TIME_ENTRY_STATUS_")


def _violations(items: list[Violation]) -> list[types_pb2.Violation]:
    return [types_pb2.Violation(field=v.field, code=v.code, message=v.message) for v in items]
