"""``@client.idempotent(...)``: run a function once per key and replay its result.

The decorated function's first call for a key begins an idempotency record,
runs, and commits its serialised result; every later call with that key
gets the stored result without running the body. An exception aborts the
record, so a retry runs again. A concurrent duplicate waits for the first
call's result (``on_running="wait"``) or raises :class:`InFlight`.

While the body runs its record's lease is renewed every third of the lease,
so ``lease_ms`` bounds how long a crashed caller holds the key, not how long
the body may run. A renewal that gets ``STALE`` stops renewing: the record is
lost, and the commit's fence check then raises :class:`LeaseExpired`.

Results are JSON. With pydantic installed, the function's return annotation
drives serialisation (pydantic models, dataclasses, lists of them, ...
round-trip); without it, JSON values and top-level dataclasses do.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import inspect
import json
import threading
import typing
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, Literal, ParamSpec, Protocol, TypeVar, overload

from ._bytes import Bin, to_bytes
from .errors import FingerprintMismatch, IdemError, InFlight, LeaseExpired, Mismatch, Stale
from .replies import Begin, Done, Running, Started

P = ParamSpec("P")
T = TypeVar("T")
R = TypeVar("R")
T_co = TypeVar("T_co", covariant=True)

#: LEASE of a call when none is given: how long the key stays held after its
#: caller stops renewing (a crash, a lost connection).
LEASE_MS_DEFAULT = 30_000
#: Shortest LEASE accepted: a renewal must have time to reach the server well
#: before the lease ends.
LEASE_MS_MIN = 300
#: Renewals per lease: a third of the lease apart, so one slow or failed
#: renewal still leaves time for the next before the record is lost.
RENEWALS_PER_LEASE = 3
#: How long a duplicate waits for the first call's outcome, by default: the lease.
#: The server caps any WAIT at five minutes.
WAIT_MS_MAX = 300_000


class SyncBackend(Protocol):
    """What the decorator needs from a synchronous client."""

    def begin(
        self,
        key: Bin,
        *,
        fingerprint: Bin | None = ...,
        lease_ms: int | None = ...,
        wait_ms: int | None = ...,
    ) -> Begin: ...

    def commit(self, key: Bin, fence: int, result: bytes, *, keep_ms: int | None = ...) -> None: ...

    def abort(self, key: Bin, fence: int) -> None: ...

    def idem_renew(self, key: Bin, fence: int, *, lease_ms: int) -> object: ...


class AsyncBackend(Protocol):
    """What the decorator needs from an asynchronous client."""

    async def begin(
        self,
        key: Bin,
        *,
        fingerprint: Bin | None = ...,
        lease_ms: int | None = ...,
        wait_ms: int | None = ...,
    ) -> Begin: ...

    async def commit(self, key: Bin, fence: int, result: bytes, *, keep_ms: int | None = ...) -> None: ...

    async def abort(self, key: Bin, fence: int) -> None: ...

    async def idem_renew(self, key: Bin, fence: int, *, lease_ms: int) -> object: ...


#: Threads that run a sync client's possibly parked IDEM.BEGIN for async functions.
PARKED_THREADS_MAX = 64
#: Threads that run a sync client's COMMIT and ABORT for async functions; a
#: separate pool, so that parked BEGINs can never starve the COMMIT they wait for.
CALL_THREADS_MAX = 8


class _Threaded:
    """Runs a synchronous client's calls in worker threads, so an event loop never blocks on them."""

    _parked: ThreadPoolExecutor | None = None
    _calls: ThreadPoolExecutor | None = None
    _init = threading.Lock()

    def __init__(self, sync: SyncBackend) -> None:
        self._sync = sync
        with _Threaded._init:
            if _Threaded._parked is None:
                _Threaded._parked = ThreadPoolExecutor(PARKED_THREADS_MAX, thread_name_prefix="idem-begin")
                _Threaded._calls = ThreadPoolExecutor(CALL_THREADS_MAX, thread_name_prefix="idem-call")

    @staticmethod
    async def _in(pool: ThreadPoolExecutor | None, fn: Callable[[], R]) -> R:
        return await asyncio.get_running_loop().run_in_executor(pool, fn)

    async def begin(
        self,
        key: Bin,
        *,
        fingerprint: Bin | None = None,
        lease_ms: int | None = None,
        wait_ms: int | None = None,
    ) -> Begin:
        return await self._in(
            _Threaded._parked if wait_ms else _Threaded._calls,
            lambda: self._sync.begin(key, fingerprint=fingerprint, lease_ms=lease_ms, wait_ms=wait_ms),
        )

    async def commit(self, key: Bin, fence: int, result: bytes, *, keep_ms: int | None = None) -> None:
        await self._in(_Threaded._calls, lambda: self._sync.commit(key, fence, result, keep_ms=keep_ms))

    async def abort(self, key: Bin, fence: int) -> None:
        await self._in(_Threaded._calls, lambda: self._sync.abort(key, fence))

    async def idem_renew(self, key: Bin, fence: int, *, lease_ms: int) -> object:
        return await self._in(_Threaded._calls, lambda: self._sync.idem_renew(key, fence, lease_ms=lease_ms))


def renewal_period_s(lease_ms: int) -> float:
    """Seconds between two renewals of a `lease_ms` lease."""
    return lease_ms / RENEWALS_PER_LEASE / 1000


def check_lease_ms(lease_ms: int) -> None:
    """Refuses a lease too short to be renewed in time."""
    if lease_ms < LEASE_MS_MIN:
        raise ValueError(f"lease_ms must be at least {LEASE_MS_MIN}, not {lease_ms}")


async def keep_renewing(renew: Callable[[], Awaitable[object]], lease_ms: int) -> None:
    """Renews a record's lease every third of it until cancelled or the record is lost.

    On ``STALE`` the record is lost: renewing stops and the commit's fence
    check decides. Any other failure is retried at the next period, while the
    last renewal's lease still holds.
    """
    period_s = renewal_period_s(lease_ms)
    while True:
        await asyncio.sleep(period_s)
        try:
            await renew()
        except Stale:
            return
        except (IdemError, OSError):
            continue


class _SyncRenewal:
    """A thread renewing a synchronous call's record while its body runs."""

    def __init__(self, backend: SyncBackend, key: bytes, fence: int, lease_ms: int) -> None:
        self._backend = backend
        self._key = key
        self._fence = fence
        self._lease_ms = lease_ms
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="idem-renew", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        period_s = renewal_period_s(self._lease_ms)
        while not self._stopped.wait(period_s):
            try:
                self._backend.idem_renew(self._key, self._fence, lease_ms=self._lease_ms)
            except Stale:
                return
            except (IdemError, OSError):
                continue

    def stop(self) -> None:
        # Not joined: a renewal still in flight after the COMMIT or ABORT is
        # refused by the fence check and changes nothing.
        self._stopped.set()


# ---------------------------------------------------------------- codecs


class Codec(Protocol[T]):
    """Turns a result into the bytes stored for replays, and back."""

    def encode(self, value: T) -> bytes: ...

    def decode(self, data: bytes) -> T: ...


class JsonCodec:
    """Plain JSON (``json.dumps``); a top-level dataclass is stored as its fields."""

    def __init__(self, dataclass_type: type[Any] | None = None) -> None:
        self._type = dataclass_type

    def encode(self, value: Any) -> bytes:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = dataclasses.asdict(value)
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()

    def decode(self, data: bytes) -> Any:
        value = json.loads(data)
        if self._type is not None:
            return self._type(**value)
        return value


class PydanticCodec:
    """JSON through a pydantic ``TypeAdapter`` of the return annotation."""

    def __init__(self, annotation: Any) -> None:
        from pydantic import TypeAdapter

        self._adapter: Any = TypeAdapter(annotation)

    def encode(self, value: Any) -> bytes:
        data: bytes = self._adapter.dump_json(value)
        return data

    def decode(self, data: bytes) -> Any:
        return self._adapter.validate_json(data)


def codec_for(fn: Callable[..., Any]) -> Codec[Any]:
    """The codec that round-trips `fn`'s return annotation (plain JSON without one)."""
    try:
        annotation = typing.get_type_hints(fn).get("return", Any)
    except (NameError, TypeError):
        annotation = Any
    try:
        return PydanticCodec(annotation)
    except ImportError:
        pass
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        return JsonCodec(annotation)
    return JsonCodec()


# ---------------------------------------------------------------- outcome


@dataclass(frozen=True, slots=True)
class Outcome(Generic[T_co]):
    """A call's result and how it was obtained."""

    value: T_co
    #: True when the body did not run: the result is the stored one.
    replayed: bool
    #: The idempotency key the call used (after the decorator's prefix).
    key: bytes


class _Plan:
    """The settings of one decorated function, and the per-call steps both flavours share."""

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        key: Callable[..., Bin],
        fingerprint: Callable[..., Bin] | None,
        keep_ms: int | None,
        lease_ms: int | None,
        wait_ms: int | None,
        on_running: Literal["wait", "raise"],
        on_replay: Callable[[bytes], None] | None,
        name: str | None,
        codec: Codec[Any] | None,
    ) -> None:
        if on_running not in ("wait", "raise"):
            raise ValueError(f"on_running must be 'wait' or 'raise', not {on_running!r}")
        self.fn = fn
        self._key = key
        self._fingerprint = fingerprint
        self.keep_ms = keep_ms
        self.lease_ms = lease_ms if lease_ms is not None else LEASE_MS_DEFAULT
        check_lease_ms(self.lease_ms)
        if on_running == "raise":
            self.wait_ms: int | None = None
        else:
            self.wait_ms = min(wait_ms if wait_ms is not None else self.lease_ms, WAIT_MS_MAX)
        self._on_replay = on_replay
        self._prefix = (name if name is not None else f"{fn.__module__}.{fn.__qualname__}").encode() + b":"
        self.codec = codec if codec is not None else codec_for(fn)

    def key_of(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
        return self._prefix + to_bytes(self._key(*args, **kwargs))

    def fingerprint_of(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes | None:
        if self._fingerprint is None:
            return None
        # Hashed so that any payload fits the server's key-size bound.
        return hashlib.sha256(to_bytes(self._fingerprint(*args, **kwargs))).hexdigest().encode()

    def replay(self, key: bytes, done: Done) -> Outcome[Any]:
        value = self.codec.decode(done.result)
        if self._on_replay is not None:
            self._on_replay(key)
        return Outcome(value=value, replayed=True, key=key)

    def in_flight(self, key: bytes, running: Running) -> InFlight:
        return InFlight(
            f"{key!r} is being run by another caller ({running.lease_left_ms} ms of lease left)",
            lease_left_ms=running.lease_left_ms,
        )


def _mismatch(key: bytes, error: Mismatch) -> FingerprintMismatch:
    return FingerprintMismatch(f"{key!r} was used with different arguments: {error}")


class SyncIdempotent(Generic[P, T]):
    """A synchronous function made idempotent."""

    def __init__(self, plan: _Plan, backend: SyncBackend) -> None:
        self._plan = plan
        self._backend = backend
        functools.update_wrapper(self, plan.fn)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> T:
        return self.outcome(*args, **kwargs).value

    def outcome(self, *args: P.args, **kwargs: P.kwargs) -> Outcome[T]:
        """Like calling the function, and also says whether the result was replayed."""
        plan = self._plan
        key = plan.key_of(args, kwargs)
        fp = plan.fingerprint_of(args, kwargs)
        try:
            reply = self._backend.begin(key, fingerprint=fp, lease_ms=plan.lease_ms)
            if isinstance(reply, Running) and plan.wait_ms is not None:
                # Only a real duplicate parks (on the client's parking pool).
                reply = self._backend.begin(key, fingerprint=fp, lease_ms=plan.lease_ms, wait_ms=plan.wait_ms)
        except Mismatch as error:
            raise _mismatch(key, error) from error
        if isinstance(reply, Done):
            return plan.replay(key, reply)
        if isinstance(reply, Running):
            raise plan.in_flight(key, reply)
        return self._run(plan, key, reply, args, kwargs)

    def _run(
        self, plan: _Plan, key: bytes, started: Started, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Outcome[T]:
        renewal = _SyncRenewal(self._backend, key, started.fence, plan.lease_ms)
        try:
            value = plan.fn(*args, **kwargs)
            data = plan.codec.encode(value)
        except BaseException:
            renewal.stop()
            _abort_quietly(lambda: self._backend.abort(key, started.fence))
            raise
        renewal.stop()
        try:
            self._backend.commit(key, started.fence, data, keep_ms=plan.keep_ms)
        except Stale as error:
            raise LeaseExpired(f"{key!r}: the lease ran out before the commit", result=value) from error
        return Outcome(value=value, replayed=False, key=key)


class AsyncIdempotent(Generic[P, T]):
    """An async function made idempotent."""

    def __init__(self, plan: _Plan, backend: AsyncBackend) -> None:
        self._plan = plan
        self._backend = backend
        functools.update_wrapper(self, plan.fn)

    async def __call__(self, *args: P.args, **kwargs: P.kwargs) -> T:
        return (await self.outcome(*args, **kwargs)).value

    async def outcome(self, *args: P.args, **kwargs: P.kwargs) -> Outcome[T]:
        """Like awaiting the function, and also says whether the result was replayed."""
        plan = self._plan
        key = plan.key_of(args, kwargs)
        fp = plan.fingerprint_of(args, kwargs)
        try:
            reply = await self._backend.begin(key, fingerprint=fp, lease_ms=plan.lease_ms)
            if isinstance(reply, Running) and plan.wait_ms is not None:
                reply = await self._backend.begin(
                    key, fingerprint=fp, lease_ms=plan.lease_ms, wait_ms=plan.wait_ms
                )
        except Mismatch as error:
            raise _mismatch(key, error) from error
        if isinstance(reply, Done):
            return plan.replay(key, reply)
        if isinstance(reply, Running):
            raise plan.in_flight(key, reply)
        fence = reply.fence
        backend = self._backend
        renewal = asyncio.create_task(
            keep_renewing(lambda: backend.idem_renew(key, fence, lease_ms=plan.lease_ms), plan.lease_ms)
        )
        try:
            value = await plan.fn(*args, **kwargs)
            data = plan.codec.encode(value)
        except BaseException:
            renewal.cancel()
            # Shielded: a cancelled call must still free its record for a retry.
            await _abort_quietly_async(self._backend.abort(key, reply.fence))
            raise
        renewal.cancel()
        try:
            await self._backend.commit(key, reply.fence, data, keep_ms=plan.keep_ms)
        except Stale as error:
            raise LeaseExpired(f"{key!r}: the lease ran out before the commit", result=value) from error
        return Outcome(value=value, replayed=False, key=key)


def _abort_quietly(abort: Callable[[], None]) -> None:
    # The function's own exception is what the caller must see; a failed
    # ABORT only means the record stays in flight until its lease ends.
    with contextlib.suppress(Exception):
        abort()


async def _abort_quietly_async(abort: Awaitable[None]) -> None:
    with contextlib.suppress(Exception):
        await asyncio.shield(abort)


class Decorator:
    """What ``client.idempotent(...)`` returns: apply it to a sync or async function."""

    def __init__(
        self,
        sync: SyncBackend | None,
        async_: AsyncBackend | None,
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
    ) -> None:
        self._sync = sync
        self._async = async_
        self._settings: dict[str, Any] = dict(
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

    @overload
    def __call__(  # type: ignore[overload-overlap]
        self, fn: Callable[P, Coroutine[Any, Any, T]]
    ) -> AsyncIdempotent[P, T]: ...

    @overload
    def __call__(self, fn: Callable[P, T]) -> SyncIdempotent[P, T]: ...

    def __call__(self, fn: Callable[P, Any]) -> SyncIdempotent[P, Any] | AsyncIdempotent[P, Any]:
        plan = _Plan(fn, **self._settings)
        if inspect.iscoroutinefunction(fn):
            if self._async is not None:
                return AsyncIdempotent(plan, self._async)
            assert self._sync is not None
            return AsyncIdempotent(plan, _Threaded(self._sync))
        if self._sync is None:
            raise TypeError(
                f"{fn.__qualname__} is synchronous: decorate it with a Client, not an AsyncClient"
            )
        return SyncIdempotent(plan, self._sync)
