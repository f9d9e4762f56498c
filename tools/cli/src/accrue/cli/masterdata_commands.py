"""The `accrue import` and `accrue seed` commands: progress, summary and report around the sync."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from accrue.cli.importer import ImportFileError, read_files, write_report
from accrue.cli.runner import DATA_DIR_VAR
from accrue.cli.seed import build_firm, demo_tokens
from accrue.cli.sync import (
    DEFAULT_URL,
    Collection,
    Row,
    Summary,
    Syncer,
    SyncError,
    check_reachable,
    count_rows,
)
from accrue.cli.token_command import data_dir_or_default
from accrue.cli.tokens import (
    CLIENT_ID_VAR,
    CLIENT_SECRET_VAR,
    ISSUER_VAR,
    SEED_CLIENT_ID,
    TOKEN_VAR,
    Auth,
    AuthOptions,
    LocalDefault,
    TokenError,
    authenticate,
)

Url = Annotated[
    str,
    typer.Option("--url", envvar="ACCRUE_API_URL", help="The Accrue REST gateway (`make run` listens here)."),
]
BatchSize = Annotated[
    int, typer.Option("--batch-size", min=1, max=1000, help="Rows per :batchUpsert request.")
]
# How seed and import authenticate (accrue.cli.tokens): a token, client credentials, else the
# local issuer of the stack in the data dir.
Token = Annotated[
    str | None,
    typer.Option("--token", envvar=TOKEN_VAR, help="A bearer token to send.", show_default=False),
]
ClientId = Annotated[
    str | None,
    typer.Option(
        "--client-id",
        envvar=CLIENT_ID_VAR,
        help="OAuth2 client credentials against the OIDC provider: the client id.",
        show_default=False,
    ),
]
ClientSecret = Annotated[
    str | None,
    typer.Option("--client-secret", envvar=CLIENT_SECRET_VAR, help="... and its secret.", show_default=False),
]
Issuer = Annotated[
    str | None,
    typer.Option(
        "--issuer",
        envvar=ISSUER_VAR,
        help="The OIDC provider's issuer URL (default: the one the gateway's OpenAPI names).",
        show_default=False,
    ),
]
Scope = Annotated[
    str | None,
    typer.Option("--scope", envvar="ACCRUE_OIDC_SCOPE", help="Scope to ask for.", show_default=False),
]
Resource = Annotated[
    str | None,
    typer.Option(
        "--resource",
        envvar="ACCRUE_OIDC_RESOURCE",
        help="Resource indicator (RFC 8707) to ask for, where the provider needs one.",
        show_default=False,
    ),
]
DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        envvar=DATA_DIR_VAR,
        help="With no token or client: the local stack's data dir, whose issuer mints one.",
        show_default=False,
    ),
]


def _console() -> Console:
    return Console(stderr=False, highlight=False)


@contextlib.contextmanager
def _client(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url.rstrip("/"), timeout=httpx.Timeout(120, connect=5)) as client:
        yield client


def _options(
    token: str | None,
    client_id: str | None,
    client_secret: str | None,
    issuer: str | None,
    scope: str | None,
    resource: str | None,
    data_dir: Path | None,
) -> AuthOptions:
    return AuthOptions(
        token, client_id, client_secret, issuer, scope, resource, data_dir_or_default(data_dir)
    )


def _sign_in(client: httpx.Client, url: str, options: AuthOptions, local: LocalDefault) -> Auth:
    """Reachable first (a clearer failure), then the token every request of the run carries."""
    check_reachable(client)
    try:
        auth = authenticate(options, api_url=url, local=local)
    except TokenError as exc:
        raise SyncError(str(exc)) from None
    client.headers.update(auth.headers)
    return auth


def _run(
    console: Console,
    client: httpx.Client,
    rows: dict[Collection, list[Row]],
    batch_size: int,
    source: str = "",
    actor: str = "",
) -> Summary:
    """Upsert everything with a progress bar."""
    syncer = Syncer(client, batch_size=batch_size, source=source, actor=actor)
    columns = (
        TextColumn("{task.description:<18}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("master data", total=count_rows(rows))

        def advance(collection: str, done: int) -> None:
            progress.update(task, advance=done, description=collection)

        summary = syncer.sync(rows, advance)
        progress.update(task, description="done")
    return summary


def _summary_table(summary: Summary) -> Table:
    table = Table(title="Master data", title_justify="left")
    for column in ("collection", "created", "updated", "unchanged", "rejected", "rows"):
        table.add_column(column, justify="left" if column == "collection" else "right")
    for collection, t in summary.tallies.items():
        style = "red" if t.rejected else None
        table.add_row(
            collection,
            str(t.created),
            str(t.updated),
            str(t.unchanged),
            str(t.rejected),
            str(t.total),
            style=style,
        )
    return table


def _fail(console: Console, message: str, code: int = 1) -> typer.Exit:
    console.print(f"[red]accrue: {message}[/red]")
    return typer.Exit(code)


def import_files(
    files: Annotated[
        list[Path],
        typer.Argument(
            help="CSV files (one per entity type, named after it) or JSON bundles.", show_default=False
        ),
    ],
    url: Url = DEFAULT_URL,
    kind: Annotated[
        str | None,
        typer.Option(
            "--kind", help="The entity type of every file, e.g. consultants (default: from each name)."
        ),
    ] = None,
    report: Annotated[
        Path, typer.Option("--report", help="Where to write the rejected rows (CSV, one line per reason).")
    ] = Path("accrue-import-rejected.csv"),
    source: Annotated[
        str,
        typer.Option(
            "--source", help="The system the rows come from (default: each row's externalRef.system)."
        ),
    ] = "",
    actor: Annotated[
        str,
        typer.Option(
            "--actor",
            help="Who is importing, for the history: must be the token's subject "
            "(with a locally minted token, it is).",
        ),
    ] = "",
    batch_size: BatchSize = 500,
    token: Token = None,
    client_id: ClientId = None,
    client_secret: ClientSecret = None,
    issuer: Issuer = None,
    scope: Scope = None,
    resource: Resource = None,
    data_dir: DataDir = None,
) -> None:
    """Import master data from CSV files or a JSON bundle; safe to run again.

    Rows are upserted by externalRef: a row already there comes back unchanged. Exits 1 when any
    row was rejected (see the report), 2 when a file cannot be read.

    Authenticates with --token / ACCRUE_TOKEN, or client credentials (an integration client,
    whose system of record is the rows' source), else (local stack) as a local administrator
    minted from the data dir's issuer; with --source, as that system's integration client.
    """
    console = _console()
    try:
        rows = read_files(files, kind)
    except (ImportFileError, OSError) as exc:
        raise _fail(console, str(exc), 2) from None
    if not count_rows(rows):
        raise _fail(console, "the files hold no rows", 2)
    options = _options(token, client_id, client_secret, issuer, scope, resource, data_dir)
    if source:
        local = LocalDefault(f"integration client {source} (local issuer)", client_id=source)
    else:
        local = LocalDefault("a local administrator (local issuer)", subject=actor or None)
    try:
        with _client(url) as client:
            _sign_in(client, url, options, local)
            summary = _run(console, client, rows, batch_size, source, actor)
    except SyncError as exc:
        raise _fail(console, str(exc)) from None
    console.print(_summary_table(summary))
    rejected = write_report(report, summary)
    if rejected:
        console.print(f"[red]{rejected} rows rejected[/red]; every reason is in {report}")
        raise typer.Exit(1)
    console.print(f"No rows rejected (report: {report}).")


def seed(
    consultants: Annotated[
        int, typer.Option("--consultants", min=3, help="How many consultants the demo firm has.")
    ] = 50,
    url: Url = DEFAULT_URL,
    random_seed: Annotated[int, typer.Option("--seed", help="The same seed builds the same firm.")] = 42,
    batch_size: BatchSize = 500,
    token: Token = None,
    client_id: ClientId = None,
    client_secret: ClientSecret = None,
    issuer: Issuer = None,
    scope: Scope = None,
    resource: Resource = None,
    data_dir: DataDir = None,
) -> None:
    """Build a realistic demo firm through the public REST API (run it again: nothing changes).

    Three legal entities (GBP, EUR, USD) with calendars, consultants with managers, customers,
    projects under time-and-materials, capped and fixed-fee contracts, rate cards whose rates
    change on 1 July, milestones, assignments, opportunities, FX and tax rates.

    Writes as the integration client of the system "seed": --token / ACCRUE_TOKEN, client
    credentials of a client the gateway maps to "seed", or (local stack) minted from the data
    dir's issuer. Then prints ready tokens for a consultant, a project manager, finance, a
    master-data admin, an auditor and an integration client (local issuer only).
    """
    console = _console()
    firm = build_firm(consultants, random_seed)
    options = _options(token, client_id, client_secret, issuer, scope, resource, data_dir)
    local = LocalDefault(f"integration client {SEED_CLIENT_ID} (local issuer)", client_id=SEED_CLIENT_ID)
    try:
        with _client(url) as client:
            auth = _sign_in(client, url, options, local)
            summary = _run(console, client, firm.rows, batch_size, source="seed")
            completed = _complete_milestones(client, summary, firm.completed_milestones)
    except SyncError as exc:
        raise _fail(console, str(exc)) from None
    console.print(_summary_table(summary))
    if summary.rejected:
        for rejection in summary.rejections[:10]:
            console.print(
                f"{rejection.collection} {rejection.external_ref}: {rejection.reasons}",
                soft_wrap=True,
                markup=False,
                style="red",
            )
        raise _fail(console, f"{summary.rejected} seed rows were rejected")
    console.print(f"{completed} milestones completed (billable).")
    _tokens(console, auth, summary)
    _hints(console, url, summary, local_tokens=auth.minter is not None)


def _complete_milestones(client: httpx.Client, summary: Summary, external_ids: Sequence[str]) -> int:
    """Mark the first milestone of each fixed-fee line complete (again: no change)."""
    done = 0
    for ext_id in external_ids:
        milestone = summary.resources.get(("milestones", "seed", ext_id))
        if milestone is None:
            continue
        response = client.post(f"/v1/milestones/{milestone['id']}:complete", json={"source": "seed"})
        if response.status_code != 200:
            raise SyncError(f"completing milestone {ext_id} failed: {response.text[:300]}")
        done += 1
    return done


def _tokens(console: Console, auth: Auth, summary: Summary) -> None:
    """Export lines with a ready token per kind of user, from the local issuer."""
    if auth.minter is None:
        console.print(
            f"\nSeeded with {auth.how}. Tokens for people come from your OIDC provider.", soft_wrap=True
        )
        return
    console.print("\nReady tokens (local issuer, valid 8 hours); paste into your shell:")
    for who, name, value in demo_tokens(auth.minter, summary):
        console.print(f"# {who}", soft_wrap=True, markup=False, highlight=False)
        console.print(f"export {name}={value}", soft_wrap=True, markup=False, highlight=False)


def _hints(console: Console, url: str, summary: Summary, *, local_tokens: bool = True) -> None:
    """A few requests to try on the seeded firm (a priced project, FX, tax)."""
    priced = {
        line["projectId"]
        for key, contract in summary.resources.items()
        if key[0] == "contracts"
        for line in contract.get("lines", [])
        if line.get("rateCardId")
    }
    assignment = next(
        (r for k, r in summary.resources.items() if k[0] == "assignments" and r.get("projectId") in priced),
        None,
    )
    bearer = (
        '-H "Authorization: Bearer $FINANCE_TOKEN"' if local_tokens else '-H "Authorization: Bearer $TOKEN"'
    )
    lines = [f"curl -s {bearer} '{url}/v1/consultants?pageSize=5'"]
    if assignment:
        query = (
            f"projectId={assignment['projectId']}&consultantId={assignment['consultantId']}"
            f"&laborCategoryId={assignment['laborCategoryId']}&date=2026-08-03"
        )
        lines.append(f"curl -s {bearer} '{url}/v1/rates:resolve?{query}'")
    lines.append(
        f"curl -s {bearer} "
        f"'{url}/v1/fx-rates:convert?amount=1000&fromCurrency=EUR&toCurrency=GBP&date=2026-08-03'"
    )
    lines.append(
        f"curl -s {bearer} "
        f"'{url}/v1/tax-rates:resolve?taxCode=VAT-GB-STD&date=2026-08-03&amount=1000&currency=GBP'"
    )
    console.print("\nTry:")
    for line in lines:
        console.print(f"  {line}", soft_wrap=True, markup=False)
