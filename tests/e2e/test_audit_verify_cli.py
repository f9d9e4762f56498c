"""`accrue audit verify` against the running stack: intact, then a superuser rewrites one record
behind the triggers' back and the command exits 1 naming exactly that record."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from accrue.runtime.clock import clock_for
from accrue.testing import identity
from accrue.testing.rest import approved_time
from accrue.testing.stack import Stack

pytestmark = pytest.mark.e2e

ACCRUE = Path(sys.executable).with_name("accrue")


def _verify(stack: Stack, token: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCRUE_")}
    return subprocess.run(
        [str(ACCRUE), "audit", "verify", "--url", stack.gateway_url, "--token", token],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


async def test_verify_is_intact_until_a_superuser_rewrites_a_record_and_then_names_it(
    api: httpx.AsyncClient, firm: Any, stack: Stack, instant: dt.datetime
) -> None:
    f = await firm("-verify")
    day = (instant - dt.timedelta(days=1)).date().isoformat()
    entry = await approved_time(api, f, day, "3")
    auditor = stack.tokens(clock_for(instant)).token(identity.person("audrey@firm", "auditor"))

    intact = _verify(stack, auditor)
    assert intact.returncode == 0, intact.stdout + intact.stderr
    assert "audit trail intact" in intact.stdout

    assert stack.database_url is not None
    conn = await asyncpg.connect(stack.database_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        seq = await conn.fetchval(
            "SELECT seq FROM timekeeping.audit_events WHERE resource_id = $1 "
            "AND operation LIKE '%/ApproveTimeEntry' ORDER BY seq DESC LIMIT 1",
            entry["id"],
        )
        assert seq is not None
        async with conn.transaction():
            # A superuser can step around the append-only triggers; the chain is what tells.
            await conn.execute("SET LOCAL session_replication_role = replica")
            await conn.execute(
                "UPDATE timekeeping.audit_events SET principal_subject = 'someone-else' WHERE seq = $1", seq
            )
    finally:
        await conn.close()

    broken = _verify(stack, auditor)
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert f"seq {seq}" in broken.stderr
    assert "timekeeping" in broken.stderr
