"""The JetStream adapter (nats-py) on the real NATS at :4222, one stream per test, deleted after."""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import nats
import psycopg
import pytest
from conftest import PATIENCE_S, idem_bin
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig
from nats.js.client import JetStreamContext

from idem_client import AsyncClient
from idem_client.brokers import (
    Adapter,
    KeySource,
    Message,
    PermanentFailure,
    PostgresInbox,
    Process,
    RetryableFailure,
    Settings,
    Stats,
)
from idem_client.brokers.nats import consume
from idem_client.replies import Running

NATS_URL = os.environ.get("IDEM_TEST_NATS_URL", "nats://127.0.0.1:4222")
PG_URL = os.environ.get("IDEM_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test")


class Stream:
    def __init__(self, js: JetStreamContext, name: str) -> None:
        self.js, self.name = js, name
        self.work, self.dlq = f"{name}.work", f"{name}.dlq"

    async def publish(self, key: str | None, body: bytes) -> None:
        await self.js.publish(self.work, body, headers={"Order-Id": key} if key else None)


@pytest.fixture
async def stream() -> AsyncIterator[Stream]:
    nc = await nats.connect(NATS_URL)
    js = nc.jetstream()
    name = f"py_ib_{uuid.uuid4().hex[:10]}"
    s = Stream(js, name)
    await js.add_stream(StreamConfig(name=name, subjects=[s.work, s.dlq]))
    await js.add_consumer(
        name,
        ConsumerConfig(durable_name="c", filter_subject=s.work, ack_policy=AckPolicy.EXPLICIT, ack_wait=2),
    )
    try:
        yield s
    finally:
        await js.delete_stream(name)
        await nc.close()


async def run_until(s: Stream, settings: Settings, process: Process, done: Any) -> Stats:
    stats, shutdown = Stats(), asyncio.Event()
    sub = await s.js.pull_subscribe(s.work, durable="c", stream=s.name)

    async def watch() -> None:
        for _ in range(int(PATIENCE_S * 20)):
            if done(stats):
                break
            await asyncio.sleep(0.05)
        shutdown.set()

    watcher = asyncio.create_task(watch())
    await consume(s.js, sub, s.dlq, settings, process, shutdown, stats)
    await watcher
    return stats


async def test_duplicates_run_once_and_failures_are_dead_lettered(
    stream: Stream, aclient: AsyncClient
) -> None:
    calls: Counter[bytes] = Counter()

    async def handler(m: Message) -> bytes:
        calls[m.key] += 1
        if m.key == b"poison":
            raise RetryableFailure("always fails")
        if m.key == b"fatal":
            raise PermanentFailure("malformed order")
        return b"done " + m.key

    for key in ["a", "a", "b", "poison", "fatal", None]:
        await stream.publish(key, b"{}")
    name = "orders" + uuid.uuid4().hex[:8]
    settings = Settings(
        name, KeySource(header="Order-Id"), deliveries_max=2, backoff_ms=20, backoff_ms_max=100
    )
    stats = await run_until(
        stream,
        settings,
        Adapter(aclient, handler),
        lambda s: s.applied == 2 and s.duplicates == 1 and s.dead_lettered == 3,
    )
    assert (stats.applied, stats.duplicates, stats.dead_lettered) == (2, 1, 3)
    assert calls == Counter({b"a": 1, b"b": 1, b"poison": 2, b"fatal": 1})
    info = await stream.js.stream_info(stream.name, subjects_filter=stream.dlq)
    assert info.state.subjects == {stream.dlq: 3}
    last = await stream.js.get_last_msg(stream.name, stream.dlq)
    headers = last.headers or {}
    assert headers.get("Idem-Original-Subject") == stream.work, headers
    assert headers.get("Idem-Dead-Letter-Reason"), headers


async def test_postgres_inbox_writes_each_effect_once(stream: Stream) -> None:
    subprocess.run([idem_bin(), "migrate", "--store", PG_URL], check=True, capture_output=True, timeout=120)
    table = f"py_ib_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (k text NOT NULL)")

    def handler(conn: Any, m: Message) -> bytes:
        conn.execute(f"INSERT INTO {table} (k) VALUES (%s)", (m.key.decode(),))
        if m.key == b"poison":
            raise PermanentFailure("fails after writing")
        return b"ok"

    for key in ["a", "a", "b", "poison", "b"]:
        await stream.publish(None, b'{"order": {"id": "%s"}}' % key.encode())
    inbox = PostgresInbox(lambda: psycopg.connect(PG_URL), handler)
    settings = Settings(table, KeySource(json_field="/order/id"))
    stats = await run_until(
        stream, settings, inbox, lambda s: s.applied == 2 and s.duplicates == 2 and s.dead_lettered == 1
    )
    assert (stats.applied, stats.duplicates, stats.dead_lettered) == (2, 2, 1)
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        rows = conn.execute(f"SELECT k, count(*) FROM {table} GROUP BY k ORDER BY k").fetchall()
        conn.execute(f"DROP TABLE {table}")
    assert rows == [("a", 1), ("b", 1)]


async def test_a_handler_longer_than_its_lease_keeps_the_claim(stream: Stream, aclient: AsyncClient) -> None:
    attempts: list[int] = []
    name = "orders" + uuid.uuid4().hex[:8]

    async def handler(m: Message) -> bytes:
        attempts.append(m.attempt)
        await asyncio.sleep(0.9)  # three leases
        assert isinstance(await aclient.begin(f"{name}:long".encode()), Running)
        await asyncio.sleep(0.3)
        return b"ok"

    await stream.publish("long", b"{}")
    settings = Settings(name, KeySource(header="Order-Id"), lease_ms=300)
    stats = await run_until(stream, settings, Adapter(aclient, handler), lambda s: s.applied == 1)
    assert (stats.applied, stats.retried) == (1, 0)
    assert attempts == [1]
