"""Requests and strict reply decoding, shared by the sync and async clients.

Each function builds one :class:`Command`: its arguments and the decoder of
its reply. The decoders accept exactly the shapes of docs/commands.md and
raise :class:`UnexpectedReply` for anything else.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from redis import exceptions as redis_errors

from ._bytes import Bin, to_bytes
from .errors import (
    ERRORS_BY_CODE,
    CommandError,
    IdemError,
    NoAuth,
    NoPermission,
    ReadOnly,
    Unavailable,
    UnexpectedReply,
)
from .replies import (
    Absent,
    Acquired,
    Already,
    Applied,
    Begin,
    Claim,
    ClaimAll,
    ClaimConflict,
    Claimed,
    Conflict,
    CounterAdd,
    Disallowed,
    Done,
    Free,
    FsmMove,
    Held,
    HeldAll,
    Locked,
    LockInfo,
    LockReply,
    LockState,
    Lost,
    Moved,
    Record,
    Refused,
    Renewed,
    RenewReply,
    Replayed,
    Reserved,
    Running,
    SlotConflict,
    SlotsReserve,
    SlotsTaken,
    Started,
    Stored,
    ValueSet,
    Versioned,
)

R = TypeVar("R")
A = TypeVar("A")
B = TypeVar("B")

Arg = bytes | int


@dataclass(frozen=True, slots=True)
class Command(Generic[R]):
    """One request: its arguments, its reply decoder, and whether it may park the connection."""

    args: tuple[Arg, ...]
    decode: Callable[[object], R]
    parks: bool = False


def translate(error: Exception) -> IdemError:
    """Maps a redis-py exception to this package's error for the same code."""
    if isinstance(error, redis_errors.AuthenticationError):
        return NoAuth(str(error))
    if isinstance(error, redis_errors.NoPermissionError):
        return NoPermission(str(error))
    if isinstance(error, redis_errors.ReadOnlyError):
        return ReadOnly(str(error))
    if isinstance(error, (redis_errors.ConnectionError, redis_errors.TimeoutError)):
        return Unavailable(str(error) or type(error).__name__)
    if isinstance(error, redis_errors.ResponseError):
        message = str(error)
        code = message.split(" ", 1)[0]
        cls = ERRORS_BY_CODE.get(code)
        # redis-py strips the `ERR ` prefix itself, so an unknown first word is ERR's text.
        return cls(message) if cls is not None else CommandError(message)
    return Unavailable(f"{type(error).__name__}: {error}")


# ---------------------------------------------------------------- decoding helpers


def _fail(what: str, raw: object) -> UnexpectedReply:
    return UnexpectedReply(f"{what}: unexpected reply {raw!r}")


def _array(raw: object, what: str) -> list[object]:
    if not isinstance(raw, list) or not raw:
        raise _fail(what, raw)
    return raw


def _word(items: list[object], what: str, raw: object) -> str:
    head = items[0]
    if not isinstance(head, bytes):
        raise _fail(what, raw)
    try:
        return head.decode("ascii")
    except UnicodeDecodeError:
        raise _fail(what, raw) from None


def _int(value: object, what: str, raw: object) -> int:
    # bool is an int subclass; redis-py never produces one here, so refuse it.
    if type(value) is not int:
        raise _fail(what, raw)
    return value


def _nonneg(value: object, what: str, raw: object) -> int:
    n = _int(value, what, raw)
    if n < 0:
        raise _fail(what, raw)
    return n


def _fence(value: object, what: str, raw: object) -> int:
    n = _int(value, what, raw)
    if n <= 0:
        raise _fail(what, raw)
    return n


def _bytes(value: object, what: str, raw: object) -> bytes:
    if not isinstance(value, bytes):
        raise _fail(what, raw)
    return value


def _shape(items: list[object], length: int, what: str, raw: object) -> None:
    if len(items) != length:
        raise _fail(what, raw)


def _ok_word(raw: object, what: str) -> None:
    items = _array(raw, what)
    if _word(items, what, raw) != "ok" or len(items) != 1:
        raise _fail(what, raw)


def _pairs(
    items: list[object],
    what: str,
    raw: object,
    first: Callable[[object, str, object], A],
    second: Callable[[object, str, object], B],
) -> list[tuple[A, B]]:
    """Decodes ``[word, a1, b1, a2, b2, ...]`` (at least one pair) into ``[(a1, b1), ...]``."""
    if len(items) < 3 or len(items) % 2 != 1:
        raise _fail(what, raw)
    rest = items[1:]
    return [(first(rest[i], what, raw), second(rest[i + 1], what, raw)) for i in range(0, len(rest), 2)]


def _running_or_done(word: str, items: list[object], what: str, raw: object) -> Running | Done:
    """The `running` and `done` replies IDEM.BEGIN and IDEM.GET share."""
    if word == "running":
        _shape(items, 3, what, raw)
        return Running(fence=_fence(items[1], what, raw), lease_left_ms=_nonneg(items[2], what, raw))
    if word == "done":
        _shape(items, 2, what, raw)
        return Done(result=_bytes(items[1], what, raw))
    raise _fail(what, raw)


def _optional_bytes(raw: object, what: str) -> bytes | None:
    if raw is None or isinstance(raw, bytes):
        return raw
    raise _fail(what, raw)


def _flag(raw: object, what: str) -> bool:
    if type(raw) is not int or raw not in (0, 1):
        raise _fail(what, raw)
    return raw == 1


# ---------------------------------------------------------------- idempotency keys


def _decode_begin(raw: object) -> Begin:
    what = "IDEM.BEGIN"
    items = _array(raw, what)
    word = _word(items, what, raw)
    if word == "started":
        _shape(items, 3, what, raw)
        attempt = _int(items[2], what, raw)
        if attempt < 1:
            raise _fail(what, raw)
        return Started(fence=_fence(items[1], what, raw), attempt=attempt)
    return _running_or_done(word, items, what, raw)


def begin(key: Bin, *, fingerprint: Bin | None, lease_ms: int | None, wait_ms: int | None) -> Command[Begin]:
    args: list[Arg] = [b"IDEM.BEGIN", to_bytes(key)]
    if fingerprint is not None:
        args += [b"FP", to_bytes(fingerprint)]
    if lease_ms is not None:
        args += [b"LEASE", lease_ms]
    if wait_ms is not None:
        args += [b"WAIT", wait_ms]
    return Command(tuple(args), _decode_begin, parks=bool(wait_ms))


def commit(key: Bin, fence: int, result: bytes, *, keep_ms: int | None) -> Command[None]:
    args: list[Arg] = [b"IDEM.COMMIT", to_bytes(key), fence, result]
    if keep_ms is not None:
        args += [b"KEEP", keep_ms]
    return Command(tuple(args), lambda raw: _ok_word(raw, "IDEM.COMMIT"))


def abort(key: Bin, fence: int) -> Command[None]:
    return Command((b"IDEM.ABORT", to_bytes(key), fence), lambda raw: _ok_word(raw, "IDEM.ABORT"))


def _decode_idem_renew(raw: object) -> Renewed:
    what = "IDEM.RENEW"
    items = _array(raw, what)
    if _word(items, what, raw) == "renewed":
        _shape(items, 2, what, raw)
        return Renewed(fence=_fence(items[1], what, raw))
    raise _fail(what, raw)


def idem_renew(key: Bin, fence: int, *, lease_ms: int) -> Command[Renewed]:
    return Command((b"IDEM.RENEW", to_bytes(key), fence, b"LEASE", lease_ms), _decode_idem_renew)


def _decode_get(raw: object) -> Record:
    what = "IDEM.GET"
    items = _array(raw, what)
    word = _word(items, what, raw)
    if word == "absent":
        _shape(items, 1, what, raw)
        return Absent()
    return _running_or_done(word, items, what, raw)


def get(key: Bin) -> Command[Record]:
    return Command((b"IDEM.GET", to_bytes(key)), _decode_get)


def delete(key: Bin) -> Command[bool]:
    return Command((b"IDEM.DEL", to_bytes(key)), lambda raw: _flag(raw, "IDEM.DEL"))


# ---------------------------------------------------------------- claims


def _decode_claim(raw: object) -> Claim:
    what = "CLAIM"
    items = _array(raw, what)
    word = _word(items, what, raw)
    if word == "claimed":
        _shape(items, 1, what, raw)
        return Claimed()
    if word == "held":
        _shape(items, 2, what, raw)
        return Held(owner=_bytes(items[1], what, raw))
    raise _fail(what, raw)


def claim(key: Bin, owner: Bin, *, ttl_ms: int | None) -> Command[Claim]:
    args: list[Arg] = [b"CLAIM", to_bytes(key), to_bytes(owner)]
    if ttl_ms is not None:
        args += [b"TTL", ttl_ms]
    return Command(tuple(args), _decode_claim)


def _decode_claim_all(raw: object) -> ClaimAll:
    what = "CLAIM.ALL"
    items = _array(raw, what)
    word = _word(items, what, raw)
    if word == "claimed":
        _shape(items, 1, what, raw)
        return Claimed()
    if word == "held":
        pairs = _pairs(items, what, raw, _bytes, _bytes)
        return HeldAll(conflicts=tuple(ClaimConflict(key=k, owner=o) for k, o in pairs))
    raise _fail(what, raw)


def claim_all(owner: Bin, keys: Sequence[Bin]) -> Command[ClaimAll]:
    if not keys:
        raise ValueError("claim_all needs at least one key")
    return Command((b"CLAIM.ALL", to_bytes(owner), *map(to_bytes, keys)), _decode_claim_all)


def release(key: Bin, owner: Bin) -> Command[bool]:
    return Command((b"RELEASE", to_bytes(key), to_bytes(owner)), lambda raw: _flag(raw, "RELEASE"))


def owner(key: Bin) -> Command[bytes | None]:
    return Command((b"OWNER", to_bytes(key)), lambda raw: _optional_bytes(raw, "OWNER"))


# ---------------------------------------------------------------- locks


def _decode_lock(raw: object) -> LockReply:
    what = "LOCK"
    items = _array(raw, what)
    word = _word(items, what, raw)
    if word == "acquired":
        _shape(items, 2, what, raw)
        return Acquired(fence=_fence(items[1], what, raw))
    if word == "busy":
        _shape(items, 3, what, raw)
        return Locked(holder=_bytes(items[1], what, raw), lease_left_ms=_nonneg(items[2], what, raw))
    raise _fail(what, raw)


def lock(name: Bin, owner: Bin, *, lease_ms: int, wait_ms: int | None) -> Command[LockReply]:
    args: list[Arg] = [b"LOCK", to_bytes(name), to_bytes(owner), b"LEASE", lease_ms]
    if wait_ms is not None:
        args += [b"WAIT", wait_ms]
    return Command(tuple(args), _decode_lock, parks=bool(wait_ms))


def _decode_renew(raw: object) -> RenewReply:
    what = "RENEW"
    items = _array(raw, what)
    word = _word(items, what, raw)
    if word == "renewed":
        _shape(items, 2, what, raw)
        return Renewed(fence=_fence(items[1], what, raw))
    if word == "lost":
        _shape(items, 1, what, raw)
        return Lost()
    raise _fail(what, raw)


def renew(name: Bin, owner: Bin, *, lease_ms: int) -> Command[RenewReply]:
    return Command((b"RENEW", to_bytes(name), to_bytes(owner), b"LEASE", lease_ms), _decode_renew)


def unlock(name: Bin, owner: Bin) -> Command[bool]:
    return Command((b"UNLOCK", to_bytes(name), to_bytes(owner)), lambda raw: _flag(raw, "UNLOCK"))


def _decode_lock_info(raw: object) -> LockInfo:
    what = "LOCK.INFO"
    items = _array(raw, what)
    word = _word(items, what, raw)
    if word == "free":
        _shape(items, 1, what, raw)
        return Free()
    if word == "held":
        _shape(items, 5, what, raw)
        return LockState(
            owner=_bytes(items[1], what, raw),
            fence=_fence(items[2], what, raw),
            lease_left_ms=_nonneg(items[3], what, raw),
            waiters=_nonneg(items[4], what, raw),
        )
    raise _fail(what, raw)


def lock_info(name: Bin) -> Command[LockInfo]:
    return Command((b"LOCK.INFO", to_bytes(name)), _decode_lock_info)


# ---------------------------------------------------------------- tokens

_HEX = frozenset(b"0123456789abcdef")
TOKEN_HEX_CHARS = 32


def _decode_token(raw: object) -> str:
    if isinstance(raw, bytes) and len(raw) == TOKEN_HEX_CHARS and set(raw) <= _HEX:
        return raw.decode("ascii")
    raise _fail("TOKEN.NEW", raw)


def token_new(scope: Bin, *, ttl_ms: int) -> Command[str]:
    return Command((b"TOKEN.NEW", to_bytes(scope), b"TTL", ttl_ms), _decode_token)


def token_use(scope: Bin, token: Bin) -> Command[bool]:
    return Command((b"TOKEN.USE", to_bytes(scope), to_bytes(token)), lambda raw: _flag(raw, "TOKEN.USE"))


# ---------------------------------------------------------------- counters


def _decode_counter_add(raw: object) -> CounterAdd:
    what = "COUNTER.ADD"
    items = _array(raw, what)
    word = _word(items, what, raw)
    _shape(items, 2, what, raw)
    value = _int(items[1], what, raw)
    if word == "ok":
        return Applied(value)
    if word == "refused":
        return Refused(value)
    if word == "replayed":
        return Replayed(value)
    raise _fail(what, raw)


def counter_add(
    key: Bin,
    delta: int,
    *,
    min: int | None,
    max: int | None,
    op: Bin | None,
    keep_ms: int | None,
) -> Command[CounterAdd]:
    if keep_ms is not None and op is None:
        raise ValueError("keep_ms needs op: only an op id is kept")
    args: list[Arg] = [b"COUNTER.ADD", to_bytes(key), delta]
    if min is not None:
        args += [b"MIN", min]
    if max is not None:
        args += [b"MAX", max]
    if op is not None:
        args += [b"OP", to_bytes(op)]
        if keep_ms is not None:
            args += [b"KEEP", keep_ms]
    return Command(tuple(args), _decode_counter_add)


def _decode_int(raw: object) -> int:
    if type(raw) is not int:
        raise _fail("COUNTER.GET", raw)
    return raw


def counter_get(key: Bin) -> Command[int]:
    return Command((b"COUNTER.GET", to_bytes(key)), _decode_int)


# ---------------------------------------------------------------- versioned values


def _decode_value_get(raw: object) -> Versioned | None:
    what = "VALUE.GET"
    if raw is None:
        return None
    items = _array(raw, what)
    _shape(items, 2, what, raw)
    return Versioned(value=_bytes(items[0], what, raw), version=_fence(items[1], what, raw))


def value_get(key: Bin) -> Command[Versioned | None]:
    return Command((b"VALUE.GET", to_bytes(key)), _decode_value_get)


def _decode_value_set(raw: object) -> ValueSet:
    what = "VALUE.SET"
    items = _array(raw, what)
    word = _word(items, what, raw)
    _shape(items, 2, what, raw)
    if word == "ok":
        return Stored(version=_fence(items[1], what, raw))
    if word == "conflict":
        return Conflict(version=_nonneg(items[1], what, raw))
    raise _fail(what, raw)


def value_set(key: Bin, value: Bin, *, if_version: int | None) -> Command[ValueSet]:
    args: list[Arg] = [b"VALUE.SET", to_bytes(key), to_bytes(value)]
    if if_version is not None:
        args += [b"IFVERSION", if_version]
    return Command(tuple(args), _decode_value_set)


# ---------------------------------------------------------------- state machines

#: The word FROM lists for an absent key, and FSM.MOVE's `refused` reply for one.
FSM_NONE = b"none"


def _decode_fsm_move(raw: object) -> FsmMove:
    what = "FSM.MOVE"
    items = _array(raw, what)
    word = _word(items, what, raw)
    _shape(items, 2, what, raw)
    state = _bytes(items[1], what, raw)
    if word == "moved":
        return Moved(state)
    if word == "already":
        return Already(state)
    if word == "refused":
        return Disallowed(None if state == FSM_NONE else state)
    raise _fail(what, raw)


def fsm_move(key: Bin, to: Bin, from_states: Iterable[Bin | None]) -> Command[FsmMove]:
    states = [FSM_NONE if s is None else to_bytes(s) for s in from_states]
    if not states:
        raise ValueError("fsm_move needs at least one state in from_states (None: absent)")
    return Command((b"FSM.MOVE", to_bytes(key), to_bytes(to), b"FROM", *states), _decode_fsm_move)


def fsm_get(key: Bin) -> Command[bytes | None]:
    return Command((b"FSM.GET", to_bytes(key)), lambda raw: _optional_bytes(raw, "FSM.GET"))


# ---------------------------------------------------------------- slots


def _decode_slots_reserve(raw: object) -> SlotsReserve:
    what = "SLOTS.RESERVE"
    items = _array(raw, what)
    word = _word(items, what, raw)
    if word == "reserved":
        _shape(items, 1, what, raw)
        return Reserved()
    if word == "conflict":
        pairs = _pairs(items, what, raw, _nonneg, _bytes)
        return SlotsTaken(conflicts=tuple(SlotConflict(slot=n, holder=h) for n, h in pairs))
    raise _fail(what, raw)


def slots_reserve(
    resource: Bin, first: int, last: int, holder: Bin, *, size: int | None
) -> Command[SlotsReserve]:
    args: list[Arg] = [b"SLOTS.RESERVE", to_bytes(resource), first, last, to_bytes(holder)]
    if size is not None:
        args += [b"SIZE", size]
    return Command(tuple(args), _decode_slots_reserve)


def slots_release(resource: Bin, first: int, last: int, holder: Bin) -> Command[int]:
    def decode(raw: object) -> int:
        return _nonneg(raw, "SLOTS.RELEASE", raw)

    return Command((b"SLOTS.RELEASE", to_bytes(resource), first, last, to_bytes(holder)), decode)


def slots_get(resource: Bin) -> Command[tuple[bytes | None, ...]]:
    def decode(raw: object) -> tuple[bytes | None, ...]:
        if not isinstance(raw, list) or not all(x is None or isinstance(x, bytes) for x in raw):
            raise _fail("SLOTS.GET", raw)
        return tuple(raw)

    return Command((b"SLOTS.GET", to_bytes(resource)), decode)
