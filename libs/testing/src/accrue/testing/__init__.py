"""Real servers for tests: PostgreSQL, NATS JetStream and the whole stack, as pytest fixtures.

The fixtures live in accrue.testing.plugin, which pytest loads by itself (a pytest11 entry
point); import from here to build servers or stacks by hand. Names load on first use, so the
plugin adds little to the start of every pytest run.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from accrue.testing.servers import (
        NatsServerHandle,
        PostgresServerHandle,
        choose,
        docker_available,
        open_nats,
        open_postgres,
    )
    from accrue.testing.stack import Stack, StackError

_EXPORTS = {
    "NatsServerHandle": "accrue.testing.servers",
    "PostgresServerHandle": "accrue.testing.servers",
    "choose": "accrue.testing.servers",
    "docker_available": "accrue.testing.servers",
    "open_nats": "accrue.testing.servers",
    "open_postgres": "accrue.testing.servers",
    "Stack": "accrue.testing.stack",
    "StackError": "accrue.testing.stack",
}

__all__ = [
    "NatsServerHandle",
    "PostgresServerHandle",
    "Stack",
    "StackError",
    "choose",
    "docker_available",
    "open_nats",
    "open_postgres",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
