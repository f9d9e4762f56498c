"""The `accrue` command: run the whole stack locally (later: seed demo data, import files)."""
