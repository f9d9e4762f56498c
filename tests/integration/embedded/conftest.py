"""A stand-in for the services, for testing the machinery that runs them (stack, accrue run).

The services are written by others and may not run yet; this throwaway script plays any of
them on the documented process contract. It never stands in for PostgreSQL or NATS: its
migration creates a schema in the real database it is given.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable

import pytest

StandIn = Callable[..., Callable[[str], list[str]]]

STAND_IN = textwrap.dedent(
    '''
    """Plays a process of the stack: stand_in.py <name> [--crash|--hang|--deaf|--bad-migration] [migrate]"""
    import asyncio, json, os, signal, sys, threading
    from concurrent import futures

    name, flags = sys.argv[1], sys.argv[2:]
    env = os.environ


    def say(message):
        print(f"[{name}] {message}", flush=True)


    if "migrate" in flags:
        if "--bad-migration" in flags:
            say("relation does not exist")
            sys.exit(4)
        import asyncpg

        async def migrate():
            conn = await asyncpg.connect(env["ACCRUE_DATABASE_URL"])
            try:
                await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{name}"')
            finally:
                await conn.close()

        asyncio.run(migrate())
        say("migrated")
        sys.exit(0)

    if "--crash" in flags:
        say("boom: cannot start")
        sys.exit(3)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())


    def wait_for_signal():
        # Poll: a signal the kernel hands to another thread would not wake a plain wait().
        while not stop.wait(0.05):
            pass


    if "--deaf" in flags:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if "--hang" in flags:
        say("hanging")
        wait_for_signal()
        sys.exit(0)

    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    if name == "gateway":
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        backends = json.loads(env["ACCRUE_GATEWAY_BACKENDS"])

        def serving(address):
            with grpc.insecure_channel(address) as channel:
                try:
                    stub = health_pb2_grpc.HealthStub(channel)
                    reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                except grpc.RpcError:
                    return False
            return reply.status == health_pb2.HealthCheckResponse.SERVING

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                ready = all(serving(a) for a in backends.values())
                self.send_response(200 if self.path == "/readyz" and ready else 503)
                self.end_headers()

            def log_message(self, *args):
                pass

        server = ThreadingHTTPServer((env["ACCRUE_GATEWAY_HOST"], int(env["ACCRUE_GATEWAY_PORT"])), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        say("backends " + json.dumps(backends, sort_keys=True))
        wait_for_signal()
        server.shutdown()
        say("stopped gracefully")
        sys.exit(0)

    prefix = f"ACCRUE_{name.upper()}_"
    server = grpc.server(futures.ThreadPoolExecutor(4), options=[("grpc.so_reuseport", 0)])
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    server.add_insecure_port(f"127.0.0.1:{env[prefix + 'GRPC_PORT']}")
    server.start()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    seen = {k: env[k] for k in sorted(env) if k.startswith("ACCRUE_")}
    say("env " + json.dumps(seen, sort_keys=True))
    wait_for_signal()
    server.stop(1).wait()
    say("stopped gracefully")
    sys.exit(0)
    '''
)


@pytest.fixture(scope="session")
def stand_in(tmp_path_factory: pytest.TempPathFactory) -> StandIn:
    script = tmp_path_factory.mktemp("stand_in") / "stand_in.py"
    script.write_text(STAND_IN)

    def command(**flags: str) -> Callable[[str], list[str]]:
        """argv per process; flags maps a process name to the flag it misbehaves with."""
        return lambda name: [sys.executable, str(script), name, *([flags[name]] if name in flags else [])]

    return command
