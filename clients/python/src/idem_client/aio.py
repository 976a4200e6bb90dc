"""The asynchronous client (asyncio)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import Any, Literal, TypeVar

import redis
import redis.asyncio
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff

from . import _protocol as p
from ._bytes import Bin
from ._protocol import Command
from .client import (
    CONNECTIONS_MAX,
    PARKED_CONNECTIONS_MAX,
    POOL_TIMEOUT_S,
    parked_kwargs,
    socket_timeouts,
)
from .idempotent import Codec, Decorator
from .lock import AsyncLock
from .replies import (
    Begin,
    Claim,
    ClaimAll,
    CounterAdd,
    FsmMove,
    LockInfo,
    LockReply,
    Record,
    Renewed,
    RenewReply,
    SlotsReserve,
    ValueSet,
    Versioned,
)

R = TypeVar("R")


def no_retry() -> AsyncRetry:
    """No automatic re-sending of a command whose connection broke (as `client.no_retry`)."""
    # The asyncio pool takes asyncio's Retry; given the synchronous one,
    # redis-py converts it with a warning on every pool it builds.
    return AsyncRetry(NoBackoff(), 0)


def _pool(url: str, connections_max: int, kwargs: dict[str, Any]) -> redis.asyncio.BlockingConnectionPool:
    return redis.asyncio.BlockingConnectionPool.from_url(
        url,
        max_connections=connections_max,
        timeout=POOL_TIMEOUT_S,
        protocol=2,
        retry=no_retry(),
        **socket_timeouts(kwargs),
    )


class AsyncClient:
    """An asyncio idem client over redis-py, safe to share between tasks of one event loop.

    Build it with :meth:`from_url`. Every method sends one command and
    returns its reply decoded into the classes of :mod:`idem_client.replies`;
    error replies raise the :class:`~idem_client.IdemError` of their code.
    """

    def __init__(self, conn: redis.asyncio.Redis, *, parking: redis.asyncio.Redis | None = None) -> None:
        """Wraps existing redis-py clients; `parking` serves commands that may park (default: `conn`)."""
        self._conn = conn
        self._parking = parking if parking is not None else conn

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        connections_max: int = CONNECTIONS_MAX,
        parked_connections_max: int = PARKED_CONNECTIONS_MAX,
        **kwargs: Any,
    ) -> AsyncClient:
        """Connects lazily to ``redis://host:port`` (extra keyword arguments go to redis-py's pool)."""
        conn = redis.asyncio.Redis(connection_pool=_pool(url, connections_max, kwargs))
        parked = _pool(url, parked_connections_max, parked_kwargs(kwargs))
        parking = redis.asyncio.Redis(connection_pool=parked)
        return cls(conn, parking=parking)

    async def close(self) -> None:
        """Closes every pooled connection."""
        await self._conn.aclose()
        if self._parking is not self._conn:
            await self._parking.aclose()
        await self._conn.connection_pool.disconnect()
        await self._parking.connection_pool.disconnect()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def execute(self, command: Command[R]) -> R:
        """Sends one prepared command and decodes its reply (the layer under every method)."""
        conn = self._parking if command.parks else self._conn
        try:
            raw: object = await conn.execute_command(*command.args)  # type: ignore[no-untyped-call]
        except redis.RedisError as error:
            raise p.translate(error) from error
        return command.decode(raw)

    # ------------------------------------------------------------ idempotency keys

    async def begin(
        self,
        key: Bin,
        *,
        fingerprint: Bin | None = None,
        lease_ms: int | None = None,
        wait_ms: int | None = None,
    ) -> Begin:
        """IDEM.BEGIN: `Started` (run, then commit/abort), `Running` or `Done`; `Mismatch` on another FP."""
        return await self.execute(p.begin(key, fingerprint=fingerprint, lease_ms=lease_ms, wait_ms=wait_ms))

    async def commit(self, key: Bin, fence: int, result: bytes, *, keep_ms: int | None = None) -> None:
        """IDEM.COMMIT: stores `result` for replays; `Stale` if the fence is no longer current."""
        await self.execute(p.commit(key, fence, result, keep_ms=keep_ms))

    async def abort(self, key: Bin, fence: int) -> None:
        """IDEM.ABORT: removes the in-flight record so a retry runs again; `Stale` if not current."""
        await self.execute(p.abort(key, fence))

    async def idem_renew(self, key: Bin, fence: int, *, lease_ms: int) -> Renewed:
        """IDEM.RENEW: the lease now ends `lease_ms` from now; `Stale` if the fence lost the record."""
        return await self.execute(p.idem_renew(key, fence, lease_ms=lease_ms))

    async def get(self, key: Bin) -> Record:
        """IDEM.GET: `Absent`, `Running` or `Done`."""
        return await self.execute(p.get(key))

    async def delete(self, key: Bin) -> bool:
        """IDEM.DEL: True if a record was removed."""
        return await self.execute(p.delete(key))

    # ------------------------------------------------------------ claims

    async def claim(self, key: Bin, owner: Bin, *, ttl_ms: int | None = None) -> Claim:
        """CLAIM: `Claimed`, or `Held(owner)`."""
        return await self.execute(p.claim(key, owner, ttl_ms=ttl_ms))

    async def claim_all(self, owner: Bin, keys: Sequence[Bin]) -> ClaimAll:
        """CLAIM.ALL: all or nothing; `HeldAll` lists every conflicting key."""
        return await self.execute(p.claim_all(owner, keys))

    async def release(self, key: Bin, owner: Bin) -> bool:
        """RELEASE: True if `owner` held the key and released it."""
        return await self.execute(p.release(key, owner))

    async def owner(self, key: Bin) -> bytes | None:
        """OWNER: the key's owner, or None."""
        return await self.execute(p.owner(key))

    # ------------------------------------------------------------ locks

    def lock(
        self,
        name: Bin,
        *,
        lease_ms: int,
        wait_ms: int = 0,
        owner: Bin | None = None,
        on_lost: Callable[[], None] | None = None,
    ) -> AsyncLock:
        """A lock as an async context manager, renewed by a watchdog task at a third of `lease_ms`.

        ``async with client.lock("report", lease_ms=3000, wait_ms=1000) as lk:``
        gives ``lk.fence`` (pass it to every protected write) and ``lk.lost``
        (an ``asyncio.Event`` set when renewal fails). Entering raises
        `LockNotAcquired` if the lock stayed held for `wait_ms`.
        """
        return AsyncLock(self, name, lease_ms=lease_ms, wait_ms=wait_ms, owner=owner, on_lost=on_lost)

    async def try_lock(
        self, name: Bin, owner: Bin, *, lease_ms: int, wait_ms: int | None = None
    ) -> LockReply:
        """LOCK: `Acquired(fence)` or `Locked(holder, lease_left_ms)` (no watchdog)."""
        return await self.execute(p.lock(name, owner, lease_ms=lease_ms, wait_ms=wait_ms))

    async def renew(self, name: Bin, owner: Bin, *, lease_ms: int) -> RenewReply:
        """RENEW: `Renewed(fence)` or `Lost`."""
        return await self.execute(p.renew(name, owner, lease_ms=lease_ms))

    async def unlock(self, name: Bin, owner: Bin) -> bool:
        """UNLOCK: True if `owner` held the lock."""
        return await self.execute(p.unlock(name, owner))

    async def lock_info(self, name: Bin) -> LockInfo:
        """LOCK.INFO: `Free` or `LockState`."""
        return await self.execute(p.lock_info(name))

    # ------------------------------------------------------------ tokens

    async def token_new(self, scope: Bin, *, ttl_ms: int) -> str:
        """TOKEN.NEW: 32 lowercase hex characters, usable once within `ttl_ms`."""
        return await self.execute(p.token_new(scope, ttl_ms=ttl_ms))

    async def token_use(self, scope: Bin, token: Bin) -> bool:
        """TOKEN.USE: True exactly once per valid token."""
        return await self.execute(p.token_use(scope, token))

    # ------------------------------------------------------------ counters

    async def counter_add(
        self,
        key: Bin,
        delta: int,
        min: int | None = None,
        max: int | None = None,
        op: Bin | None = None,
        *,
        keep_ms: int | None = None,
    ) -> CounterAdd:
        """COUNTER.ADD: `Applied`, `Refused` (bounds or overflow) or `Replayed` (op id seen)."""
        return await self.execute(p.counter_add(key, delta, min=min, max=max, op=op, keep_ms=keep_ms))

    async def counter_get(self, key: Bin) -> int:
        """COUNTER.GET: the value (0 when absent)."""
        return await self.execute(p.counter_get(key))

    # ------------------------------------------------------------ versioned values

    async def value_get(self, key: Bin) -> Versioned | None:
        """VALUE.GET: `Versioned(value, version)` or None."""
        return await self.execute(p.value_get(key))

    async def value_set(self, key: Bin, value: Bin, *, if_version: int | None = None) -> ValueSet:
        """VALUE.SET: `Stored(version)` or `Conflict(version)`; `if_version=0` means only if absent."""
        return await self.execute(p.value_set(key, value, if_version=if_version))

    # ------------------------------------------------------------ state machines

    async def fsm_move(self, key: Bin, to: Bin, *, from_states: Iterable[Bin | None]) -> FsmMove:
        """FSM.MOVE: `Moved`, `Already` or `Disallowed(current)`; None in `from_states` means absent."""
        return await self.execute(p.fsm_move(key, to, from_states))

    async def fsm_get(self, key: Bin) -> bytes | None:
        """FSM.GET: the state, or None."""
        return await self.execute(p.fsm_get(key))

    # ------------------------------------------------------------ slots

    async def slots_reserve(
        self, resource: Bin, first: int, last: int, holder: Bin, *, size: int | None = None
    ) -> SlotsReserve:
        """SLOTS.RESERVE: `Reserved`, or `SlotsTaken` listing every conflicting slot."""
        return await self.execute(p.slots_reserve(resource, first, last, holder, size=size))

    async def slots_release(self, resource: Bin, first: int, last: int, holder: Bin) -> int:
        """SLOTS.RELEASE: how many of the holder's slots were freed."""
        return await self.execute(p.slots_release(resource, first, last, holder))

    async def slots_get(self, resource: Bin) -> tuple[bytes | None, ...]:
        """SLOTS.GET: each slot's holder (None: free); empty for an unknown resource."""
        return await self.execute(p.slots_get(resource))

    # ------------------------------------------------------------ the decorator

    def idempotent(
        self,
        *,
        key: Callable[..., Bin],
        fingerprint: Callable[..., Bin] | None = None,
        keep_ms: int | None = None,
        lease_ms: int | None = None,
        wait_ms: int | None = None,
        on_running: Literal["wait", "raise"] = "wait",
        on_replay: Callable[[bytes], None] | None = None,
        name: str | None = None,
        codec: Codec[Any] | None = None,
    ) -> Decorator:
        """Runs the decorated async function once per key; see :mod:`idem_client.idempotent`.

        `key` and `fingerprint` get the call's arguments. Keys are scoped by
        `name` (default: the function's module and qualified name).
        """
        return Decorator(
            None,
            self,
            key=key,
            fingerprint=fingerprint,
            keep_ms=keep_ms,
            lease_ms=lease_ms,
            wait_ms=wait_ms,
            on_running=on_running,
            on_replay=on_replay,
            name=name,
            codec=codec,
        )
