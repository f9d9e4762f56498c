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
from accrue.cli.seed import build_firm
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

Url = Annotated[
    str,
    typer.Option("--url", envvar="ACCRUE_API_URL", help="The Accrue REST gateway (`make run` listens here)."),
]
BatchSize = Annotated[
    int, typer.Option("--batch-size", min=1, max=1000, help="Rows per :batchUpsert request.")
]


def _console() -> Console:
    return Console(stderr=False, highlight=False)


@contextlib.contextmanager
def _client(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url.rstrip("/"), timeout=httpx.Timeout(120, connect=5)) as client:
        yield client


def _run(
    console: Console,
    client: httpx.Client,
    rows: dict[Collection, list[Row]],
    batch_size: int,
    source: str = "",
    actor: str = "",
) -> Summary:
    """Upsert everything with a progress bar."""
    check_reachable(client)
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
    actor: Annotated[str, typer.Option("--actor", help="Who is importing, for the history.")] = "",
    batch_size: BatchSize = 500,
) -> None:
    """Import master data from CSV files or a JSON bundle; safe to run again.

    Rows are upserted by externalRef: a row already there comes back unchanged. Exits 1 when any
    row was rejected (see the report), 2 when a file cannot be read.
    """
    console = _console()
    try:
        rows = read_files(files, kind)
    except (ImportFileError, OSError) as exc:
        raise _fail(console, str(exc), 2) from None
    if not count_rows(rows):
        raise _fail(console, "the files hold no rows", 2)
    try:
        with _client(url) as client:
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
) -> None:
    """Build a realistic demo firm through the public REST API (run it again: nothing changes).

    Three legal entities (GBP, EUR, USD) with calendars, consultants with managers, customers,
    projects under time-and-materials, capped and fixed-fee contracts, rate cards whose rates
    change on 1 July, milestones, assignments, opportunities, FX and tax rates.
    """
    console = _console()
    firm = build_firm(consultants, random_seed)
    try:
        with _client(url) as client:
            summary = _run(console, client, firm.rows, batch_size, source="seed", actor="accrue seed")
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
    _hints(console, url, summary)


def _complete_milestones(client: httpx.Client, summary: Summary, external_ids: Sequence[str]) -> int:
    """Mark the first milestone of each fixed-fee line complete (again: no change)."""
    done = 0
    for ext_id in external_ids:
        milestone = summary.resources.get(("milestones", "seed", ext_id))
        if milestone is None:
            continue
        response = client.post(
            f"/v1/milestones/{milestone['id']}:complete", json={"source": "seed", "actor": "accrue seed"}
        )
        if response.status_code != 200:
            raise SyncError(f"completing milestone {ext_id} failed: {response.text[:300]}")
        done += 1
    return done


def _hints(console: Console, url: str, summary: Summary) -> None:
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
    lines = [f"curl -s '{url}/v1/consultants?pageSize=5'"]
    if assignment:
        query = (
            f"projectId={assignment['projectId']}&consultantId={assignment['consultantId']}"
            f"&laborCategoryId={assignment['laborCategoryId']}&date=2026-08-03"
        )
        lines.append(f"curl -s '{url}/v1/rates:resolve?{query}'")
    lines.append(
        f"curl -s '{url}/v1/fx-rates:convert?amount=1000&fromCurrency=EUR&toCurrency=GBP&date=2026-08-03'"
    )
    lines.append(
        f"curl -s '{url}/v1/tax-rates:resolve?taxCode=VAT-GB-STD&date=2026-08-03&amount=1000&currency=GBP'"
    )
    console.print("\nTry:")
    for line in lines:
        console.print(f"  {line}", soft_wrap=True, markup=False)
