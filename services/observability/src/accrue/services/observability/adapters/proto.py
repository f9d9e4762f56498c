"""Domain results as protobuf messages: shared by the gRPC API and the events."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from accrue.money import format_decimal, format_money
from accrue.observability.v1 import resources_pb2 as res
from accrue.services.observability.domain.reconciliation import LegalEntityResult, Stage
from accrue.type.v1 import types_pb2


def money(values: Mapping[str, Decimal]) -> list[types_pb2.Money]:
    """One Money per currency, rounded to the currency's minor unit for display."""
    return [types_pb2.Money(currency=c, amount=format_money(v, c)) for c, v in sorted(values.items())]


def hours(value: Decimal | None) -> str:
    return "" if value is None else format_decimal(value, 2)


def stage(figures: Stage) -> res.StageFigures:
    return res.StageFigures(
        entry_count=figures.entry_count, hours=hours(figures.hours), value=money(figures.value)
    )


def legal_entity_reconciliation(entity: LegalEntityResult) -> res.LegalEntityReconciliation:
    return res.LegalEntityReconciliation(
        legal_entity_id=entity.legal_entity_id,
        approved=stage(entity.stages.approved),
        billing=stage(entity.stages.billing),
        billing_posted=stage(entity.stages.billing_posted),
        erp=stage(entity.stages.erp),
        difference_count=entity.difference_count,
        projects=[
            res.ProjectReconciliation(
                project_id=p.project_id,
                approved=stage(p.stages.approved),
                billing=stage(p.stages.billing),
                billing_posted=stage(p.stages.billing_posted),
                erp=stage(p.stages.erp),
                differences=[
                    res.ReconciliationDifference(
                        kind=res.ReconciliationDifferenceKind.Value(
                            f"RECONCILIATION_DIFFERENCE_KIND_{d.kind}"
                        ),
                        time_entry_id=d.time_entry_id,
                        project_id=d.project_id,
                        expected_hours=hours(d.expected_hours),
                        actual_hours=hours(d.actual_hours),
                    )
                    for d in p.differences
                ],
            )
            for p in entity.projects
        ],
    )
