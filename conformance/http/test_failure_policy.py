"""The failure policy, one case per row of docs/gateway.md's table, and the size bounds."""

from __future__ import annotations

import time

import pytest

from conftest import Upstream, effects
from helpers import assert_problem, replayed, send, uid, upstream
from targets import Setting, Started, free_port

# Short bounds keep these cases fast. The lease also covers the whole upstream
# call, with a margin for a loaded machine, for implementations that do not
# renew it.
LEASE_S = 2.5
FAST: dict[str, Setting] = {
    "upstream_timeout_ms": 300,
    "response_read_timeout_ms": 300,
    "lease_ms": int(LEASE_S * 1000),
    "concurrent": "conflict",
}


def test_a_5xx_aborts_the_record_so_a_retry_runs_again(gw: Started) -> None:
    g = gw.start()
    e, key = uid(), uid()
    assert (
        send(
            g, "/f", key=key, effect=e, json_body={}, headers=upstream(status=503)
        ).status_code
        == 503
    )
    ok = send(g, "/f", key=key, effect=e, json_body={})
    assert ok.status_code == 201 and not replayed(ok)
    assert replayed(send(g, "/f", key=key, effect=e, json_body={}))
    assert effects(e) == 2


def test_an_app_that_raises_frees_the_key(gw: Started) -> None:
    g = gw.start()
    e, key = uid(), uid()
    assert (
        send(
            g, "/f", key=key, effect=e, json_body={}, headers=upstream(fail="raise")
        ).status_code
        == 500
    )
    ok = send(g, "/f", key=key, effect=e, json_body={})
    assert ok.status_code == 201 and not replayed(ok)
    assert effects(e) == 2


def test_on_5xx_store_replays_the_5xx(gw: Started) -> None:
    g = gw.start(["POST /f key=header:X-Request-Id on_5xx=store"])
    e, rid = uid(), uid()
    h = {"x-request-id": rid, **upstream(status=500)}
    first = send(g, "/f", effect=e, json_body={}, headers=h)
    again = send(g, "/f", effect=e, json_body={}, headers=h)
    assert first.status_code == 500 and again.status_code == 500
    assert replayed(again) and again.content == first.content
    assert effects(e) == 1


def test_a_refused_upstream_connection_aborts_the_record(gw: Started) -> None:
    if not gw.target.is_proxy:
        pytest.skip("not a proxy")
    port = free_port()
    g = gw.start(upstream=f"http://127.0.0.1:{port}")
    e, key = uid(), uid()
    assert_problem(send(g, "/f", key=key, effect=e, json_body={}), 502)
    late = Upstream(port)
    try:
        ok = send(g, "/f", key=key, effect=e, json_body={})
        assert ok.status_code == 201 and not replayed(ok)
        assert effects(e) == 1
    finally:
        late.stop()


def test_an_upstream_timeout_keeps_the_record_until_its_lease_ends(gw: Started) -> None:
    g = gw.start(settings=FAST)
    e, key = uid(), uid()
    started = time.monotonic()
    assert (
        send(
            g, "/t", key=key, effect=e, json_body={}, headers=upstream(sleep_ms=800)
        ).status_code
        == 504
    )
    # Unknown outcome: no second execution while the lease runs.
    r = send(g, "/t", key=key, effect=e, json_body={})
    assert_problem(r, 409)
    assert effects(e) == 1
    time.sleep(max(0.0, LEASE_S - (time.monotonic() - started)) + 0.3)
    again = send(g, "/t", key=key, effect=e, json_body={})
    assert again.status_code == 201 and not replayed(again)
    assert effects(e) == 2


def test_on_timeout_abort_lets_a_retry_run_at_once(gw: Started) -> None:
    g = gw.start(settings={**FAST, "on_timeout": "abort"})
    e, key = uid(), uid()
    assert (
        send(
            g, "/t", key=key, effect=e, json_body={}, headers=upstream(sleep_ms=800)
        ).status_code
        == 504
    )
    again = send(g, "/t", key=key, effect=e, json_body={})
    assert again.status_code == 201 and not replayed(again)
    assert effects(e) == 2


def test_a_response_that_breaks_off_is_an_unknown_outcome(gw: Started) -> None:
    g = gw.start(settings=FAST)
    e, key = uid(), uid()
    r = send(g, "/d", key=key, effect=e, json_body={}, headers=upstream(fail="drop"))
    assert r.status_code >= 500
    assert_problem(send(g, "/d", key=key, effect=e, json_body={}), 409)
    assert effects(e) == 1


@pytest.mark.parametrize("how", ["content-length", "streamed"])
def test_an_oversize_response_passes_through_and_duplicates_get_a_problem(
    gw: Started, how: str
) -> None:
    g = gw.start(settings={"stored_body_bytes_max": 1000})
    e, key = uid(), uid()
    size = 5000
    big = (
        upstream(status=200, body_bytes=size)
        if how == "content-length"
        else upstream(status=200, stream_bytes=size)
    )
    first = send(g, "/big", key=key, effect=e, json_body={}, headers=big)
    assert (
        first.status_code == 200 and len(first.content) == size and not replayed(first)
    )
    doc = assert_problem(
        send(g, "/big", key=key, effect=e, json_body={}, headers=big), 410
    )
    assert "detail" in doc
    assert effects(e) == 1, "a completed request is never executed again"
    # A response under the bound is still stored.
    e, key = uid(), uid()
    small = upstream(status=200, body_bytes=900)
    send(g, "/big", key=key, effect=e, json_body={}, headers=small)
    assert replayed(send(g, "/big", key=key, effect=e, json_body={}, headers=small))


def test_a_request_body_over_the_bound_gets_413_and_does_not_run(gw: Started) -> None:
    g = gw.start(settings={"request_bytes_max": 1000})
    e, key = uid(), uid()
    assert_problem(send(g, "/r", key=key, effect=e, content=b"z" * 2000), 413)
    assert effects(e) == 0
    assert send(g, "/r", key=key, effect=e, content=b"z" * 500).status_code == 201


def test_only_allow_listed_headers_are_replayed(gw: Started) -> None:
    h = {
        "Location": "/orders/1",
        "ETag": '"v1"',
        "Link": "</orders/1/items>; rel=items",
        "Set-Cookie": "session=s3cret",
        "X-Custom": "c",
    }
    g = gw.start()
    e, key = uid(), uid()
    first = send(g, "/h", key=key, effect=e, json_body={}, headers=upstream(headers=h))
    again = send(g, "/h", key=key, effect=e, json_body={}, headers=upstream(headers=h))
    assert first.headers.get("set-cookie") == "session=s3cret", (
        "the first caller gets every header"
    )
    assert replayed(again)
    for name in ["location", "etag", "link", "content-type"]:
        assert again.headers.get(name) == first.headers.get(name), name
    assert "set-cookie" not in again.headers
    assert "x-custom" not in again.headers
    g2 = gw.start(settings={"replay_headers": ["content-type", "location", "x-custom"]})
    e, key = uid(), uid()
    send(g2, "/h", key=key, effect=e, json_body={}, headers=upstream(headers=h))
    again = send(g2, "/h", key=key, effect=e, json_body={}, headers=upstream(headers=h))
    assert again.headers.get("x-custom") == "c" and "etag" not in again.headers
    assert "set-cookie" not in again.headers
