"""Alembic environment for the timekeeping schema."""

from accrue.db.migrations import run_env
from accrue.services.timekeeping.adapters.tables import metadata

run_env(metadata)
