"""Concurrent duplicates: wait (default), conflict, and two gateways on one store."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from conftest import effects, release
from helpers import assert_problem, replayed, send, uid, upstream
from targets import Started


def wait_for_effect(name: str, n: int = 1, timeout_s: float = 5) -> None:
    deadline = time.monotonic() + timeout_s
    while effects(name) < n:
        assert time.monotonic() < deadline, f"the upstream never saw {name}"
        time.sleep(0.005)


def test_a_concurrent_duplicate_waits_for_the_first_and_gets_its_response(
    gw: Started,
) -> None:
    g = gw.start()
    e, key = uid(), uid()
    held = upstream(hold=e)
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(
            send, g, "/w", key=key, effect=e, json_body={"a": 1}, headers=held
        )
        wait_for_effect(e)
        second = pool.submit(
            send, g, "/w", key=key, effect=e, json_body={"a": 1}, headers=held
        )
        # Time for the duplicate to park; were it late, it would find the
        # record done, and the assertions below would hold all the same.
        time.sleep(0.2)
        release(e)
        a, b = first.result(), second.result()
    assert (a.status_code, a.content) == (b.status_code, b.content) == (201, a.content)
    assert not replayed(a) and replayed(b)
    assert effects(e) == 1


def test_conflict_mode_answers_409_with_retry_after(gw: Started) -> None:
    g = gw.start(settings={"concurrent": "conflict"})
    e, key = uid(), uid()
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(
            send,
            g,
            "/c",
            key=key,
            effect=e,
            json_body={},
            headers=upstream(hold=e),
        )
        wait_for_effect(e)
        r = send(g, "/c", key=key, effect=e, json_body={})
        doc = assert_problem(r, 409)
        assert int(r.headers["retry-after"]) >= 1, doc
        release(e)
        a = first.result()
    assert a.status_code == 201
    again = send(g, "/c", key=key, effect=e, json_body={})
    assert replayed(again) and again.content == a.content
    assert effects(e) == 1


def test_conflict_per_route(gw: Started) -> None:
    g = gw.start(["POST /c key=header:X-Request-Id concurrent=conflict"])
    e, rid = uid(), uid()
    h = {"x-request-id": rid}
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(
            send,
            g,
            "/c",
            effect=e,
            json_body={},
            headers={**h, **upstream(hold=e)},
        )
        wait_for_effect(e)
        assert_problem(send(g, "/c", effect=e, json_body={}, headers=h), 409)
        release(e)
        assert first.result().status_code == 201
    assert effects(e) == 1


def test_many_concurrent_duplicates_run_once(gw: Started) -> None:
    g = gw.start()
    e, key = uid(), uid()
    n = 16
    with ThreadPoolExecutor(n) as pool:
        futures = [
            pool.submit(
                send,
                g,
                "/m",
                key=key,
                effect=e,
                json_body={"x": 1},
                headers=upstream(sleep_ms=200),
            )
            for _ in range(n)
        ]
        rs = [f.result() for f in futures]
    assert {(r.status_code, r.content) for r in rs} == {(201, rs[0].content)}
    assert sum(not replayed(r) for r in rs) == 1
    assert effects(e) == 1


def test_two_gateways_on_one_store_stay_exactly_once(gw: Started) -> None:
    if not gw.target.shares_store:
        pytest.skip(
            f"{gw.target.name}: the store belongs to one process (share one through an idem server)"
        )
    store = gw.store()
    g1 = gw.start(store=store)
    g2 = gw.start(store=store)
    for _ in range(3):
        e, key = uid(), uid()
        n = 12
        with ThreadPoolExecutor(n) as pool:
            futures = [
                pool.submit(
                    send,
                    (g1, g2)[i % 2],
                    "/two",
                    key=key,
                    effect=e,
                    json_body={"i": 1},
                    headers=upstream(sleep_ms=150),
                )
                for i in range(n)
            ]
            rs: list[httpx.Response] = [f.result() for f in futures]
        assert effects(e) == 1
        assert {(r.status_code, r.content) for r in rs} == {(201, rs[0].content)}
        assert sum(not replayed(r) for r in rs) == 1
    # A record committed through one gateway is replayed by the other.
    e, key = uid(), uid()
    first = send(g1, "/two", key=key, effect=e, json_body={})
    again = send(g2, "/two", key=key, effect=e, json_body={})
    assert replayed(again) and again.content == first.content
