"""The forecast's own metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REFRESH_LAG = Histogram(
    "accrue_forecast_refresh_lag_seconds",
    "From an event occurring (its Accrue-Occurred-At) to the live forecast reflecting it "
    "(the forecasting consumer's commit; the forecast is computed on read from what is committed).",
    ["stream"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
REFRESHED = Gauge(
    "accrue_forecast_refreshed_timestamp_seconds",
    "When the live forecast last took in an event (Unix time).",
)
# Versions this process took; observability counts the published ones it receives on its own.
VERSIONS = Counter(
    "accrue_forecasting_snapshots_total", "Forecast versions this service took, by kind.", ["kind"]
)
