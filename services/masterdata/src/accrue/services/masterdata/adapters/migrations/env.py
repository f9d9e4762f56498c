"""Alembic environment for the masterdata schema."""

from accrue.db.migrations import run_env
from accrue.services.masterdata.adapters.tables import metadata

run_env(metadata)
