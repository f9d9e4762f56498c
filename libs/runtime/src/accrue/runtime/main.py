"""The body of every service's `__main__`: `python -m accrue.services.<name> [serve|migrate]`."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from accrue.runtime.server import Service, serve
from accrue.runtime.settings import ServiceSettings, load_settings
from accrue.telemetry import configure_logging, configure_tracing

S = TypeVar("S", bound=ServiceSettings)

USAGE = "usage: python -m accrue.services.{name} [serve|migrate]"


def run_service(
    name: str,
    settings_cls: type[S],
    bootstrap: Callable[[S], Awaitable[Service]],
    migrate: Callable[[S], Coroutine[Any, Any, None]] | None = None,
) -> None:
    """Read settings once, then serve (default) or migrate and exit."""
    command = sys.argv[1] if len(sys.argv) > 1 else "serve"
    if command not in ("serve", "migrate") or (command == "migrate" and migrate is None):
        print(USAGE.format(name=name), file=sys.stderr)  # noqa: T201
        raise SystemExit(2)
    settings = load_settings(settings_cls)
    configure_logging(name, settings.log_level, settings.log_format)
    if command == "migrate":
        assert migrate is not None
        asyncio.run(migrate(settings))
        return
    configure_tracing(name, settings.otlp_endpoint)

    async def _serve() -> None:
        await serve(await bootstrap(settings))

    asyncio.run(_serve())
