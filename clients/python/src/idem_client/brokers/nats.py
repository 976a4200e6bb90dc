"""NATS JetStream (nats-py): a durable pull subscription with explicit acks.

ack → ``+ACK``; redeliver after d → ``-NAK`` with delay d; release → ``-NAK``;
dead letter → the message (headers kept, plus ``Idem-Dead-Letter-Reason`` and
``Idem-Original-Subject``) is
published to the dead-letter subject and stored by its stream, then ``+TERM``.
While the handler runs, ``+WPI`` every ``progress_every_ms``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from nats.aio.msg import Msg
from nats.js.client import JetStreamContext

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

DEAD_LETTER_REASON_HEADER = "Idem-Dead-Letter-Reason"
#: The subject the dead-lettered message was delivered on (the Rust consumer's header too).
DEAD_LETTER_SUBJECT_HEADER = "Idem-Original-Subject"
#: A pull waits this long for messages before asking again (and noticing shutdown).
FETCH_TIMEOUT_S = 1.0


class _JsDelivery:
    def __init__(self, msg: Msg, js: JetStreamContext, dlq: str, progress_every_ms: int) -> None:
        self._msg = msg
        self._js = js
        self._dlq = dlq
        self._every_s = progress_every_ms / 1000

    def key(self, source: KeySource) -> bytes:
        if source.json_field is not None:
            return source.read_body(self._msg.data)
        assert source.header is not None
        value = (self._msg.headers or {}).get(source.header)
        if value is None:
            raise KeyError_(f"the message has no {source.header} header")
        return check(value.encode())

    def payload(self) -> bytes:
        return self._msg.data

    def deliveries(self) -> int:
        return max(1, int(self._msg.metadata.num_delivered or 1))

    async def keep_alive(self) -> None:
        while True:
            await asyncio.sleep(self._every_s)
            await self._msg.in_progress()

    async def settle(self, action: Action) -> None:
        match action:
            case Ack():
                await self._msg.ack()
            case Redeliver(delay_ms=ms):
                await self._msg.nak(delay=ms / 1000)
            case Release():
                await self._msg.nak()
            case DeadLetter(reason=reason):
                headers = dict(self._msg.headers or {})
                headers[DEAD_LETTER_REASON_HEADER] = reason
                headers[DEAD_LETTER_SUBJECT_HEADER] = self._msg.subject
                await self._js.publish(self._dlq, self._msg.data, headers=headers)
                await self._msg.term()


async def consume(
    js: JetStreamContext,
    subscription: Any,
    dead_letter_subject: str,
    settings: Settings,
    process: Process,
    shutdown: asyncio.Event,
    stats: Stats | None = None,
) -> Stats:
    """Consumes a pull `subscription` (``js.pull_subscribe(...)``) until `shutdown` is set."""
    stats = stats if stats is not None else Stats()

    async def deliveries() -> AsyncIterator[Delivery]:
        while not shutdown.is_set():
            try:
                batch: list[Msg] = await subscription.fetch(settings.prefetch, timeout=FETCH_TIMEOUT_S)
            except asyncio.TimeoutError:
                # An empty fetch. nats-py raises its own TimeoutError (a
                # subclass) from some paths and a bare asyncio.TimeoutError
                # from others (2.16's deadline check), so catch the base.
                continue
            for m in batch:
                yield _JsDelivery(m, js, dead_letter_subject, settings.progress_every_ms)

    return await run_deliveries(deliveries(), settings, process, stats, shutdown)
