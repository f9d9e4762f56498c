"""A real Tryton (trytond 8.2 with account_invoice) for the billing ERP tests.

Once per test session: a throwaway SQLite database in a temp dir, modules activated with
trytond-admin, a company, chart, fiscal years and the VAT tax set up through proteus
(tryton_setup.py), then the JSON-RPC server on a free port. About 20 seconds, then shared.
"""

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from accrue.embedded.ports import free_port

HERE = Path(__file__).parent
BIN = Path(sys.executable).parent
DATABASE = "accrue_erp"
PASSWORD = "accrue-test"


@dataclass(frozen=True)
class TrytonServer:
    """Where the test Tryton answers."""

    url: str
    database: str
    user: str
    password: str


def _run(argv: list[str], env: dict[str, str], what: str) -> None:
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        raise RuntimeError(
            f"{what} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )


@pytest.fixture(scope="session")
def tryton_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrytonServer]:
    """A running trytond with a company ready to invoice; stopped after the session."""
    root = tmp_path_factory.mktemp("tryton")
    (root / "db").mkdir()
    (root / "db" / f"{DATABASE}.sqlite").touch()
    port = free_port()
    config = root / "trytond.conf"
    config.write_text(
        f"[database]\nuri = sqlite://\npath = {root / 'db'}\n\n[web]\nlisten = 127.0.0.1:{port}\n"
        "\n[session]\nmax_attempt = 1000\n"
    )
    (root / "password").write_text(PASSWORD + "\n")
    env = {**os.environ, "TRYTONPASSFILE": str(root / "password"), "TRYTOND_LOGGING_LEVEL": "40"}
    _run(
        [
            str(BIN / "trytond-admin"),
            "-c",
            str(config),
            "-d",
            DATABASE,
            "--all",
            "--activate-dependencies",
            "-u",
            "account_invoice",
            "--email",
            "admin@example.com",
        ],
        env,
        "trytond-admin",
    )
    _run([sys.executable, str(HERE / "tryton_setup.py"), str(config), DATABASE], env, "tryton_setup.py")
    log = open(root / "trytond.log", "w")  # noqa: SIM115 - open for the server's whole life
    server = subprocess.Popen(
        [str(BIN / "trytond"), "-c", str(config), "-d", DATABASE],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                answer = httpx.post(
                    f"{url}/{DATABASE}/rpc/",
                    json={
                        "id": 1,
                        "method": "common.db.login",
                        "params": ["admin", {"password": PASSWORD}, "en"],
                    },
                    timeout=5,
                )
                if answer.status_code == 200 and "result" in answer.json():
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"trytond did not start:\n{(root / 'trytond.log').read_text()[-3000:]}")
            time.sleep(0.2)
        yield TrytonServer(url, DATABASE, "admin", PASSWORD)
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
