"""Configured routes: key sources, a missing key, scope, selected-field fingerprints."""

from __future__ import annotations

from conftest import effects
from helpers import assert_problem, replayed, send, uid
from targets import Started

ROUTES = [
    "POST /r/header key=header:X-Request-Id",
    "POST /r/query key=query:rid",
    "POST /orders/{id}/pay key=path:id",
    "POST /r/json key=json:user.openid",
    "POST /r/combined key=json:source+json:seq",
    "POST /r/optional key=header:X-Request-Id require=false",
    "POST /r/fields key=header:X-Request-Id fingerprint=json:amount+json:currency",
    "POST /r/scoped key=header:X-Request-Id scope=header:Authorization",
]


def test_each_key_source_makes_a_duplicate_a_replay(gw: Started) -> None:
    g = gw.start(ROUTES)
    rid = uid()
    cases = [
        ("/r/header", {"headers": {"x-request-id": rid}, "json_body": {"a": 1}}),
        ("/r/query?rid=" + rid, {"json_body": {"a": 1}}),
        (f"/orders/{rid}/pay", {"json_body": {"a": 1}}),
        ("/r/json", {"json_body": {"user": {"openid": rid}, "name": "n"}}),
        ("/r/combined", {"json_body": {"source": rid, "seq": 7}}),
    ]
    for path, kw in cases:
        e = uid()
        first = send(g, path, effect=e, **kw)  # type: ignore[arg-type]
        again = send(g, path, effect=e, **kw)  # type: ignore[arg-type]
        assert first.status_code == 201 and not replayed(first), path
        assert replayed(again) and again.content == first.content, path
        assert effects(e) == 1, path


def test_different_key_values_are_different_operations(gw: Started) -> None:
    g = gw.start(ROUTES)
    rid = uid()
    for a, b in [
        (f"/orders/{rid}-1/pay", f"/orders/{rid}-2/pay"),
    ]:
        e = uid()
        send(g, a, effect=e, json_body={})
        assert not replayed(send(g, b, effect=e, json_body={}))
        assert effects(e) == 2
    e = uid()
    send(g, "/r/combined", effect=e, json_body={"source": rid, "seq": 1})
    assert not replayed(
        send(g, "/r/combined", effect=e, json_body={"source": rid, "seq": 2})
    )
    assert replayed(
        send(g, "/r/combined", effect=e, json_body={"seq": 1, "source": rid})
    )
    assert effects(e) == 2


def test_a_route_without_its_key_gets_400_unless_optional(gw: Started) -> None:
    g = gw.start(ROUTES)
    e = uid()
    for path, body in [
        ("/r/header", {"a": 1}),
        ("/r/query", {"a": 1}),
        ("/r/json", {"user": {}}),
        ("/r/combined", {"source": "s"}),
    ]:
        assert_problem(send(g, path, effect=e, json_body=body), 400)
    assert effects(e) == 0
    send(g, "/r/optional", effect=e, json_body={})
    send(g, "/r/optional", effect=e, json_body={})
    assert effects(e) == 2, "require=false: no key, no idempotency"


def test_unrouted_paths_pass_through_even_with_a_key(gw: Started) -> None:
    g = gw.start(ROUTES)
    e, key = uid(), uid()
    send(g, "/elsewhere", key=key, effect=e, json_body={})
    assert not replayed(send(g, "/elsewhere", key=key, effect=e, json_body={}))
    assert effects(e) == 2


def test_scope_keeps_two_clients_keys_apart(gw: Started) -> None:
    g = gw.start(ROUTES)
    e, rid = uid(), uid()
    alice = {"x-request-id": rid, "authorization": "Bearer alice"}
    bob = {"x-request-id": rid, "authorization": "Bearer bob"}
    a = send(g, "/r/scoped", effect=e, headers=alice, json_body={"x": 1})
    b = send(g, "/r/scoped", effect=e, headers=bob, json_body={"x": 1})
    assert not replayed(a) and not replayed(b)
    assert a.content != b.content
    again = send(g, "/r/scoped", effect=e, headers=alice, json_body={"x": 1})
    assert replayed(again) and again.content == a.content
    assert effects(e) == 2


def test_scope_setting_applies_in_ietf_mode(gw: Started) -> None:
    g = gw.start(settings={"scope": "header:Authorization"})
    e, key = uid(), uid()
    send(g, "/s", key=key, effect=e, headers={"authorization": "A"}, json_body={})
    assert not replayed(
        send(g, "/s", key=key, effect=e, headers={"authorization": "B"}, json_body={})
    )
    assert replayed(
        send(g, "/s", key=key, effect=e, headers={"authorization": "A"}, json_body={})
    )
    assert effects(e) == 2


def test_a_selected_field_fingerprint_ignores_other_fields(gw: Started) -> None:
    g = gw.start(ROUTES)
    e, rid = uid(), uid()
    h = {"x-request-id": rid}
    first = send(
        g,
        "/r/fields",
        effect=e,
        headers=h,
        json_body={"amount": 5, "currency": "EUR", "note": "a"},
    )
    again = send(
        g,
        "/r/fields",
        effect=e,
        headers=h,
        json_body={"currency": "EUR", "amount": 5, "note": "b"},
    )
    assert replayed(again) and again.content == first.content
    assert_problem(
        send(
            g,
            "/r/fields",
            effect=e,
            headers=h,
            json_body={"amount": 6, "currency": "EUR"},
        ),
        422,
    )
    assert effects(e) == 1
