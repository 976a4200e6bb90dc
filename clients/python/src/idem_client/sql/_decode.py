"""Strict decoding of the rows idem's SQL functions and procedures return."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..errors import Mismatch, Stale, UnexpectedReply
from ..replies import (
    Applied,
    Begin,
    Claim,
    Claimed,
    CounterAdd,
    Done,
    Held,
    Refused,
    Replayed,
    Running,
    Started,
)

#: The default lease of `begin` inside a transaction; pick one longer than the transaction.
LEASE_MS_DEFAULT = 30_000
#: The default KEEP of `commit` and of a counter op id (24 h, as on the server).
KEEP_MS_DEFAULT = 86_400_000


def fail(what: str, row: object) -> UnexpectedReply:
    return UnexpectedReply(f"{what}: unexpected row {row!r}")


def text(value: object, what: str, row: object) -> str:
    if isinstance(value, (bytes, bytearray, memoryview)):
        value = bytes(value).decode("ascii", "replace")
    if not isinstance(value, str):
        raise fail(what, row)
    return value


def blob(value: object, what: str, row: object) -> bytes:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    raise fail(what, row)


def integer(value: object, what: str, row: object) -> int:
    if type(value) is not int:
        raise fail(what, row)
    return value


def one_row(rows: Sequence[Sequence[Any]] | None, width: int, what: str) -> Sequence[Any]:
    if rows is None or len(rows) != 1 or len(rows[0]) != width:
        raise fail(what, rows)
    return rows[0]


def claim(row: Sequence[Any]) -> Claim:
    status = text(row[0], "idem_claim", row)
    if status == "claimed":
        return Claimed()
    if status == "held":
        return Held(owner=blob(row[1], "idem_claim", row))
    raise fail("idem_claim", row)


def flag(value: object, what: str) -> bool:
    if type(value) is int and value in (0, 1):
        return value == 1
    if isinstance(value, bool):
        return value
    raise fail(what, value)


def owner(value: object) -> bytes | None:
    if value is None:
        return None
    return blob(value, "idem_owner", value)


def begin(row: Sequence[Any]) -> Begin:
    what = "idem_begin"
    status = text(row[0], what, row)
    if status == "started":
        return Started(fence=integer(row[1], what, row), attempt=integer(row[2], what, row))
    if status == "running":
        return Running(fence=integer(row[1], what, row), lease_left_ms=integer(row[2], what, row))
    if status == "done":
        return Done(result=blob(row[3], what, row))
    if status == "mismatch":
        raise Mismatch("MISMATCH the key is in use with a different fingerprint")
    raise fail(what, row)


def ended(value: object, what: str) -> None:
    status = text(value, what, value)
    if status == "ok":
        return
    if status == "stale":
        raise Stale("STALE the fence is no longer current")
    raise fail(what, value)


def counter_add(row: Sequence[Any]) -> CounterAdd:
    what = "idem_counter_add"
    status = text(row[0], what, row)
    value = integer(row[1], what, row)
    if status == "ok":
        return Applied(value)
    if status == "refused":
        return Refused(value)
    if status == "replayed":
        return Replayed(value)
    raise fail(what, row)
