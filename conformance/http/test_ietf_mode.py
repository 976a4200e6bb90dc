"""IETF mode (no route configured): POST and PATCH carrying Idempotency-Key."""

from __future__ import annotations

import pytest

from conftest import effects
from helpers import assert_problem, replayed, send, uid, upstream
from targets import Started

STORED = [200, 201, 202, 204, 301, 400, 404, 410, 422]
RELEASED = [408, 409, 425, 429, 500, 502, 503]


def test_first_request_runs_and_a_duplicate_gets_its_response(gw: Started) -> None:
    g = gw.start()
    e, key = uid(), uid()
    first = send(g, "/orders", key=key, effect=e, json_body={"item": "tea", "qty": 2})
    again = send(g, "/orders", key=key, effect=e, json_body={"item": "tea", "qty": 2})
    assert first.status_code == 201 and not replayed(first)
    assert again.status_code == 201 and replayed(again)
    assert again.content == first.content
    assert effects(e) == 1


def test_every_stored_status_is_replayed_and_released_statuses_run_again(
    gw: Started,
) -> None:
    g = gw.start()
    for status in STORED:
        e, key = uid(), uid()
        hdr = upstream(
            status=status, headers={"Location": "/moved"} if status == 301 else None
        )
        first = send(g, "/s", key=key, effect=e, json_body={"s": status}, headers=hdr)
        again = send(g, "/s", key=key, effect=e, json_body={"s": status}, headers=hdr)
        assert first.status_code == status and not replayed(first), status
        assert (again.status_code, again.content) == (
            first.status_code,
            first.content,
        ), status
        assert replayed(again), status
        assert effects(e) == 1, status
    for status in RELEASED:
        e, key = uid(), uid()
        first = send(
            g,
            "/s",
            key=key,
            effect=e,
            json_body={"s": status},
            headers=upstream(status=status),
        )
        again = send(
            g,
            "/s",
            key=key,
            effect=e,
            json_body={"s": status},
            headers=upstream(status=status),
        )
        assert first.status_code == status and again.status_code == status, status
        assert not replayed(again), f"{status} must not be stored"
        assert effects(e) == 2, status


def test_patch_is_idempotent_and_other_methods_pass_through(gw: Started) -> None:
    g = gw.start()
    e, key = uid(), uid()
    send(g, "/p", method="PATCH", key=key, effect=e, json_body={"a": 1})
    assert replayed(
        send(g, "/p", method="PATCH", key=key, effect=e, json_body={"a": 1})
    )
    assert effects(e) == 1
    for method in ["GET", "PUT", "DELETE"]:
        e, key = uid(), uid()
        a = send(g, "/p", method=method, key=key, effect=e)
        b = send(g, "/p", method=method, key=key, effect=e)
        assert not replayed(a) and not replayed(b), method
        assert effects(e) == 2, method


def test_a_request_without_a_key_passes_through(gw: Started) -> None:
    g = gw.start()
    e = uid()
    assert not replayed(send(g, "/nokey", effect=e, json_body={}))
    assert not replayed(send(g, "/nokey", effect=e, json_body={}))
    assert effects(e) == 2


def test_quoted_sf_string_and_bare_token_are_one_key(gw: Started) -> None:
    g = gw.start()
    e, key = uid(), uid()
    send(g, "/k", key=f'"{key}"', effect=e, json_body={})
    assert replayed(send(g, "/k", key=key, effect=e, json_body={}))
    assert effects(e) == 1


@pytest.mark.parametrize(
    "bad",
    [
        "k" * 256,
        '"' + "k" * 256 + '"',
        "a b",
        "a,b",
        '"unterminated',
        '"a"b',
        b'"\xc3\xa9"',
        '""',
    ],
    ids=[
        "long-bare",
        "long-quoted",
        "space",
        "comma",
        "unterminated",
        "trailing",
        "non-ascii",
        "empty",
    ],
)
def test_a_key_outside_the_bounds_gets_400(gw: Started, bad: str | bytes) -> None:
    g = gw.start()
    e = uid()
    r = send(g, "/k", key=bad, effect=e, json_body={})
    assert_problem(r, 400)
    assert effects(e) == 0


def test_the_longest_key_is_accepted_and_a_repeated_header_is_refused(
    gw: Started,
) -> None:
    g = gw.start()
    e = uid()
    ok = "k" * 250 + uid()[:5]
    assert send(g, "/k", key=ok, effect=e, json_body={}).status_code == 201
    r = send(
        g,
        "/k",
        effect=e,
        json_body={},
        extra_headers=[("idempotency-key", "a"), ("idempotency-key", "b")],
    )
    assert_problem(r, 400)
    assert effects(e) == 1


def test_a_key_reused_with_another_body_or_path_gets_422(gw: Started) -> None:
    g = gw.start()
    e, key = uid(), uid()
    send(g, "/pay", key=key, effect=e, json_body={"amount": 5})
    assert_problem(send(g, "/pay", key=key, effect=e, json_body={"amount": 6}), 422)
    assert_problem(send(g, "/pay?x=1", key=key, effect=e, json_body={"amount": 5}), 422)
    assert_problem(send(g, "/refund", key=key, effect=e, json_body={"amount": 5}), 422)
    assert effects(e) == 1


def test_json_bodies_are_compared_in_canonical_form(gw: Started) -> None:
    g = gw.start()
    e, key = uid(), uid()
    ct = {"content-type": "application/json"}
    first = send(
        g,
        "/c",
        key=key,
        effect=e,
        headers=ct,
        content='{"b": [1, 2], "a": {"y": 1, "x": "s"}}',
    )
    again = send(
        g,
        "/c",
        key=key,
        effect=e,
        headers=ct,
        content='{"a":{"x":"s","y":1},\n "b":[1,2]}',
    )
    assert replayed(again) and again.content == first.content
    assert_problem(
        send(
            g,
            "/c",
            key=key,
            effect=e,
            headers=ct,
            content='{"a":{"x":"s","y":1},"b":[2,1]}',
        ),
        422,
    )
    assert effects(e) == 1
