"""Alembic environment for the billing schema."""

from accrue.db.migrations import run_env
from accrue.services.billing.adapters.tables import metadata

run_env(metadata)
