# ruff: noqa: E501 - the panel table reads best one panel per line
"""Dashboards as code: writes deploy/grafana/dashboards/*.json from the definitions below.

Run `.venv/bin/python deploy/grafana/build_dashboards.py` after changing a panel; a unit test
fails while the committed JSON differs from what this builds. Every panel query is proven to
return data on a real Prometheus scraping the stack (tests/e2e/observability).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "accrue-prometheus"}

# (title, unit, [(expr, legend)], kind) per panel; two panels per row.
Panel = tuple[str, str, list[tuple[str, str]], str]

DASHBOARDS: dict[str, tuple[str, str, list[Panel]]] = {
    "sla-overview": (
        "Accrue — SLA overview",
        "Unbilled approved work, approval and invoice lag, backlog, dead letters and reconciliation.",
        [
            (
                "Unbilled approved hours by legal entity",
                "h",
                [("sum by (legal_entity) (accrue_unbilled_approved_hours)", "{{legal_entity}}")],
                "timeseries",
            ),
            (
                "Unbilled approved hours by age since approval",
                "h",
                [("sum by (age) (accrue_unbilled_approved_hours)", "{{age}}")],
                "timeseries",
            ),
            (
                "Unbilled approved value by currency (indicative rate)",
                "none",
                [("sum by (currency) (accrue_unbilled_approved_value)", "{{currency}}")],
                "timeseries",
            ),
            (
                "Oldest unbilled approved work",
                "s",
                [("max by (legal_entity) (accrue_unbilled_approved_oldest_age_seconds)", "{{legal_entity}}")],
                "stat",
            ),
            (
                "Approval lag p50 / p90 (submitted → approved)",
                "s",
                [
                    (
                        "histogram_quantile(0.5, sum by (le) (rate(accrue_approval_lag_seconds_bucket[1h])))",
                        "p50",
                    ),
                    (
                        "histogram_quantile(0.9, sum by (le) (rate(accrue_approval_lag_seconds_bucket[1h])))",
                        "p90",
                    ),
                ],
                "timeseries",
            ),
            (
                "Invoice lag p90 (approved → draft, approved → posted)",
                "s",
                [
                    (
                        "histogram_quantile(0.9, sum by (stage, le) (rate(accrue_invoice_lag_seconds_bucket[1h])))",
                        "{{stage}}",
                    ),
                ],
                "timeseries",
            ),
            (
                "Sync backlog (all consumers)",
                "none",
                [("sum(accrue_sync_backlog_messages)", "events behind")],
                "stat",
            ),
            ("Dead letters", "none", [("max(accrue_dead_letters_messages)", "dead letters")], "stat"),
            (
                "Reconciliation differences by legal entity",
                "none",
                [("max by (legal_entity) (accrue_reconciliation_differences)", "{{legal_entity}}")],
                "stat",
            ),
            (
                "Reconciliations run",
                "none",
                [("sum by (outcome) (accrue_reconciliations_total)", "{{outcome}}")],
                "stat",
            ),
        ],
    ),
    "billing-pipeline": (
        "Accrue — billing pipeline",
        "From approved time to ERP-confirmed invoices: lag, posting backlog, failures and exceptions.",
        [
            (
                "Invoice lag p50 / p90 by stage",
                "s",
                [
                    (
                        "histogram_quantile(0.5, sum by (stage, le) (rate(accrue_invoice_lag_seconds_bucket[1h])))",
                        "p50 {{stage}}",
                    ),
                    (
                        "histogram_quantile(0.9, sum by (stage, le) (rate(accrue_invoice_lag_seconds_bucket[1h])))",
                        "p90 {{stage}}",
                    ),
                ],
                "timeseries",
            ),
            (
                "Invoices confirmed by the ERP (1 h)",
                "none",
                [("sum by (legal_entity) (increase(accrue_erp_postings_total[1h]))", "{{legal_entity}}")],
                "timeseries",
            ),
            (
                "ERP posting backlog (approved, not confirmed)",
                "none",
                [("max by (legal_entity) (accrue_erp_posting_backlog_invoices)", "{{legal_entity}}")],
                "timeseries",
            ),
            # No failure series exists until one happens; zero is then the true answer.
            (
                "ERP posting failures (1 d)",
                "none",
                [("sum(increase(accrue_erp_posting_failures_total[1d])) or vector(0)", "failures")],
                "stat",
            ),
            (
                "Open billing exceptions by kind",
                "none",
                [("sum by (kind) (accrue_billing_exceptions_open)", "{{kind}}")],
                "timeseries",
            ),
            (
                "Posting jobs by status (billing)",
                "none",
                [("sum by (status) (accrue_billing_posting_jobs)", "{{status}}")],
                "timeseries",
            ),
            (
                "ERP calls by outcome (billing)",
                "none",
                [("sum by (outcome) (increase(accrue_billing_erp_posts_total[1h]))", "{{outcome}}")],
                "timeseries",
            ),
            (
                "Unbilled approved value by legal entity and currency",
                "none",
                [
                    (
                        "sum by (legal_entity, currency) (accrue_unbilled_approved_value)",
                        "{{legal_entity}} {{currency}}",
                    )
                ],
                "timeseries",
            ),
        ],
    ),
    "forecast": (
        "Accrue — forecast",
        "The latest forecast version against the previous one and against actuals.",
        [
            (
                "Forecast revenue: latest vs previous version",
                "none",
                [
                    (
                        "sum by (legal_entity, currency, version) (accrue_forecast_revenue)",
                        "{{legal_entity}} {{version}} {{currency}}",
                    )
                ],
                "timeseries",
            ),
            (
                "Variance against the previous version",
                "none",
                [
                    (
                        'sum by (legal_entity, currency) (accrue_forecast_variance{against="previous"})',
                        "{{legal_entity}} {{currency}}",
                    )
                ],
                "timeseries",
            ),
            (
                "Variance against actuals (closed months)",
                "none",
                [
                    (
                        'sum by (legal_entity, currency) (accrue_forecast_variance{against="actuals"})',
                        "{{legal_entity}} {{currency}}",
                    )
                ],
                "timeseries",
            ),
            (
                "Forecast versions published",
                "none",
                [("sum(accrue_observed_forecast_versions_total)", "versions")],
                "stat",
            ),
        ],
    ),
    "service-health": (
        "Accrue — service health",
        "RED per service: rate, errors and duration of RPCs, HTTP requests and event consumers.",
        [
            ("Up", "none", [("up", "{{job}}")], "stat"),
            (
                "gRPC requests per second by service",
                "reqps",
                [("sum by (job) (rate(grpc_server_handled_total[5m]))", "{{job}}")],
                "timeseries",
            ),
            (
                "gRPC errors per second by service and code",
                "reqps",
                [
                    (
                        'sum by (job, grpc_code) (rate(grpc_server_handled_total{grpc_code!="OK"}[5m])) or sum by (job) (rate(grpc_server_handled_total[5m])) * 0',
                        "{{job}} {{grpc_code}}",
                    )
                ],
                "timeseries",
            ),
            (
                "gRPC latency p95 by service",
                "s",
                [
                    (
                        "histogram_quantile(0.95, sum by (job, le) (rate(grpc_server_handling_seconds_bucket[5m])))",
                        "{{job}}",
                    )
                ],
                "timeseries",
            ),
            (
                "Gateway requests per second by status",
                "reqps",
                [("sum by (status) (rate(http_requests_total[5m]))", "{{status}}")],
                "timeseries",
            ),
            (
                "Gateway latency p95",
                "s",
                [
                    (
                        "histogram_quantile(0.95, sum by (le) (rate(http_request_duration_seconds_bucket[5m])))",
                        "p95",
                    )
                ],
                "timeseries",
            ),
            (
                "Events processed per second by consumer and outcome",
                "ops",
                [
                    (
                        "sum by (consumer, outcome) (rate(accrue_events_processed_total[5m]))",
                        "{{consumer}} {{outcome}}",
                    )
                ],
                "timeseries",
            ),
            (
                "Event handling p95 by consumer",
                "s",
                [
                    (
                        "histogram_quantile(0.95, sum by (consumer, le) (rate(accrue_event_handling_seconds_bucket[5m])))",
                        "{{consumer}}",
                    )
                ],
                "timeseries",
            ),
            (
                "Event lag p95 (occurred → applied) by consumer",
                "s",
                [
                    (
                        "histogram_quantile(0.95, sum by (consumer, le) (rate(accrue_event_lag_seconds_bucket[5m])))",
                        "{{consumer}}",
                    )
                ],
                "timeseries",
            ),
            (
                "Outbox: pending events and oldest age",
                "none",
                [
                    ("sum by (job) (accrue_outbox_pending_events)", "{{job}} pending"),
                    ("max by (job) (accrue_outbox_oldest_pending_age_seconds)", "{{job}} oldest (s)"),
                ],
                "timeseries",
            ),
        ],
    ),
    "jetstream-backlog": (
        "Accrue — JetStream backlog",
        "Durable consumers' state as JetStream reports it, and the dead-letter stream.",
        [
            (
                "Sync backlog by consumer (pending + ack pending)",
                "none",
                [("max by (stream, consumer) (accrue_sync_backlog_messages)", "{{stream}} {{consumer}}")],
                "timeseries",
            ),
            (
                "Pending vs ack pending",
                "none",
                [("sum by (state) (accrue_consumer_pending_messages)", "{{state}}")],
                "timeseries",
            ),
            (
                "Delivered per consumer",
                "none",
                [
                    (
                        "max by (stream, consumer) (accrue_consumer_delivered_messages)",
                        "{{stream}} {{consumer}}",
                    )
                ],
                "timeseries",
            ),
            (
                "Redelivered, not yet acknowledged",
                "none",
                [
                    (
                        "max by (stream, consumer) (accrue_consumer_redelivered_messages)",
                        "{{stream}} {{consumer}}",
                    )
                ],
                "timeseries",
            ),
            ("Dead letters", "none", [("max(accrue_dead_letters_messages)", "total")], "stat"),
            (
                "Dead letters by consumer",
                "none",
                [("max by (consumer) (accrue_dead_letters_by_consumer_messages)", "{{consumer}}")],
                "timeseries",
            ),
            (
                "Outbox events published per second",
                "ops",
                [("sum by (job) (rate(accrue_outbox_published_total[5m]))", "{{job}}")],
                "timeseries",
            ),
        ],
    ),
}


def panel(n: int, title: str, unit: str, targets: list[tuple[str, str]], kind: str) -> dict[str, Any]:
    return {
        "id": n + 1,
        "type": kind,
        "title": title,
        "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": 12, "x": 12 * (n % 2), "y": 8 * (n // 2)},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}} if kind == "timeseries" else {},
        "targets": [
            {"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": expr, "legendFormat": legend}
            for i, (expr, legend) in enumerate(targets)
        ],
    }


def dashboard(uid: str, title: str, description: str, panels: list[Panel]) -> dict[str, Any]:
    return {
        "uid": f"accrue-{uid}",
        "title": title,
        "description": description,
        "tags": ["accrue"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": False,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": []},
        "annotations": {"list": []},
        "panels": [panel(n, *p) for n, p in enumerate(panels)],
    }


def build() -> dict[str, str]:
    """File name → JSON text of every dashboard."""
    return {
        f"{uid}.json": json.dumps(dashboard(uid, *spec), indent=2, ensure_ascii=False) + "\n"
        for uid, spec in DASHBOARDS.items()
    }


if __name__ == "__main__":
    for name, text in build().items():
        (OUT / name).write_text(text)
