"""The decorator: the body runs once per key, in threads and in asyncio tasks."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pydantic
import pytest

from idem_client import AsyncClient, Client, FingerprintMismatch, InFlight


class Receipt(pydantic.BaseModel):
    order: str
    cents: int


@dataclasses.dataclass
class Point:
    x: int
    y: int


def test_threads_run_the_body_once(client: Client, run: str) -> None:
    calls: list[str] = []
    lock = threading.Lock()
    gate = threading.Event()

    @client.idempotent(key=lambda order, cents: order, name=run + "pay")
    def pay(order: str, cents: int) -> Receipt:
        gate.wait(5)
        with lock:
            calls.append(order)
        return Receipt(order=order, cents=cents)

    with ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(pay.outcome, f"o{i % 4}", 100) for i in range(32)]
        gate.set()
        outcomes = [f.result(30) for f in futures]
    assert sorted(calls) == ["o0", "o1", "o2", "o3"]
    assert all(isinstance(o.value, Receipt) and o.value.cents == 100 for o in outcomes)
    assert sum(not o.replayed for o in outcomes) == 4
    assert pay("o1", 100) == Receipt(order="o1", cents=100)


async def test_tasks_run_the_body_once(aclient: AsyncClient, run: str) -> None:
    calls = 0
    replays: list[bytes] = []

    @aclient.idempotent(key=lambda n: str(n), name=run + "sq", on_replay=replays.append)
    async def square(n: int) -> dict[str, int]:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return {"n": n * n}

    results = await asyncio.gather(*(square(3) for _ in range(50)))
    assert results == [{"n": 9}] * 50
    assert calls == 1
    assert len(replays) == 49


async def test_sync_client_decorates_async_functions(client: Client, run: str) -> None:
    calls = 0

    @client.idempotent(key=lambda: "k", name=run + "f")
    async def f() -> Point:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.02)
        return Point(1, 2)

    outcomes = await asyncio.gather(*(f.outcome() for _ in range(10)))
    assert calls == 1
    assert [o.value for o in outcomes] == [Point(1, 2)] * 10
    assert [o.replayed for o in outcomes].count(False) == 1


def test_an_exception_aborts_so_a_retry_runs(client: Client, run: str) -> None:
    attempts = 0

    @client.idempotent(key=lambda: "k", name=run + "flaky")
    def flaky() -> int:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise RuntimeError("first call fails")
        return attempts

    with pytest.raises(RuntimeError):
        flaky()
    assert flaky() == 2
    assert flaky() == 2
    assert attempts == 2


def test_fingerprint_mismatch(client: Client, run: str) -> None:
    @client.idempotent(key=lambda order, cents: order, fingerprint=lambda order, cents: str(cents), name=run)
    def pay(order: str, cents: int) -> int:
        return cents

    assert pay("o", 100) == 100
    assert pay("o", 100) == 100
    with pytest.raises(FingerprintMismatch):
        pay("o", 200)


def test_in_flight_raises_when_asked(client: Client, run: str) -> None:
    inside = threading.Event()
    release = threading.Event()

    @client.idempotent(key=lambda: "k", name=run, on_running="raise")
    def slow() -> str:
        inside.set()
        release.wait(10)
        return "done"

    first = threading.Thread(target=slow)
    first.start()
    assert inside.wait(10)
    with pytest.raises(InFlight) as info:
        slow()
    assert info.value.lease_left_ms > 0
    release.set()
    first.join(10)
    assert slow.outcome().replayed


def test_results_round_trip(client: Client, run: str) -> None:
    @client.idempotent(key=lambda: "p", name=run + "p")
    def point() -> Point:
        return Point(3, 4)

    @client.idempotent(key=lambda: "l", name=run + "l")
    def receipts() -> list[Receipt]:
        return [Receipt(order="a", cents=1)]

    for _ in range(2):
        assert point() == Point(3, 4)
        assert receipts() == [Receipt(order="a", cents=1)]
    assert point.outcome().replayed and receipts.outcome().replayed


def test_async_function_needs_no_sync_client(aclient: AsyncClient) -> None:
    with pytest.raises(TypeError):
        aclient.idempotent(key=lambda: "k")(lambda: 1)


#: A lease short enough that the test outlives it several times over.
SHORT_LEASE_MS = 300


def test_a_lease_shorter_than_the_body_stays_held(client: Client, run: str) -> None:
    inside = threading.Event()
    release = threading.Event()
    calls: list[str] = []

    @client.idempotent(key=lambda: "k", name=run, on_running="raise", lease_ms=SHORT_LEASE_MS)
    def slow() -> str:
        calls.append("run")
        inside.set()
        release.wait(10)
        return "done"

    first = threading.Thread(target=slow)
    first.start()
    assert inside.wait(10)
    # Three leases later the record would be free without its renewals.
    time.sleep(3 * SHORT_LEASE_MS / 1000)
    with pytest.raises(InFlight):
        slow()
    release.set()
    first.join(10)
    assert slow.outcome().replayed
    assert calls == ["run"]
