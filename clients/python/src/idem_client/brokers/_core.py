"""What happens to one message, whatever the broker, and the consuming loop."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..aio import AsyncClient
from ..errors import Stale
from ..replies import Done, Running, Started

#: Keys longer than this are refused: idem's key limit less the consumer's prefix.
KEY_BYTES_MAX = 448
#: The shortest redelivery delay of a key in flight elsewhere.
BUSY_DELAY_MS_MIN = 50


class KeyError_(Exception):
    """The message has no usable key; it is dead-lettered at once."""


class RetryableFailure(Exception):
    """Raised by a handler for a failure worth retrying (after a backoff)."""


class PermanentFailure(Exception):
    """Raised by a handler for a failure never worth retrying: dead-lettered at once."""


@dataclass(frozen=True)
class KeySource:
    """Where the key is read: ``header`` (a header name; ``message-id`` on AMQP is the property)
    or ``json_field`` (a JSON pointer such as ``/order/id``)."""

    header: str | None = None
    json_field: str | None = None

    def __post_init__(self) -> None:
        if (self.header is None) == (self.json_field is None):
            raise ValueError("give exactly one of header= or json_field=")

    def read_body(self, body: bytes) -> bytes:
        """The key from a JSON body (for ``json_field`` sources)."""
        assert self.json_field is not None
        try:
            value: Any = json.loads(body)
        except ValueError as e:
            raise KeyError_("the body is not JSON") from e
        for part in self.json_field.lstrip("/").split("/"):
            if not isinstance(value, dict) or part not in value:
                raise KeyError_(f"the body has no field {self.json_field}")
            value = value[part]
        if isinstance(value, bool) or not isinstance(value, str | int):
            raise KeyError_(f"the field {self.json_field} is neither a string nor a number")
        return check(str(value).encode())


def check(key: bytes) -> bytes:
    """A key read from anywhere: not empty, not too long."""
    if not key:
        raise KeyError_("the key is empty")
    if len(key) > KEY_BYTES_MAX:
        raise KeyError_(f"the key is {len(key)} bytes, more than {KEY_BYTES_MAX}")
    return key


@dataclass(frozen=True)
class Settings:
    """How a consumer treats each message; every bound is checked in ``__post_init__``."""

    name: str
    key: KeySource
    concurrency: int = 32
    prefetch: int = 64
    lease_ms: int = 30_000
    keep_ms: int = 86_400_000
    progress_every_ms: int = 10_000
    backoff_ms: int = 200
    backoff_ms_max: int = 30_000
    deliveries_max: int = 5
    drain_ms: int = 30_000

    def __post_init__(self) -> None:
        day30 = 30 * 86_400_000
        bounds = {
            "name": (len(self.name), 1, 63),
            "concurrency": (self.concurrency, 1, 4_096),
            "prefetch": (self.prefetch, 1, 65_535),
            "lease_ms": (self.lease_ms, 100, day30),
            "keep_ms": (self.keep_ms, 1, day30),
            "progress_every_ms": (self.progress_every_ms, 10, day30),
            "backoff_ms": (self.backoff_ms, 1, day30),
            "backoff_ms_max": (self.backoff_ms_max, self.backoff_ms, day30),
            "deliveries_max": (self.deliveries_max, 1, 1_000),
            "drain_ms": (self.drain_ms, 0, day30),
        }
        for name, (value, lo, hi) in bounds.items():
            if not lo <= value <= hi:
                raise ValueError(f"setting {name} = {value} is outside {lo}..={hi}")

    def idem_key(self, key: bytes) -> bytes:
        """``name:key``: two consumers of one message each apply it once."""
        return self.name.encode() + b":" + key

    def backoff_after(self, deliveries: int) -> int:
        """The wait after the `deliveries`-th failed delivery: doubling, capped."""
        doublings = min(max(deliveries - 1, 0), 32)
        return int(min(self.backoff_ms * (1 << doublings), self.backoff_ms_max))

    def busy_delay(self, left_ms: int) -> int:
        """The delay for a key whose running lease has `left_ms` to go."""
        return max(BUSY_DELAY_MS_MIN, min(left_ms, max(self.backoff_ms_max, BUSY_DELAY_MS_MIN)))


@dataclass(frozen=True)
class Message:
    """A message as the handler sees it: `fence` for fenced resources; `attempt` > 1 means an
    earlier run's lease ran out, maybe halfway through its effects."""

    key: bytes
    payload: bytes
    deliveries: int
    fence: int = 0
    attempt: int = 0


@dataclass(frozen=True)
class Ack:
    """The effect is recorded (now or earlier)."""


@dataclass(frozen=True)
class Redeliver:
    """Deliver again after `delay_ms`."""

    delay_ms: int


@dataclass(frozen=True)
class Release:
    """Give it back unprocessed (shutdown)."""


@dataclass(frozen=True)
class DeadLetter:
    """Send to the dead-letter queue."""

    reason: str


Action = Ack | Redeliver | Release | DeadLetter


@dataclass
class Stats:
    """Outcomes counted by a consumer."""

    applied: int = 0
    duplicates: int = 0
    busy: int = 0
    retried: int = 0
    dead_lettered: int = 0
    released: int = 0


Outcome = tuple[Action, str]  # the action and the Stats field it counts in


def after_failure(settings: Settings, msg: Message, failure: Exception) -> Outcome:
    if isinstance(failure, PermanentFailure):
        return DeadLetter(str(failure)), "dead_lettered"
    if msg.deliveries >= settings.deliveries_max:
        return DeadLetter(f"{msg.deliveries} deliveries, last failure: {failure}"), "dead_lettered"
    return Redeliver(settings.backoff_after(msg.deliveries)), "retried"


class Process(Protocol):
    """One way to keep the records."""

    async def process(self, settings: Settings, msg: Message, stop: asyncio.Event) -> Outcome: ...


Handler = Callable[[Message], Awaitable[bytes]]


class Unguarded:
    """No records: the plain at-least-once consumer (the baseline)."""

    def __init__(self, handler: Handler) -> None:
        self._handler = handler

    async def process(self, settings: Settings, msg: Message, stop: asyncio.Event) -> Outcome:
        try:
            await self._handler(msg)
        except Exception as e:
            return after_failure(settings, msg, e)
        return Ack(), "applied"


class Adapter:
    """Records on an idem server. The effect and the record are two writes: a process that dies
    between them applies the effect again when the lease runs out (use an inbox to close that)."""

    def __init__(self, client: AsyncClient, handler: Handler) -> None:
        self._client = client
        self._handler = handler

    async def process(self, settings: Settings, msg: Message, stop: asyncio.Event) -> Outcome:
        key = settings.idem_key(msg.key)
        try:
            begin = await self._client.begin(key, lease_ms=settings.lease_ms)
        except Exception:
            return Redeliver(settings.backoff_after(msg.deliveries)), "retried"
        if isinstance(begin, Done):
            return Ack(), "duplicates"
        if isinstance(begin, Running):
            return Redeliver(settings.busy_delay(begin.lease_left_ms)), "busy"
        assert isinstance(begin, Started)
        msg = Message(msg.key, msg.payload, msg.deliveries, begin.fence, begin.attempt)
        # The lease is renewed (IDEM.RENEW) every third of it while the handler runs.
        work = asyncio.ensure_future(self._handler(msg))
        renewals = asyncio.ensure_future(self._renew_until_lost(key, begin.fence, settings.lease_ms))
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({work, renewals, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        renewals.cancel()
        if not work.done():
            work.cancel()
            if stop.is_set():
                await self._abort(key, begin.fence)
                return Release(), "released"
            # The claim was lost: this run's commit would be refused; the redelivery decides.
            return Redeliver(settings.backoff_after(msg.deliveries)), "retried"
        try:
            result = work.result()
        except Exception as e:
            await self._abort(key, begin.fence)
            return after_failure(settings, msg, e)
        try:
            await self._client.commit(key, begin.fence, result, keep_ms=settings.keep_ms)
        except Exception:
            # Unknown or refused: the redelivery's BEGIN says whether the record is done.
            return Redeliver(settings.backoff_after(msg.deliveries)), "retried"
        return Ack(), "applied"

    async def _renew_until_lost(self, key: bytes, fence: int, lease_ms: int) -> None:
        """Returns once the fence no longer holds the key; other failures retry at the next tick."""
        while True:
            await asyncio.sleep(lease_ms / 3000)
            try:
                await self._client.idem_renew(key, fence, lease_ms=lease_ms)
            except Stale:
                return
            except Exception:
                continue

    async def _abort(self, key: bytes, fence: int) -> None:
        # On failure the key frees when its lease runs out.
        with contextlib.suppress(Exception):
            await self._client.abort(key, fence)


SqlHandler = Callable[[Any, Message], bytes]


class _SqlInbox:
    """The inbox: the record is written inside the transaction the handler writes through (run in
    a worker thread: psycopg and PyMySQL connections here are synchronous)."""

    def __init__(self, connect: Callable[[], Any], handler: SqlHandler, sql: Any) -> None:
        self._connect = connect
        self._handler = handler
        self._sql = sql

    def _run(self, settings: Settings, msg: Message) -> Outcome:
        key = settings.idem_key(msg.key)
        conn = self._connect()
        try:
            begin = self._sql.begin(conn, key, lease_ms=settings.lease_ms)
            if isinstance(begin, Done):
                conn.rollback()
                return Ack(), "duplicates"
            if isinstance(begin, Running):
                conn.rollback()
                return Redeliver(settings.busy_delay(begin.lease_left_ms)), "busy"
            assert isinstance(begin, Started)
            msg = Message(msg.key, msg.payload, msg.deliveries, begin.fence, begin.attempt)
            try:
                result = self._handler(conn, msg)
            except Exception as e:
                conn.rollback()
                return after_failure(settings, msg, e)
            self._sql.commit(conn, key, begin.fence, result, keep_ms=settings.keep_ms)
            conn.commit()
            return Ack(), "applied"
        except Exception:
            # Unknown outcome: the redelivery's BEGIN finds the record or not.
            return Redeliver(settings.backoff_after(msg.deliveries)), "retried"
        finally:
            conn.close()

    async def process(self, settings: Settings, msg: Message, stop: asyncio.Event) -> Outcome:
        return await asyncio.to_thread(self._run, settings, msg)


class PostgresInbox(_SqlInbox):
    """The inbox in PostgreSQL (psycopg 3): `connect()` returns a new connection, `handler(conn,
    msg)` writes through it without committing and returns the result to store."""

    def __init__(self, connect: Callable[[], Any], handler: SqlHandler) -> None:
        from ..sql import postgres

        super().__init__(connect, handler, postgres)


class MysqlInbox(_SqlInbox):
    """The inbox in MySQL / MariaDB (PyMySQL), as :class:`PostgresInbox`."""

    def __init__(self, connect: Callable[[], Any], handler: SqlHandler) -> None:
        from ..sql import mysql

        super().__init__(connect, handler, mysql)


class Delivery(Protocol):
    """One delivery, as a broker module hands it to :func:`run_deliveries`."""

    def key(self, source: KeySource) -> bytes: ...
    def payload(self) -> bytes: ...
    def deliveries(self) -> int: ...
    async def keep_alive(self) -> None: ...
    async def settle(self, action: Action) -> None: ...


@dataclass
class _Loop:
    settings: Settings
    process: Process
    stats: Stats
    stop: asyncio.Event = field(default_factory=asyncio.Event)


async def _one(loop: _Loop, d: Delivery) -> None:
    try:
        key = d.key(loop.settings.key)
    except KeyError_ as e:
        await _settle(loop, d, (DeadLetter(str(e)), "dead_lettered"))
        return
    keep = asyncio.ensure_future(d.keep_alive())
    try:
        outcome = await loop.process.process(
            loop.settings, Message(key, d.payload(), d.deliveries()), loop.stop
        )
    finally:
        keep.cancel()
    await _settle(loop, d, outcome)


async def _settle(loop: _Loop, d: Delivery, outcome: Outcome) -> None:
    action, counter = outcome
    # Unsettled: the broker redelivers, and the record answers.
    with contextlib.suppress(Exception):
        await d.settle(action)
    setattr(loop.stats, counter, getattr(loop.stats, counter) + 1)


def _finished(
    tasks: set[asyncio.Task[None]], slots: asyncio.Semaphore
) -> Callable[[asyncio.Task[None]], None]:
    def done(t: asyncio.Task[None]) -> None:
        tasks.discard(t)
        slots.release()

    return done


async def run_deliveries(
    deliveries: AsyncIterator[Delivery],
    settings: Settings,
    process: Process,
    stats: Stats,
    shutdown: asyncio.Event,
) -> Stats:
    """Takes a delivery when a handler slot is free, until `shutdown` is set; then lets running
    handlers finish for `drain_ms` and releases the rest."""
    loop = _Loop(settings, process, stats)
    slots = asyncio.Semaphore(settings.concurrency)
    tasks: set[asyncio.Task[None]] = set()
    down = asyncio.ensure_future(shutdown.wait())
    while not shutdown.is_set():
        slot = asyncio.ensure_future(slots.acquire())
        await asyncio.wait({slot, down}, return_when=asyncio.FIRST_COMPLETED)
        if not slot.done():
            slot.cancel()
            break
        nxt = asyncio.ensure_future(anext(deliveries))
        await asyncio.wait({nxt, down}, return_when=asyncio.FIRST_COMPLETED)
        if not nxt.done():
            nxt.cancel()
            slots.release()
            break
        try:
            d = nxt.result()
        except StopAsyncIteration:
            slots.release()
            break
        task = asyncio.create_task(_one(loop, d))
        tasks.add(task)
        task.add_done_callback(_finished(tasks, slots))
    down.cancel()
    if tasks:
        _, pending = await asyncio.wait(set(tasks), timeout=settings.drain_ms / 1000)
        if pending:
            loop.stop.set()
            await asyncio.wait(pending)
    return stats
