"""`accrue` command line: `accrue run` (behind `make run`), `accrue migrate`, `accrue token` (a
bearer token from the local issuer), and for master data `accrue seed` (a demo firm) and
`accrue import` (CSV or JSON files), both through the REST API.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Annotated

import typer

from accrue.cli.audit_commands import audit_app
from accrue.cli.masterdata_commands import import_files, seed
from accrue.cli.runner import DATA_DIR_VAR, RunConfig, RunError, migrate_only, run_stack
from accrue.cli.token_command import token
from accrue.embedded import EmbeddedServerError, PortInUseError
from accrue.embedded.stack import MigrationError

app = typer.Typer(
    name="accrue",
    help="Accrue: time to invoices to forecast, on NATS JetStream and PostgreSQL.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        envvar=DATA_DIR_VAR,
        help="Where the embedded NATS and PostgreSQL keep their data (default: <repo>/.accrue).",
        show_default=False,
    ),
]
LogLevel = Annotated[
    str, typer.Option("--log-level", envvar="ACCRUE_LOG_LEVEL", help="Log level of every service.")
]


def _fail(message: str) -> typer.Exit:
    typer.secho(f"accrue: {message}", err=True, fg=typer.colors.RED)
    return typer.Exit(1)


def _config(data_dir: Path | None, log_level: str) -> RunConfig:
    try:
        return RunConfig.from_environ(data_dir=data_dir, log_level=log_level)
    except RunError as exc:
        raise _fail(str(exc)) from None


@app.command()
def run(
    data_dir: DataDir = None,
    log_level: LogLevel = "INFO",
    ready_timeout: Annotated[
        float, typer.Option("--ready-timeout", help="Seconds to wait for every service to be ready.")
    ] = 120.0,
) -> None:
    """Start NATS, PostgreSQL, every service and the gateway; Ctrl-C stops them all.

    ACCRUE_DATABASE_URL / ACCRUE_NATS_URL use your own servers instead of the embedded ones.
    """
    config = _config(data_dir, log_level)
    try:
        code = run_stack(config, ready_timeout=ready_timeout)
    except (RunError, PortInUseError, MigrationError, EmbeddedServerError) as exc:
        raise _fail(str(exc)) from None
    raise typer.Exit(code)


@app.command()
def migrate(data_dir: DataDir = None, log_level: LogLevel = "INFO") -> None:
    """Migrate every service's schema (on the embedded PostgreSQL unless ACCRUE_DATABASE_URL is set)."""
    config = _config(data_dir, log_level)
    try:
        code = migrate_only(config)
    except (RunError, MigrationError, EmbeddedServerError) as exc:
        raise _fail(str(exc)) from None
    raise typer.Exit(code)


app.command("token")(token)
app.command("seed")(seed)
app.command("import")(import_files)
app.add_typer(audit_app, name="audit")


def main() -> None:
    """Console-script entry point."""
    # platformdirs (under the PostgreSQL wheel) warns when XDG_RUNTIME_DIR is unset; its fallback is fine.
    warnings.filterwarnings("ignore", module="platformdirs")
    app()


if __name__ == "__main__":
    main()
