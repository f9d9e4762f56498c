"""Hand-computed forecasts: a rate change mid-month, a capped project reaching its cap, an
opportunity won and one lost, milestones, WIP, invoices and FX (docs/forecasting.md)."""

import datetime as dt
from decimal import Decimal

from accrue.pricing import RateEntry
from accrue.services.forecasting.domain.calendar import WorkCalendar
from accrue.services.forecasting.domain.forecast import (
    ActualWork,
    Filters,
    Forecast,
    FxTable,
    Inputs,
    InvoicedAmount,
    Milestone,
    Model,
    Opportunity,
    Person,
    ProjectTerms,
    Row,
    Scope,
    Staffing,
    compute,
)

D = Decimal
NOV_26 = dt.date(2026, 11, 26)  # a holiday in the tests' calendar


def project(pid: str = "p1", model: Model = Model.TIME_AND_MATERIALS, **kw: object) -> ProjectTerms:
    values: dict[str, object] = {
        "id": pid,
        "customer_id": "cu1",
        "legal_entity_id": "le1",
        "currency": "GBP",
        "schedulable": True,
        "start": dt.date(2026, 1, 1),
        "end": None,
        "model": model,
        "contract_line_id": f"line-{pid}",
        "rate_currency": "GBP",
        "rates": (
            RateEntry("r1", "sc", None, D("100"), dt.date(2026, 1, 1), dt.date(2026, 11, 15)),
            RateEntry("r2", "sc", None, D("120"), dt.date(2026, 11, 16), None),
        ),
    }
    values.update(kw)
    return ProjectTerms(**values)  # type: ignore[arg-type]


def noon(day: dt.date) -> dt.datetime:
    """An instant on that day in UTC, far from either midnight (le1 has no time zone: UTC)."""
    return dt.datetime.combine(day, dt.time(12), dt.UTC)


def inputs(as_of: dt.date, projects: list[ProjectTerms], **kw: object) -> Inputs:
    values: dict[str, object] = {
        "now": noon(as_of),
        "horizon_months": 2,
        "reporting_currency": "GBP",
        "projects": {p.id: p for p in projects},
        "people": {"c1": Person("c1", "le1", D("40"), dt.date(2020, 1, 1), None)},
        "calendars": {"le1": WorkCalendar(holidays=frozenset({NOV_26}))},
        "base_currencies": {"le1": "GBP"},
    }
    values.update(kw)
    return Inputs(**values)  # type: ignore[arg-type]


def staff(
    pid: str = "p1", allocation: str = "100", end: dt.date | None = None, billable: bool = True
) -> Staffing:
    return Staffing(pid, "c1", "sc", dt.date(2026, 1, 1), end, D(allocation), billable)


def row(result: Forecast, month: str, project_id: str = "p1", opportunity_id: str = "") -> Row:
    return next(
        r
        for r in result.rows
        if (r.project_id, r.opportunity_id, r.month) == (project_id, opportunity_id, month)
    )


def test_a_rate_change_mid_month_prices_each_day_at_its_rate_and_holidays_are_left_out() -> None:
    # From Mon 2 Nov: 50 % of 40 h / 5 = 4 h a day. Working days 2-13 Nov: 10 at 100;
    # 16-30 Nov: 11 weekdays less the 26th = 10 at 120. December until Fri 4th: 4 days at 120.
    result = compute(
        inputs(dt.date(2026, 11, 2), [project()], staffing=[staff(allocation="50", end=dt.date(2026, 12, 4))])
    )
    nov, dec = row(result, "2026-11"), row(result, "2026-12")
    assert nov.scheduled_hours == D("80")
    assert nov.amounts.scheduled == D("8800")  # 40 h x 100 + 40 h x 120
    assert dec.scheduled_hours == D("16")
    assert dec.amounts.scheduled == D("1920")
    summary = result.projects[0]
    assert (summary.scheduled_hours, summary.eac_hours, summary.eac_revenue) == (D("96"), D("96"), D("10720"))


def test_a_capped_project_is_scheduled_up_to_its_remaining_cap_and_no_further() -> None:
    # Cap 10,000: 6,000 posted in October and 1,000 of WIP (10 h x 100) leave 3,000. From Mon 23
    # Nov: 23-27 less the 26th, and the 30th = 5 days x 8 h x 120 = 4,800, capped to 3,000;
    # December's 23 working days are still scheduled hours, worth nothing.
    capped = project(model=Model.CAPPED, cap_amount=D("10000"))
    result = compute(
        inputs(
            dt.date(2026, 11, 23),
            [capped],
            staffing=[staff()],
            invoiced=[
                InvoicedAmount("p1", "cu1", "le1", "line-p1", "2026-10", D("6000"), "GBP", posted=True)
            ],
            work=[ActualWork("p1", "c1", "cu1", "le1", "2026-11", D("10"), True, D("1000"), "GBP", False)],
        )
    )
    oct_, nov, dec = row(result, "2026-10"), row(result, "2026-11"), row(result, "2026-12")
    assert oct_.amounts.actual_revenue == D("6000")
    assert (nov.approved_hours, nov.amounts.wip) == (D("10"), D("1000"))
    assert (nov.scheduled_hours, nov.amounts.scheduled) == (D("40"), D("3000"))
    assert (dec.scheduled_hours, dec.amounts.scheduled) == (D("184"), D("0"))
    assert nov.amounts.forecast_revenue == D("4000")


def test_a_capped_project_that_reached_its_cap_schedules_nothing_more() -> None:
    capped = project(model=Model.CAPPED, cap_amount=D("5000"))
    result = compute(
        inputs(
            dt.date(2026, 11, 23),
            [capped],
            staffing=[staff()],
            invoiced=[
                InvoicedAmount("p1", "cu1", "le1", "line-p1", "2026-10", D("5000"), "GBP", posted=False)
            ],
        )
    )
    assert row(result, "2026-10").amounts.billed == D("5000")
    assert row(result, "2026-11").amounts.scheduled == D("0")
    assert row(result, "2026-11").scheduled_hours == D("40")


def test_an_open_opportunity_is_weighted_and_spread_while_won_and_lost_ones_leave_the_pipeline() -> None:
    def opp(
        oid: str, stage: str, amount: str = "120000", probability: str = "0.5", months: int = 3
    ) -> Opportunity:
        return Opportunity(
            oid, "cu1", "le1", D(amount), "GBP", D(probability), stage, dt.date(2026, 12, 15), months
        )

    result = compute(
        inputs(
            dt.date(2026, 11, 2),
            [],
            opportunities=[
                opp("open", "Proposal"),
                opp("won", "Won", probability="1"),
                opp("lost", "Closed Lost", probability="0.2"),
                opp("odd", "Qualify", amount="1000", probability="0.1"),
            ],
        )
    )
    pipeline = {(r.opportunity_id, r.month): r.amounts.weighted_pipeline for r in result.rows}
    assert pipeline == {
        ("open", "2026-12"): D("20000"),
        ("open", "2027-01"): D("20000"),
        ("open", "2027-02"): D("20000"),
        # 1000 x 0.1 = 100 over three months: two rounded thirds, the last takes the rest.
        ("odd", "2026-12"): D("33.33"),
        ("odd", "2027-01"): D("33.33"),
        ("odd", "2027-02"): D("33.34"),
    }
    firm_dec = next(t for t in result.totals if t.scope is Scope.FIRM and t.month == "2026-12")
    assert firm_dec.amounts.weighted_pipeline == D("20033.33")


def test_fixed_fee_counts_milestones_in_their_due_month_and_its_time_is_worth_no_wip() -> None:
    fixed = project(model=Model.FIXED_FEE, rate_currency="", rates=())
    result = compute(
        inputs(
            dt.date(2026, 11, 2),
            [fixed],
            staffing=[staff(end=dt.date(2026, 11, 6))],
            milestones=[
                Milestone("m1", "p1", D("15000"), dt.date(2026, 12, 10), invoiced=False),
                Milestone("m0", "p1", D("9000"), dt.date(2026, 10, 31), invoiced=True),
            ],
            work=[ActualWork("p1", "c1", "cu1", "le1", "2026-11", D("8"), True, D("800"), "GBP", False)],
        )
    )
    nov, dec = row(result, "2026-11"), row(result, "2026-12")
    assert (nov.approved_hours, nov.amounts.wip) == (D("8"), D("0"))
    assert (nov.scheduled_hours, nov.amounts.scheduled) == (D("40"), D("0"))
    assert dec.amounts.milestones == D("15000")
    assert not [r for r in result.rows if r.month == "2026-10"]


def test_wip_is_approved_unbilled_billable_work_and_budget_hours_count_down() -> None:
    p = project(budget_hours=D("100"), schedulable=False)
    work = [
        ActualWork("p1", "c1", "cu1", "le1", "2026-11", D("7.5"), True, D("750"), "GBP", False),
        ActualWork("p1", "c1", "cu1", "le1", "2026-11", D("2"), True, D("200"), "GBP", True),
        ActualWork("p1", "c1", "cu1", "le1", "2026-11", D("1"), False, D("100"), "GBP", False),
    ]
    result = compute(inputs(dt.date(2026, 11, 2), [p], staffing=[staff()], work=work))
    nov = row(result, "2026-11")
    assert (nov.approved_hours, nov.amounts.wip, nov.scheduled_hours) == (D("10.5"), D("750"), D("0"))
    summary = result.projects[0]
    assert (summary.remaining_budget_hours, summary.eac_hours, summary.budget_variance_hours) == (
        D("89.5"),
        D("10.5"),
        D("89.5"),
    )


def test_figures_are_given_in_the_legal_entity_base_currency_at_the_month_end_rate() -> None:
    # A USD project of a GBP legal entity: USD→GBP 0.80 from 1 Nov, 0.75 from 1 Dec.
    fx = FxTable()
    fx.add("USD", "GBP", dt.date(2026, 11, 1), D("0.80"))
    fx.add("USD", "GBP", dt.date(2026, 12, 1), D("0.75"))
    fx.add("GBP", "EUR", dt.date(2026, 1, 1), D("1.15"))
    p = project(currency="USD", rate_currency="USD", schedulable=False)
    result = compute(
        inputs(
            dt.date(2026, 11, 2),
            [p],
            fx=fx,
            reporting_currency="EUR",
            invoiced=[
                InvoicedAmount("p1", "cu1", "le1", "line-p1", "2026-11", D("1000"), "USD", posted=True),
                InvoicedAmount("p1", "cu1", "le1", "line-p1", "2026-12", D("1000"), "USD", posted=True),
            ],
        )
    )
    nov, dec = row(result, "2026-11"), row(result, "2026-12")
    assert nov.base is not None
    assert dec.base is not None
    assert (nov.base_currency, nov.base.actual_revenue, dec.base.actual_revenue) == (
        "GBP",
        D("800"),
        D("750"),
    )
    legal = {t.month: t.amounts.actual_revenue for t in result.totals if t.scope is Scope.LEGAL_ENTITY}
    firm = {(t.month, t.currency): t.amounts.actual_revenue for t in result.totals if t.scope is Scope.FIRM}
    assert legal == {"2026-11": D("800"), "2026-12": D("750")}
    assert firm == {("2026-11", "EUR"): D("920.00"), ("2026-12", "EUR"): D("862.50")}


def test_a_missing_fx_rate_is_reported_and_kept_out_of_the_roll_ups() -> None:
    p = project(currency="USD", rate_currency="USD", schedulable=False)
    result = compute(
        inputs(
            dt.date(2026, 11, 2),
            [p],
            invoiced=[
                InvoicedAmount("p1", "cu1", "le1", "line-p1", "2026-11", D("1000"), "USD", posted=True)
            ],
        )
    )
    assert row(result, "2026-11").base is None
    assert result.missing_fx == ["USD/GBP"]
    assert result.totals == []


def test_filters_keep_matching_rows_while_project_summaries_cover_every_month() -> None:
    result = compute(
        inputs(
            dt.date(2026, 11, 2), [project()], staffing=[staff(allocation="50", end=dt.date(2026, 12, 4))]
        ),
        Filters(month_from="2026-12", month_to="2026-12"),
    )
    assert [r.month for r in result.rows] == ["2026-12"]
    assert result.projects[0].scheduled_hours == D("96")


def test_scheduled_time_starts_on_the_as_of_day_and_stops_at_the_project_end_and_active_to() -> None:
    p = project(end=dt.date(2026, 11, 20))
    people = {"c1": Person("c1", "le1", D("40"), dt.date(2020, 1, 1), dt.date(2026, 11, 18))}
    result = compute(inputs(dt.date(2026, 11, 16), [p], staffing=[staff()], people=people))
    # Mon 16 to Wed 18 Nov: 3 days x 8 h at 120.
    nov = row(result, "2026-11")
    assert (nov.scheduled_hours, nov.amounts.scheduled) == (D("24"), D("2880"))


def test_a_customer_filter_keeps_its_projects_rows_totals_and_summaries_only() -> None:
    other = project("p2", customer_id="cu2")
    work = [
        ActualWork("p1", "c1", "cu1", "le1", "2026-11", D("1"), True, D("100"), "GBP", False),
        ActualWork("p2", "c1", "cu2", "le1", "2026-11", D("2"), True, D("200"), "GBP", False),
    ]
    result = compute(
        inputs(dt.date(2026, 11, 2), [project(schedulable=False), other], work=work),
        Filters(customer_id="cu2"),
    )
    assert [(r.project_id, r.amounts.wip) for r in result.rows] == [("p2", D("200"))]
    assert [s.project_id for s in result.projects] == ["p2"]
    assert {(t.scope, t.id) for t in result.totals} == {
        (Scope.CUSTOMER, "cu2"),
        (Scope.LEGAL_ENTITY, "le1"),
        (Scope.FIRM, ""),
    }
