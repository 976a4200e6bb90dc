"""Locks with a watchdog: held past their lease while the holder lives, lost when it pauses."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import PATIENCE_S
from fenced import fenced_write

from idem_client import Acquired, AsyncClient, Client, Free, Locked, LockLost, LockNotAcquired, LockState

#: Lease of the watchdog tests: short, so several renewals happen in a short test, and
#: long enough that a renewal every third of it keeps up on a loaded machine.
LEASE_MS = 900


def test_a_lease_shorter_than_the_work_stays_held(client: Client, run: str) -> None:
    name = run + "lock"
    with client.lock(name, lease_ms=LEASE_MS) as lk:
        fence = lk.fence
        for _ in range(8):  # about four leases
            time.sleep(LEASE_MS / 2000)
            other = client.try_lock(name, "intruder", lease_ms=LEASE_MS)
            assert isinstance(other, Locked) and other.holder == lk.owner
            assert lk.held and not lk.lost.is_set()
        info = client.lock_info(name)
        assert isinstance(info, LockState) and info.fence == fence
    assert client.lock_info(name) == Free()
    assert not lk.held


def test_renewal_failure_sets_lost_and_calls_back(client: Client, run: str) -> None:
    name = run + "lock"
    called = threading.Event()
    with client.lock(name, lease_ms=LEASE_MS, on_lost=called.set) as lk:
        # Someone with the owner token ends the holding behind the watchdog's back.
        assert client.unlock(name, lk.owner)
        assert lk.lost.wait(PATIENCE_S)
        assert called.is_set()
        assert not lk.held
        with pytest.raises(LockLost):
            lk.check()
        taken = client.try_lock(name, "next", lease_ms=10_000)
        assert isinstance(taken, Acquired) and taken.fence > lk.fence
    # Leaving the block did not unlock the next holder's lock.
    info = client.lock_info(name)
    assert isinstance(info, LockState) and info.owner == b"next"


def test_wait_and_not_acquired(client: Client, run: str) -> None:
    name = run + "lock"
    with client.lock(name, lease_ms=10_000) as first:
        with pytest.raises(LockNotAcquired) as info:
            client.lock(name, lease_ms=10_000, wait_ms=50).acquire()
        assert info.value.holder == first.owner
        waiter: list[int] = []

        def take() -> None:
            with client.lock(name, lease_ms=10_000, wait_ms=20_000) as second:
                waiter.append(second.fence)

        t = threading.Thread(target=take)
        t.start()
        time.sleep(0.05)
    t.join(PATIENCE_S)
    assert waiter and waiter[0] > first.fence


def test_a_paused_holder_loses_the_lock_and_its_fence_is_refused(
    client: Client, run: str, idem_url: str
) -> None:
    name, resource = run + "lock", run + "resource"
    here = Path(__file__).parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(here), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen(
        [sys.executable, str(here / "lock_holder.py"), idem_url, name, resource, str(LEASE_MS)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
    )
    try:
        assert child.stdout is not None and child.stdin is not None
        old_fence = json.loads(child.stdout.readline())["fence"]
        child.send_signal(signal.SIGSTOP)
        # The paused holder cannot renew: the lease runs out and the next holder gets a larger fence.
        taken = client.try_lock(name, "next", lease_ms=10_000, wait_ms=20_000)
        assert isinstance(taken, Acquired) and taken.fence > old_fence
        assert fenced_write(client, resource, taken.fence, "from the next holder")
        child.send_signal(signal.SIGCONT)
        child.stdin.write(b"go\n")
        child.stdin.flush()
        report = json.loads(child.stdout.readline())
        assert report == {"held": False, "check_raised": True, "lost": True, "written": False}
        value = client.value_get(resource)
        assert value is not None and value.value == f"{taken.fence}:from the next holder".encode()
        info = client.lock_info(name)
        assert isinstance(info, LockState) and info.owner == b"next", (
            "the old holder never unlocked the new one"
        )
        assert child.wait(PATIENCE_S) == 0
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGCONT)
            child.kill()
            child.wait()


async def test_async_lock(aclient: AsyncClient, run: str) -> None:
    name = run + "lock"
    async with aclient.lock(name, lease_ms=LEASE_MS) as lk:
        for _ in range(6):
            await asyncio.sleep(LEASE_MS / 2000)
            other = await aclient.try_lock(name, "intruder", lease_ms=LEASE_MS)
            assert isinstance(other, Locked)
            assert lk.held
        assert await aclient.unlock(name, lk.owner)
        await asyncio.wait_for(lk.lost.wait(), PATIENCE_S)
        assert not lk.held
    assert await aclient.lock_info(name) == Free()
