"""Database URLs: one ACCRUE_DATABASE_URL works for the engine and for direct asyncpg connections."""

from urllib.parse import parse_qs, urlsplit

import pytest

from accrue.db import asyncpg_dsn, normalize_url


def test_plain_postgres_urls_use_asyncpg() -> None:
    assert normalize_url("postgresql://u:p@db:5432/accrue") == "postgresql+asyncpg://u:p@db:5432/accrue"
    assert asyncpg_dsn("postgresql+asyncpg://u:p@db/accrue") == "postgresql://u:p@db/accrue"


@pytest.mark.parametrize("tls", ["sslmode=require", "ssl=require"])
def test_tls_is_spelled_for_each_driver(tls: str) -> None:
    url = f"postgresql://u:p@db/accrue?{tls}"
    assert normalize_url(url) == "postgresql+asyncpg://u:p@db/accrue?ssl=require"
    assert asyncpg_dsn(url) == "postgresql://u:p@db/accrue?sslmode=require"


def test_unix_socket_hosts_survive() -> None:
    dsn = urlsplit(asyncpg_dsn("postgresql://postgres@/accrue?host=/tmp/pg"))
    assert parse_qs(dsn.query) == {"host": ["/tmp/pg"]}


def test_other_schemes_are_refused() -> None:
    with pytest.raises(ValueError, match="unsupported"):
        normalize_url("mysql://db/accrue")
