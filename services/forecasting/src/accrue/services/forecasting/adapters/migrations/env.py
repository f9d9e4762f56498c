"""Alembic environment for the forecasting schema."""

from accrue.db.migrations import run_env
from accrue.services.forecasting.adapters.tables import metadata

run_env(metadata)
