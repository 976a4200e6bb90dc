"""In-transaction helpers for PostgreSQL with psycopg 3.

psycopg opens a transaction at the first statement; call these first in it,
then write your rows, then ``conn.commit()`` (or roll back: the claim or
record goes too). Under REPEATABLE READ or SERIALIZABLE a concurrent change
to the same key raises a serialization failure: retry the transaction.

    with psycopg.connect(url) as conn:
        if isinstance(postgres.claim(conn, b"product:acme:X1", b"req-42"), Claimed):
            conn.execute("INSERT INTO products ...")
            conn.commit()
        else:
            conn.rollback()          # answer with the existing product
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._bytes import Bin, to_bytes
from ..replies import Begin, Claim, CounterAdd
from . import _decode as d

if TYPE_CHECKING:
    import psycopg

    Conn = psycopg.Connection[Any]


def _rows(conn: Conn, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
    return conn.execute(sql, params).fetchall()


def claim(conn: Conn, key: Bin, owner: Bin, *, ttl_ms: int | None = None) -> Claim:
    """CLAIM inside the transaction: `Claimed` or `Held(owner)`."""
    row = d.one_row(
        _rows(
            conn,
            "SELECT status, owner FROM idem_claim(%s, %s, %s::bigint)",
            (to_bytes(key), to_bytes(owner), ttl_ms),
        ),
        2,
        "idem_claim",
    )
    return d.claim(row)


def release(conn: Conn, key: Bin, owner: Bin) -> bool:
    """RELEASE inside the transaction (e.g. with a logical delete): True if `owner` held it."""
    row = d.one_row(
        _rows(conn, "SELECT idem_release(%s, %s)", (to_bytes(key), to_bytes(owner))), 1, "idem_release"
    )
    return d.flag(row[0], "idem_release")


def owner(conn: Conn, key: Bin) -> bytes | None:
    """OWNER as this transaction sees it."""
    row = d.one_row(_rows(conn, "SELECT idem_owner(%s)", (to_bytes(key),)), 1, "idem_owner")
    return d.owner(row[0])


def begin(
    conn: Conn, key: Bin, *, fingerprint: Bin | None = None, lease_ms: int = d.LEASE_MS_DEFAULT
) -> Begin:
    """IDEM.BEGIN inside the transaction; raises `Mismatch` on another fingerprint."""
    fp = to_bytes(fingerprint) if fingerprint is not None else None
    row = d.one_row(
        _rows(
            conn,
            "SELECT status, fence, n, result FROM idem_begin(%s, %s::bytea, %s::bigint)",
            (to_bytes(key), fp, lease_ms),
        ),
        4,
        "idem_begin",
    )
    return d.begin(row)


def commit(conn: Conn, key: Bin, fence: int, result: bytes, *, keep_ms: int = d.KEEP_MS_DEFAULT) -> None:
    """IDEM.COMMIT inside the transaction; raises `Stale` if the lease ran out."""
    row = d.one_row(
        _rows(
            conn,
            "SELECT idem_commit(%s, %s::bigint, %s, %s::bigint)",
            (to_bytes(key), fence, result, keep_ms),
        ),
        1,
        "idem_commit",
    )
    d.ended(row[0], "idem_commit")


def abort(conn: Conn, key: Bin, fence: int) -> None:
    """IDEM.ABORT inside the transaction; raises `Stale` if the lease ran out."""
    row = d.one_row(_rows(conn, "SELECT idem_abort(%s, %s::bigint)", (to_bytes(key), fence)), 1, "idem_abort")
    d.ended(row[0], "idem_abort")


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
    row = d.one_row(
        _rows(
            conn,
            "SELECT status, value FROM idem_counter_add("
            "%s, %s::bigint, %s::bigint, %s::bigint, %s::bytea, %s::bigint)",
            (to_bytes(key), delta, min, max, op_bytes, keep),
        ),
        2,
        "idem_counter_add",
    )
    return d.counter_add(row)
