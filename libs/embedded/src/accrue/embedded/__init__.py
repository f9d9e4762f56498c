"""Real NATS JetStream and PostgreSQL servers from wheels, and the stack's process contract.

A library: `accrue run` and the test fixtures drive it; it never runs by itself.
"""

from accrue.embedded.nats_server import EmbeddedNats, EmbeddedServerError, find_nats_server
from accrue.embedded.ports import PortBinding, PortInUseError, ensure_ports_free, free_port, port_is_free
from accrue.embedded.postgres_server import EmbeddedPostgres
from accrue.embedded.prometheus import EmbeddedPrometheus, find_prometheus

__all__ = [
    "EmbeddedNats",
    "EmbeddedPostgres",
    "EmbeddedPrometheus",
    "EmbeddedServerError",
    "PortBinding",
    "PortInUseError",
    "ensure_ports_free",
    "find_nats_server",
    "find_prometheus",
    "free_port",
    "port_is_free",
]
