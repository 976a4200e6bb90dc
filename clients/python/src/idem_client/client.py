"""The synchronous client."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from types import TracebackType
from typing import Any, Literal, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from . import _protocol as p
from ._bytes import Bin
from ._protocol import Command
from .idempotent import Codec, Decorator
from .lock import Lock
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

#: Connections for ordinary commands. idem runs one connection's commands in
#: order, so concurrency needs connections; a caller beyond the bound waits
#: for a free one (`pool_timeout_s`).
CONNECTIONS_MAX = 64
#: Connections for commands that may park (IDEM.BEGIN / LOCK with WAIT). They
#: get their own pool so that parked waiters can never take the connections
#: that the COMMIT or UNLOCK they wait for needs. Callers beyond the bound
#: queue for a connection, which frees as soon as the attempt ends.
PARKED_CONNECTIONS_MAX = 256
#: Read timeout of the parking pool: the longest WAIT the server allows (five
#: minutes) plus a margin for the reply to arrive.
PARKED_SOCKET_TIMEOUT_S = 310.0
#: How long a caller waits for a free pooled connection before `Unavailable`.
POOL_TIMEOUT_S = 30.0
#: Connecting, and reading a reply on the ordinary pool, give up after this
#: (`Unavailable`). Set here rather than left to redis-py, whose default
#: before version 6 was to wait forever.
SOCKET_TIMEOUT_S = 5.0


def no_retry() -> Retry:
    """No automatic re-sending of a command whose connection broke."""
    # A command whose connection broke may have been applied: re-sending a
    # COUNTER.ADD or an IDEM.BEGIN blindly could apply it twice or make a
    # caller wait on its own attempt. The caller decides (idempotently).
    return Retry(NoBackoff(), 0)


def socket_timeouts(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The bounded socket timeouts, unless the caller's `kwargs` set their own."""
    return {"socket_timeout": SOCKET_TIMEOUT_S, "socket_connect_timeout": SOCKET_TIMEOUT_S, **kwargs}


def parked_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The parking pool's arguments: the caller's, with a read timeout that outlasts the longest WAIT."""
    # A parked command answers only when its WAIT ends; a shorter read
    # timeout (the caller's, or redis-py's default of a few seconds) would
    # turn a long wait into a false `OutcomeUnknown`.
    return {**kwargs, "socket_timeout": max(PARKED_SOCKET_TIMEOUT_S, kwargs.get("socket_timeout") or 0.0)}


def _pool(url: str, connections_max: int, kwargs: dict[str, Any]) -> redis.BlockingConnectionPool:
    return redis.BlockingConnectionPool.from_url(
        url,
        max_connections=connections_max,
        timeout=POOL_TIMEOUT_S,
        protocol=2,
        retry=no_retry(),
        **socket_timeouts(kwargs),
    )


class Client:
    """A synchronous idem client over redis-py, safe to share between threads.

    Build it with :meth:`from_url`. Every method sends one command and
    returns its reply decoded into the classes of :mod:`idem_client.replies`;
    error replies raise the :class:`~idem_client.IdemError` of their code.
    """

    def __init__(self, conn: redis.Redis, *, parking: redis.Redis | None = None) -> None:
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
    ) -> Client:
        """Connects lazily to ``redis://host:port`` (extra keyword arguments go to redis-py's pool)."""
        conn = redis.Redis(connection_pool=_pool(url, connections_max, kwargs))
        parking = redis.Redis(connection_pool=_pool(url, parked_connections_max, parked_kwargs(kwargs)))
        return cls(conn, parking=parking)

    def close(self) -> None:
        """Closes every pooled connection."""
        self._conn.close()
        if self._parking is not self._conn:
            self._parking.close()
        self._conn.connection_pool.disconnect()
        self._parking.connection_pool.disconnect()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def execute(self, command: Command[R]) -> R:
        """Sends one prepared command and decodes its reply (the layer under every method)."""
        conn = self._parking if command.parks else self._conn
        try:
            raw: object = conn.execute_command(*command.args)  # type: ignore[no-untyped-call]
        except redis.RedisError as error:
            raise p.translate(error) from error
        return command.decode(raw)

    # ------------------------------------------------------------ idempotency keys

    def begin(
        self,
        key: Bin,
        *,
        fingerprint: Bin | None = None,
        lease_ms: int | None = None,
        wait_ms: int | None = None,
    ) -> Begin:
        """IDEM.BEGIN: `Started` (run, then commit/abort), `Running` or `Done`; `Mismatch` on another FP."""
        return self.execute(p.begin(key, fingerprint=fingerprint, lease_ms=lease_ms, wait_ms=wait_ms))

    def commit(self, key: Bin, fence: int, result: bytes, *, keep_ms: int | None = None) -> None:
        """IDEM.COMMIT: stores `result` for replays; `Stale` if the fence is no longer current."""
        self.execute(p.commit(key, fence, result, keep_ms=keep_ms))

    def abort(self, key: Bin, fence: int) -> None:
        """IDEM.ABORT: removes the in-flight record so a retry runs again; `Stale` if not current."""
        self.execute(p.abort(key, fence))

    def idem_renew(self, key: Bin, fence: int, *, lease_ms: int) -> Renewed:
        """IDEM.RENEW: the lease now ends `lease_ms` from now; `Stale` if the fence lost the record."""
        return self.execute(p.idem_renew(key, fence, lease_ms=lease_ms))

    def get(self, key: Bin) -> Record:
        """IDEM.GET: `Absent`, `Running` or `Done`."""
        return self.execute(p.get(key))

    def delete(self, key: Bin) -> bool:
        """IDEM.DEL: True if a record was removed."""
        return self.execute(p.delete(key))

    # ------------------------------------------------------------ claims

    def claim(self, key: Bin, owner: Bin, *, ttl_ms: int | None = None) -> Claim:
        """CLAIM: `Claimed`, or `Held(owner)`."""
        return self.execute(p.claim(key, owner, ttl_ms=ttl_ms))

    def claim_all(self, owner: Bin, keys: Sequence[Bin]) -> ClaimAll:
        """CLAIM.ALL: all or nothing; `HeldAll` lists every conflicting key."""
        return self.execute(p.claim_all(owner, keys))

    def release(self, key: Bin, owner: Bin) -> bool:
        """RELEASE: True if `owner` held the key and released it."""
        return self.execute(p.release(key, owner))

    def owner(self, key: Bin) -> bytes | None:
        """OWNER: the key's owner, or None."""
        return self.execute(p.owner(key))

    # ------------------------------------------------------------ locks

    def lock(
        self,
        name: Bin,
        *,
        lease_ms: int,
        wait_ms: int = 0,
        owner: Bin | None = None,
        on_lost: Callable[[], None] | None = None,
    ) -> Lock:
        """A lock as a context manager, renewed by a watchdog thread at a third of `lease_ms`.

        ``with client.lock("report", lease_ms=3000, wait_ms=1000) as lk:`` gives
        ``lk.fence`` (pass it to every protected write) and ``lk.lost`` (a
        ``threading.Event`` set when renewal fails). Entering raises
        `LockNotAcquired` if the lock stayed held for `wait_ms`.
        """
        return Lock(self, name, lease_ms=lease_ms, wait_ms=wait_ms, owner=owner, on_lost=on_lost)

    def try_lock(self, name: Bin, owner: Bin, *, lease_ms: int, wait_ms: int | None = None) -> LockReply:
        """LOCK: `Acquired(fence)` or `Locked(holder, lease_left_ms)` (no watchdog)."""
        return self.execute(p.lock(name, owner, lease_ms=lease_ms, wait_ms=wait_ms))

    def renew(self, name: Bin, owner: Bin, *, lease_ms: int) -> RenewReply:
        """RENEW: `Renewed(fence)` or `Lost`."""
        return self.execute(p.renew(name, owner, lease_ms=lease_ms))

    def unlock(self, name: Bin, owner: Bin) -> bool:
        """UNLOCK: True if `owner` held the lock."""
        return self.execute(p.unlock(name, owner))

    def lock_info(self, name: Bin) -> LockInfo:
        """LOCK.INFO: `Free` or `LockState`."""
        return self.execute(p.lock_info(name))

    # ------------------------------------------------------------ tokens

    def token_new(self, scope: Bin, *, ttl_ms: int) -> str:
        """TOKEN.NEW: 32 lowercase hex characters, usable once within `ttl_ms`."""
        return self.execute(p.token_new(scope, ttl_ms=ttl_ms))

    def token_use(self, scope: Bin, token: Bin) -> bool:
        """TOKEN.USE: True exactly once per valid token."""
        return self.execute(p.token_use(scope, token))

    # ------------------------------------------------------------ counters

    def counter_add(
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
        return self.execute(p.counter_add(key, delta, min=min, max=max, op=op, keep_ms=keep_ms))

    def counter_get(self, key: Bin) -> int:
        """COUNTER.GET: the value (0 when absent)."""
        return self.execute(p.counter_get(key))

    # ------------------------------------------------------------ versioned values

    def value_get(self, key: Bin) -> Versioned | None:
        """VALUE.GET: `Versioned(value, version)` or None."""
        return self.execute(p.value_get(key))

    def value_set(self, key: Bin, value: Bin, *, if_version: int | None = None) -> ValueSet:
        """VALUE.SET: `Stored(version)` or `Conflict(version)`; `if_version=0` means only if absent."""
        return self.execute(p.value_set(key, value, if_version=if_version))

    # ------------------------------------------------------------ state machines

    def fsm_move(self, key: Bin, to: Bin, *, from_states: Iterable[Bin | None]) -> FsmMove:
        """FSM.MOVE: `Moved`, `Already` or `Disallowed(current)`; None in `from_states` means absent."""
        return self.execute(p.fsm_move(key, to, from_states))

    def fsm_get(self, key: Bin) -> bytes | None:
        """FSM.GET: the state, or None."""
        return self.execute(p.fsm_get(key))

    # ------------------------------------------------------------ slots

    def slots_reserve(
        self, resource: Bin, first: int, last: int, holder: Bin, *, size: int | None = None
    ) -> SlotsReserve:
        """SLOTS.RESERVE: `Reserved`, or `SlotsTaken` listing every conflicting slot."""
        return self.execute(p.slots_reserve(resource, first, last, holder, size=size))

    def slots_release(self, resource: Bin, first: int, last: int, holder: Bin) -> int:
        """SLOTS.RELEASE: how many of the holder's slots were freed."""
        return self.execute(p.slots_release(resource, first, last, holder))

    def slots_get(self, resource: Bin) -> tuple[bytes | None, ...]:
        """SLOTS.GET: each slot's holder (None: free); empty for an unknown resource."""
        return self.execute(p.slots_get(resource))

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
        """Runs the decorated function (sync or async) once per key; see :mod:`idem_client.idempotent`.

        `key` and `fingerprint` get the call's arguments. Keys are scoped by
        `name` (default: the function's module and qualified name).
        """
        return Decorator(
            self,
            None,
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
