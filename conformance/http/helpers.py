"""Small helpers shared by the cases."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import httpx

from targets import Gateway

TIMEOUT_S = 10.0


def uid() -> str:
    return uuid.uuid4().hex


def upstream(
    *,
    status: int | None = None,
    sleep_ms: int | None = None,
    hold: str | None = None,
    headers: Mapping[str, str] | None = None,
    body_bytes: int | None = None,
    stream_bytes: int | None = None,
    fail: str | None = None,
) -> dict[str, str]:
    """Request headers that tell the reference upstream how to answer."""
    h: dict[str, str] = {}
    if status is not None:
        h["x-upstream-status"] = str(status)
    if sleep_ms is not None:
        h["x-upstream-sleep-ms"] = str(sleep_ms)
    if hold is not None:
        h["x-upstream-hold"] = hold
    if headers:
        h["x-upstream-headers"] = json.dumps(dict(headers))
    if body_bytes is not None:
        h["x-upstream-body-bytes"] = str(body_bytes)
    if stream_bytes is not None:
        h["x-upstream-stream-bytes"] = str(stream_bytes)
    if fail is not None:
        h["x-upstream-fail"] = fail
    return h


def send(
    g: Gateway,
    path: str,
    *,
    method: str = "POST",
    key: str | bytes | None = None,
    effect: str | None = None,
    json_body: Any = None,
    content: bytes | str | Iterable[bytes] | None = None,
    headers: Mapping[str, str] | None = None,
    extra_headers: list[tuple[str, str | bytes]] | None = None,
    timeout_s: float = TIMEOUT_S,
) -> httpx.Response:
    """One request through the gateway; ``effect`` names the operation the upstream counts."""
    pairs: list[tuple[str, str | bytes]] = []
    if key is not None:
        pairs.append(("idempotency-key", key))
    if effect is not None:
        pairs.append(("x-effect", effect))
    if json_body is not None:
        pairs.append(("content-type", "application/json"))
        content = json.dumps(json_body)
    pairs += list((headers or {}).items())
    pairs += extra_headers or []
    h = [(k.encode(), v if isinstance(v, bytes) else v.encode()) for k, v in pairs]
    with httpx.Client(timeout=timeout_s) as c:
        return c.request(method, g.base_url + path, headers=h, content=content)


def replayed(r: httpx.Response) -> bool:
    return bool(r.headers.get("idempotent-replayed") == "true")


def assert_problem(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, (
        f"expected {status}, got {r.status_code}: {r.text[:300]}"
    )
    assert r.headers["content-type"].startswith("application/problem+json"), r.headers
    doc: dict[str, Any] = r.json()
    assert doc.get("status") == status and doc.get("title"), doc
    return doc


def same_response(a: httpx.Response, b: httpx.Response) -> bool:
    return a.status_code == b.status_code and a.content == b.content
