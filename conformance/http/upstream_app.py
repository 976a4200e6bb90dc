"""The reference upstream of the HTTP conformance suite.

A Starlette ASGI app that every case talks to through the implementation
under test. It counts effects: each request that reaches it adds one to the
counter named by its ``X-Effect`` header (or its path), *before* it sleeps,
fails or answers, so a count is the number of times the operation ran.

Behaviour is chosen per request by headers, which no fingerprint covers:

- ``X-Upstream-Status: N``          answer with status N (default 201 for POST, 200 otherwise)
- ``X-Upstream-Headers: {json}``    set these response headers (e.g. Location, ETag, Set-Cookie)
- ``X-Upstream-Sleep-Ms: N``        sleep N ms before answering
- ``X-Upstream-Hold: NAME``         wait until the test calls ``release(NAME)`` (at most 10 s)
- ``X-Upstream-Body-Bytes: N``      answer ``text/plain`` of N bytes (with Content-Length)
- ``X-Upstream-Stream-Bytes: N``    the same, streamed in 1 KiB chunks without Content-Length
- ``X-Upstream-Fail: raise``        raise inside the app (the server answers 500)
- ``X-Upstream-Fail: drop``         send the response head, then break the connection

The default body is JSON: ``{"effect", "n", "method", "path", "query", "body", "headers"}``,
where ``n`` is the count after this request, so two executions never answer
the same body. ``GET /_effects/{name}`` reads a counter without changing it.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

_lock = threading.Lock()
_effects: dict[str, int] = {}
_released: set[str] = set()

#: Longest a held request waits for its release, in seconds.
HOLD_S_MAX = 10.0

METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


def effects(name: str) -> int:
    """How many times the operation named ``name`` ran."""
    with _lock:
        return _effects.get(name, 0)


def release(name: str) -> None:
    """Lets every request held under ``name`` answer (now and later)."""
    with _lock:
        _released.add(name)


def _is_released(name: str) -> bool:
    with _lock:
        return name in _released


def _count(name: str) -> int:
    with _lock:
        n = _effects.get(name, 0) + 1
        _effects[name] = n
        return n


async def read_effects(request: Request) -> Response:
    return JSONResponse({"n": effects(request.path_params["name"])})


async def _chunks(total: int, fail_after_first: bool) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        size = min(1024, total - sent)
        yield b"x" * size
        sent += size
        if fail_after_first:
            raise RuntimeError("the upstream breaks the connection mid-response")
        await asyncio.sleep(0)


async def operation(request: Request) -> Response:
    body = await request.body()
    h = request.headers
    name = h.get("x-effect") or request.url.path
    n = _count(name)
    sleep_ms = int(h.get("x-upstream-sleep-ms", "0"))
    if sleep_ms:
        await asyncio.sleep(sleep_ms / 1000)
    hold = h.get("x-upstream-hold")
    if hold:
        # Polled: the test releases from its own thread, not this event loop.
        deadline = asyncio.get_running_loop().time() + HOLD_S_MAX
        while not _is_released(hold) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.005)
    fail = h.get("x-upstream-fail")
    if fail == "raise":
        raise RuntimeError("the upstream app raised")
    default_status = 201 if request.method == "POST" else 200
    status = int(h.get("x-upstream-status", str(default_status)))
    extra: dict[str, str] = json.loads(h.get("x-upstream-headers", "{}"))
    if fail == "drop":
        return StreamingResponse(
            _chunks(4096, True), status_code=status, media_type="text/plain"
        )
    if "x-upstream-stream-bytes" in h:
        stream = StreamingResponse(
            _chunks(int(h["x-upstream-stream-bytes"]), False),
            status_code=status,
            media_type="text/plain",
        )
        stream.headers.update(extra)
        return stream
    if "x-upstream-body-bytes" in h:
        plain = Response(
            b"y" * int(h["x-upstream-body-bytes"]),
            status_code=status,
            media_type="text/plain",
        )
        plain.headers.update(extra)
        return plain
    if status in (204, 304) or 100 <= status < 200:
        empty = Response(b"", status_code=status)
        empty.headers.update(extra)
        return empty
    doc = {
        "effect": name,
        "n": n,
        "method": request.method,
        "path": request.url.path,
        "query": request.url.query,
        "body": body.decode("utf-8", "replace"),
        "headers": {k: v for k, v in h.items()},
    }
    res = JSONResponse(doc, status_code=status)
    # Set-Cookie may appear more than once; a dict holds one value per name.
    for k, v in extra.items():
        res.headers.append(k, v)
    return res


app = Starlette(
    routes=[
        Route("/_effects/{name:path}", read_effects, methods=["GET"]),
        Route("/{path:path}", operation, methods=METHODS),
    ]
)
