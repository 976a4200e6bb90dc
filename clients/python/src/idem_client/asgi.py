"""``IdempotencyMiddleware``: the `idem gateway`'s Idempotency-Key semantics inside an ASGI app.

With FastAPI or Starlette::

    app.add_middleware(IdempotencyMiddleware, client=AsyncClient.from_url(url),
                       routes=["POST /orders key=header:Idempotency-Key"])

Without routes (IETF mode) a POST or PATCH carrying ``Idempotency-Key`` is
idempotent and everything else passes through. With routes, only requests
matching a route are. The first request runs the app; its status, body and
allow-listed headers are stored unless the failure policy says otherwise
(5xx, 408, 409, 425, 429 and an exception before the response abort, so a
retry runs again). Every duplicate gets the stored response plus
``Idempotent-Replayed: true``. A concurrent duplicate waits for the first
outcome (``concurrent=wait``) or gets 409 with ``Retry-After``
(``concurrent=conflict``). A key reused with another request gets 422; a
missing or malformed key 400; a request body over the bound 413. Errors
are ``application/problem+json``.

The first response is buffered and the record committed before the
response goes out, so a client that got a complete response can rely on
its replay. A response over ``stored_body_bytes_max`` is passed through
as it streams and its record marked done but not replayable (duplicates get
410). An app that breaks off mid-response, or does not answer within
``app_timeout_ms`` (it is then cancelled), has an unknown outcome: the
record stays in flight until its lease ends (``on_timeout="keep"``) or is
removed (``"abort"``).

While the app runs the record's lease is renewed every third of
``lease_ms``, so the lease bounds how long a crashed process holds the key,
not how long the app may run. Renewing stops when a renewal gets ``STALE``
(the record is lost; the commit's fence check then decides) and when the
outcome becomes unknown, so such a record expires with its last lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from collections.abc import Awaitable, Callable, Iterable, MutableMapping, Sequence
from typing import Any

from .aio import AsyncClient
from .errors import IdemError, Mismatch, Stale
from .http_semantics import (
    KEEP_MS_DEFAULT,
    NEVER_STORED,
    RELEASE_STATUSES_DEFAULT,
    REPLAYED_HEADER,
    STORED_HEADERS_DEFAULT,
    WAIT_MS_DEFAULT,
    Concurrent,
    CorruptRecord,
    On5xx,
    OnTimeout,
    Policy,
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
from .idempotent import check_lease_ms, keep_renewing
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
REQUEST_BYTES_MAX = 1024 * 1024
#: Largest response body stored for replays.
STORED_BODY_BYTES_MAX = 512 * 1024
#: The record's lease, renewed while the app runs: how long a key stays held
#: after its process stops renewing (a crash, or an unknown outcome).
LEASE_MS_DEFAULT = 65_000
#: How long the app may take to deliver its response (or start streaming an
#: oversize one) before the outcome counts as unknown.
APP_TIMEOUT_MS = 30_000
#: Key prefix of the records this middleware writes.
KEY_PREFIX_DEFAULT = "http:"

#: Problem types share the gateway's names, so clients handle both alike.
_PROBLEM_BASE = "urn:idem:gateway:"


class IdempotencyMiddleware:
    """ASGI middleware making POST/PATCH with Idempotency-Key (or the given routes) exactly-once."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        client: AsyncClient,
        routes: Sequence[str] = (),
        scope: str | None = None,
        concurrent: Concurrent = "wait",
        wait_ms: int = WAIT_MS_DEFAULT,
        keep_ms: int = KEEP_MS_DEFAULT,
        lease_ms: int = LEASE_MS_DEFAULT,
        app_timeout_ms: int = APP_TIMEOUT_MS,
        on_5xx: On5xx = "abort",
        on_timeout: OnTimeout = "keep",
        release_statuses: Iterable[int] = RELEASE_STATUSES_DEFAULT,
        replay_headers: Sequence[str] = STORED_HEADERS_DEFAULT,
        request_bytes_max: int = REQUEST_BYTES_MAX,
        stored_body_bytes_max: int = STORED_BODY_BYTES_MAX,
        key_prefix: str = KEY_PREFIX_DEFAULT,
    ) -> None:
        """`routes` are gateway route specs; the other values are the gateway's settings of the same names.

        `scope` (e.g. ``"header:Authorization"``) keeps two clients' keys apart;
        routes without their own options take `concurrent`, `wait_ms`,
        `keep_ms`, `scope`, `on_5xx` and `on_timeout` from here.
        """
        self._app = app
        self._client = client
        policy = Policy(
            wait_ms=wait_ms,
            keep_ms=keep_ms,
            concurrent=concurrent,
            scope=parse_sources(scope, "scope") if scope else (),
            on_5xx=on_5xx,
            on_timeout=on_timeout,
        )
        self._routes = [parse_route(r, policy) for r in routes]
        self._ietf = Route(
            method="*",
            path="*",
            key=parse_sources("header:" + IETF_HEADER, "key"),
            concurrent=policy.concurrent,
            wait_ms=policy.wait_ms,
            keep_ms=policy.keep_ms,
            scope=policy.scope,
            on_5xx=policy.on_5xx,
            on_timeout=policy.on_timeout,
        )
        check_lease_ms(lease_ms)
        self._lease_ms = lease_ms
        self._app_timeout_s = app_timeout_ms / 1000
        self._release = frozenset(release_statuses)
        headers = {h.lower() for h in replay_headers}
        forbidden = headers & NEVER_STORED
        if forbidden:
            raise ValueError(f"these headers are never stored: {', '.join(sorted(forbidden))}")
        self._replay_headers = frozenset(h.encode("latin-1") for h in headers)
        self._request_bytes_max = request_bytes_max
        self._stored_body_bytes_max = stored_body_bytes_max
        self._prefix = key_prefix.encode()

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
        if body is None:
            await _problem(
                send,
                413,
                "request-too-large",
                "Request body too large",
                f"an idempotent request body may hold at most {self._request_bytes_max} bytes",
            )
            return
        replay_receive = _replaying(body, receive)
        request = Request(method, path, scope.get("query_string", b""), headers, body, params)

        key_value = self._key_value(request, route)
        if key_value is None:
            if route is not self._ietf and not route.require:
                await self._app(scope, replay_receive, send)
                return
            await _problem(
                send,
                400,
                "key-invalid" if route is self._ietf else "key-missing",
                "Idempotency-Key is invalid" if route is self._ietf else "Idempotency key is missing",
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
                    key, fingerprint=fp, lease_ms=self._lease_ms, wait_ms=route.wait_ms
                )
        except Mismatch:
            await _problem(
                send,
                422,
                "key-reused",
                "Idempotency-Key is already used",
                "this idempotency key was already used with a different request",
            )
            return
        except IdemError as error:
            log.warning("idem unavailable: %s", error)
            await _problem(
                send,
                503,
                "store-unavailable",
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
                "in-progress",
                "A request is outstanding for this Idempotency-Key",
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
                410,
                "not-replayable",
                "The stored response cannot be replayed",
                "the record for this idempotency key was not written by this middleware",
            )
            return
        if not stored.replayable:
            await _problem(
                send,
                410,
                "not-replayable",
                "The response to this Idempotency-Key was not stored",
                f"this request completed with status {stored.status}, but its response was "
                "too large to store; it is not run again",
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
        capture = _Capture(self, key, started.fence, route, send)
        task = asyncio.current_task()
        assert task is not None
        expired = False
        client, lease_ms = self._client, self._lease_ms
        renewal = asyncio.create_task(
            keep_renewing(lambda: client.idem_renew(key, started.fence, lease_ms=lease_ms), lease_ms)
        )

        def expire() -> None:
            nonlocal expired
            expired = True
            # The outcome is unknown: the record must expire with its last lease.
            renewal.cancel()
            task.cancel()

        # The deadline covers the app until its response is out (or streaming);
        # a timer, not a task per request, keeps the common path cheap.
        capture.deadline = asyncio.get_running_loop().call_later(self._app_timeout_s, expire)
        try:
            await self._app(scope, receive, capture.send)
        except asyncio.CancelledError:
            renewal.cancel()
            if not expired:
                await capture.failed()
                raise
            if hasattr(task, "uncancel"):
                task.uncancel()
            await capture.timed_out()
            return
        except BaseException:
            renewal.cancel()
            await capture.failed()
            raise
        finally:
            capture.deadline.cancel()
            renewal.cancel()
        await capture.returned()


class _Capture:
    """Buffers the first response, ends the record, then lets the response out.

    A response larger than the stored-body bound is let out as it streams; its
    record is committed as not replayable when its last chunk arrives.
    """

    def __init__(
        self, owner: IdempotencyMiddleware, key: bytes, fence: int, route: Route, send: Send
    ) -> None:
        self._owner = owner
        self._key = key
        self._fence = fence
        self._route = route
        self._send = send
        self._start: Message | None = None
        self._chunks: list[bytes] = []
        self._size = 0
        self._streaming = False
        self._ended = False
        self._abandoned = False
        #: The app's deadline, cancelled once the response is out.
        self.deadline: asyncio.TimerHandle | None = None

    async def send(self, message: Message) -> None:
        if self._abandoned:
            return
        kind = message["type"]
        if kind == "http.response.start":
            self._start = message
            return
        if kind != "http.response.body":
            await self._send(message)
            return
        chunk: bytes = message.get("body", b"")
        more = bool(message.get("more_body", False))
        if self._streaming:
            if not more:
                await self._commit(StoredResponse(self._status, (), b"", replayable=False))
            await self._send(message)
            return
        self._chunks.append(chunk)
        self._size += len(chunk)
        if self._size > self._owner._stored_body_bytes_max:
            # Too large to store: pass it through from here on.
            self._streaming = True
            if not more:
                await self._commit(StoredResponse(self._status, (), b"", replayable=False))
            await self._flush(more)
            self._chunks = []
            self._settle()
            return
        if not more:
            await self._finish()
            await self._flush(False)
            self._settle()

    def _settle(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()

    @property
    def _status(self) -> int:
        return int(self._start["status"]) if self._start is not None else 0

    async def _flush(self, more: bool) -> None:
        assert self._start is not None
        await self._send(self._start)
        await self._send({"type": "http.response.body", "body": b"".join(self._chunks), "more_body": more})

    async def _finish(self) -> None:
        status = self._status
        if stored_status(status, self._route.on_5xx, self._owner._release):
            assert self._start is not None
            allowed = self._owner._replay_headers
            headers = tuple((k.lower(), v) for k, v in self._start.get("headers", []) if k.lower() in allowed)
            await self._commit(StoredResponse(status, headers, b"".join(self._chunks)))
        else:
            await self._abort()

    async def _commit(self, stored: StoredResponse) -> None:
        self._ended = True
        try:
            await self._owner._client.commit(
                self._key, self._fence, encode_response(stored), keep_ms=self._route.keep_ms
            )
        except Stale:
            log.warning("the record of %r was lost before its response was stored", self._key)
        except IdemError as error:
            log.warning("could not store the response of %r: %s", self._key, error)

    async def _abort(self) -> None:
        self._ended = True
        try:
            await self._owner._client.abort(self._key, self._fence)
        except IdemError as error:
            log.warning("could not abort the record of %r: %s", self._key, error)

    async def _unknown_outcome(self) -> None:
        self._ended = True
        if self._route.on_timeout == "abort":
            await self._abort()

    async def returned(self) -> None:
        """The app returned: without a complete response it failed before answering."""
        if self._ended:
            return
        if self._streaming:
            # Part of an oversize response is out already: it may have run.
            await self._unknown_outcome()
            return
        await self._abort()
        if self._start is None:
            await _problem(
                self._send,
                500,
                "service-failed",
                "The application failed",
                "the application returned without a response",
            )
        else:
            await _problem(
                self._send,
                500,
                "service-failed",
                "The application failed",
                "the application's response ended early",
            )

    async def failed(self) -> None:
        """The app raised: before any response it failed (retryable); mid-response the outcome is unknown."""
        if self._ended:
            return
        if self._start is None:
            await self._abort()
            return
        await self._unknown_outcome()
        if not self._streaming:
            await _problem(
                self._send,
                502,
                "upstream-unreachable",
                "The response broke off",
                "the application failed while answering; the outcome is unknown",
            )

    async def timed_out(self) -> None:
        self._abandoned = True
        if self._ended:
            return
        await self._unknown_outcome()
        if not self._streaming:
            await _problem(
                self._send,
                504,
                "upstream-timeout",
                "The application did not answer in time",
                "the application did not answer in time; the outcome is unknown",
            )


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


def _replaying(body: bytes, receive: Receive) -> Receive:
    delivered = False

    async def replay() -> Message:
        nonlocal delivered
        if not delivered:
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
    with contextlib.suppress(OSError):
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})
