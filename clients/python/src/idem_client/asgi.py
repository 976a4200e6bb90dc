"""``IdempotencyMiddleware``: the `idem gateway`'s Idempotency-Key semantics inside an ASGI app.

With FastAPI or Starlette::

    app.add_middleware(IdempotencyMiddleware, client=AsyncClient.from_url(url),
                       routes=["POST /orders key=header:Idempotency-Key"])

Without routes (IETF mode) a POST or PATCH carrying ``Idempotency-Key`` is
idempotent and everything else passes through. With routes, only requests
matching a route are. The first request runs the app; its status, body and
allow-listed headers are stored unless the failure policy says otherwise
(5xx, 408, 409, 425, 429 and exceptions abort, so a retry runs again).
Every duplicate gets the stored response plus ``Idempotent-Replayed: true``.
A concurrent duplicate waits for the first outcome (``concurrent=wait``) or
gets 409 with ``Retry-After`` (``concurrent=conflict``). A key reused with
another request gets 422; a missing or malformed key 400. Errors are
``application/problem+json``.

The record is committed before the response's last body chunk is passed
on, so a client that got a complete response can rely on its replay.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import Any

from .aio import AsyncClient
from .errors import IdemError, Mismatch, Stale
from .http_semantics import (
    KEEP_MS_DEFAULT,
    NEVER_STORED,
    REPLAYED_HEADER,
    STORED_HEADERS_DEFAULT,
    CorruptRecord,
    Request,
    Route,
    StoredResponse,
    decode_response,
    encode_response,
    fingerprint,
    parse_idempotency_key,
    parse_route,
    parse_sources,
    route_key,
    scope_value,
    stored_key,
    stored_status,
)
from .replies import Done, Running, Started

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("idem_client.asgi")

#: The request methods IETF mode makes idempotent.
IETF_METHODS = frozenset({"POST", "PATCH"})
#: The header IETF mode reads the key from.
IETF_HEADER = "idempotency-key"
#: Largest request body read (it is buffered to compute the key and fingerprint).
REQUEST_BYTES_MAX = 1 << 20
#: Largest response stored for replays; a larger one is passed through and
#: its record marked done but not replayable.
RESPONSE_BYTES_MAX = 1 << 20
#: How long the first request may run: the record's lease. A request still
#: running after it may be run again by a duplicate.
LEASE_MS_DEFAULT = 60_000
#: How long a concurrent duplicate waits for the first request's outcome.
WAIT_MS_DEFAULT = 30_000
#: Key prefix of the records this middleware writes.
PREFIX_DEFAULT = b"http:"

_PROBLEM_BASE = "https://idem.dev/problems/"


def _ietf_route(keep_ms: int, scope: str | None) -> Route:
    return Route(
        method="*",
        path="*",
        key=parse_sources("header:" + IETF_HEADER, "key"),
        keep_ms=keep_ms,
        scope=parse_sources(scope, "scope") if scope else (),
    )


class IdempotencyMiddleware:
    """ASGI middleware making POST/PATCH with Idempotency-Key (or the given routes) exactly-once."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        client: AsyncClient,
        routes: Sequence[str] = (),
        scope: str | None = None,
        keep_ms: int = KEEP_MS_DEFAULT,
        lease_ms: int = LEASE_MS_DEFAULT,
        wait_ms: int = WAIT_MS_DEFAULT,
        stored_headers: Sequence[str] = STORED_HEADERS_DEFAULT,
        request_bytes_max: int = REQUEST_BYTES_MAX,
        response_bytes_max: int = RESPONSE_BYTES_MAX,
        prefix: bytes = PREFIX_DEFAULT,
    ) -> None:
        """`routes` are gateway route specs; `scope` is IETF mode's client scope.

        E.g. ``scope="header:Authorization"``: two clients' keys never collide.
        """
        self._app = app
        self._client = client
        self._routes = [parse_route(r) for r in routes]
        self._ietf = _ietf_route(keep_ms, scope)
        self._lease_ms = lease_ms
        self._wait_ms = wait_ms
        headers = {h.lower() for h in stored_headers}
        forbidden = headers & NEVER_STORED
        if forbidden:
            raise ValueError(f"these headers are never stored: {', '.join(sorted(forbidden))}")
        self._stored_headers = frozenset(h.encode("latin-1") for h in headers)
        self._request_bytes_max = request_bytes_max
        self._response_bytes_max = response_bytes_max
        self._prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        method: str = scope["method"]
        path: str = scope["path"]
        headers: dict[str, list[bytes]] = {}
        for name, value in scope.get("headers", []):
            headers.setdefault(name.decode("latin-1").lower(), []).append(value)
        route, params = self._route(method, path, headers)
        if route is None:
            await self._app(scope, receive, send)
            return

        body = await _read_body(receive, self._request_bytes_max)
        replay_receive = _replaying(body, receive)
        if body is None:
            await _problem(
                send,
                413,
                "request-too-large",
                "Request body too large",
                f"an idempotent request body may hold at most {self._request_bytes_max} bytes",
            )
            return
        request = Request(method, path, scope.get("query_string", b""), headers, body, params)

        key_value = self._key_value(request, route)
        if key_value is None:
            if route is not self._ietf and not route.require:
                await self._app(scope, replay_receive, send)
                return
            await _problem(
                send,
                400,
                "idempotency-key-invalid",
                "Missing or invalid idempotency key",
                self._key_help(route),
            )
            return
        key = stored_key(self._prefix, route.id, scope_value(request, route.scope), key_value)
        fp = fingerprint(request, route.fingerprint)
        try:
            reply = await self._client.begin(key, fingerprint=fp, lease_ms=self._lease_ms)
            if isinstance(reply, Running) and route.concurrent == "wait":
                # Only a real duplicate parks (on the client's parking pool).
                reply = await self._client.begin(
                    key, fingerprint=fp, lease_ms=self._lease_ms, wait_ms=self._wait_ms
                )
        except Mismatch:
            await _problem(
                send,
                422,
                "idempotency-key-reused",
                "Idempotency key reused",
                "this idempotency key was already used with a different request",
            )
            return
        except IdemError as error:
            log.warning("idem unavailable: %s", error)
            await _problem(
                send,
                503,
                "idempotency-unavailable",
                "Idempotency store unavailable",
                "the request was not run; retry later",
                retry_after_s=1,
            )
            return
        if isinstance(reply, Done):
            await self._replay(send, reply)
        elif isinstance(reply, Running):
            await _problem(
                send,
                409,
                "request-in-flight",
                "Request in progress",
                "a request with this idempotency key is still being processed",
                retry_after_s=max(1, math.ceil(reply.lease_left_ms / 1000)),
            )
        else:
            await self._run(scope, replay_receive, send, key, reply, route)

    def _route(
        self, method: str, path: str, headers: dict[str, list[bytes]]
    ) -> tuple[Route | None, dict[str, str]]:
        if self._routes:
            for route in self._routes:
                params = route.match(method, path)
                if params is not None:
                    return route, params
            return None, {}
        if method in IETF_METHODS and IETF_HEADER in headers:
            return self._ietf, {}
        return None, {}

    def _key_value(self, request: Request, route: Route) -> bytes | None:
        if route is self._ietf:
            values = request.headers.get(IETF_HEADER, [])
            return parse_idempotency_key(values[0]) if len(values) == 1 else None
        return route_key(request, route)

    def _key_help(self, route: Route) -> str:
        if route is self._ietf:
            return 'Idempotency-Key must be one sf-string ("...") or token of printable ASCII, 1 to 255 bytes'
        return f"this route takes its key from {'+'.join(map(str, route.key))}"

    async def _replay(self, send: Send, done: Done) -> None:
        try:
            stored = decode_response(done.result)
        except CorruptRecord as error:
            log.error("unreadable stored response: %s", error)
            await _problem(
                send,
                500,
                "stored-response-unreadable",
                "Stored response unreadable",
                "the record for this idempotency key was not written by this middleware",
            )
            return
        if not stored.replayable:
            await _problem(
                send,
                409,
                "response-not-replayable",
                "Response not replayable",
                f"this request completed with status {stored.status}, but its response was "
                "too large to store; it will not be run again",
            )
            return
        headers = [
            *stored.headers,
            (b"content-length", str(len(stored.body)).encode()),
            (REPLAYED_HEADER, b"true"),
        ]
        await send({"type": "http.response.start", "status": stored.status, "headers": headers})
        await send({"type": "http.response.body", "body": stored.body, "more_body": False})

    async def _run(
        self, scope: Scope, receive: Receive, send: Send, key: bytes, started: Started, route: Route
    ) -> None:
        capture = _Capture(self, key, started.fence, route.keep_ms)

        async def capture_send(message: Message) -> None:
            await capture.send(message, send)

        try:
            await self._app(scope, receive, capture_send)
        except BaseException:
            await capture.end_without_response()
            raise
        await capture.end_without_response()


class _Capture:
    """Tees the first response into a buffer and ends the record before its last chunk goes out."""

    def __init__(self, owner: IdempotencyMiddleware, key: bytes, fence: int, keep_ms: int) -> None:
        self._owner = owner
        self._key = key
        self._fence = fence
        self._keep_ms = keep_ms
        self._status = 0
        self._headers: list[tuple[bytes, bytes]] = []
        self._chunks: list[bytes] = []
        self._size = 0
        self._oversize = False
        self._ended = False

    async def send(self, message: Message, send: Send) -> None:
        if message["type"] == "http.response.start":
            self._status = int(message["status"])
            allowed = self._owner._stored_headers
            self._headers = [(k.lower(), v) for k, v in message.get("headers", []) if k.lower() in allowed]
        elif message["type"] == "http.response.body":
            chunk: bytes = message.get("body", b"")
            if not self._oversize:
                self._size += len(chunk)
                if self._size > self._owner._response_bytes_max:
                    self._oversize = True
                    self._chunks = []
                else:
                    self._chunks.append(chunk)
            if not message.get("more_body", False) and not self._ended:
                await self._end()
        await send(message)

    async def _end(self) -> None:
        self._ended = True
        client = self._owner._client
        try:
            if stored_status(self._status):
                stored = StoredResponse(
                    self._status, tuple(self._headers), b"".join(self._chunks), replayable=not self._oversize
                )
                await client.commit(self._key, self._fence, encode_response(stored), keep_ms=self._keep_ms)
            else:
                await client.abort(self._key, self._fence)
        except Stale:
            log.warning("the lease of %r ran out before its response was stored; raise lease_ms", self._key)
        except IdemError as error:
            log.warning("could not end the record of %r: %s", self._key, error)

    async def end_without_response(self) -> None:
        """The app raised or returned without a complete response: abort, so a retry runs again."""
        if self._ended:
            return
        self._ended = True
        try:
            await self._owner._client.abort(self._key, self._fence)
        except IdemError as error:
            log.warning("could not abort the record of %r: %s", self._key, error)


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replaying(body: bytes | None, receive: Receive) -> Receive:
    delivered = False

    async def replay() -> Message:
        nonlocal delivered
        if not delivered and body is not None:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _problem(
    send: Send, status: int, kind: str, title: str, detail: str, *, retry_after_s: int | None = None
) -> None:
    body = json.dumps(
        {"type": _PROBLEM_BASE + kind, "title": title, "status": status, "detail": detail}
    ).encode()
    headers = [(b"content-type", b"application/problem+json"), (b"content-length", str(len(body)).encode())]
    if retry_after_s is not None:
        headers.append((b"retry-after", str(retry_after_s).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
