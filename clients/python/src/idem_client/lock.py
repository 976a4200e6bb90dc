"""Locks with a watchdog: the lease is renewed at a third of its length while held.

A watchdog cannot make a lock safe on its own: a paused process (GC, swap,
SIGSTOP) or a slow network lets the lease run out while its holder still
runs. So a lock exposes three things:

- ``fence``: the number every protected resource must check (refuse any
  fence lower than the highest it has seen). This is the real guarantee.
- ``lost``: an event set as soon as the holder knows it lost the lock (a
  renewal answered ``lost``, or failed until the lease must have ended),
  plus an optional ``on_lost`` callback.
- ``held`` / ``check()``: False / `LockLost` once ``lost`` is set *or* the
  lease has passed by the holder's own monotonic clock, counted from before
  the last successful request was sent; so a holder that was paused past
  its lease stops believing it holds the lock even before the watchdog
  wakes up. A lost lock is never renewed again.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Protocol

from ._bytes import Bin, to_bytes
from .errors import IdemError, LockLost, LockNotAcquired
from .replies import Acquired, Locked, LockReply, Renewed, RenewReply

#: Renewals per lease: renewing at a third leaves two renewal attempts
#: before the lease runs out if one fails.
RENEWALS_PER_LEASE = 3
#: The shortest lease a watchdog can keep up with (renewing every 10 ms).
LEASE_MS_MIN = 30


class SyncLockBackend(Protocol):
    def try_lock(self, name: Bin, owner: Bin, *, lease_ms: int, wait_ms: int | None = ...) -> LockReply: ...

    def renew(self, name: Bin, owner: Bin, *, lease_ms: int) -> RenewReply: ...

    def unlock(self, name: Bin, owner: Bin) -> bool: ...


class AsyncLockBackend(Protocol):
    async def try_lock(
        self, name: Bin, owner: Bin, *, lease_ms: int, wait_ms: int | None = ...
    ) -> LockReply: ...

    async def renew(self, name: Bin, owner: Bin, *, lease_ms: int) -> RenewReply: ...

    async def unlock(self, name: Bin, owner: Bin) -> bool: ...


class _LockState:
    """What both lock flavours track: the fence, the local deadline, and whether the lock is lost."""

    def __init__(
        self, name: Bin, *, lease_ms: int, wait_ms: int, owner: Bin | None, on_lost: Callable[[], None] | None
    ) -> None:
        if lease_ms < LEASE_MS_MIN:
            raise ValueError(f"lease_ms must be at least {LEASE_MS_MIN}, got {lease_ms}")
        if wait_ms < 0:
            raise ValueError(f"wait_ms must not be negative, got {wait_ms}")
        self.name = to_bytes(name)
        self.owner = to_bytes(owner) if owner is not None else secrets.token_hex(16).encode()
        self.lease_ms = lease_ms
        self.wait_ms = wait_ms
        self._on_lost = on_lost
        self._fence: int | None = None
        self._valid_until_s = 0.0
        self._lost_flag = False
        self._over = False
        self._mutex = threading.Lock()

    @property
    def interval_s(self) -> float:
        return self.lease_ms / RENEWALS_PER_LEASE / 1000

    def granted(self, reply: LockReply, sent_s: float) -> int:
        if isinstance(reply, Locked):
            raise LockNotAcquired(
                f"lock {self.name!r} is held by {reply.holder!r} for {reply.lease_left_ms} ms more",
                holder=reply.holder,
                lease_left_ms=reply.lease_left_ms,
            )
        assert isinstance(reply, Acquired)
        self._fence = reply.fence
        self._valid_until_s = sent_s + self.lease_ms / 1000
        return reply.fence

    def renewed(self, reply: RenewReply, sent_s: float) -> bool:
        """Records a renewal's outcome; False when the lock is lost."""
        if isinstance(reply, Renewed):
            # A renewal never changes the fence; a different one would mean two grants.
            assert reply.fence == self._fence, f"fence changed on renewal: {self._fence} -> {reply.fence}"
            with self._mutex:
                if not self._over:
                    self._valid_until_s = sent_s + self.lease_ms / 1000
            return True
        return False

    def expired(self) -> bool:
        return time.monotonic() >= self._valid_until_s

    @property
    def fence(self) -> int:
        if self._fence is None:
            raise LockLost(f"lock {self.name!r} was never acquired")
        return self._fence

    def is_held(self) -> bool:
        if self._fence is None or self._over:
            return False
        if self.expired():
            self.mark_lost()
            return False
        return True

    def mark_lost(self) -> bool:
        """Marks the lock lost; True for the first caller (who then signals it)."""
        with self._mutex:
            if self._lost_flag:
                return False
            self._lost_flag = True
            self._over = True
            self._valid_until_s = 0.0
        if self._on_lost is not None:
            with contextlib.suppress(Exception):
                self._on_lost()
        return True

    def end(self) -> None:
        """The holder releases the lock: no longer held, but not lost."""
        with self._mutex:
            self._over = True
            self._valid_until_s = 0.0

    @property
    def was_lost(self) -> bool:
        return self._lost_flag


class _Holding:
    """What both lock flavours expose without I/O: fence, owner, ``held``, ``check()``."""

    _state: _LockState
    #: Set when the holder learns the lock is lost.
    lost: threading.Event | asyncio.Event

    @property
    def fence(self) -> int:
        """The fence of this holding: pass it to every protected write."""
        return self._state.fence

    @property
    def owner(self) -> bytes:
        """The owner token this lock object sends (random unless given)."""
        return self._state.owner

    @property
    def held(self) -> bool:
        """False once lost, or once the lease has passed on this process's clock."""
        held = self._state.is_held()
        if not held and self._state.was_lost:
            self.lost.set()
        return held

    def check(self) -> None:
        """Raises `LockLost` unless the lock is still held; call it before each protected step."""
        if not self.held:
            raise LockLost(f"lock {self._state.name!r} is no longer held")

    def _lose(self) -> None:
        self._state.mark_lost()
        self.lost.set()


class Lock(_Holding):
    """A lock held inside a ``with`` block, renewed by a daemon thread."""

    def __init__(
        self,
        backend: SyncLockBackend,
        name: Bin,
        *,
        lease_ms: int,
        wait_ms: int = 0,
        owner: Bin | None = None,
        on_lost: Callable[[], None] | None = None,
    ) -> None:
        self._backend = backend
        self._state = _LockState(name, lease_ms=lease_ms, wait_ms=wait_ms, owner=owner, on_lost=on_lost)
        #: Set when the holder learns the lock is lost.
        self.lost: threading.Event = threading.Event()
        self._stop = threading.Event()
        self._watchdog: threading.Thread | None = None

    def acquire(self) -> int:
        """LOCK (waiting up to `wait_ms`), then starts the watchdog; returns the fence."""
        if self._watchdog is not None:
            raise RuntimeError("this Lock object is already in use; create one per holding")
        s = self._state
        sent_s = time.monotonic()
        fence = s.granted(
            self._backend.try_lock(s.name, s.owner, lease_ms=s.lease_ms, wait_ms=s.wait_ms), sent_s
        )
        self._watchdog = threading.Thread(target=self._watch, name=f"idem-lock-{s.name!r}", daemon=True)
        self._watchdog.start()
        return fence

    def release(self) -> bool:
        """Stops the watchdog and UNLOCKs; True if the lock was still ours."""
        self._stop.set()
        if self._watchdog is not None and self._watchdog is not threading.current_thread():
            self._watchdog.join()
        if self._state.was_lost:
            return False
        self._state.end()
        return self._backend.unlock(self._state.name, self._state.owner)

    def _watch(self) -> None:
        s = self._state
        while not self._stop.wait(s.interval_s):
            sent_s = time.monotonic()
            try:
                reply = self._backend.renew(s.name, s.owner, lease_ms=s.lease_ms)
            except IdemError:
                # Unreachable for now: keep trying while the lease may still be ours.
                if s.expired():
                    self._lose()
                    return
                continue
            if self._stop.is_set():
                return
            if not s.renewed(reply, sent_s):
                self._lose()
                return

    def __enter__(self) -> Lock:
        self.acquire()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self.release()
        except IdemError:
            # Do not hide the block's own exception; the lease ends by itself.
            if t is None:
                raise


class AsyncLock(_Holding):
    """A lock held inside an ``async with`` block, renewed by an asyncio task.

    The task runs on the event loop: a loop blocked longer than a third of
    the lease delays renewals (``held`` still turns False on time).
    """

    def __init__(
        self,
        backend: AsyncLockBackend,
        name: Bin,
        *,
        lease_ms: int,
        wait_ms: int = 0,
        owner: Bin | None = None,
        on_lost: Callable[[], None] | None = None,
    ) -> None:
        self._backend = backend
        self._state = _LockState(name, lease_ms=lease_ms, wait_ms=wait_ms, owner=owner, on_lost=on_lost)
        #: Set when the holder learns the lock is lost.
        self.lost: asyncio.Event = asyncio.Event()
        self._watchdog: asyncio.Task[None] | None = None

    async def acquire(self) -> int:
        """LOCK (waiting up to `wait_ms`), then starts the watchdog; returns the fence."""
        if self._watchdog is not None:
            raise RuntimeError("this AsyncLock object is already in use; create one per holding")
        s = self._state
        sent_s = time.monotonic()
        reply = await self._backend.try_lock(s.name, s.owner, lease_ms=s.lease_ms, wait_ms=s.wait_ms)
        fence = s.granted(reply, sent_s)
        self._watchdog = asyncio.get_running_loop().create_task(self._watch())
        return fence

    async def release(self) -> bool:
        """Stops the watchdog and UNLOCKs; True if the lock was still ours."""
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
        if self._state.was_lost:
            return False
        self._state.end()
        return await self._backend.unlock(self._state.name, self._state.owner)

    async def _watch(self) -> None:
        s = self._state
        while True:
            await asyncio.sleep(s.interval_s)
            sent_s = time.monotonic()
            try:
                reply = await self._backend.renew(s.name, s.owner, lease_ms=s.lease_ms)
            except IdemError:
                if s.expired():
                    self._lose()
                    return
                continue
            if not s.renewed(reply, sent_s):
                self._lose()
                return

    async def __aenter__(self) -> AsyncLock:
        await self.acquire()
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            await self.release()
        except IdemError:
            if t is None:
                raise
