"""The RabbitMQ adapter (aio-pika) on the real RabbitMQ at :5672, one queue per test, deleted after."""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import unquote, urlparse

import aio_pika
import pymysql
import pytest
from conftest import PATIENCE_S, idem_bin

from idem_client import AsyncClient
from idem_client.brokers import (
    Adapter,
    KeySource,
    Message,
    MysqlInbox,
    PermanentFailure,
    Process,
    RetryableFailure,
    Settings,
    Stats,
)
from idem_client.brokers.amqp import consume, declare_queue, delete_queue, dlq_name

AMQP_URL = os.environ.get("IDEM_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
MYSQL_URL = os.environ.get("IDEM_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")
TIERS_MS = (100, 1_000)


class Rabbit:
    def __init__(self, conn: aio_pika.abc.AbstractConnection, ch: aio_pika.abc.AbstractChannel, queue: str):
        self.conn, self.ch, self.queue = conn, ch, queue

    async def publish(self, message_id: str | None, body: bytes) -> None:
        msg = aio_pika.Message(body, message_id=message_id, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
        await self.ch.default_exchange.publish(msg, routing_key=self.queue)

    async def dead_letters(self) -> int:
        q = await self.ch.declare_queue(dlq_name(self.queue), passive=True)
        return q.declaration_result.message_count or 0


@pytest.fixture
async def rabbit() -> AsyncIterator[Rabbit]:
    conn = await aio_pika.connect(AMQP_URL)
    ch = await conn.channel(publisher_confirms=True)
    queue = f"py_ib_{uuid.uuid4().hex[:10]}"
    await declare_queue(ch, queue)
    try:
        yield Rabbit(conn, ch, queue)
    finally:
        await delete_queue(ch, queue, TIERS_MS)
        await conn.close()


async def run_until(r: Rabbit, settings: Settings, process: Process, done: Any) -> Stats:
    stats, shutdown = Stats(), asyncio.Event()

    async def watch() -> None:
        for _ in range(int(PATIENCE_S * 20)):
            if done(stats):
                break
            await asyncio.sleep(0.05)
        shutdown.set()

    watcher = asyncio.create_task(watch())
    await consume(r.conn, r.queue, settings, process, shutdown, TIERS_MS, stats)
    await watcher
    return stats


async def test_duplicates_run_once_and_retries_reach_the_dlx(rabbit: Rabbit, aclient: AsyncClient) -> None:
    calls: Counter[bytes] = Counter()

    async def handler(m: Message) -> bytes:
        calls[m.key] += 1
        if m.key == b"poison":
            raise RetryableFailure("always fails")
        return b"done"

    # No keyless message here: aio-pika gives every message it publishes a
    # random message-id when the caller sets none.
    for key in ["a", "a", "b", "poison"]:
        await rabbit.publish(key, b"{}")
    name = "orders" + uuid.uuid4().hex[:8]
    settings = Settings(
        name, KeySource(header="message-id"), deliveries_max=3, backoff_ms=20, backoff_ms_max=100
    )
    stats = await run_until(
        rabbit,
        settings,
        Adapter(aclient, handler),
        lambda s: s.applied == 2 and s.duplicates == 1 and s.dead_lettered == 1,
    )
    assert calls == Counter({b"a": 1, b"b": 1, b"poison": 3})
    assert (stats.applied, stats.duplicates, stats.dead_lettered, stats.retried) == (2, 1, 1, 2)
    for _ in range(40):
        if await rabbit.dead_letters() == 1:
            break
        await asyncio.sleep(0.05)
    assert await rabbit.dead_letters() == 1


def _my() -> Any:
    u = urlparse(MYSQL_URL)
    return pymysql.connect(
        host=u.hostname or "127.0.0.1",
        port=u.port or 3306,
        user=unquote(u.username or "root"),
        password=unquote(u.password or ""),
        database=u.path.lstrip("/") or "test",
        autocommit=False,
    )


async def test_mysql_inbox_rolls_back_a_failed_handler(rabbit: Rabbit) -> None:
    subprocess.run(
        [idem_bin(), "migrate", "--store", MYSQL_URL], check=True, capture_output=True, timeout=120
    )
    table = f"py_ib_{uuid.uuid4().hex[:10]}"
    conn = _my()
    with conn.cursor() as cur:
        cur.execute(f"CREATE TABLE {table} (k VARCHAR(64) NOT NULL)")

    def handler(c: Any, m: Message) -> bytes:
        with c.cursor() as cur:
            cur.execute(f"INSERT INTO {table} (k) VALUES (%s)", (m.key.decode(),))
        if m.key == b"poison":
            raise PermanentFailure("fails after writing")
        return b"ok"

    for key in ["a", "b", "a", "poison"]:
        await rabbit.publish(key, b"{}")
    settings = Settings(table, KeySource(header="message-id"))
    stats = await run_until(
        rabbit,
        settings,
        MysqlInbox(_my, handler),
        lambda s: s.applied == 2 and s.duplicates == 1 and s.dead_lettered == 1,
    )
    assert (stats.applied, stats.duplicates, stats.dead_lettered) == (2, 1, 1)
    conn.commit()
    with conn.cursor() as cur:
        cur.execute(f"SELECT k, COUNT(*) FROM {table} GROUP BY k ORDER BY k")
        rows = [tuple(r) for r in cur.fetchall()]
        cur.execute(f"DROP TABLE {table}")
    conn.close()
    assert rows == [("a", 1), ("b", 1)]
