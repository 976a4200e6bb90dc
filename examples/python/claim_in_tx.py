#!/usr/bin/env python3
"""Claim a unique key inside your own database transaction, from Python.

idem's SQL backends install one function (PostgreSQL) or stored procedure
(MySQL / MariaDB) per primitive; `idem_client.sql.postgres` (psycopg 3) and
`idem_client.sql.mysql` (PyMySQL) call them with typed replies. Called
inside your transaction, a claim or an idempotency record commits or rolls
back together with your business rows: a rolled-back insert leaves no claim
behind, and a committed row always has its claim. No idem server is
involved; see docs/backends-sql.md and docs/clients.md.

What this shows, on each engine:
  1. claim + insert, then ROLLBACK: neither the product nor the claim stays;
  2. claim + insert, then COMMIT: both stay;
  3. a duplicate request: the claim answers Held(owner) (no duplicate-key
     error), so the caller can return the existing product;
  4. an idempotent operation: begin -> do the work -> commit in one
     transaction; a replay gets the stored result.

Before running: install the schema once (`idem migrate --store URL`), then

    pip install -r requirements.txt ../../clients/python
    python claim_in_tx.py                   # both engines
    python claim_in_tx.py postgres          # or only one

(Run from a checkout without installing the package, the script finds it in
clients/python/src.) URLs come from IDEM_TEST_POSTGRES_URL (default
postgres://postgres@127.0.0.1:5432/test) and IDEM_TEST_MYSQL_URL (default
mysql://root@127.0.0.1:3306/test). The script exits non-zero if any step
does not behave as described.
"""

import os
import secrets
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

try:
    import idem_client  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "clients" / "python" / "src"))

from idem_client.replies import Claimed, Done, Held, Started
from idem_client.sql import mysql, postgres

PG_URL = os.environ.get("IDEM_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test")
MYSQL_URL = os.environ.get("IDEM_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")


def check(cond, what):
    if not cond:
        raise SystemExit(f"FAILED: {what}")
    print(f"  ok: {what}")


def steps(sql, conn, run, insert, count):
    """The four steps, on any engine: `sql` is the helper module, `insert`/`count` touch the business table."""
    key = f"product:acme:X1:{run}".encode()

    # 1. Claim and insert in one transaction, then roll back.
    check(sql.claim(conn, key, b"request-1") == Claimed(), "request-1 claims the product key")
    insert("X1")
    conn.rollback()  # e.g. a later step of the request failed
    owner, rows = sql.owner(conn, key), count()
    conn.rollback()
    check(owner is None and rows == 0, "rollback removed the product AND its claim")

    # 2. The same, committed. (On MySQL, read your insert's id before a
    # begin: drawing a fence changes LAST_INSERT_ID().)
    claimed = sql.claim(conn, key, b"request-2")
    product_id = insert("X1")
    conn.commit()
    check(claimed == Claimed(), f"request-2 created product {product_id} with its claim")

    # 3. A duplicate request: told who holds the key, inserts nothing.
    reply = sql.claim(conn, key, b"request-3")
    conn.rollback()
    check(reply == Held(b"request-2"), "a duplicate gets Held by request-2 (answer with the existing product)")

    # 4. Run an operation once: begin, do the work, commit its result.
    op = f"grant:user-7:gold:{run}".encode()
    started = sql.begin(conn, op, fingerprint=b"fp-1", lease_ms=30_000)
    check(isinstance(started, Started) and started.attempt == 1, f"begin started attempt 1: {started}")
    insert("grant:gold")
    sql.commit(conn, op, started.fence, b"granted")
    conn.commit()
    check(True, "the grant and its result committed together")
    replay = sql.begin(conn, op, fingerprint=b"fp-1")
    conn.rollback()
    check(replay == Done(b"granted"), "a replay gets the stored result")


def postgres_demo():
    import psycopg

    print(f"PostgreSQL ({PG_URL})")
    run = secrets.token_hex(6)
    table = f"example_products_{run}"
    with psycopg.connect(PG_URL) as conn:
        conn.execute(f"CREATE TABLE {table} (id serial PRIMARY KEY, name text NOT NULL)")
        conn.commit()

        def insert(name):
            return conn.execute(f"INSERT INTO {table} (name) VALUES (%s) RETURNING id", (name,)).fetchone()[0]

        def count():
            return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]

        try:
            steps(postgres, conn, run, insert, count)
        finally:
            conn.rollback()
            conn.execute(f"DROP TABLE {table}")
            conn.commit()


def mysql_demo():
    import pymysql

    print(f"MySQL / MariaDB ({MYSQL_URL})")
    u = urlparse(MYSQL_URL)
    conn = pymysql.connect(host=u.hostname or "127.0.0.1", port=u.port or 3306,
                           user=unquote(u.username or "root"), password=unquote(u.password or ""),
                           database=u.path.lstrip("/") or "test", autocommit=False)
    run = secrets.token_hex(6)
    table = f"example_products_{run}"
    cur = conn.cursor()
    cur.execute(f"CREATE TABLE {table} (id BIGINT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(64) NOT NULL)")

    def insert(name):
        cur.execute(f"INSERT INTO {table} (name) VALUES (%s)", (name,))
        return cur.lastrowid

    def count():
        cur.execute(f"SELECT COUNT(*) FROM {table}")
        return cur.fetchone()[0]

    try:
        steps(mysql, conn, run, insert, count)
    finally:
        conn.rollback()
        cur.execute(f"DROP TABLE {table}")
        conn.close()


def main(argv):
    engines = argv[1:] or ["postgres", "mysql"]
    for engine in engines:
        {"postgres": postgres_demo, "mysql": mysql_demo}[engine]()
    print("all steps behaved as described")


if __name__ == "__main__":
    main(sys.argv)
