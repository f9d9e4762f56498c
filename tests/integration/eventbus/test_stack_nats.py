"""The NATS the test stack runs on (fixture module_nats) is the one `accrue run` gives its
services: anonymous clients are refused, each service logs in as itself, and the stack's
processes are told to (accrue.embedded.stack)."""

from __future__ import annotations

import nats
import pytest

from accrue.embedded.stack import SERVICE_NAMES, PortAssignment, process_env, without_credentials
from accrue.eventbus import NatsAccess, connect_nats
from accrue.testing.servers import SecuredNats

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _embedded_only(module_nats: SecuredNats) -> None:
    if module_nats.passwords is None:
        pytest.skip("NATS from the environment or a container: its users are its operator's")


async def test_an_anonymous_client_cannot_connect_to_the_stacks_nats(module_nats: SecuredNats) -> None:
    with pytest.raises(nats.errors.Error, match=r"(?i)authorization violation"):
        await nats.connect(without_credentials(module_nats.url), allow_reconnect=False, connect_timeout=2)
    # The test's own admin URL works: the refusal is about credentials, not reachability.
    nc = await nats.connect(module_nats.url, allow_reconnect=False, connect_timeout=2)
    await nc.close()


async def test_each_stack_process_is_told_its_own_user_and_gets_in_with_it(module_nats: SecuredNats) -> None:
    assert module_nats.passwords is not None
    ports = PortAssignment.free()
    for name in SERVICE_NAMES:
        env = process_env(
            name,
            database_url="postgresql://x/y",
            nats_url=module_nats.url,
            ports=ports,
            nats_passwords=module_nats.passwords,
        )
        # No admin credentials leak to a service; its own user and password instead.
        assert "@" not in env["ACCRUE_NATS_URL"]
        user, password = env[f"ACCRUE_{name.upper()}_NATS_USER"], env[f"ACCRUE_{name.upper()}_NATS_PASSWORD"]
        assert user == name
        nc = await connect_nats(
            env["ACCRUE_NATS_URL"], name, access=NatsAccess(user, password), give_up_after=5
        )
        await nc.close()
    gateway = process_env(
        "gateway",
        database_url="postgresql://x/y",
        nats_url=module_nats.url,
        ports=ports,
        nats_passwords=module_nats.passwords,
    )
    assert not [k for k in gateway if "NATS_PASSWORD" in k]
