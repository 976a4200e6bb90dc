"""The Idempotency-Key semantics shared with `idem gateway`, as pure functions.

Route specs, key sources, scope, the request fingerprint, the failure
policy and the stored-response format. No I/O here: the ASGI middleware
(:mod:`idem_client.asgi`) drives these.

Route spec (the gateway's ``--route`` syntax)::

    METHOD PATH key=SOURCE[+SOURCE...] [fingerprint=request|none|SOURCE[+SOURCE...]]
                [concurrent=wait|conflict] [wait=DURATION] [keep=DURATION]
                [require=true|false] [scope=SOURCE] [on_5xx=abort|store]
                [on_timeout=keep|abort]

SOURCE is ``header:NAME``, ``json:FIELD`` (dotted path into a JSON body),
``query:NAME`` or ``path:NAME``. ``fingerprint=request`` (the default)
covers method, path, query and canonical body; ``none`` checks nothing;
SOURCEs name the fields to compare. DURATION is milliseconds or a number
with ``ms``, ``s``, ``m``, ``h`` or ``d``. Options left out take the
middleware-wide values (:class:`Policy`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qs

#: Longest Idempotency-Key accepted, in bytes (after unquoting), as Stripe bounds it.
KEY_BYTES_MAX = 255
#: How long a completed response is replayed by default (24 h).
KEEP_MS_DEFAULT = 86_400_000
#: How long a concurrent duplicate waits for the first request's outcome by default.
WAIT_MS_DEFAULT = 10_000
#: Statuses in 200..499 that are not stored by default: the request may succeed if retried.
RELEASE_STATUSES_DEFAULT = frozenset({408, 409, 425, 429})
#: Response headers stored and replayed by default.
STORED_HEADERS_DEFAULT = ("content-type", "location", "etag", "link")
#: Headers never stored, whatever the configuration says: a replay must not
#: hand one client's session to another, nor claim a stale date.
NEVER_STORED = frozenset({"set-cookie", "date"})
#: The header that marks a replayed response.
REPLAYED_HEADER = b"idempotent-replayed"

Concurrent = Literal["wait", "conflict"]
On5xx = Literal["abort", "store"]
OnTimeout = Literal["keep", "abort"]


class RouteError(ValueError):
    """A route spec that cannot be parsed."""


@dataclass(frozen=True, slots=True)
class Source:
    """Where part of a key (or scope, or fingerprint) comes from."""

    kind: Literal["header", "json", "query", "path"]
    name: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"


@dataclass(frozen=True, slots=True)
class Policy:
    """The middleware-wide values a route falls back to for the options it leaves out."""

    wait_ms: int = WAIT_MS_DEFAULT
    keep_ms: int = KEEP_MS_DEFAULT
    concurrent: Concurrent = "wait"
    scope: tuple[Source, ...] = ()
    on_5xx: On5xx = "abort"
    on_timeout: OnTimeout = "keep"


@dataclass(frozen=True, slots=True)
class Route:
    """One idempotent route, every option resolved."""

    method: str
    path: str
    key: tuple[Source, ...]
    #: "request": method, path, query and canonical body; "none": unchecked; else the named fields.
    fingerprint: tuple[Source, ...] | Literal["request", "none"] = "request"
    concurrent: Concurrent = "wait"
    wait_ms: int = WAIT_MS_DEFAULT
    keep_ms: int = KEEP_MS_DEFAULT
    require: bool = True
    scope: tuple[Source, ...] = ()
    on_5xx: On5xx = "abort"
    on_timeout: OnTimeout = "keep"

    @property
    def id(self) -> str:
        return f"{self.method} {self.path}"

    def match(self, method: str, path: str) -> dict[str, str] | None:
        """The path parameters if `method` and `path` match this route, else None."""
        if method != self.method:
            return None
        want = self.path.strip("/").split("/")
        got = path.strip("/").split("/")
        if len(want) != len(got):
            return None
        params: dict[str, str] = {}
        for w, g in zip(want, got, strict=True):
            if w.startswith("{") and w.endswith("}") and len(w) > 2:
                if not g:
                    return None
                params[w[1:-1]] = g
            elif w != g:
                return None
        return params


_DURATION = re.compile(r"^(\d+)(ms|s|m|h|d)?$")
_UNIT_MS = {None: 1, "ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def parse_duration_ms(text: str) -> int:
    """``500ms``, ``30s``, ``10m``, ``24h``, ``7d``, or plain milliseconds."""
    m = _DURATION.match(text.strip())
    if m is None:
        raise RouteError(f"not a duration: {text!r} (use e.g. 500ms, 30s, 10m, 24h, 7d)")
    ms = int(m.group(1)) * _UNIT_MS[m.group(2)]
    if ms <= 0:
        raise RouteError(f"a duration must be positive: {text!r}")
    return ms


def parse_sources(text: str, what: str) -> tuple[Source, ...]:
    sources: list[Source] = []
    for part in text.split("+"):
        kind, sep, name = part.partition(":")
        if not sep or not name or kind not in ("header", "json", "query", "path"):
            raise RouteError(
                f"{what}={text!r}: each part must be header:, json:, query: or path: with a name"
            )
        if kind == "json" and any(not f for f in name.split(".")):
            raise RouteError(f"{what}={text!r}: empty field in the dotted path")
        sources.append(Source(kind, name.lower() if kind == "header" else name))  # type: ignore[arg-type]
    return tuple(sources)


def _choice(text: str, what: str, allowed: tuple[str, ...]) -> str:
    if text in allowed:
        return text
    raise RouteError(f"{what}={text!r}: use {' or '.join(allowed)}")


_OPTIONS = ("key", "fingerprint", "concurrent", "wait", "keep", "require", "scope", "on_5xx", "on_timeout")


def parse_route(spec: str, policy: Policy | None = None) -> Route:
    """Parses one route spec (options left out come from `policy`); raises `RouteError`."""
    policy = policy or Policy()
    words = spec.split()
    if len(words) < 3:
        raise RouteError(f"route {spec!r}: expected 'METHOD PATH key=SOURCE [option=value ...]'")
    method, path, options = words[0].upper(), words[1], words[2:]
    if not method.isalpha():
        raise RouteError(f"route {spec!r}: {words[0]!r} is not an HTTP method")
    if not path.startswith("/"):
        raise RouteError(f"route {spec!r}: the path must start with /")
    params = {seg[1:-1] for seg in path.split("/") if seg.startswith("{") and seg.endswith("}")}
    seen: dict[str, str] = {}
    for option in options:
        name, sep, value = option.partition("=")
        if not sep or not value:
            raise RouteError(f"route {spec!r}: {option!r} is not name=value")
        if name in seen:
            raise RouteError(f"route {spec!r}: {name} given twice")
        if name not in _OPTIONS:
            raise RouteError(f"route {spec!r}: unknown option {name} (known: {', '.join(_OPTIONS)})")
        seen[name] = value
    if "key" not in seen:
        raise RouteError(f"route {spec!r}: key=SOURCE is required")
    try:
        key = parse_sources(seen["key"], "key")
        fp_text = seen.get("fingerprint", "request")
        fingerprint: tuple[Source, ...] | Literal["request", "none"]
        if fp_text == "request":
            fingerprint = "request"
        elif fp_text == "none":
            fingerprint = "none"
        else:
            fingerprint = parse_sources(fp_text, "fingerprint")
        scope = parse_sources(seen["scope"], "scope") if "scope" in seen else policy.scope
        route = Route(
            method=method,
            path=path,
            key=key,
            fingerprint=fingerprint,
            concurrent=_choice(seen["concurrent"], "concurrent", ("wait", "conflict"))  # type: ignore[arg-type]
            if "concurrent" in seen
            else policy.concurrent,
            wait_ms=parse_duration_ms(seen["wait"]) if "wait" in seen else policy.wait_ms,
            keep_ms=parse_duration_ms(seen["keep"]) if "keep" in seen else policy.keep_ms,
            require=_choice(seen.get("require", "true"), "require", ("true", "false")) == "true",
            scope=scope,
            on_5xx=_choice(seen["on_5xx"], "on_5xx", ("abort", "store"))  # type: ignore[arg-type]
            if "on_5xx" in seen
            else policy.on_5xx,
            on_timeout=_choice(seen["on_timeout"], "on_timeout", ("keep", "abort"))  # type: ignore[arg-type]
            if "on_timeout" in seen
            else policy.on_timeout,
        )
    except RouteError as error:
        raise RouteError(f"route {spec!r}: {error}") from None
    named = route.key + route.scope + (route.fingerprint if isinstance(route.fingerprint, tuple) else ())
    for src in named:
        if src.kind == "path" and src.name not in params:
            raise RouteError(f"route {spec!r}: path:{src.name} is not a parameter of {path}")
    return route


# ---------------------------------------------------------------- the request


@dataclass(frozen=True, slots=True)
class Request:
    """What the semantics look at in a request."""

    method: str
    path: str
    query: bytes
    #: Lower-case names; repeated headers keep every value in order.
    headers: Mapping[str, Sequence[bytes]]
    body: bytes
    path_params: Mapping[str, str]

    def json_body(self) -> object:
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError):
            return _NOT_JSON


_NOT_JSON = object()


def canonical_json(value: object) -> bytes:
    """Sorted keys, no whitespace, UTF-8: equal documents give equal bytes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def canonical_body(body: bytes) -> bytes:
    """The body as the fingerprint sees it: canonical JSON if it parses, else the bytes."""
    try:
        return canonical_json(json.loads(body))
    except (ValueError, UnicodeDecodeError):
        return body


def source_value(request: Request, source: Source) -> bytes | None:
    """The bytes a source selects, or None when the request lacks it."""
    if source.kind == "header":
        values = request.headers.get(source.name)
        return b", ".join(values) if values else None
    if source.kind == "query":
        found = parse_qs(request.query.decode("latin-1"), keep_blank_values=True).get(source.name)
        return found[0].encode("latin-1") if found else None
    if source.kind == "path":
        value = request.path_params.get(source.name)
        return value.encode() if value is not None else None
    node = request.json_body()
    for field in source.name.split("."):
        if not isinstance(node, dict) or field not in node:
            return None
        node = node[field]
    if node is None:
        return None
    if isinstance(node, str):
        return node.encode()
    return canonical_json(node)


def _framed(parts: Sequence[bytes]) -> bytes:
    # Length-prefixed so that ("ab", "c") and ("a", "bc") never collide.
    return b"".join(len(p).to_bytes(4, "big") + p for p in parts)


def route_key(request: Request, route: Route) -> bytes | None:
    """The route's key value, or None if any part is missing."""
    parts = [source_value(request, s) for s in route.key]
    if any(p is None or p == b"" for p in parts):
        return None
    return _framed([p for p in parts if p is not None])


def scope_value(request: Request, sources: Sequence[Source]) -> bytes:
    """The client scope: SHA-256 of the selected values (absent ones count as empty)."""
    if not sources:
        return b""
    return hashlib.sha256(_framed([source_value(request, s) or b"" for s in sources])).digest()


def stored_key(prefix: bytes, route_id: str, scope: bytes, key: bytes) -> bytes:
    """The record key: the route, the client scope and the key value, hashed to a fixed size."""
    digest = hashlib.sha256(_framed([route_id.encode(), scope, key])).hexdigest()
    return prefix + digest.encode()


def fingerprint(request: Request, fields: Sequence[Source] | Literal["request", "none"]) -> bytes | None:
    """SHA-256 over method, path, query and canonical body, or over the named fields; None: unchecked."""
    if fields == "none":
        return None
    if fields == "request":
        parts = [request.method.encode(), request.path.encode(), request.query, canonical_body(request.body)]
    else:
        parts = [source_value(request, s) or b"" for s in fields]
    return hashlib.sha256(_framed(parts)).hexdigest().encode()


# ---------------------------------------------------------------- Idempotency-Key header

_SF_STRING_CHARS = frozenset(range(0x20, 0x7F)) - {0x22, 0x5C}
_TCHAR = frozenset(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz:/")


def parse_idempotency_key(value: bytes) -> bytes | None:
    """An RFC 8941 sf-string (``"abc"``), or a bare value of token characters (``abc``,
    ``123e4567-...``) as most clients send it; both spell the same key. None when malformed or too long."""
    value = value.strip(b" \t")
    if value.startswith(b'"'):
        out = bytearray()
        i = 1
        while i < len(value):
            c = value[i]
            if c == 0x5C:  # backslash: only \" and \\ are escapes
                if i + 1 >= len(value) or value[i + 1] not in (0x22, 0x5C):
                    return None
                out.append(value[i + 1])
                i += 2
            elif c == 0x22:
                if i != len(value) - 1:
                    return None
                key = bytes(out)
                return key if 0 < len(key) <= KEY_BYTES_MAX else None
            elif c in _SF_STRING_CHARS:
                out.append(c)
                i += 1
            else:
                return None
        return None
    if not value or any(c not in _TCHAR for c in value):
        return None
    return value if len(value) <= KEY_BYTES_MAX else None


# ---------------------------------------------------------------- stored responses


def stored_status(status: int, on_5xx: On5xx, release: frozenset[int] = RELEASE_STATUSES_DEFAULT) -> bool:
    """The failure policy: 2xx-4xx are stored except the released statuses (408, 409, 425, 429
    by default); 5xx only with ``on_5xx=store``."""
    if status in release:
        return False
    if 200 <= status <= 499:
        return True
    return status >= 500 and on_5xx == "store"


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """A response as stored for replays; `replayable` is False for one that was too large."""

    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    replayable: bool = True


_FORMAT = b"idem-http-1\n"


def encode_response(response: StoredResponse) -> bytes:
    head = {
        "status": response.status,
        "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in response.headers],
        "replayable": response.replayable,
    }
    return _FORMAT + canonical_json(head) + b"\n" + response.body


class CorruptRecord(ValueError):
    """A stored record this middleware did not write."""


def decode_response(data: bytes) -> StoredResponse:
    if not data.startswith(_FORMAT):
        raise CorruptRecord("not a stored HTTP response")
    head_bytes, sep, body = data[len(_FORMAT) :].partition(b"\n")
    if not sep:
        raise CorruptRecord("stored HTTP response without a header line")
    try:
        head = json.loads(head_bytes)
        status = head["status"]
        headers = tuple((k.encode("latin-1"), v.encode("latin-1")) for k, v in head["headers"])
        replayable = head["replayable"]
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise CorruptRecord(f"stored HTTP response header: {error}") from None
    if type(status) is not int or not isinstance(replayable, bool):
        raise CorruptRecord("stored HTTP response header has the wrong types")
    return StoredResponse(status=status, headers=headers, body=body, replayable=replayable)
