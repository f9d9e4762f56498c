"""Autogenerate a migration for one service against a throwaway embedded PostgreSQL.

Usage: python tools/new_migration.py <service> "<message>"

Starts an empty embedded PostgreSQL, applies the service's existing revisions, and writes a
new revision with the difference to the service's tables. Review it before committing.
"""

from __future__ import annotations

import asyncio
import importlib
import sys
import tempfile
from pathlib import Path


def main() -> None:
    if len(sys.argv) != 3:
        print(__doc__)
        raise SystemExit(2)
    service, message = sys.argv[1], sys.argv[2]
    from accrue.db.migrations import autogenerate
    from accrue.embedded import EmbeddedPostgres

    bootstrap = importlib.import_module(f"accrue.services.{service}.bootstrap")
    tables = importlib.import_module(f"accrue.services.{service}.adapters.tables")
    with tempfile.TemporaryDirectory(prefix="mig") as tmp, EmbeddedPostgres(Path(tmp) / "pg") as pg:
        asyncio.run(autogenerate(pg.url, tables.SCHEMA, bootstrap.MIGRATIONS, message))


if __name__ == "__main__":
    main()
