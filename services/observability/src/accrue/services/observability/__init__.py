"""The observability service: business KPIs, SLA metrics and (later) reconciliation."""
