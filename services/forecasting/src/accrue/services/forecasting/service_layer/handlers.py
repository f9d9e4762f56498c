"""Forecasting use cases: keep the forecast's facts from events, answer the live forecast,
take and compare versions, report utilization.

legal-entity-scope (policy.toml): a caller limited to some legal entities reads the forecast,
versions, comparisons, accuracy and utilization of those entities only. The live forecast is
computed from their projects and pipeline alone, so every roll-up (customer, legal entity, firm)
adds up only what the caller may see. A version is a firm-wide snapshot: a scoped caller gets
its entities' rows, legal-entity totals, project summaries and the totals of customers wholly
within them; the firm's total, which holds other entities' money and cannot be re-added without
the version's FX rates, is left out (`_within`).
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from accrue.eventbus import Event
from accrue.events.v1 import forecast_events_pb2 as fev
from accrue.forecasting.v1 import forecasting_service_pb2 as api
from accrue.money import parse_decimal
from accrue.runtime import FailedPrecondition, NotFound, audit
from accrue.runtime.clock import Clock
from accrue.runtime.identity import current_principal
from accrue.runtime.validation import Violations
from accrue.services.forecasting.adapters import codec
from accrue.services.forecasting.adapters.inputs import load_inputs, load_time_zones
from accrue.services.forecasting.adapters.repository import InvoiceState, StoredVersion
from accrue.services.forecasting.adapters.unit_of_work import ForecastingUnitOfWork
from accrue.services.forecasting.domain import forecast as fc
from accrue.services.forecasting.domain import variance
from accrue.services.forecasting.domain.calendar import add_months, earliest_local_date, month_of
from accrue.services.forecasting.domain.utilization import Utilization, utilization
from accrue.services.forecasting.service_layer.metrics import REFRESH_LAG, REFRESHED, VERSIONS

_MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")
ON_DEMAND, SCHEDULED = "ON_DEMAND", "SCHEDULED"


@dataclass(frozen=True)
class Options:
    """What the settings decide about the forecast."""

    horizon_months: int = 12
    reporting_currency: str = "EUR"


def _months(v: Violations, **values: str) -> None:
    for name, value in values.items():
        if value and not _MONTH.match(value):
            v.add(name, "INVALID_MONTH", f"{name} must be a month as YYYY-MM, got {value!r}")


class Forecasting:
    """The forecasting application service.

    "Today" is a business date, so it is a legal entity's: a project's scheduled time starts on
    its legal entity's local date (see domain.forecast.Inputs). Firm-wide questions take the
    earliest legal entity's date: a month is closed (for accuracy) once it has ended everywhere.
    """

    def __init__(
        self,
        uow_factory: Callable[[], ForecastingUnitOfWork],
        options: Options = Options(),
        *,
        clock: Clock,
        watermark: Callable[[], Awaitable[dict[str, int]]] | None = None,
    ) -> None:
        self._uow = uow_factory
        self._watermark = watermark or _no_watermark
        self._options = options
        self._clock = clock

    # --- facts from events ---------------------------------------------------------------

    def applied(self, uow: ForecastingUnitOfWork, stream: str, occurred_at: dt.datetime | None) -> None:
        """Measure the refresh lag when the event's transaction commits: from then on the
        forecast (computed on read) reflects it."""

        def refreshed() -> None:
            # Against the clock, not a monotonic one: occurred_at is another process's instant.
            now = self._clock()
            REFRESHED.set(now.timestamp())
            if occurred_at is not None:
                REFRESH_LAG.labels(stream).observe(max(0.0, (now - occurred_at).total_seconds()))

        uow.after_commit(refreshed)

    async def record_approved(
        self, uow: ForecastingUnitOfWork, entry: Any, occurred_at: dt.datetime | None = None
    ) -> None:
        """time.entry.approved: the entry's hours become actual (and WIP until invoiced)."""
        hours = parse_decimal(entry.hours)
        rate = parse_decimal(entry.indicative_rate.amount) if entry.indicative_rate.amount else None
        uow.forecast.approved(
            entry.id,
            {
                "project_id": entry.project_id,
                "consultant_id": entry.consultant_id,
                "customer_id": entry.customer_id,
                "legal_entity_id": entry.legal_entity_id,
                "month": month_of(dt.date.fromisoformat(entry.work_date)),
                "hours": hours,
                "billable": entry.billable if entry.HasField("billable") else True,
                "value": hours * rate if rate is not None else None,
                "currency": entry.indicative_rate.currency,
                "event_time": occurred_at,
            },
        )

    async def record_reversed(self, uow: ForecastingUnitOfWork, original: Any) -> None:
        """time.entry.reversed: the original entry no longer counts (its credit, if it was
        invoiced, reaches revenue through billing's events)."""
        await uow.forecast.reversed(original.id)

    async def record_invoice(self, uow: ForecastingUnitOfWork, invoice: Any, status: str) -> None:
        """billing.invoice.drafted|approved|posted|voided: the invoice's newest state."""
        period_end = dt.date.fromisoformat(invoice.period_end)
        await uow.forecast.invoice(
            InvoiceState(
                invoice_id=invoice.id,
                status=status,
                legal_entity_id=invoice.legal_entity_id,
                customer_id=invoice.customer_id,
                month=month_of(period_end),
                currency=invoice.currency,
                lines=[
                    (
                        line.id or str(i),
                        line.project_id,
                        line.contract_line_id,
                        line.milestone_id,
                        parse_decimal(line.amount),
                    )
                    for i, line in enumerate(invoice.lines)
                    if line.amount
                ],
                time_entry_ids=[i for line in invoice.lines for i in line.source_time_entry_ids],
            )
        )

    # --- the live forecast ---------------------------------------------------------------

    async def _inputs(self, uow: ForecastingUnitOfWork, project_id: str = "") -> fc.Inputs:
        return await load_inputs(
            uow.connection,
            now=self._clock(),
            horizon_months=self._options.horizon_months,
            reporting_currency=self._options.reporting_currency,
            project_id=project_id,
        )

    async def _compute(self, uow: ForecastingUnitOfWork, filters: fc.Filters) -> api.Forecast:
        inputs = await self._inputs(uow, filters.project_id)
        newest = await uow.forecast.newest_event_time()
        return codec.forecast(fc.compute(inputs, filters), fc.as_of_date(inputs, filters), newest)

    async def forecast(self, filters: fc.Filters) -> api.Forecast:
        """The live forecast, per project and month, with roll-ups and project summaries."""
        v = Violations()
        _months(v, month_from=filters.month_from, month_to=filters.month_to)
        v.raise_if_any("the forecast filter is invalid")
        filters = replace(filters, legal_entity_ids=_scope())
        async with self._uow() as uow:
            return await self._compute(uow, filters)

    # --- versions ------------------------------------------------------------------------

    async def create_version(self, name: str = "") -> api.ForecastVersion:
        """Take a version on demand; the caller sees it as it sees every version (`_within`)."""
        scope = _scope()
        version = await self._take_version(name, ON_DEMAND)
        assert version is not None  # only a scheduled version can be skipped
        return _within_version(version, scope)

    async def _take_version(self, name: str, kind: str) -> api.ForecastVersion | None:
        """Snapshot the whole firm's live forecast; publish forecast.version.published with it.
        None when the scheduled version of that name already exists."""
        now = self._clock()
        version_id = str(uuid.uuid4())
        async with self._uow() as uow:
            # One snapshot at a time, so previous_version_id chains and the watermark matches.
            await uow.connection.exec_driver_sql(
                "SELECT pg_advisory_xact_lock(hashtext('forecasting.versions'))"
            )
            if kind == SCHEDULED and await uow.forecast.scheduled_exists(name):
                return None
            # Read before the snapshot: everything up to these sequences is committed, so in it.
            watermark = await self._watermark()
            snapshot = await self._compute(uow, fc.Filters())
            previous = await uow.forecast.latest_version_id()
            stored = StoredVersion(
                version_id,
                name or f"on demand {now:%Y-%m-%d %H:%M:%S}",
                kind,
                previous,
                now,
                watermark,
                snapshot.SerializeToString(deterministic=True),
            )
            await uow.forecast.add_version(stored)
            # A version is the whole firm's snapshot: it belongs to no one legal entity.
            audit.note(
                "forecast_version",
                version_id,
                "",
                None,
                {"name": stored.name, "kind": kind, "previous_version_id": previous, "watermark": watermark},
            )
            uow.events.add(
                Event("forecast.version.published", version_id, _published(stored, snapshot), occurred_at=now)
            )
            await uow.commit()
        VERSIONS.labels(kind).inc()
        return _version_message(stored, snapshot)

    async def scheduled_version(self) -> api.ForecastVersion | None:
        """The weekly version, if this ISO week's is not taken yet.

        The week is UTC's: a version is one firm-wide snapshot, named once for every legal
        entity, and no one entity's week is the firm's (docs/forecasting.md, "Versions")."""
        year, week, _ = self._clock().isocalendar()
        return await self._take_version(f"weekly {year}-W{week:02d}", SCHEDULED)

    async def get_version(self, version_id: str) -> api.ForecastVersion:
        """One version with its forecast, as far as the caller may see it."""
        scope = _scope()
        async with self._uow() as uow:
            stored = await uow.forecast.version(version_id)
        if stored is None or stored.forecast is None:
            raise NotFound(f"forecast version {version_id!r} does not exist", reason="VERSION_NOT_FOUND")
        return _within_version(_version_message(stored, api.Forecast.FromString(stored.forecast)), scope)

    async def list_versions(self, page_size: int, page_token: str) -> tuple[list[api.ForecastVersion], str]:
        """Newest first; the token is the last seen sequence."""
        v = Violations()
        if page_size < 0:
            v.add("page_size", "INVALID_VALUE", "page_size must not be negative")
        if page_token and not page_token.isdigit():
            v.add("page_token", "INVALID_VALUE", "page_token is not one this API gave out")
        v.raise_if_any("the list request is invalid")
        size = min(page_size or 50, 500)
        async with self._uow() as uow:
            found = await uow.forecast.versions(size + 1, int(page_token) if page_token else None)
        page = found[:size]
        token = str(page[-1][0]) if len(found) > size else ""
        return [_version_message(s, None) for _, s in page], token

    async def compare(self, version_id: str, other_id: str) -> list[variance.Variance]:
        """Per project and month: the change from version to other, split."""
        v = Violations()
        v.required("id", version_id)
        v.required("other_id", other_id)
        v.raise_if_any("the comparison is invalid")
        base = await self.get_version(version_id)
        other = await self.get_version(other_id)
        return variance.compare(codec.points(base.forecast), codec.points(other.forecast))

    async def accuracy(
        self, version_id: str, month: str
    ) -> tuple[list[variance.Accuracy], list[variance.AccuracyTotal]]:
        """The version's forecast for a closed month against the month's actuals as now known."""
        v = Violations()
        v.required("month", month)
        _months(v, month=month)
        v.raise_if_any("the accuracy request is invalid")
        async with self._uow() as uow:
            zones = await load_time_zones(uow.connection)
        # Closed once it has ended in every legal entity's zone: the westernmost decides.
        current = month_of(earliest_local_date(self._clock(), zones.values()))
        if month >= current:
            raise FailedPrecondition(
                f"month {month} is not closed yet: accuracy needs a month before {current}",
                reason="MONTH_NOT_CLOSED",
            )
        version = await self.get_version(version_id)
        filters = fc.Filters(month_from=month, month_to=month, legal_entity_ids=_scope())
        async with self._uow() as uow:
            live = await self._compute(uow, filters)
        forecast = [p for p in codec.points(version.forecast) if p.month == month]
        return variance.accuracy(forecast, codec.points(live, actual=True))

    # --- capacity ------------------------------------------------------------------------

    async def utilization(
        self, consultant_id: str, legal_entity_id: str, month_from: str, month_to: str
    ) -> list[Utilization]:
        """Capacity and utilization per consultant and month; from the current month (of the
        legal entity asked for, else the consultant's, else the earliest) for three months when
        the range is not given."""
        v = Violations()
        _months(v, month_from=month_from, month_to=month_to)
        v.raise_if_any("the utilization filter is invalid")
        if month_from and month_to:
            _range(v, month_from, month_to)  # before reading anything
            v.raise_if_any("the utilization filter is invalid")
        scope = _scope()
        async with self._uow() as uow:
            inputs = await self._inputs(uow)
        first = month_from or month_of(_today_of(inputs, consultant_id, legal_entity_id))
        last = month_to or add_months(first, 2)
        _range(v, first, last)
        v.raise_if_any("the utilization filter is invalid")
        return utilization(inputs, fc.months_between(first, last), consultant_id, legal_entity_id, scope)


def _scope() -> frozenset[str] | None:
    """The legal entities the caller sees; None for every one (and for Accrue's services)."""
    principal = current_principal()
    return None if principal.is_service else principal.legal_entity_scope


def _within(forecast: api.Forecast, scope: frozenset[str] | None) -> api.Forecast:
    """A version's forecast as a caller limited to scope sees it (see the module's docstring)."""
    if scope is None:
        return forecast
    rows = [r for r in forecast.rows if r.legal_entity_id in scope]
    projects = {r.project_id for r in rows}
    customers = {r.customer_id for r in rows} - {
        r.customer_id for r in forecast.rows if r.legal_entity_id not in scope
    }
    totals = [
        t
        for t in forecast.totals
        if (t.scope == api.ROLLUP_SCOPE_LEGAL_ENTITY and t.id in scope)
        or (t.scope == api.ROLLUP_SCOPE_CUSTOMER and t.id in customers)
    ]
    out = api.Forecast(
        rows=rows,
        as_of_date=forecast.as_of_date,
        totals=totals,
        projects=[p for p in forecast.projects if p.project_id in projects],
        missing_fx=forecast.missing_fx,
    )
    if forecast.HasField("as_of_time"):
        out.as_of_time.CopyFrom(forecast.as_of_time)
    return out


def _within_version(version: api.ForecastVersion, scope: frozenset[str] | None) -> api.ForecastVersion:
    if scope is None or not version.HasField("forecast"):
        return version
    scoped = api.ForecastVersion()
    scoped.CopyFrom(version)
    scoped.forecast.CopyFrom(_within(version.forecast, scope))
    return scoped


def _range(v: Violations, first: str, last: str) -> None:
    if last < first:
        v.add("month_to", "INVALID_RANGE", f"month_to {last} is before month_from {first}")
    elif len(fc.months_between(first, last)) > 36:
        v.add("month_to", "RANGE_TOO_LONG", "at most 36 months at a time")


def _today_of(inputs: fc.Inputs, consultant_id: str, legal_entity_id: str) -> dt.date:
    """Today for a utilization request: the legal entity's, else the consultant's legal entity's,
    else the earliest legal entity's."""
    person = inputs.people.get(consultant_id) if consultant_id else None
    entity = legal_entity_id or (person.legal_entity_id if person is not None else "")
    return inputs.as_of(entity) if entity else inputs.earliest_as_of()


async def _no_watermark() -> dict[str, int]:
    return {}


def _published(stored: StoredVersion, snapshot: api.Forecast) -> fev.ForecastVersionPublished:
    """The event: the version's legal-entity totals per month in base currency."""
    event = fev.ForecastVersionPublished(
        version_id=stored.id,
        name=stored.name,
        previous_version_id=stored.previous_version_id,
        watermark=stored.watermark,
    )
    event.create_time.FromDatetime(stored.created_at)
    for t in snapshot.totals:
        if t.scope == api.ROLLUP_SCOPE_LEGAL_ENTITY:
            event.totals.append(
                fev.ForecastVersionTotal(
                    legal_entity_id=t.id,
                    month=t.month,
                    currency=t.amounts.currency,
                    forecast_revenue=t.amounts.forecast_revenue,
                    actual_revenue=t.amounts.actual_revenue,
                )
            )
    return event


def _version_message(stored: StoredVersion, snapshot: api.Forecast | None) -> api.ForecastVersion:
    kinds = {ON_DEMAND: api.FORECAST_VERSION_KIND_ON_DEMAND, SCHEDULED: api.FORECAST_VERSION_KIND_SCHEDULED}
    message = api.ForecastVersion(
        id=stored.id,
        name=stored.name,
        kind=kinds.get(stored.kind, api.FORECAST_VERSION_KIND_UNSPECIFIED),
        previous_version_id=stored.previous_version_id,
        watermark=stored.watermark,
    )
    message.create_time.FromDatetime(stored.created_at)
    if snapshot is not None:
        message.forecast.CopyFrom(snapshot)
    return message
