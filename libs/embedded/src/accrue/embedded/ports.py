"""TCP ports: picking free ones for tests, and refusing to start on taken ones."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterable
from dataclasses import dataclass

_handed_out: set[int] = set()
_handed_out_lock = threading.Lock()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now, never the same one twice in this process.

    The kernel may give back a port it handed out a moment ago; a caller that asks for several
    ports before binding any (a whole stack) must not get duplicates.
    """
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        with _handed_out_lock:
            if port not in _handed_out:
                _handed_out.add(port)
                return port
    raise RuntimeError("could not find a free TCP port")


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could bind host:port now.

    SO_REUSEADDR mirrors what servers set, so a port left in TIME_WAIT by a previous run is
    free; a port with a listener (on host or on the wildcard address) is not.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


@dataclass(frozen=True)
class PortBinding:
    """A fixed port some process will listen on, and the setting that changes it."""

    port: int
    owner: str
    env_var: str


class PortInUseError(RuntimeError):
    """One or more fixed ports are already taken."""

    def __init__(self, taken: list[PortBinding], host: str) -> None:
        self.taken = taken
        lines = [
            f"  port {b.port} ({b.owner}) on {host} is already in use; set {b.env_var} to use another port"
            for b in taken
        ]
        hint = "(a stack from an earlier run may still be running)"
        super().__init__("cannot start, ports already in use:\n" + "\n".join(lines) + f"\n{hint}")


def ensure_ports_free(bindings: Iterable[PortBinding], host: str = "127.0.0.1") -> None:
    """Fail fast, naming every taken port and the variable that moves it."""
    taken = [b for b in bindings if not port_is_free(b.port, host)]
    if taken:
        raise PortInUseError(taken, host)
