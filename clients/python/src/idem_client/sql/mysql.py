"""In-transaction helpers for MySQL / MariaDB with PyMySQL.

Open the connection with ``autocommit=False`` (PyMySQL's default), call
these first in the transaction, write your rows, then ``conn.commit()`` (or
roll back: the claim or record goes too). Every deciding read in idem's
procedures is a locking read, so any isolation level works, REPEATABLE READ
included. A deadlock (1213) rolls the transaction back: retry it.
``idem_begin`` draws a fence with an insert, which changes
``LAST_INSERT_ID()``: read your own insert's id right after the insert.
"""

from __future__ import annotations

from typing import Any

from .._bytes import Bin, to_bytes
from ..replies import Begin, Claim, CounterAdd
from . import _decode as d

#: A PyMySQL connection (typed loosely: PyMySQL ships no type information).
Conn = Any


def _call(conn: Conn, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    cur = conn.cursor()
    try:
        cur.execute(sql, params)
        rows: list[tuple[Any, ...]] = list(cur.fetchall())
        # A CALL also returns its own status result; drain it so the
        # connection is ready for the caller's next statement.
        while cur.nextset():
            pass
        return rows
    finally:
        cur.close()


def claim(conn: Conn, key: Bin, owner: Bin, *, ttl_ms: int | None = None) -> Claim:
    """CLAIM inside the transaction: `Claimed` or `Held(owner)`."""
    rows = _call(conn, "CALL idem_claim(%s, %s, %s)", (to_bytes(key), to_bytes(owner), ttl_ms))
    return d.claim(d.one_row(rows, 2, "idem_claim"))


def release(conn: Conn, key: Bin, owner: Bin) -> bool:
    """RELEASE inside the transaction: True if `owner` held it."""
    rows = _call(conn, "CALL idem_release(%s, %s)", (to_bytes(key), to_bytes(owner)))
    return d.flag(d.one_row(rows, 1, "idem_release")[0], "idem_release")


def owner(conn: Conn, key: Bin) -> bytes | None:
    """OWNER as this transaction sees it."""
    rows = _call(conn, "CALL idem_owner(%s)", (to_bytes(key),))
    return d.owner(d.one_row(rows, 1, "idem_owner")[0])


def begin(
    conn: Conn, key: Bin, *, fingerprint: Bin | None = None, lease_ms: int = d.LEASE_MS_DEFAULT
) -> Begin:
    """IDEM.BEGIN inside the transaction; raises `Mismatch` on another fingerprint."""
    fp = to_bytes(fingerprint) if fingerprint is not None else None
    rows = _call(conn, "CALL idem_begin(%s, %s, %s)", (to_bytes(key), fp, lease_ms))
    return d.begin(d.one_row(rows, 4, "idem_begin"))


def commit(conn: Conn, key: Bin, fence: int, result: bytes, *, keep_ms: int = d.KEEP_MS_DEFAULT) -> None:
    """IDEM.COMMIT inside the transaction; raises `Stale` if the lease ran out."""
    rows = _call(conn, "CALL idem_commit(%s, %s, %s, %s)", (to_bytes(key), fence, result, keep_ms))
    d.ended(d.one_row(rows, 1, "idem_commit")[0], "idem_commit")


def abort(conn: Conn, key: Bin, fence: int) -> None:
    """IDEM.ABORT inside the transaction; raises `Stale` if the lease ran out."""
    rows = _call(conn, "CALL idem_abort(%s, %s)", (to_bytes(key), fence))
    d.ended(d.one_row(rows, 1, "idem_abort")[0], "idem_abort")


def counter_add(
    conn: Conn,
    key: Bin,
    delta: int,
    min: int | None = None,
    max: int | None = None,
    op: Bin | None = None,
    *,
    keep_ms: int | None = None,
) -> CounterAdd:
    """COUNTER.ADD inside the transaction: `Applied`, `Refused` or `Replayed`."""
    if keep_ms is not None and op is None:
        raise ValueError("keep_ms needs op: only an op id is kept")
    op_bytes = to_bytes(op) if op is not None else None
    keep = keep_ms if keep_ms is not None else (d.KEEP_MS_DEFAULT if op is not None else None)
    rows = _call(
        conn,
        "CALL idem_counter_add(%s, %s, %s, %s, %s, %s)",
        (to_bytes(key), delta, min, max, op_bytes, keep),
    )
    return d.counter_add(d.one_row(rows, 2, "idem_counter_add"))
