"""`accrue seed`: a realistic demo firm, built through the public REST API.

Three legal entities in three currencies (Acme UK in GBP, Acme GmbH in EUR, Acme Inc. in USD),
each with its 2026 calendar; five roles; N consultants in a management chain (partners,
principals, the rest); customers (one UK customer invoiced in EUR, so FX matters); projects under
time-and-materials, capped and fixed-fee contract lines; a rate card per currency whose rates
change on 1 July 2026, with partner overrides; milestones on the fixed-fee lines (the first of
each completed); assignments; a sales pipeline; monthly FX rates between the three currencies;
VAT rates with their history.

Everything is generated from --seed, keyed by external_ref in the system "seed", so running the
command again changes nothing (every row comes back unchanged).
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from accrue.cli.sync import COLLECTIONS, Collection, Row, Summary, rows_of
from accrue.cli.tokens import SEED_CLIENT_ID, LocalMinter

SYSTEM = "seed"
YEAR = 2026
RATE_CHANGE = dt.date(YEAR, 7, 1)

_FIRST = (
    "Alex Sam Jordan Morgan Taylor Casey Riley Jamie Avery Quinn Rowan Charlie Dana Eli Frankie "
    "Harper Jesse Kai Logan Milan Noa Parker Reese Robin Sasha Toni Uma Vic Wren Zoe"
).split()
_LAST = (
    "Smith Jones Patel Müller Schmidt Garcia Nguyen Brown Wilson Fischer Weber Rossi Kowalski "
    "Dubois Novak Larsen Silva Costa Murphy Kelly Young Walker Hughes Becker Wagner Evans"
).split()


@dataclass(frozen=True)
class Entity:
    """A legal entity of the demo firm."""

    key: str
    name: str
    currency: str
    country: str
    tax_code: str
    share: float  # of the consultants
    holidays: tuple[tuple[str, str], ...]


ENTITIES = (
    Entity(
        "UK",
        "Acme Consulting UK Ltd",
        "GBP",
        "GB",
        "VAT-GB-STD",
        0.5,
        (
            ("2026-01-01", "New Year's Day"),
            ("2026-04-03", "Good Friday"),
            ("2026-04-06", "Easter Monday"),
            ("2026-05-04", "Early May bank holiday"),
            ("2026-05-25", "Spring bank holiday"),
            ("2026-08-31", "Summer bank holiday"),
            ("2026-12-25", "Christmas Day"),
            ("2026-12-28", "Boxing Day (substitute day)"),
        ),
    ),
    Entity(
        "DE",
        "Acme Consulting GmbH",
        "EUR",
        "DE",
        "VAT-DE-STD",
        0.3,
        (
            ("2026-01-01", "Neujahr"),
            ("2026-04-03", "Karfreitag"),
            ("2026-04-06", "Ostermontag"),
            ("2026-05-01", "Tag der Arbeit"),
            ("2026-05-14", "Christi Himmelfahrt"),
            ("2026-05-25", "Pfingstmontag"),
            ("2026-10-03", "Tag der Deutschen Einheit"),
            ("2026-12-25", "1. Weihnachtstag"),
            ("2026-12-26", "2. Weihnachtstag"),
        ),
    ),
    Entity(
        "US",
        "Acme Consulting Inc.",
        "USD",
        "US",
        "US-EXEMPT",
        0.2,
        (
            ("2026-01-01", "New Year's Day"),
            ("2026-01-19", "Martin Luther King Jr. Day"),
            ("2026-05-25", "Memorial Day"),
            ("2026-07-03", "Independence Day (observed)"),
            ("2026-09-07", "Labor Day"),
            ("2026-11-26", "Thanksgiving Day"),
            ("2026-12-25", "Christmas Day"),
        ),
    ),
)

# Roles, with the hourly rate in GBP for the first half of the year and the cost per hour.
ROLES = (
    ("PARTNER", "Partner", Decimal(350), Decimal(160)),
    ("PRINCIPAL", "Principal Consultant", Decimal(250), Decimal(110)),
    ("SENIOR", "Senior Consultant", Decimal(175), Decimal(75)),
    ("CONSULTANT", "Consultant", Decimal(130), Decimal(55)),
    ("ANALYST", "Analyst", Decimal(90), Decimal(38)),
)
# Rates in each currency relative to GBP, and the mid-year rise.
PRICE_LEVEL = {"GBP": Decimal("1"), "EUR": Decimal("1.15"), "USD": Decimal("1.30")}
RISE = Decimal("1.05")
# GBP value of one unit of each currency at the start of the year (for the FX table).
GBP_VALUE = {"GBP": Decimal("1"), "EUR": Decimal("0.86"), "USD": Decimal("0.79")}
TAX_RATES = (
    ("VAT-GB-STD", "0.175", "2008-12-01"),
    ("VAT-GB-STD", "0.20", "2011-01-04"),
    ("VAT-DE-STD", "0.19", "2007-01-01"),
    ("VAT-DE-STD", "0.16", "2020-07-01"),
    ("VAT-DE-STD", "0.19", "2021-01-01"),
    ("US-EXEMPT", "0", "2000-01-01"),
)
_SECTORS = ("Industries", "Bank", "Retail", "Health", "Energy", "Logistics")
MODELS = ("BILLING_MODEL_TIME_AND_MATERIALS", "BILLING_MODEL_CAPPED", "BILLING_MODEL_FIXED_FEE")


def ref(ext_id: str) -> dict[str, str]:
    """An external ref in the seed's system."""
    return {"system": SYSTEM, "id": ext_id}


def _money(value: Decimal) -> str:
    return str(value.quantize(Decimal("0.01")))


@dataclass
class Firm:
    """The generated firm: rows per collection, and what the seed completes afterwards."""

    rows: dict[Collection, list[Row]]
    completed_milestones: list[str]  # external ids of the milestones to mark complete


def build_firm(consultants: int, seed: int = 42) -> Firm:
    """The demo firm with `consultants` people, the same for the same seed."""
    if consultants < len(ENTITIES):
        raise ValueError(f"the firm needs at least {len(ENTITIES)} consultants, one per legal entity")
    rnd = random.Random(seed)
    out: dict[str, list[dict[str, Any]]] = {c.field: [] for c in COLLECTIONS}
    completed: list[str] = []

    for e in ENTITIES:
        out["legalEntities"].append(
            {
                "externalRef": ref(f"LE-{e.key}"),
                "code": f"ACME-{e.key}",
                "name": e.name,
                "baseCurrency": e.currency,
                "country": e.country,
                "taxRegion": e.country,
            }
        )
        out["calendars"].append(
            {
                "externalRef": ref(f"CAL-{e.key}-{YEAR}"),
                "code": f"{e.key}-{YEAR}",
                "name": f"{e.name} {YEAR}",
                "legalEntityRef": ref(f"LE-{e.key}"),
                "workingDays": [
                    "WEEKDAY_MONDAY",
                    "WEEKDAY_TUESDAY",
                    "WEEKDAY_WEDNESDAY",
                    "WEEKDAY_THURSDAY",
                    "WEEKDAY_FRIDAY",
                ],
                "holidays": [{"date": d, "name": n} for d, n in e.holidays],
            }
        )
    for code, name, _, _ in ROLES:
        out["laborCategories"].append({"externalRef": ref(f"LC-{code}"), "code": code, "name": name})

    # People: per entity a partner, principals reporting to the partner, the rest to a principal.
    counts = _split(consultants, [e.share for e in ENTITIES])
    number = 0
    managers_of: dict[str, list[str]] = {}
    staff_of: dict[str, list[tuple[str, str]]] = {}
    for e, count in zip(ENTITIES, counts, strict=True):
        principals = max(1, count // 8) if count > 1 else 0
        leaders: list[str] = []
        staff: list[tuple[str, str]] = []
        for i in range(count):
            number += 1
            emp = f"EMP{number:05d}"
            if i == 0:
                role, manager = "PARTNER", None
            elif i <= principals:
                role, manager = "PRINCIPAL", leaders[0]
            else:
                role = rnd.choice(("SENIOR", "SENIOR", "CONSULTANT", "CONSULTANT", "ANALYST"))
                manager = leaders[1 + (i % principals)] if principals else leaders[0]
            first, last = rnd.choice(_FIRST), rnd.choice(_LAST)
            cost = next(r[3] for r in ROLES if r[0] == role) * PRICE_LEVEL[e.currency]
            row: dict[str, Any] = {
                "externalRef": ref(emp),
                "code": emp,
                "name": f"{first} {last}",
                "email": f"{first.lower()}.{_ascii(last).lower()}.{number}@acme-{e.key.lower()}.example",
                "legalEntityRef": ref(f"LE-{e.key}"),
                "laborCategoryRef": ref(f"LC-{role}"),
                "weeklyCapacityHours": "32" if rnd.random() < 0.1 else "40",
                "costRate": _money(cost),
                "activeFrom": f"{rnd.randint(2016, 2025)}-{rnd.randint(1, 12):02d}-01",
            }
            if manager:
                row["managerRef"] = ref(manager)
            if role != "PARTNER" and rnd.random() < 0.03:
                row["activeTo"] = f"{YEAR}-{rnd.randint(7, 12):02d}-{rnd.randint(1, 28):02d}"  # a leaver
            out["consultants"].append(row)
            if role in ("PARTNER", "PRINCIPAL"):
                leaders.append(emp)
            else:
                staff.append((emp, role))
        managers_of[e.key] = leaders
        staff_of[e.key] = staff

    # Rate cards: one per currency, a rise on 1 July, and an override for each partner.
    for currency, level in PRICE_LEVEL.items():
        rates: list[dict[str, Any]] = []
        for code, _, gbp_rate, _ in ROLES:
            first_half = gbp_rate * level
            rates.append(
                {
                    "laborCategoryRef": ref(f"LC-{code}"),
                    "rate": _money(first_half),
                    "effectiveFrom": f"{YEAR}-01-01",
                    "effectiveTo": str(RATE_CHANGE - dt.timedelta(days=1)),
                }
            )
            rates.append(
                {
                    "laborCategoryRef": ref(f"LC-{code}"),
                    "rate": _money(first_half * RISE),
                    "effectiveFrom": str(RATE_CHANGE),
                }
            )
        for e in ENTITIES:
            if e.currency == currency and managers_of[e.key]:
                rates.append(
                    {
                        "laborCategoryRef": ref("LC-PARTNER"),
                        "consultantRef": ref(managers_of[e.key][0]),
                        "rate": _money(ROLES[0][2] * level * Decimal("1.2")),
                        "effectiveFrom": f"{YEAR}-01-01",
                    }
                )
        out["rateCards"].append(
            {
                "externalRef": ref(f"RC-{currency}"),
                "code": f"RC-{currency}-{YEAR}",
                "name": f"Standard rates {YEAR} ({currency})",
                "currency": currency,
                "rates": rates,
            }
        )

    # Customers, projects and contracts; the models cycle so every one of them is used.
    customers_per_entity = max(1, consultants // 25)
    project_no = 0
    projects_of: dict[str, list[tuple[str, str, str]]] = {e.key: [] for e in ENTITIES}
    for e in ENTITIES:
        for c in range(customers_per_entity):
            cust = f"CUST-{e.key}-{c + 1:03d}"
            # The first UK customer is invoiced in euros, against a sterling rate card: FX applies.
            currency = "EUR" if (e.key == "UK" and c == 0) else e.currency
            out["customers"].append(
                {
                    "externalRef": ref(cust),
                    "code": cust,
                    "name": f"{rnd.choice(_LAST)} {rnd.choice(_SECTORS)} {c + 1}",
                    "legalEntityRef": ref(f"LE-{e.key}"),
                    "currency": currency,
                    "taxRegion": e.country,
                }
            )
            lines: list[dict[str, Any]] = []
            for _ in range(1 + rnd.randint(0, 2)):
                project_no += 1
                proj = f"PRJ-{project_no:05d}"
                model = MODELS[(project_no - 1) % len(MODELS)]
                status = "PROJECT_STATUS_ACTIVE"
                if project_no % 11 == 0:
                    status = "PROJECT_STATUS_PLANNED"
                elif project_no % 13 == 0:
                    status = "PROJECT_STATUS_ON_HOLD"
                start = dt.date(YEAR, rnd.randint(1, 3), 1)
                end = dt.date(YEAR, 12, 31) if rnd.random() < 0.7 else None
                budget = rnd.choice((400, 800, 1200, 2000))
                manager = rnd.choice(managers_of[e.key])
                project: dict[str, Any] = {
                    "externalRef": ref(proj),
                    "code": proj,
                    "name": f"{rnd.choice(('Platform', 'Data', 'Finance', 'Cloud', 'CRM', 'Supply chain'))} "
                    f"{rnd.choice(('modernisation', 'migration', 'assessment', 'rollout', 'strategy'))}",
                    "customerRef": ref(cust),
                    "legalEntityRef": ref(f"LE-{e.key}"),
                    "managerRef": ref(manager),
                    "status": status,
                    "startDate": str(start),
                    "budgetHours": str(budget),
                }
                if end:
                    project["endDate"] = str(end)
                out["projects"].append(project)
                projects_of[e.key].append((proj, str(start), str(end) if end else ""))
                line: dict[str, Any] = {
                    "projectRef": ref(proj),
                    "billingModel": model,
                    "billingPeriod": "BILLING_PERIOD_SEMI_MONTHLY"
                    if project_no % 5 == 0
                    else "BILLING_PERIOD_MONTHLY",
                    "taxCode": e.tax_code,
                }
                level = PRICE_LEVEL[currency]
                if model != "BILLING_MODEL_FIXED_FEE":
                    line["rateCardRef"] = ref(f"RC-{currency}")
                if model == "BILLING_MODEL_CAPPED":
                    line["capAmount"] = _money(Decimal(budget) * Decimal(150) * level * Decimal("0.6"))
                if model == "BILLING_MODEL_FIXED_FEE":
                    fee = Decimal(budget) * Decimal(140) * level
                    line["feeAmount"] = _money(fee)
                    for m, (name, share, month) in enumerate(
                        (("Discovery", "0.3", 3), ("Build", "0.4", 7), ("Go-live", "0.3", 11))
                    ):
                        ms = f"MS-{proj}-{m + 1}"
                        out["milestones"].append(
                            {
                                "externalRef": ref(ms),
                                "projectRef": ref(proj),
                                "name": name,
                                "amount": _money(fee * Decimal(share)),
                                "dueDate": str(dt.date(YEAR, month, 28)),
                            }
                        )
                        if m == 0:
                            completed.append(ms)
                lines.append(line)
            out["contracts"].append(
                {
                    "externalRef": ref(f"K-{cust}"),
                    "code": f"K-{cust}",
                    "customerRef": ref(cust),
                    "currency": currency,
                    "roundingMode": "ROUNDING_MODE_HALF_UP" if e.key == "DE" else "ROUNDING_MODE_HALF_EVEN",
                    "lines": lines,
                }
            )

    # Staffing: everyone below principal on one or two projects of their entity; leads part-time.
    n = 0
    for e in ENTITIES:
        projects = projects_of[e.key]
        for emp, role in staff_of[e.key]:
            for proj, first_day, last_day in rnd.sample(
                projects, k=min(len(projects), rnd.choice((1, 1, 2)))
            ):
                n += 1
                out["assignments"].append(
                    _assignment(n, proj, emp, role, first_day, last_day, rnd.choice(("50", "100")))
                )
        for lead in managers_of[e.key]:
            lead_role = "PARTNER" if lead == managers_of[e.key][0] else "PRINCIPAL"
            for proj, first_day, last_day in rnd.sample(projects, k=min(len(projects), 2)):
                n += 1
                out["assignments"].append(_assignment(n, proj, lead, lead_role, first_day, last_day, "20"))

    # The pipeline.
    for i in range(max(3, consultants // 10)):
        e = ENTITIES[i % len(ENTITIES)]
        out["opportunities"].append(
            {
                "externalRef": ref(f"OPP-{i + 1:04d}"),
                "customerRef": ref(f"CUST-{e.key}-{i % customers_per_entity + 1:03d}"),
                "legalEntityRef": ref(f"LE-{e.key}"),
                "name": f"Phase {i // len(ENTITIES) + 2} extension",
                "amount": _money(Decimal(rnd.randint(20, 400)) * 1000 * PRICE_LEVEL[e.currency]),
                "currency": e.currency,
                "probability": rnd.choice(("0.1", "0.25", "0.5", "0.75", "0.9")),
                "stage": rnd.choice(("Qualify", "Propose", "Negotiate", "Commit")),
                "expectedStart": str(dt.date(YEAR + (i % 2), rnd.randint(1, 12), 1)),
                "durationMonths": rnd.choice((3, 6, 9, 12)),
            }
        )

    # FX: a rate for every ordered pair on the first of each month (rates are never inverted).
    drift = {currency: Decimal(1) for currency in GBP_VALUE}
    for month in range(1, 13):
        for currency in drift:
            drift[currency] *= Decimal(1) + Decimal(rnd.randint(-15, 15)) / 1000
        for base in GBP_VALUE:
            for quote in GBP_VALUE:
                if base == quote:
                    continue
                fx = (GBP_VALUE[base] * drift[base]) / (GBP_VALUE[quote] * drift[quote])
                out["fxRates"].append(
                    {
                        "externalRef": ref(f"FX-{base}{quote}-{YEAR}{month:02d}"),
                        "base": base,
                        "quote": quote,
                        "rate": str(fx.quantize(Decimal("0.000001"))),
                        "effectiveDate": str(dt.date(YEAR, month, 1)),
                    }
                )
    for tax_code, tax_rate, since in TAX_RATES:
        out["taxRates"].append(
            {
                "externalRef": ref(f"TAX-{tax_code}-{since}"),
                "taxCode": tax_code,
                "rate": tax_rate,
                "effectiveFrom": since,
            }
        )

    rows = {c: rows_of(c, out[c.field], f"seed#{c.field}") for c in COLLECTIONS if out[c.field]}
    return Firm(rows, completed)


def _assignment(n: int, proj: str, emp: str, role: str, start: str, end: str, pct: str) -> dict[str, Any]:
    row: dict[str, Any] = {
        "externalRef": ref(f"ASG-{n:06d}"),
        "projectRef": ref(proj),
        "consultantRef": ref(emp),
        "laborCategoryRef": ref(f"LC-{role}"),
        "startDate": start,
        "allocationPercent": pct,
        "billable": role != "PARTNER",
    }
    if end:
        row["endDate"] = end
    return row


def _split(total: int, shares: list[float]) -> list[int]:
    """total split by shares, every part at least 1, summing to total."""
    parts = [max(1, int(total * s)) for s in shares]
    parts[0] += total - sum(parts)
    return parts


def _ascii(name: str) -> str:
    return name.replace("ü", "ue").replace("ö", "oe").replace("ä", "ae")


# The people the printed tokens are for; the finance, master-data and audit staff are not
# consultants, so they get subjects of their own.
TOKEN_TTL = dt.timedelta(hours=8)
ALL = "*"


def demo_tokens(minter: LocalMinter, summary: Summary) -> list[tuple[str, str, str]]:
    """(who, shell variable, token) for each kind of user of the seeded firm.

    The consultant is a UK staff member on a project; the project manager manages that
    project (and approves its time). Both are limited to their legal entity, as a firm's
    provider would scope them; finance, master-data admin and auditor see every entity.
    """
    resources = summary.resources
    people = {r["id"]: r for (kind, _, _), r in resources.items() if kind == "consultants"}
    projects = {r["id"]: r for (kind, _, _), r in resources.items() if kind == "projects"}
    assignment = next(
        (
            r
            for (kind, _, _), r in resources.items()
            if kind == "assignments"
            and r.get("billable")
            and r.get("consultantId") in people
            and projects.get(r.get("projectId"), {}).get("managerId") in people
        ),
        None,
    )
    found: list[tuple[str, str, str]] = []
    if assignment is not None:
        consultant = people[assignment["consultantId"]]
        project = projects[assignment["projectId"]]
        manager = people[project["managerId"]]
        found.append(
            (
                f"consultant {consultant['name']} ({consultant['code']}), on project {project['code']}",
                "CONSULTANT_TOKEN",
                minter.person(
                    consultant["id"],
                    ["consultant"],
                    [consultant["legalEntityId"]],
                    TOKEN_TTL,
                    email=consultant.get("email"),
                ),
            )
        )
        found.append(
            (
                f"project manager {manager['name']} ({manager['code']}), who manages {project['code']}",
                "PM_TOKEN",
                minter.person(
                    manager["id"],
                    ["approver", "project_manager"],
                    [manager["legalEntityId"]],
                    TOKEN_TTL,
                    email=manager.get("email"),
                ),
            )
        )
    found.append(
        (
            "finance (billing runs, invoices)",
            "FINANCE_TOKEN",
            minter.person("demo-finance", ["finance"], [ALL], TOKEN_TTL),
        )
    )
    found.append(
        (
            "master-data admin",
            "MASTERDATA_ADMIN_TOKEN",
            minter.person("demo-masterdata-admin", ["masterdata_admin"], [ALL], TOKEN_TTL),
        )
    )
    found.append(
        (
            "auditor (reads everything)",
            "AUDITOR_TOKEN",
            minter.person("demo-auditor", ["auditor"], [ALL], TOKEN_TTL),
        )
    )
    found.append(
        (
            f"integration client {SEED_CLIENT_ID} (system of record 'seed')",
            "INTEGRATION_TOKEN",
            minter.client(SEED_CLIENT_ID, TOKEN_TTL),
        )
    )
    return found
