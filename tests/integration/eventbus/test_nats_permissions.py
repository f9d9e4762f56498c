"""Each service's NATS user, on a real nats-server configured as `accrue run` and the test stack
configure theirs (accrue.eventbus.permissions): only its own subjects, no anonymous clients."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from unittest.mock import MagicMock

import nats
import pytest
from nats.aio.client import Client
from nats.js.api import ConsumerConfig

from accrue.embedded import EmbeddedNats
from accrue.embedded.stack import SERVICE_NAMES, generate_nats_passwords
from accrue.eventbus import NatsAccess, Subscription, connect_nats, ensure_consumer, ensure_streams
from accrue.eventbus.permissions import ADMIN_USER, GRANTS, password_variable, render_authorization

pytestmark = pytest.mark.integration

ADMIN_PASSWORD = "admin-test-password"


@pytest.fixture
def passwords() -> dict[str, str]:
    return generate_nats_passwords()


@pytest.fixture
def server(tmp_path: Path, passwords: dict[str, str]) -> Iterator[EmbeddedNats]:
    authorization = render_authorization(passwords, admin_password=ADMIN_PASSWORD)
    with EmbeddedNats(tmp_path / "nats", authorization=authorization) as running:
        yield running


async def _as(server: EmbeddedNats, user: str, password: str) -> Client:
    options = NatsAccess(user, password).options()
    return await nats.connect(server.url, allow_reconnect=False, connect_timeout=2, **options)


async def _refusal(
    server: EmbeddedNats, user: str, password: str, action: Callable[[Client], Awaitable[object]]
) -> str:
    """What the server says when `user` tries `action` on a fresh connection.

    The server answers a permissions violation with -ERR (and nothing on the subject); nats-py
    keeps it as the connection's last error (and closes the connection).
    """
    nc = await _as(server, user, password)
    try:
        # No reply (a timeout), or the connection closed under the call.
        with pytest.raises((nats.errors.Error, TimeoutError)):
            await action(nc)
        async with asyncio.timeout(5):
            while nc.last_error is None:  # noqa: ASYNC110 - nats-py sets it, no event to wait on
                await asyncio.sleep(0.01)
        return str(nc.last_error)
    finally:
        await nc.close()


@pytest.fixture
async def admin(server: EmbeddedNats) -> AsyncIterator[Client]:
    nc = await nats.connect(server.url, user=ADMIN_USER, password=ADMIN_PASSWORD, allow_reconnect=False)
    await ensure_streams(nc.jetstream())
    yield nc
    await nc.close()


async def test_an_anonymous_client_cannot_connect(server: EmbeddedNats) -> None:
    with pytest.raises(Exception, match=r"(?i)authorization violation"):
        await nats.connect(server.url, allow_reconnect=False, connect_timeout=2, max_reconnect_attempts=0)


async def test_a_wrong_password_cannot_connect(server: EmbeddedNats) -> None:
    with pytest.raises(Exception, match=r"(?i)authorization violation"):
        await _as(server, "timekeeping", "not-the-password")


async def test_timekeeping_cannot_publish_billing_subjects_but_can_publish_its_own(
    server: EmbeddedNats, passwords: dict[str, str], admin: Client
) -> None:
    password = passwords["timekeeping"]
    nc = await _as(server, "timekeeping", password)
    try:
        ack = await nc.jetstream().publish("time.entry.approved.p1", b"{}", timeout=5)
        assert ack.stream == "TIME"
    finally:
        await nc.close()

    async def forge(nc: Client) -> None:
        await nc.jetstream().publish("billing.invoice.drafted.le1", b"forged", timeout=1)

    said = await _refusal(server, "timekeeping", password, forge)
    assert 'permissions violation for publish to "billing.invoice.drafted.le1"' in said.lower()
    admin_js = admin.jetstream()
    assert (await admin_js.stream_info("BILLING")).state.messages == 0
    assert (await admin_js.stream_info("TIME")).state.messages == 1


async def test_timekeeping_reads_only_through_its_own_consumers(
    server: EmbeddedNats, passwords: dict[str, str], admin: Client
) -> None:
    password = passwords["timekeeping"]
    nc = await _as(server, "timekeeping", password)
    try:
        js = nc.jetstream()
        # Its own durable on BILLING: created, bound and fetched from.
        await ensure_consumer(
            js,
            stream="BILLING",
            durable="timekeeping-billing",
            filter_subjects=("billing.invoice.drafted.>",),
            ack_wait=30,
        )
        psub = await js.pull_subscribe_bind("timekeeping-billing", "BILLING")
        with pytest.raises(nats.errors.TimeoutError):
            await psub.fetch(1, timeout=0.5)  # nothing there, but the fetch itself is allowed
        assert nc.last_error is None
    finally:
        await nc.close()

    def consumer(durable: str) -> Callable[[Client], Awaitable[object]]:
        return lambda nc: nc.jetstream(timeout=1).add_consumer("TIME", ConsumerConfig(durable_name=durable))

    # Another service's consumer, or one of its own naming, on a stream it does not read.
    for durable in ("billing-time", "sneaky"):
        said = await _refusal(server, "timekeeping", password, consumer(durable))
        assert f'publish to "$js.api.consumer.durable.create.time.{durable}"' in said.lower()

    # A plain subscription to the event subjects.
    async def listen(nc: Client) -> None:
        subscription = await nc.subscribe("billing.>")
        await subscription.next_msg(timeout=1)

    said = await _refusal(server, "timekeeping", password, listen)
    assert 'permissions violation for subscription to "billing.>"' in said.lower()

    # Streams cannot be deleted or purged.
    said = await _refusal(
        server, "timekeeping", password, lambda nc: nc.jetstream(timeout=1).delete_stream("TIME")
    )
    assert 'publish to "$js.api.stream.delete.time"' in said.lower()
    said = await _refusal(
        server, "timekeeping", password, lambda nc: nc.jetstream(timeout=1).purge_stream("TIME")
    )
    assert 'publish to "$js.api.stream.purge.time"' in said.lower()

    admin_js = admin.jetstream()
    assert [c.name for c in await admin_js.consumers_info("TIME")] == []
    assert [c.name for c in await admin_js.consumers_info("BILLING")] == ["timekeeping-billing"]
    assert (await admin_js.stream_info("TIME")).config.name == "TIME"


async def test_every_service_can_connect_and_provision_the_streams(
    server: EmbeddedNats, passwords: dict[str, str]
) -> None:
    for name in SERVICE_NAMES:
        access = NatsAccess(name, passwords[name])
        nc = await connect_nats(server.url, name, access=access, give_up_after=5)
        try:
            await ensure_streams(nc.jetstream())
        finally:
            await nc.close()


def _services_subscriptions() -> dict[str, list[Subscription]]:
    from accrue.services.billing.entrypoints import consumers as billing
    from accrue.services.forecasting.entrypoints import consumers as forecasting
    from accrue.services.masterdata.entrypoints import consumers as masterdata
    from accrue.services.observability.entrypoints import consumers as observability
    from accrue.services.timekeeping.entrypoints import consumers as timekeeping

    app = MagicMock()
    return {
        "masterdata": [masterdata.billing_subscription(app)],
        "timekeeping": [timekeeping.masterdata_subscription(), timekeeping.billing_subscription(app)],
        "billing": [
            billing.masterdata_subscription(),
            billing.time_subscription(app),
            billing.milestone_subscription(app),
        ],
        "forecasting": forecasting.subscriptions(app),
        "observability": observability.subscriptions(app),
    }


def test_the_grants_name_exactly_the_consumers_each_service_runs() -> None:
    actual = {
        name: sorted((s.stream, s.durable) for s in subs) for name, subs in _services_subscriptions().items()
    }
    granted = {name: sorted((c.stream, c.durable) for c in g.consumes) for name, g in GRANTS.items()}
    assert granted == actual
    assert set(GRANTS) == set(SERVICE_NAMES)


async def test_the_deployed_form_reads_each_password_from_the_server_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # deploy/k8s/nats/auth.conf is this rendering: `password: $NATS_PASSWORD_<NAME>`.
    for name in SERVICE_NAMES:
        monkeypatch.setenv(password_variable(name), f"from-secret-{name}")
    with EmbeddedNats(tmp_path / "nats", authorization=render_authorization()) as server:
        nc = await _as(server, "billing", "from-secret-billing")
        await nc.close()
        with pytest.raises(nats.errors.Error, match=r"(?i)authorization violation"):
            await _as(server, "billing", "$NATS_PASSWORD_BILLING")
