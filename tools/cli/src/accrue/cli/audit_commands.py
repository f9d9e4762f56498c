"""`accrue audit verify`: walk every audit hash chain of every service, through the gateway.

Exit 0 when every chain checks out; 1 when one is broken (each broken chain's first bad row is
named: service, legal entity, seq, and whether the row itself or a row before it was changed);
2 when the trail could not be verified at all (unreachable, refused token).
"""

from __future__ import annotations

from typing import Annotated, Any

import httpx
import typer

audit_app = typer.Typer(help="The tamper-evident audit trail.", no_args_is_help=True)

BROKEN = 1
COULD_NOT_VERIFY = 2


def _problem(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    return str(body.get("detail") or body.get("title") or body)


def _chain_name(chain: dict[str, Any]) -> str:
    entity = chain.get("legalEntityId") or "firm-wide"
    return f"{chain.get('service', '?')} / {entity}"


@audit_app.command("verify")
def verify(
    url: Annotated[
        str, typer.Option("--url", envvar="ACCRUE_API_URL", help="The Accrue REST gateway.")
    ] = "http://127.0.0.1:8080",
    token: Annotated[
        str | None,
        typer.Option(
            "--token", envvar="ACCRUE_TOKEN", help="A bearer token of an auditor.", show_default=False
        ),
    ] = None,
    legal_entity: Annotated[
        str, typer.Option("--legal-entity", help="Only this legal entity's chains.")
    ] = "",
) -> None:
    """Recompute every audit hash chain and name the first broken link of each (exit 1 if any)."""
    if not token:
        typer.secho(
            "accrue: give an auditor's token with --token or ACCRUE_TOKEN (`accrue token --role auditor`)",
            err=True,
            fg=typer.colors.RED,
        )
        raise typer.Exit(COULD_NOT_VERIFY)
    body = {"legalEntityId": legal_entity} if legal_entity else {}
    try:
        response = httpx.post(
            f"{url.rstrip('/')}/v1/audit-events:verify",
            json=body,
            headers={"authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(300, connect=5),
        )
    except httpx.HTTPError as exc:
        typer.secho(f"accrue: could not reach {url}: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(COULD_NOT_VERIFY) from None
    if response.status_code != 200:
        typer.secho(
            f"accrue: verification refused ({response.status_code}): {_problem(response)}",
            err=True,
            fg=typer.colors.RED,
        )
        raise typer.Exit(COULD_NOT_VERIFY)
    result = response.json()
    chains = result.get("chains", [])
    broken = [c for c in chains if c.get("broken")]
    for chain in chains:
        status = "BROKEN" if chain.get("broken") else "ok"
        typer.echo(
            f"{status:6} {_chain_name(chain)}: {chain.get('length', '0')} events, "
            f"head seq {chain.get('headSeq', '0')} {chain.get('headHash', '')[:16]}"
        )
    for chain in broken:
        link = chain["broken"]
        typer.secho(
            f"first broken link in {_chain_name(chain)}: seq {link.get('seq')}: {link.get('description')}",
            err=True,
            fg=typer.colors.RED,
        )
    if broken or not result.get("ok", False):
        raise typer.Exit(BROKEN)
    typer.echo(f"audit trail intact: {result.get('events', '0')} events in {len(chains)} chains")
