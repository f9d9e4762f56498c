"""Who may do what on NATS: one user per service, allowed only its own subjects.

A service publishes its own domain's events (timekeeping: `time.>`) and dead letters of its own
consumers (`dlq.<durable>.>`), and reads events only through its own durable consumers: JetStream
delivers a pull consumer's messages to the caller's inbox, so what a service can read is decided
by which consumers it may create, fetch from and ack (`$JS.API.CONSUMER.*.<stream>.<durable>`,
`$JS.ACK.<stream>.<durable>.>`), not by subscribe permissions on the event subjects. Each service
gets an inbox prefix of its own (`_INBOX_<service>`), so no service can read another's replies.

What is allowed to all: stream info, and creating/updating the streams of
accrue.eventbus.streams, because every service provisions the same streams at start (so any one
can start first). Deleting or purging a stream or a message, or touching another service's
consumer, is allowed to no service.

The embedded server (`accrue run`, the test stack) and deploy/k8s/nats/auth.conf are rendered
from this table (`python -m accrue.eventbus.permissions > deploy/k8s/nats/auth.conf`; a deploy
test checks the file is current). A test checks the durables below are the services' own.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass

from accrue.eventbus.streams import DLQ_STREAM, STREAMS

# The user with every permission: for operators' tools and the tests' fixtures, never a service.
ADMIN_USER = "accrue-admin"


@dataclass(frozen=True)
class Consumes:
    """A durable consumer a service runs on a stream."""

    stream: str
    durable: str


@dataclass(frozen=True)
class Grant:
    """One service's NATS user."""

    service: str
    publishes: tuple[str, ...]
    consumes: tuple[Consumes, ...]
    # Observability reports every consumer's backlog, so it may list (not use) every consumer.
    lists_consumers: bool = False
    # Replay moves the consumer back by deleting and recreating it.
    replays: tuple[str, ...] = ()


GRANTS: Mapping[str, Grant] = {
    g.service: g
    for g in (
        Grant("masterdata", ("md.>",), (Consumes("BILLING", "masterdata-billing"),)),
        Grant(
            "timekeeping",
            ("time.>",),
            (Consumes("MD", "timekeeping-md"), Consumes("BILLING", "timekeeping-billing")),
            replays=("timekeeping-md",),
        ),
        Grant(
            "billing",
            ("billing.>",),
            (
                Consumes("MD", "billing-md"),
                Consumes("MD", "billing-milestones"),
                Consumes("TIME", "billing-time"),
            ),
        ),
        Grant(
            "forecasting",
            ("forecast.>",),
            (
                Consumes("MD", "forecasting-md"),
                Consumes("TIME", "forecasting-time"),
                Consumes("BILLING", "forecasting-billing"),
            ),
        ),
        Grant(
            "observability",
            ("observability.>",),
            (
                Consumes("MD", "observability-md"),
                Consumes("TIME", "observability-time"),
                Consumes("BILLING", "observability-billing"),
                Consumes("FORECAST", "observability-forecast"),
            ),
            lists_consumers=True,
        ),
    )
}


def inbox_prefix(service: str) -> str:
    """The reply-subject prefix a service's connection uses (and alone may subscribe to)."""
    return f"_INBOX_{service}"


def permissions(service: str) -> dict[str, dict[str, list[str]]]:
    """nats-server `permissions` for a service's user: publish and subscribe allow-lists."""
    grant = GRANTS[service]
    publish = [*grant.publishes, "$JS.API.INFO"]
    for spec in STREAMS:
        publish += [f"$JS.API.STREAM.INFO.{spec.name}", f"$JS.API.STREAM.CREATE.{spec.name}"]
        publish.append(f"$JS.API.STREAM.UPDATE.{spec.name}")
    for c in grant.consumes:
        api = f"$JS.API.CONSUMER.%s.{c.stream}.{c.durable}"
        publish += [
            api % "CREATE",
            api % "CREATE" + ".>",  # the form with the filter subject appended
            api % "DURABLE.CREATE",
            api % "INFO",
            api % "MSG.NEXT",
            f"$JS.ACK.{c.stream}.{c.durable}.>",
            f"dlq.{c.durable}.>",
        ]
        if c.durable in grant.replays:
            publish.append(api % "DELETE")
    if grant.lists_consumers:
        publish += [f"$JS.API.CONSUMER.LIST.{spec.name}" for spec in STREAMS if spec is not DLQ_STREAM]
    return {"publish": {"allow": publish}, "subscribe": {"allow": [f"{inbox_prefix(service)}.>"]}}


def password_variable(service: str) -> str:
    """The environment variable a deployed nats-server reads the service's password from."""
    return f"NATS_PASSWORD_{service.upper()}"


def _conf(value: object) -> str:
    # The NATS config format accepts JSON values; quoted strings are not variable-expanded.
    return json.dumps(value)


def render_authorization(
    passwords: Mapping[str, str] | None = None, *, admin_password: str | None = None
) -> str:
    """The `authorization` block of a nats-server config: one user per service (and an admin).

    passwords: service -> password, written into the config (the embedded server's file, which
    only its owner can read); None writes `$NATS_PASSWORD_<SERVICE>` references instead, which
    nats-server resolves from its environment (deploy/, where they come from a Secret). Without
    a `no_auth_user`, a client that gives no credentials is refused.
    """
    lines = ["authorization {", "  users: ["]
    for service in GRANTS:
        secret = _conf(passwords[service]) if passwords is not None else "$" + password_variable(service)
        perms = permissions(service)
        lines += [
            "    {",
            f"      user: {_conf(service)}",
            f"      password: {secret}",
            "      permissions: {",
            f"        publish: {{ allow: {_conf(perms['publish']['allow'])} }}",
            f"        subscribe: {{ allow: {_conf(perms['subscribe']['allow'])} }}",
            "      }",
            "    }",
        ]
    if admin_password is not None:
        lines += [
            "    {",
            f"      user: {_conf(ADMIN_USER)}",
            f"      password: {_conf(admin_password)}",
            "    }",
        ]
    lines += ["  ]", "}", ""]
    return "\n".join(lines)


DEPLOY_HEADER = """\
# Generated by `python -m accrue.eventbus.permissions` from accrue.eventbus.permissions; do
# not edit (tests/unit/deploy checks it is current). One user per service, allowed only its
# own subjects; each password comes from the nats-server's environment ($NATS_PASSWORD_<NAME>,
# from the accrue-nats-credentials Secret). Included by nats.conf.
"""


if __name__ == "__main__":
    sys.stdout.write(DEPLOY_HEADER + render_authorization())
