"""Proxying (hop-by-hop, X-Forwarded-*, chunked bodies, HTTP/2) and crash recovery."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlparse

import httpx
import pytest

from conftest import effects, release
from helpers import assert_problem, replayed, send, uid, upstream
from targets import Setting, Started


def raw_request(base_url: str, request: bytes) -> bytes:
    u = urlparse(base_url)
    with socket.create_connection(
        (u.hostname or "127.0.0.1", u.port or 80), timeout=5
    ) as s:
        s.sendall(request)
        chunks = []
        while True:
            b = s.recv(65536)
            if not b:
                break
            chunks.append(b)
        return b"".join(chunks)


def test_hop_by_hop_headers_are_dropped_and_forwarded_headers_set(gw: Started) -> None:
    if not gw.target.is_proxy:
        pytest.skip("not a proxy")
    g = gw.start()
    host = urlparse(g.base_url).netloc
    req = (
        f"GET /echo HTTP/1.1\r\nHost: {host}\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\n"
        "Keep-Alive: timeout=5\r\nX-End: 2\r\n\r\n"
    ).encode()
    res = raw_request(g.base_url, req)
    head, _, body = res.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    seen = json.loads(body)["headers"]
    assert seen.get("x-end") == "2"
    assert "x-hop" not in seen and "keep-alive" not in seen
    assert seen.get("x-forwarded-for") == "127.0.0.1"
    assert seen.get("x-forwarded-proto") == "http"
    assert seen.get("x-forwarded-host") == host


def test_a_chunked_request_body_is_fingerprinted_like_a_plain_one(gw: Started) -> None:
    g = gw.start()
    e, key = uid(), uid()

    def chunks() -> Iterator[bytes]:
        yield b'{"b": 2,'
        yield b' "a": 1}'

    first = send(
        g,
        "/chunked",
        key=key,
        effect=e,
        headers={"content-type": "application/json"},
        content=chunks(),
    )
    assert first.status_code == 201 and first.json()["body"] == '{"b": 2, "a": 1}'
    again = send(g, "/chunked", key=key, effect=e, json_body={"a": 1, "b": 2})
    assert replayed(again) and again.content == first.content
    assert effects(e) == 1


def test_http2_clients_get_the_same_semantics(gw: Started) -> None:
    if not gw.target.http2:
        pytest.skip("no HTTP/2")
    g = gw.start()
    e, key = uid(), uid()
    with httpx.Client(http1=False, http2=True, timeout=10) as c:
        h = {"idempotency-key": key, "x-effect": e, "content-type": "application/json"}
        a = c.post(g.base_url + "/h2", headers=h, content=b'{"a":1}')
        b = c.post(g.base_url + "/h2", headers=h, content=b'{"a":1}')
    assert a.http_version == "HTTP/2" and b.http_version == "HTTP/2"
    assert a.status_code == 201 and replayed(b) and b.content == a.content
    assert effects(e) == 1


def test_keep_alive_serves_many_requests_on_one_connection(gw: Started) -> None:
    g = gw.start()
    e = uid()
    with httpx.Client(timeout=10, limits=httpx.Limits(max_connections=1)) as c:
        for i in range(20):
            r = c.post(
                g.base_url + "/ka",
                headers={"idempotency-key": f"{e}-{i % 5}", "x-effect": e},
                content=b"",
            )
            assert r.status_code == 201
    assert effects(e) == 5


def test_a_completed_request_is_replayed_after_kill9_and_restart(gw: Started) -> None:
    if not gw.target.can_kill9:
        pytest.skip("cannot kill -9")
    g = gw.start()
    e, key = uid(), uid()
    first = send(g, "/k9", key=key, effect=e, json_body={"a": 1})
    g.kill9_and_restart()
    again = send(g, "/k9", key=key, effect=e, json_body={"a": 1})
    assert replayed(again) and again.content == first.content
    assert effects(e) == 1


def test_kill9_mid_request_leaves_a_record_that_expires_with_its_lease(
    gw: Started,
) -> None:
    if not gw.target.can_kill9:
        pytest.skip("cannot kill -9")
    settings: dict[str, Setting] = {
        "upstream_timeout_ms": 2000,
        "response_read_timeout_ms": 500,
        "lease_ms": 3000,
        "concurrent": "conflict",
    }
    if gw.target.renews_lease:
        # The lease no longer has to cover the call: the key frees after the
        # last lease, long before the upstream timeout would have ended it.
        settings["upstream_timeout_ms"] = 30_000
    g = gw.start(settings=settings)
    e, key = uid(), uid()
    outcome: list[object] = []

    def first() -> None:
        try:
            outcome.append(
                send(
                    g,
                    "/k9",
                    key=key,
                    effect=e,
                    json_body={},
                    headers=upstream(hold=e),
                )
            )
        except httpx.HTTPError as err:
            outcome.append(err)

    t = threading.Thread(target=first)
    t.start()
    deadline = time.monotonic() + 5
    while effects(e) < 1:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    began = time.monotonic()
    g.kill9_and_restart()
    t.join()
    assert isinstance(outcome[0], httpx.HTTPError), "the client lost its connection"
    # The restarted gateway finds the record in flight: no second execution yet.
    assert_problem(send(g, "/k9", key=key, effect=e, json_body={}), 409)
    assert effects(e) == 1
    release(e)
    time.sleep(max(0.0, 3.0 - (time.monotonic() - began)) + 0.3)
    again = send(g, "/k9", key=key, effect=e, json_body={})
    assert again.status_code == 201 and not replayed(again), (
        "the lease ended: the key is free again"
    )
    assert effects(e) == 2
    assert replayed(send(g, "/k9", key=key, effect=e, json_body={}))


def test_a_call_longer_than_the_lease_still_blocks_duplicates(gw: Started) -> None:
    if not gw.target.renews_lease:
        pytest.skip("the lease is not renewed")
    lease_s = 0.6
    settings: dict[str, Setting] = {
        "upstream_timeout_ms": 10_000,
        "lease_ms": int(lease_s * 1000),
        "concurrent": "conflict",
    }
    g = gw.start(settings=settings)
    e, key = uid(), uid()
    outcome: list[httpx.Response] = []
    t = threading.Thread(
        target=lambda: outcome.append(
            send(g, "/long", key=key, effect=e, json_body={}, headers=upstream(hold=e))
        )
    )
    t.start()
    deadline = time.monotonic() + 5
    while effects(e) < 1:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    # Several leases long: only renewals keep the key held.
    time.sleep(lease_s * 4)
    assert_problem(send(g, "/long", key=key, effect=e, json_body={}), 409)
    assert effects(e) == 1
    release(e)
    t.join()
    assert outcome[0].status_code == 201 and not replayed(outcome[0])
    again = send(g, "/long", key=key, effect=e, json_body={})
    assert replayed(again) and again.content == outcome[0].content
    assert effects(e) == 1
