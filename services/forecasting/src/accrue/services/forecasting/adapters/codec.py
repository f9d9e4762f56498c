"""The forecast as protobuf: what the API returns and what a version stores.

Money is rounded here, once, to the currency's minor unit (half-even, accrue.money); hours to
two places. A version stores this presented form, so it reads back exactly as it was shown.
"""

from __future__ import annotations

import datetime as dt
from decimal import ROUND_HALF_EVEN, Decimal

from accrue.forecasting.v1 import forecasting_service_pb2 as api
from accrue.money import format_decimal, format_money, is_currency, round_money
from accrue.services.forecasting.domain import forecast as fc
from accrue.services.forecasting.domain.utilization import Utilization
from accrue.services.forecasting.domain.variance import Point

HOURS = Decimal("0.01")


def hours(value: Decimal) -> str:
    """Hours to two places."""
    return format_decimal(value.quantize(HOURS, rounding=ROUND_HALF_EVEN), 2)


def money(value: Decimal, currency: str) -> str:
    """An amount rounded to its currency's minor unit."""
    if not is_currency(currency):
        return format_decimal(value.quantize(HOURS, rounding=ROUND_HALF_EVEN), 2)
    return format_money(round_money(value, currency), currency)


def amounts(figures: fc.Figures, currency: str, fx: Decimal | None = None) -> api.ForecastAmounts:
    """Figures in one currency; forecast_revenue is the sum of the rounded figures."""
    rounded = figures.rounded(currency) if is_currency(currency) else figures
    return api.ForecastAmounts(
        currency=currency,
        actual_revenue=money(rounded.actual_revenue, currency),
        billed=money(rounded.billed, currency),
        wip=money(rounded.wip, currency),
        scheduled=money(rounded.scheduled, currency),
        milestones=money(rounded.milestones, currency),
        weighted_pipeline=money(rounded.weighted_pipeline, currency),
        forecast_revenue=money(rounded.forecast_revenue, currency),
        fx_rate=format_decimal(fx) if fx is not None else "",
    )


def forecast(result: fc.Forecast, as_of: dt.date, newest: dt.datetime | None) -> api.Forecast:
    """The domain forecast as the API shows it."""
    out = api.Forecast(as_of_date=as_of.isoformat(), missing_fx=result.missing_fx)
    for r in result.rows:
        row = api.ForecastRow(
            project_id=r.project_id,
            opportunity_id=r.opportunity_id,
            customer_id=r.customer_id,
            legal_entity_id=r.legal_entity_id,
            month=r.month,
            currency=r.currency,
            approved_hours=hours(r.approved_hours),
            scheduled_hours=hours(r.scheduled_hours),
            wip=money(r.amounts.wip, r.currency),
            actual_revenue=money(r.amounts.actual_revenue, r.currency),
            amounts=amounts(r.amounts, r.currency),
        )
        base = r.base
        if base is not None:
            row.base_amounts.CopyFrom(amounts(base, r.base_currency, r.base_fx))
        out.rows.append(row)
    scopes = {
        fc.Scope.CUSTOMER: api.ROLLUP_SCOPE_CUSTOMER,
        fc.Scope.LEGAL_ENTITY: api.ROLLUP_SCOPE_LEGAL_ENTITY,
        fc.Scope.FIRM: api.ROLLUP_SCOPE_FIRM,
    }
    for t in result.totals:
        out.totals.append(
            api.ForecastTotal(
                scope=scopes[t.scope],
                id=t.id,
                month=t.month,
                approved_hours=hours(t.approved_hours),
                scheduled_hours=hours(t.scheduled_hours),
                amounts=amounts(t.amounts, t.currency),
            )
        )
    for p in result.projects:
        out.projects.append(
            api.ProjectSummary(
                project_id=p.project_id,
                currency=p.currency,
                budget_hours=hours(p.budget_hours) if p.budget_hours is not None else "",
                approved_hours=hours(p.approved_hours),
                remaining_budget_hours=hours(p.remaining_budget_hours)
                if p.remaining_budget_hours is not None
                else "",
                scheduled_hours=hours(p.scheduled_hours),
                eac_hours=hours(p.eac_hours),
                eac_revenue=money(p.eac_revenue, p.currency),
                budget_variance_hours=hours(p.budget_variance_hours)
                if p.budget_variance_hours is not None
                else "",
            )
        )
    if newest is not None:
        out.as_of_time.FromDatetime(newest)
    return out


def points(snapshot: api.Forecast, *, actual: bool = False) -> list[Point]:
    """A presented forecast's rows as variance points: forecast hours (approved + scheduled) and
    forecast revenue, or with actual=True approved hours and posted revenue."""
    return [
        Point(
            r.project_id,
            r.opportunity_id,
            r.month,
            r.currency,
            Decimal(r.approved_hours) if actual else Decimal(r.approved_hours) + Decimal(r.scheduled_hours),
            Decimal(r.amounts.actual_revenue) if actual else Decimal(r.amounts.forecast_revenue),
        )
        for r in snapshot.rows
    ]


def utilization(u: Utilization) -> api.UtilizationRow:
    """One consultant's month."""
    return api.UtilizationRow(
        consultant_id=u.consultant_id,
        legal_entity_id=u.legal_entity_id,
        month=u.month,
        capacity_hours=hours(u.capacity_hours),
        billable_hours=hours(u.billable_hours),
        approved_hours=hours(u.approved_hours),
        scheduled_billable_hours=hours(u.scheduled_billable_hours),
        scheduled_hours=hours(u.scheduled_hours),
        utilization_actual=format_decimal(u.actual) if u.actual is not None else "",
        utilization_forecast=format_decimal(u.forecast) if u.forecast is not None else "",
    )
