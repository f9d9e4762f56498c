"""The masterdata schema.

Each entity has a table with typed columns for what is filtered, joined or constrained (codes,
external references, foreign keys, dates) and the canonical record as JSONB (`body`, the proto3
JSON of the resource without its server-set fields). Foreign keys make "references must exist"
hold in the database too, not only in validation.

`changes` is the history: one row per version of every record (created, updated, deactivated,
completed) with who, when, from which source, and the whole record as it was after the change.
It is append-only; the state before a change is the previous version's row.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from accrue.db.audit import audit_table
from accrue.db.idempotency import idempotency_table
from accrue.eventbus import inbox_table, outbox_table
from accrue.masterdata.v1 import resources_pb2 as md

SCHEMA = "masterdata"
metadata = sa.MetaData(schema=SCHEMA)

outbox = outbox_table(metadata)
inbox = inbox_table(metadata)
idempotency_keys = idempotency_table(metadata)
audit_events = audit_table(metadata)


def _fk(column: str, table: str, nullable: bool = False) -> sa.Column[Any]:
    return sa.Column(
        column, sa.Uuid(as_uuid=False), sa.ForeignKey(f"{SCHEMA}.{table}.id"), nullable=nullable, index=True
    )


def _record(name: str, *columns: Any, has_code: bool = True) -> sa.Table:
    extra: list[Any] = [sa.UniqueConstraint("code", name=f"{name}_code_key")] if has_code else []
    return sa.Table(
        name,
        metadata,
        sa.Column("id", sa.Uuid(as_uuid=False), primary_key=True),
        sa.Column("code", sa.Text, nullable=not has_code),
        sa.Column("external_ref_system", sa.Text, nullable=True),
        sa.Column("external_ref_id", sa.Text, nullable=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("body", JSONB, nullable=False),
        sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deactivate_time", sa.DateTime(timezone=True), nullable=True),
        *columns,
        sa.UniqueConstraint("external_ref_system", "external_ref_id", name=f"{name}_external_ref_key"),
        *extra,
    )


legal_entities = _record("legal_entities", sa.Column("base_currency", sa.Text, nullable=False))
customers = _record("customers", _fk("legal_entity_id", "legal_entities"))
labor_categories = _record("labor_categories")
consultants = _record(
    "consultants",
    _fk("legal_entity_id", "legal_entities"),
    _fk("labor_category_id", "labor_categories"),
    _fk("manager_id", "consultants", nullable=True),
    sa.Column("active_from", sa.Date, nullable=False),
    sa.Column("active_to", sa.Date, nullable=True),
)
projects = _record(
    "projects",
    _fk("customer_id", "customers"),
    _fk("legal_entity_id", "legal_entities"),
    _fk("manager_id", "consultants"),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("start_date", sa.Date, nullable=False),
    sa.Column("end_date", sa.Date, nullable=True),
)
rate_cards = _record("rate_cards", sa.Column("currency", sa.Text, nullable=False))
contracts = _record("contracts", _fk("customer_id", "customers"))
# One row per contract line, kept in step with the contract's body: milestones point at lines,
# and rate resolution finds a project's line here. A project is on at most one line.
contract_lines = sa.Table(
    "contract_lines",
    metadata,
    sa.Column("id", sa.Uuid(as_uuid=False), primary_key=True),
    _fk("contract_id", "contracts"),
    _fk("project_id", "projects"),
    _fk("rate_card_id", "rate_cards", nullable=True),
    sa.Column("billing_model", sa.Text, nullable=False),
    sa.UniqueConstraint("project_id", name="contract_lines_project_key"),
)
milestones = _record(
    "milestones",
    _fk("contract_line_id", "contract_lines"),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("due_date", sa.Date, nullable=False),
    has_code=False,
)
assignments = _record(
    "assignments",
    _fk("project_id", "projects"),
    _fk("consultant_id", "consultants"),
    _fk("labor_category_id", "labor_categories"),
    sa.Column("start_date", sa.Date, nullable=False),
    sa.Column("end_date", sa.Date, nullable=True),
    has_code=False,
)
opportunities = _record(
    "opportunities", _fk("customer_id", "customers"), _fk("legal_entity_id", "legal_entities"), has_code=False
)
fx_rates = _record(
    "fx_rates",
    sa.Column("base", sa.Text, nullable=False),
    sa.Column("quote", sa.Text, nullable=False),
    sa.Column("effective_date", sa.Date, nullable=False),
    sa.UniqueConstraint("base", "quote", "effective_date", name="fx_rates_pair_date_key"),
    has_code=False,
)
tax_rates = _record(
    "tax_rates",
    sa.Column("tax_code", sa.Text, nullable=False),
    sa.Column("effective_from", sa.Date, nullable=False),
    sa.UniqueConstraint("tax_code", "effective_from", name="tax_rates_code_date_key"),
    has_code=False,
)

calendars = _record("calendars", _fk("legal_entity_id", "legal_entities"))

changes = sa.Table(
    "changes",
    metadata,
    sa.Column("seq", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("resource_type", sa.Text, nullable=False),
    sa.Column("resource_id", sa.Uuid(as_uuid=False), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False, server_default=""),
    sa.Column("request_id", sa.Text, nullable=False, server_default=""),
    sa.Column("change_time", sa.DateTime(timezone=True), nullable=False),
    # The whole record after the change, as the API returns it (proto field names).
    sa.Column("state", JSONB, nullable=False),
    sa.UniqueConstraint("resource_type", "resource_id", "version", name="changes_resource_version_key"),
)

TABLES: dict[str, sa.Table] = {
    "legal_entity": legal_entities,
    "customer": customers,
    "labor_category": labor_categories,
    "consultant": consultants,
    "project": projects,
    "rate_card": rate_cards,
    "contract": contracts,
    "contract_line": contract_lines,
    "milestone": milestones,
    "assignment": assignments,
    "opportunity": opportunities,
    "fx_rate": fx_rates,
    "tax_rate": tax_rates,
    "calendar": calendars,
}


def _date(value: str) -> dt.date | None:
    return dt.date.fromisoformat(value) if value else None


def _none_if_empty(value: str) -> str | None:
    return value or None


# The typed columns of each entity, taken from a validated record.
COLUMNS: dict[str, Callable[[Any], dict[str, Any]]] = {
    "legal_entity": lambda m: {"code": m.code, "base_currency": m.base_currency},
    "customer": lambda m: {"code": m.code, "legal_entity_id": m.legal_entity_id},
    "labor_category": lambda m: {"code": m.code},
    "consultant": lambda m: {
        "code": m.code,
        "legal_entity_id": m.legal_entity_id,
        "labor_category_id": m.labor_category_id,
        "manager_id": _none_if_empty(m.manager_id),
        "active_from": _date(m.active_from),
        "active_to": _date(m.active_to),
    },
    "project": lambda m: {
        "code": m.code,
        "customer_id": m.customer_id,
        "legal_entity_id": m.legal_entity_id,
        "manager_id": m.manager_id,
        "status": md.ProjectStatus.Name(m.status),
        "start_date": _date(m.start_date),
        "end_date": _date(m.end_date),
    },
    "rate_card": lambda m: {"code": m.code, "currency": m.currency},
    "contract": lambda m: {"code": m.code, "customer_id": m.customer_id},
    "milestone": lambda m: {
        "contract_line_id": m.contract_line_id,
        "status": md.MilestoneStatus.Name(m.status),
        "due_date": _date(m.due_date),
    },
    "assignment": lambda m: {
        "project_id": m.project_id,
        "consultant_id": m.consultant_id,
        "labor_category_id": m.labor_category_id,
        "start_date": _date(m.start_date),
        "end_date": _date(m.end_date),
    },
    "opportunity": lambda m: {"customer_id": m.customer_id, "legal_entity_id": m.legal_entity_id},
    "fx_rate": lambda m: {"base": m.base, "quote": m.quote, "effective_date": _date(m.effective_date)},
    "tax_rate": lambda m: {"tax_code": m.tax_code, "effective_from": _date(m.effective_from)},
    "calendar": lambda m: {"code": m.code, "legal_entity_id": m.legal_entity_id},
}
