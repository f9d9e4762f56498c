"""Running a coroutine to completion from synchronous code, whatever loop is (or is not) running."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run coro on a fresh event loop in a helper thread and return its result.

    Callers here are synchronous (pytest fixtures, the CLI) but may sit under a running loop
    (pytest-asyncio), where asyncio.run() is refused; a thread of its own always works.
    """
    result: list[T] = []
    error: list[BaseException] = []

    def _target() -> None:
        try:
            result.append(asyncio.run(coro))
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=_target, name="accrue-embedded-sync", daemon=True)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]
