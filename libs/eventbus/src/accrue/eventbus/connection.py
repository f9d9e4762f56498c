"""Connecting to NATS without hanging on a server that is not up yet, as the service's own user."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import nats
from nats.aio.client import Client
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_delay, wait_exponential

from accrue.eventbus.permissions import inbox_prefix
from accrue.runtime.settings import ServiceSettings
from accrue.runtime.tls import NatsTls
from accrue.telemetry import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class NatsAccess:
    """Whom a connection authenticates as (accrue.eventbus.permissions) and whether it uses TLS."""

    user: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: NatsTls | None = None

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> NatsAccess:
        password = settings.nats_password.get_secret_value() if settings.nats_password is not None else None
        return cls(settings.nats_user, password, settings.nats_tls())

    def options(self) -> dict[str, Any]:
        options: dict[str, Any] = {}
        if self.user is not None:
            # The server lets a service's user subscribe only under its own inbox prefix.
            options.update(user=self.user, password=self.password, inbox_prefix=inbox_prefix(self.user))
        if self.tls is not None:
            options["tls"] = self.tls.context()
        return options


def redact(url: str) -> str:
    """The URL without any user:password in it, for logs."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


async def connect_nats(
    url: str, name: str, *, give_up_after: float = 60.0, access: NatsAccess | None = None
) -> Client:
    """Connect, retrying with backoff; once connected, reconnect forever.

    A refused login is not retried: wrong credentials do not get better by waiting.
    """
    options = (access or NatsAccess()).options()

    async def _connect() -> Client:
        # nats.connect can wait indefinitely on a half-up server, so bound each try.
        return await asyncio.wait_for(
            nats.connect(
                url,
                name=name,
                connect_timeout=2,
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
                **options,
            ),
            timeout=5,
        )

    async for attempt in AsyncRetrying(
        stop=stop_after_delay(give_up_after),
        wait=wait_exponential(multiplier=0.2, max=3),
        retry=retry_if_exception_type((OSError, asyncio.TimeoutError, nats.errors.NoServersError)),
        reraise=True,
    ):
        with attempt:
            client = await _connect()
            log.info("nats_connected", url=redact(url), client=name, user=(access or NatsAccess()).user)
            return client
    raise AssertionError("unreachable")  # pragma: no cover
