"""RabbitMQ (aio-pika): manual acks on a queue declared by :func:`declare_queue`.

ack → ``basic.ack``; redeliver after d → a copy (with ``x-idem-deliveries``) to the delay
queue of the smallest tier ≥ d, confirmed by the broker, then the original acked (the
delay queue's TTL dead-letters it back to the work queue); release → ``basic.nack``
with requeue; dead letter → ``basic.reject`` without requeue (the queue's DLX routes it
to ``<queue>.dlq``). The same queues as the Rust crate, so both can share them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from ._core import (
    Ack,
    Action,
    DeadLetter,
    Delivery,
    KeyError_,
    KeySource,
    Process,
    Redeliver,
    Release,
    Settings,
    Stats,
    check,
    run_deliveries,
)

DELIVERIES_HEADER = "x-idem-deliveries"
DELAY_TIERS_MS_DEFAULT = (100, 1_000, 10_000, 60_000)
#: RabbitMQ's own delivery limit on the work queue: the backstop for a message whose
#: consumer dies each time it runs it.
QUEUE_DELIVERY_LIMIT = 20


def dlq_name(queue: str) -> str:
    return f"{queue}.dlq"


def delay_queue_name(queue: str, ms: int) -> str:
    return f"{queue}.delay-{ms}ms"


async def declare_queue(channel: AbstractChannel, queue: str) -> None:
    """The durable quorum queue `queue`, dead-lettering to ``<queue>.dlq``."""
    quorum: dict[str, Any] = {"x-queue-type": "quorum"}
    await channel.declare_queue(dlq_name(queue), durable=True, arguments=quorum)
    args = {
        **quorum,
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": dlq_name(queue),
        "x-delivery-limit": QUEUE_DELIVERY_LIMIT,
    }
    await channel.declare_queue(queue, durable=True, arguments=args)


async def delete_queue(channel: AbstractChannel, queue: str, tiers: Sequence[int]) -> None:
    for name in [queue, dlq_name(queue), *(delay_queue_name(queue, t) for t in tiers)]:
        await channel.queue_delete(name)


class _AmqpDelivery:
    def __init__(self, msg: AbstractIncomingMessage, publish: AbstractChannel, queue: str, tiers: list[int]):
        self._msg = msg
        self._publish = publish
        self._queue = queue
        self._tiers = tiers

    def key(self, source: KeySource) -> bytes:
        if source.json_field is not None:
            return source.read_body(self._msg.body)
        assert source.header is not None
        if source.header.lower() == "message-id":
            if not self._msg.message_id:
                raise KeyError_("the message has no message-id")
            return check(self._msg.message_id.encode())
        value = (self._msg.headers or {}).get(source.header)
        if isinstance(value, bytes):
            return check(value)
        if isinstance(value, str):
            return check(value.encode())
        raise KeyError_(f"the message has no {source.header} header")

    def payload(self) -> bytes:
        return self._msg.body

    def deliveries(self) -> int:
        headers = self._msg.headers or {}
        counts = [headers.get(DELIVERIES_HEADER), headers.get("x-delivery-count")]
        return max([c for c in counts if isinstance(c, int)], default=0) + 1

    async def keep_alive(self) -> None:
        return None  # RabbitMQ has no per-message ack timer to renew

    async def settle(self, action: Action) -> None:
        match action:
            case Ack():
                await self._msg.ack()
            case Release():
                await self._msg.nack(requeue=True)
            case DeadLetter():
                await self._msg.reject(requeue=False)
            case Redeliver(delay_ms=ms):
                tier = next((t for t in self._tiers if t >= ms), self._tiers[-1])
                headers = dict(self._msg.headers or {})
                headers[DELIVERIES_HEADER] = self.deliveries()
                copy = aio_pika.Message(
                    self._msg.body,
                    headers=headers,
                    message_id=self._msg.message_id,
                    content_type=self._msg.content_type,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                )
                # The publish channel has publisher confirms: this returns once stored.
                await self._publish.default_exchange.publish(
                    copy, routing_key=delay_queue_name(self._queue, tier)
                )
                await self._msg.ack()


async def consume(
    connection: aio_pika.abc.AbstractConnection,
    queue: str,
    settings: Settings,
    process: Process,
    shutdown: asyncio.Event,
    delay_tiers_ms: Sequence[int] = DELAY_TIERS_MS_DEFAULT,
    stats: Stats | None = None,
) -> Stats:
    """Consumes `queue` until `shutdown` is set, then drains and closes its channels."""
    tiers = sorted(set(delay_tiers_ms))
    if not tiers or tiers[0] <= 0 or len(tiers) > 16:
        raise ValueError(f"delay tiers must be 1..=16 durations above 0 ms, got {delay_tiers_ms!r}")
    stats = stats if stats is not None else Stats()
    consuming = await connection.channel()
    publishing = await connection.channel(publisher_confirms=True)
    for t in tiers:
        args: dict[str, Any] = {
            "x-message-ttl": t,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": queue,
        }
        await publishing.declare_queue(delay_queue_name(queue, t), durable=True, arguments=args)
    await consuming.set_qos(prefetch_count=settings.prefetch)
    q = await consuming.get_queue(queue, ensure=False)
    incoming: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
    tag = await q.consume(incoming.put)

    async def deliveries() -> AsyncIterator[Delivery]:
        while True:
            yield _AmqpDelivery(await incoming.get(), publishing, queue, tiers)

    try:
        return await run_deliveries(deliveries(), settings, process, stats, shutdown)
    finally:
        await q.cancel(tag)
        # Closing the channel gives every message sent ahead back to the queue.
        await consuming.close()
        await publishing.close()
