"""Alembic environment for the observability schema."""

from accrue.db.migrations import run_env
from accrue.services.observability.adapters.tables import metadata

run_env(metadata)
