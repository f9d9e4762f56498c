"""`accrue token`: a bearer token from the local issuer of the stack `accrue run` started.

    export TOKEN=$(accrue token)                         # a local administrator: every role, every entity
    export TOKEN=$(accrue token --as E2)                 # consultant E2, in their legal entity
    export TOKEN=$(accrue token --as E1 --role approver --role project_manager)

The token alone goes to stdout (so `$(...)` takes it); who it is for goes to stderr. Only for the
local issuer: with an external OIDC provider, tokens come from that provider.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import httpx
import typer

from accrue.cli.runner import DATA_DIR_VAR, default_data_dir
from accrue.cli.sync import DEFAULT_URL
from accrue.cli.tokens import (
    ADMIN_SUBJECT,
    TokenError,
    admin_roles,
    check_roles,
    cli_clock,
    find_consultant,
    parse_ttl,
)
from accrue.cli.tokens import LocalMinter as _Minter
from accrue.runtime.identity import ALL_LEGAL_ENTITIES

# Long enough for a look-up, short enough to be worthless if it leaked from a process listing.
_LOOKUP_TTL = parse_ttl("2m")


def data_dir_or_default(data_dir: Path | None) -> Path:
    """The stack's data dir: as given (relative to here), else <repo>/.accrue like `accrue run`."""
    here = Path.cwd()
    return (here / data_dir).resolve() if data_dir is not None else default_data_dir(here)


def token(
    as_: Annotated[
        str | None,
        typer.Option(
            "--as",
            help="The consultant the token is for: their code (employee number) or id. "
            "Default: a local administrator.",
            show_default=False,
        ),
    ] = None,
    role: Annotated[
        list[str] | None,
        typer.Option(
            "--role",
            help="A role the token holds (repeat for more). Default: consultant with --as, else every role.",
            show_default=False,
        ),
    ] = None,
    legal_entity: Annotated[
        list[str] | None,
        typer.Option(
            "--legal-entity",
            help="A legal entity id the token is limited to (repeat; '*' = all). "
            "Default: the consultant's own with --as, else all.",
            show_default=False,
        ),
    ] = None,
    ttl: Annotated[
        str, typer.Option("--ttl", help="How long the token is valid: 30m, 8h, 2d, or seconds.")
    ] = "8h",
    url: Annotated[
        str, typer.Option("--url", envvar="ACCRUE_API_URL", help="The Accrue REST gateway.")
    ] = DEFAULT_URL,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            envvar=DATA_DIR_VAR,
            help="The data dir of the stack (its local issuer's keys; default: <repo>/.accrue).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Print a bearer token from the local issuer (`make run`'s embedded identity provider)."""
    try:
        lifetime = parse_ttl(ttl)
        roles = check_roles(role) if role else None
        with httpx.Client(base_url=url.rstrip("/"), timeout=httpx.Timeout(30, connect=5)) as client:
            minter = _Minter.open(data_dir_or_default(data_dir), url, clock=cli_clock(), http=client)
            if as_:
                person = find_consultant(client, as_.strip(), minter.admin(_LOOKUP_TTL))
                subject = str(person["id"])
                roles = roles or ["consultant"]
                entities = legal_entity or [str(person.get("legalEntityId") or ALL_LEGAL_ENTITIES)]
                email = person.get("email") or None
                who = f"{person.get('name', '')} ({person.get('code', '')}, {subject})"
            else:
                subject, email, who = ADMIN_SUBJECT, None, "a local administrator"
                roles = roles or admin_roles()
                entities = legal_entity or [ALL_LEGAL_ENTITIES]
            minted = minter.person(subject, roles, entities, lifetime, email=email)
    except TokenError as exc:
        typer.secho(f"accrue: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(1) from None
    scope = (
        "every legal entity" if ALL_LEGAL_ENTITIES in entities else "legal entities " + ", ".join(entities)
    )
    typer.echo(f"token for {who}: roles {', '.join(sorted(roles))}; {scope}; valid for {ttl}", err=True)
    typer.echo(minted)
