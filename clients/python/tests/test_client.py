"""Every command through both clients, against a real server."""

from __future__ import annotations

import asyncio
import threading
import warnings

import pytest

from idem_client import (
    Absent,
    Acquired,
    Already,
    Applied,
    AsyncClient,
    ClaimConflict,
    Claimed,
    Client,
    CommandError,
    Conflict,
    Disallowed,
    Done,
    Free,
    Held,
    HeldAll,
    LimitExceeded,
    Locked,
    LockState,
    Lost,
    Mismatch,
    Moved,
    Refused,
    Renewed,
    Replayed,
    Reserved,
    Running,
    SlotConflict,
    SlotsTaken,
    Stale,
    Started,
    Stored,
    UnexpectedReply,
    Versioned,
)
from idem_client import _protocol as p


def test_idempotency_record_lifecycle(client: Client, run: str) -> None:
    key = run + "op"
    assert client.get(key) == Absent()
    started = client.begin(key, fingerprint="fp1", lease_ms=10_000)
    assert isinstance(started, Started) and started.attempt == 1
    running = client.begin(key, fingerprint="fp1")
    assert isinstance(running, Running) and running.fence == started.fence
    assert 0 < running.lease_left_ms <= 10_000
    with pytest.raises(Mismatch):
        client.begin(key, fingerprint="fp2")
    client.commit(key, started.fence, b"result")
    assert client.begin(key) == Done(b"result")
    assert client.get(key) == Done(b"result")
    with pytest.raises(Stale):
        client.commit(key, started.fence, b"again")
    assert client.delete(key) is True
    assert client.delete(key) is False


def test_abort_frees_the_key_and_a_stale_fence_is_refused(client: Client, run: str) -> None:
    key = run + "op"
    first = client.begin(key)
    assert isinstance(first, Started)
    client.abort(key, first.fence)
    second = client.begin(key)
    assert isinstance(second, Started) and second.fence > first.fence
    with pytest.raises(Stale):
        client.abort(key, first.fence)


def test_idem_renew_extends_only_the_holders_lease(client: Client, run: str) -> None:
    key = run + "op"
    started = client.begin(key, lease_ms=1_000)
    assert isinstance(started, Started)
    assert client.idem_renew(key, started.fence, lease_ms=60_000) == Renewed(started.fence)
    running = client.get(key)
    assert isinstance(running, Running) and running.lease_left_ms > 1_000, running
    with pytest.raises(Stale):
        client.idem_renew(key, started.fence + 1, lease_ms=60_000)
    client.commit(key, started.fence, b"r")
    with pytest.raises(Stale):
        client.idem_renew(key, started.fence, lease_ms=60_000)


def test_a_parked_wait_does_not_block_other_callers(client: Client, run: str) -> None:
    key = run + "op"
    started = client.begin(key)
    assert isinstance(started, Started)
    replies: list[object] = []
    waiter = threading.Thread(target=lambda: replies.append(client.begin(key, wait_ms=20_000)))
    waiter.start()
    # The same client keeps serving while the waiter is parked on the server.
    while not replies:
        info = client.get(key)
        assert isinstance(info, Running)
        client.counter_add(run + "c", 1)
        if client.counter_get(run + "c") >= 5:
            client.commit(key, started.fence, b"r")
            break
    waiter.join(30)
    assert replies == [Done(b"r")]


def test_claims(client: Client, run: str) -> None:
    a, b = run + "a", run + "b"
    assert client.claim(a, "alice") == Claimed()
    assert client.claim(a, "bob") == Held(b"alice")
    assert client.owner(a) == b"alice"
    assert client.claim_all("bob", [b, a]) == HeldAll((ClaimConflict(a.encode(), b"alice"),))
    assert client.owner(b) is None, "CLAIM.ALL is all or nothing"
    assert client.release(a, "bob") is False
    assert client.release(a, "alice") is True
    assert client.claim_all("bob", [a, b]) == Claimed()
    assert client.claim(run + "t", "x", ttl_ms=60_000) == Claimed()


def test_locks(client: Client, run: str) -> None:
    name = run + "lock"
    got = client.try_lock(name, "w1", lease_ms=10_000)
    assert isinstance(got, Acquired)
    busy = client.try_lock(name, "w2", lease_ms=10_000)
    assert isinstance(busy, Locked) and busy.holder == b"w1"
    info = client.lock_info(name)
    assert isinstance(info, LockState) and (info.owner, info.fence) == (b"w1", got.fence)
    assert client.renew(name, "w1", lease_ms=10_000) == Renewed(got.fence)
    assert client.renew(name, "w2", lease_ms=10_000) == Lost()
    assert client.unlock(name, "w1") is True
    assert client.lock_info(name) == Free()
    again = client.try_lock(name, "w2", lease_ms=10_000)
    assert isinstance(again, Acquired) and again.fence > got.fence


def test_tokens_counters_values_fsm_slots(client: Client, run: str) -> None:
    token = client.token_new(run + "s", ttl_ms=60_000)
    assert len(token) == 32
    assert client.token_use(run + "s", token) is True
    assert client.token_use(run + "s", token) is False

    c = run + "c"
    assert client.counter_add(c, 5, max=10) == Applied(5)
    assert client.counter_add(c, 6, max=10) == Refused(5)
    assert client.counter_add(c, -5, min=0, op="o1") == Applied(0)
    assert client.counter_add(c, -5, min=0, op="o1") == Replayed(0)
    assert client.counter_get(c) == 0
    with pytest.raises(ValueError):
        client.counter_add(c, 1, keep_ms=5)

    v = run + "v"
    assert client.value_get(v) is None
    assert client.value_set(v, "one", if_version=0) == Stored(1)
    assert client.value_set(v, "two", if_version=0) == Conflict(1)
    assert client.value_set(v, b"two", if_version=1) == Stored(2)
    assert client.value_get(v) == Versioned(b"two", 2)

    f = run + "f"
    assert client.fsm_move(f, "paid", from_states=["new"]) == Disallowed(None)
    assert client.fsm_move(f, "new", from_states=[None]) == Moved(b"new")
    assert client.fsm_move(f, "paid", from_states=["new"]) == Moved(b"paid")
    assert client.fsm_move(f, "paid", from_states=["new"]) == Already(b"paid")
    assert client.fsm_move(f, "shipped", from_states=["new"]) == Disallowed(b"paid")
    assert client.fsm_get(f) == b"paid"

    r = run + "room"
    assert client.slots_reserve(r, 2, 4, "ann", size=8) == Reserved()
    assert client.slots_reserve(r, 3, 5, "bob") == SlotsTaken(
        (SlotConflict(3, b"ann"), SlotConflict(4, b"ann"))
    )
    assert client.slots_get(r) == (None, None, b"ann", b"ann", b"ann", None, None, None)
    assert client.slots_release(r, 0, 7, "ann") == 3
    assert client.slots_get(r) == ()


def test_error_codes_map_to_classes(client: Client, run: str) -> None:
    with pytest.raises(CommandError):
        client.counter_add(run + "c", 1, min=5, max=1)
    with pytest.raises(LimitExceeded):
        client.claim("k" * 100_000, "o")
    with pytest.raises(CommandError):
        client.begin(run + "x", lease_ms=0)


def test_unexpected_replies_raise() -> None:
    cmd = p.begin("k", fingerprint=None, lease_ms=None, wait_ms=None)
    for raw in ([b"started", 1], [b"started", b"1", 1], [b"finished", 1, 1], b"OK", [], None, [b"done"]):
        with pytest.raises(UnexpectedReply):
            cmd.decode(raw)
    assert cmd.decode([b"started", 7, 1]) == Started(7, 1)
    with pytest.raises(UnexpectedReply):
        p.release("k", "o").decode(2)
    with pytest.raises(UnexpectedReply):
        p.token_new("s", ttl_ms=1).decode(b"XYZ")
    with pytest.raises(UnexpectedReply):
        p.counter_add("k", 1, min=None, max=None, op=None, keep_ms=None).decode([b"ok", True])


def test_both_clients_bound_every_socket_wait(idem_url: str) -> None:
    # Set by the client, not left to redis-py (which waited forever before 6.0).
    from idem_client.client import PARKED_SOCKET_TIMEOUT_S, SOCKET_TIMEOUT_S

    with Client.from_url(idem_url) as c:
        sync_pools = [c._conn.connection_pool, c._parking.connection_pool]
        ordinary, parking = (p.connection_kwargs for p in sync_pools)
    aclient = AsyncClient.from_url(idem_url)
    async_pools = [aclient._conn.connection_pool, aclient._parking.connection_pool]
    a_ordinary, a_parking = (p.connection_kwargs for p in async_pools)
    read_s = {"ordinary": SOCKET_TIMEOUT_S, "parking": PARKED_SOCKET_TIMEOUT_S}
    pools = [("ordinary", ordinary), ("ordinary", a_ordinary), ("parking", parking), ("parking", a_parking)]
    for kind, kw in pools:
        assert (kw["socket_timeout"], kw["socket_connect_timeout"]) == (read_s[kind], SOCKET_TIMEOUT_S)
    # A caller's shorter read timeout applies to ordinary commands only: a
    # parked WAIT must still be able to last its five minutes.
    with Client.from_url(idem_url, socket_timeout=1.0) as c:
        assert c._conn.connection_pool.connection_kwargs["socket_timeout"] == 1.0
        assert c._parking.connection_pool.connection_kwargs["socket_timeout"] == PARKED_SOCKET_TIMEOUT_S
    short = AsyncClient.from_url(idem_url, socket_timeout=1.0)
    assert short._parking.connection_pool.connection_kwargs["socket_timeout"] == PARKED_SOCKET_TIMEOUT_S


async def test_the_async_client_builds_its_pools_without_a_warning(idem_url: str, run: str) -> None:
    # redis-py warns when an asyncio pool is given the synchronous Retry,
    # and converts it; the client must hand over asyncio's own.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        async with AsyncClient.from_url(idem_url) as c:
            assert await c.claim(run + "k", "me") == Claimed()
    assert [str(w.message) for w in caught] == []


async def test_async_client(aclient: AsyncClient, run: str) -> None:
    key = run + "op"
    started = await aclient.begin(key, lease_ms=10_000)
    assert isinstance(started, Started)

    async def wait() -> object:
        return await aclient.begin(key, wait_ms=20_000)

    waiters = [asyncio.create_task(wait()) for _ in range(20)]
    # Other commands go through while twenty callers are parked.
    assert await aclient.claim(run + "k", "me") == Claimed()
    assert isinstance(await aclient.get(key), Running)
    assert await aclient.idem_renew(key, started.fence, lease_ms=10_000) == Renewed(started.fence)
    await aclient.commit(key, started.fence, b"r")
    assert await asyncio.gather(*waiters) == [Done(b"r")] * 20
    with pytest.raises(Stale):
        await aclient.idem_renew(key, started.fence, lease_ms=10_000)

    assert await aclient.counter_add(run + "c", 2) == Applied(2)
    assert await aclient.counter_get(run + "c") == 2
    assert await aclient.value_set(run + "v", "x") == Stored(1)
    assert await aclient.fsm_move(run + "f", "a", from_states=[None]) == Moved(b"a")
    assert await aclient.slots_reserve(run + "r", 0, 0, "h") == Reserved()
    assert await aclient.slots_get(run + "r") == (b"h",) + (None,) * 47
    token = await aclient.token_new(run + "s", ttl_ms=1000)
    assert await aclient.token_use(run + "s", token) is True
    got = await aclient.try_lock(run + "l", "me", lease_ms=1000)
    assert isinstance(got, Acquired)
    assert await aclient.unlock(run + "l", "me") is True
    with pytest.raises(Stale):
        await aclient.commit(key, started.fence, b"again")
