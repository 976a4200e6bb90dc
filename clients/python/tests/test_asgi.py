"""IdempotencyMiddleware against a real idem server, in-process through httpx."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator

import httpx
import pytest
from asgi_app import BIG_BYTES, make_app

from idem_client import AsyncClient
from idem_client.asgi import IdempotencyMiddleware, Receive, Scope, Send
from idem_client.http_semantics import RouteError, parse_idempotency_key, parse_route

#: Pairs of concurrent duplicates in flight at once in the 2,000-pair run.
PAIRS_IN_FLIGHT = 200

ROUTES = [
    "POST /users key=json:user.openid",
    "POST /pay/{order} key=path:order+header:X-Seq concurrent=conflict keep=1h",
    "POST /opt key=query:k require=false",
    "POST /status/{code} key=header:K scope=header:Authorization",
]


def _http(app: IdempotencyMiddleware) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test")


@pytest.fixture
async def ietf(aclient: AsyncClient) -> AsyncIterator[tuple[httpx.AsyncClient, Counter[str]]]:
    app, effects = make_app()
    mw = IdempotencyMiddleware(
        app, client=aclient, stored_body_bytes_max=BIG_BYTES // 2, key_prefix="asgi-test:"
    )
    async with _http(mw) as http:
        yield http, effects


@pytest.fixture
async def routed(aclient: AsyncClient) -> AsyncIterator[tuple[httpx.AsyncClient, Counter[str]]]:
    app, effects = make_app()
    mw = IdempotencyMiddleware(app, client=aclient, routes=ROUTES, key_prefix="asgi-test:")
    async with _http(mw) as http:
        yield http, effects


def _is_problem(r: httpx.Response, status: int) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["status"] == status


async def test_first_response_is_stored_and_replayed(
    ietf: tuple[httpx.AsyncClient, Counter[str]], run: str
) -> None:
    http, effects = ietf
    h = {"Idempotency-Key": f'"{run}k1"'}
    first = await http.post("/orders", json={"item": run}, headers=h)
    again = await http.post("/orders", json={"item": run}, headers=h)
    assert first.status_code == again.status_code == 201
    assert first.content == again.content
    assert "idempotent-replayed" not in first.headers
    assert again.headers["idempotent-replayed"] == "true"
    for name in ("location", "etag", "content-type"):
        assert again.headers[name] == first.headers[name]
    assert "set-cookie" in first.headers and "set-cookie" not in again.headers
    assert "x-private" not in again.headers
    assert effects[run] == 1
    # PATCH is covered too; a bare token key works.
    await http.patch("/orders", json={"item": run + "p"}, headers={"Idempotency-Key": run + "k2"})
    r = await http.patch("/orders", json={"item": run + "p"}, headers={"Idempotency-Key": run + "k2"})
    assert r.headers["idempotent-replayed"] == "true" and effects[run + "p"] == 1


async def test_other_requests_pass_through(ietf: tuple[httpx.AsyncClient, Counter[str]], run: str) -> None:
    http, effects = ietf
    await http.get("/orders", headers={"Idempotency-Key": run})
    await http.get("/orders", headers={"Idempotency-Key": run})
    await http.post("/orders", json={"item": run})
    await http.post("/orders", json={"item": run})
    assert effects["none"] >= 2 and effects[run] == 2


async def test_bad_keys_get_400(ietf: tuple[httpx.AsyncClient, Counter[str]], run: str) -> None:
    http, effects = ietf
    for key in ["x" * 256, '"unterminated', "sp ace", '"bad\\q"', '""']:
        _is_problem(await http.post("/orders", json={"item": run}, headers={"Idempotency-Key": key}), 400)
    assert effects[run] == 0
    assert parse_idempotency_key(b'"a\\"b"') == b'a"b'
    assert parse_idempotency_key(b"x" * 255) == b"x" * 255


async def test_key_reuse_with_another_body_gets_422(
    ietf: tuple[httpx.AsyncClient, Counter[str]], run: str
) -> None:
    http, effects = ietf
    h = {"Idempotency-Key": run, "Content-Type": "application/json"}
    first = await http.post("/orders", content=json.dumps({"item": run, "qty": 1}), headers=h)
    # The same JSON with other whitespace and key order is the same request.
    same = await http.post("/orders", content='{ "qty" : 1,\n "item" : "' + run + '" }', headers=h)
    assert same.headers["idempotent-replayed"] == "true" and same.content == first.content
    _is_problem(await http.post("/orders", content=json.dumps({"item": run, "qty": 2}), headers=h), 422)
    _is_problem(await http.post("/orders?x=1", content=json.dumps({"item": run, "qty": 1}), headers=h), 422)
    assert effects[run] == 1


async def test_exceptions_and_5xx_abort_so_a_retry_runs(
    ietf: tuple[httpx.AsyncClient, Counter[str]], run: str
) -> None:
    http, effects = ietf
    h = {"Idempotency-Key": run}
    assert (await http.post(f"/fail-once/{run}", headers=h)).status_code == 500
    second = await http.post(f"/fail-once/{run}", headers=h)
    assert second.status_code == 200 and "idempotent-replayed" not in second.headers
    third = await http.post(f"/fail-once/{run}", headers=h)
    assert third.headers["idempotent-replayed"] == "true" and third.json() == second.json()
    assert effects[run] == 2


@pytest.mark.parametrize("code", [500, 503, 408, 409, 425, 429])
async def test_retryable_statuses_are_not_stored(
    ietf: tuple[httpx.AsyncClient, Counter[str]], run: str, code: int
) -> None:
    http, effects = ietf
    for _ in range(2):
        r = await http.post(f"/status/{code}", headers={"Idempotency-Key": run})
        assert r.status_code == code and "idempotent-replayed" not in r.headers
    assert effects[f"/status/{code}"] >= 2


@pytest.mark.parametrize("code", [200, 204, 302, 400, 404, 422])
async def test_2xx_to_4xx_are_stored(
    ietf: tuple[httpx.AsyncClient, Counter[str]], run: str, code: int
) -> None:
    http, effects = ietf
    path = f"/status/{code}"
    before = effects[path]
    first = await http.post(path, headers={"Idempotency-Key": run}, follow_redirects=False)
    again = await http.post(path, headers={"Idempotency-Key": run}, follow_redirects=False)
    assert first.status_code == again.status_code == code
    assert again.headers["idempotent-replayed"] == "true" and again.content == first.content
    assert effects[path] == before + 1


async def test_a_concurrent_duplicate_waits_for_the_first(
    ietf: tuple[httpx.AsyncClient, Counter[str]], run: str
) -> None:
    http, effects = ietf
    h = {"Idempotency-Key": run}
    a, b = await asyncio.gather(http.post(f"/slow/{run}", headers=h), http.post(f"/slow/{run}", headers=h))
    assert a.status_code == b.status_code == 200 and a.content == b.content
    assert sorted([a.headers.get("idempotent-replayed"), b.headers.get("idempotent-replayed")], key=str) == [
        None,
        "true",
    ]
    assert effects[run] == 1


async def test_an_oversize_response_passes_through_and_is_not_replayed(
    ietf: tuple[httpx.AsyncClient, Counter[str]], run: str
) -> None:
    http, effects = ietf
    h = {"Idempotency-Key": run}
    first = await http.post(f"/big/{run}", headers=h)
    assert first.status_code == 200 and len(first.content) == BIG_BYTES
    _is_problem(await http.post(f"/big/{run}", headers=h), 410)
    assert effects[run] == 1


async def test_routes(routed: tuple[httpx.AsyncClient, Counter[str]], run: str) -> None:
    http, effects = routed
    # json: key, nested; other fields differing is a 422, a missing key a 400.
    body = {"user": {"openid": run + "o"}, "name": "a"}
    await http.post("/users", json=body)
    assert (await http.post("/users", json=body)).headers["idempotent-replayed"] == "true"
    _is_problem(await http.post("/users", json={"user": {"openid": run + "o"}, "name": "b"}), 422)
    _is_problem(await http.post("/users", json={"user": {}}), 400)
    assert effects[run + "o"] == 1
    # IETF mode is off when routes are configured.
    await http.post("/orders", json={"item": run}, headers={"Idempotency-Key": run})
    await http.post("/orders", json={"item": run}, headers={"Idempotency-Key": run})
    assert effects[run] == 2
    # path: + header: combined; concurrent=conflict answers 409 with Retry-After.
    h = {"X-Seq": "1"}
    a, b = await asyncio.gather(http.post(f"/pay/{run}", headers=h), http.post(f"/pay/{run}", headers=h))
    conflict = a if a.status_code == 409 else b
    _is_problem(conflict, 409)
    assert int(conflict.headers["retry-after"]) >= 1
    assert effects[run] == 3
    assert (await http.post(f"/pay/{run}", headers={"X-Seq": "2"})).status_code == 200
    _is_problem(await http.post(f"/pay/{run}"), 400)
    # require=false: a request without the key passes through.
    await http.post("/opt")
    await http.post("/opt")
    await http.post("/opt?k=1")
    assert (await http.post("/opt?k=1")).headers["idempotent-replayed"] == "true"
    assert effects["opt"] == 3


async def test_scope_keeps_clients_apart(routed: tuple[httpx.AsyncClient, Counter[str]], run: str) -> None:
    http, effects = routed
    for auth in ("Bearer alice", "Bearer bob", "Bearer alice"):
        await http.post("/status/201", headers={"K": run, "Authorization": auth})
    assert effects["/status/201"] >= 2
    r = await http.post("/status/201", headers={"K": run, "Authorization": "Bearer bob"})
    assert r.headers["idempotent-replayed"] == "true"


def test_route_specs_are_checked() -> None:
    route = parse_route(
        "post /orders/{id}/pay key=path:id+json:seq fingerprint=json:amount keep=30s require=false"
    )
    assert route.method == "POST" and route.keep_ms == 30_000 and not route.require
    assert route.match("POST", "/orders/7/pay") == {"id": "7"}
    assert route.match("POST", "/orders/7") is None
    for bad in [
        "POST /x",
        "POST x key=header:K",
        "POST /x key=cookie:a",
        "POST /x key=path:id",
        "POST /x key=header:K concurrent=maybe",
        "POST /x key=header:K keep=soon",
        "POST /x key=header:K color=red",
        "POST /x key=header:K key=header:L",
    ]:
        with pytest.raises(RouteError):
            parse_route(bad)


async def test_2000_pairs_of_concurrent_replays_have_no_duplicate_effect(
    ietf: tuple[httpx.AsyncClient, Counter[str]], run: str
) -> None:
    http, effects = ietf
    pairs = 2000

    in_flight = asyncio.Semaphore(PAIRS_IN_FLIGHT)

    async def pair(i: int) -> tuple[httpx.Response, httpx.Response]:
        item = f"{run}{i}"
        h = {"Idempotency-Key": item}
        async with in_flight:
            a, b = await asyncio.gather(
                http.post("/orders", json={"item": item}, headers=h),
                http.post("/orders", json={"item": item}, headers=h),
            )
            return a, b

    responses = await asyncio.gather(*(pair(i) for i in range(pairs)))
    assert sum(effects[f"{run}{i}"] != 1 for i in range(pairs)) == 0, "every pair ran exactly once"
    for a, b in responses:
        assert a.status_code == b.status_code == 201
        assert a.content == b.content
        assert [a.headers.get("idempotent-replayed"), b.headers.get("idempotent-replayed")].count("true") == 1


#: A lease short enough that the test outlives it several times over.
SHORT_LEASE_MS = 300


async def test_a_lease_shorter_than_the_app_stays_held(aclient: AsyncClient, run: str) -> None:
    inside = asyncio.Event()
    release = asyncio.Event()
    effects: Counter[str] = Counter()

    async def slow_app(scope: Scope, receive: Receive, send: Send) -> None:
        effects[run] += 1
        inside.set()
        await release.wait()
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b"made", "more_body": False})

    mw = IdempotencyMiddleware(
        slow_app, client=aclient, lease_ms=SHORT_LEASE_MS, concurrent="conflict", key_prefix="asgi-test:"
    )
    h = {"Idempotency-Key": run}
    async with _http(mw) as http:
        first = asyncio.create_task(http.post("/x", headers=h))
        await asyncio.wait_for(inside.wait(), 10)
        # Three leases later the record would be free without its renewals.
        await asyncio.sleep(3 * SHORT_LEASE_MS / 1000)
        _is_problem(await http.post("/x", headers=h), 409)
        release.set()
        assert (await first).status_code == 201
        again = await http.post("/x", headers=h)
    assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
    assert effects[run] == 1
