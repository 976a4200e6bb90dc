#!/usr/bin/env python3
"""Claim a unique key inside your own database transaction, from Python.

idem's SQL backends install one function (PostgreSQL) or stored procedure
(MySQL / MariaDB) per primitive. Called inside your transaction, a claim or
an idempotency record commits or rolls back together with your business
rows: a rolled-back insert leaves no claim behind, and a committed row
always has its claim. No idem server is involved; see docs/backends-sql.md.

What this shows, on each engine:
  1. claim + insert, then ROLLBACK: neither the product nor the claim stays;
  2. claim + insert, then COMMIT: both stay;
  3. a duplicate request: the claim answers 'held' with the owner (no
     duplicate-key error), so the caller can return the existing product;
  4. an idempotent operation: idem_begin -> do the work -> idem_commit in
     one transaction; a replay gets the stored result.

Before running: install the schema once (`idem migrate --store URL`, or any
idem process connecting to that URL does it), then

    pip install -r requirements.txt
    python claim_in_tx.py                   # both engines
    python claim_in_tx.py postgres          # or only one

URLs come from IDEM_TEST_POSTGRES_URL (default
postgres://postgres@127.0.0.1:5432/test) and IDEM_TEST_MYSQL_URL (default
mysql://root@127.0.0.1:3306/test). The script exits non-zero if any step
does not behave as described.
"""

import os
import secrets
import sys
from urllib.parse import unquote, urlparse

PG_URL = os.environ.get("IDEM_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test")
MYSQL_URL = os.environ.get("IDEM_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")


def check(cond, what):
    if not cond:
        raise SystemExit(f"FAILED: {what}")
    print(f"  ok: {what}")


# --------------------------------------------------------------- PostgreSQL
# psycopg 3: a connection opens a transaction at the first statement; commit()
# or rollback() ends it. Keys and owners are bytea: pass Python bytes.


def postgres_demo():
    import psycopg

    print(f"PostgreSQL ({PG_URL})")
    run = secrets.token_hex(6)
    table = f"example_products_{run}"
    key = f"product:acme:X1:{run}".encode()
    with psycopg.connect(PG_URL) as conn:
        conn.execute(f"CREATE TABLE {table} (id serial PRIMARY KEY, name text NOT NULL, model text NOT NULL)")
        conn.commit()
        try:
            # 1. Claim and insert in one transaction, then roll back.
            status, owner = conn.execute("SELECT status, owner FROM idem_claim(%s, %s, NULL)",
                                         (key, b"request-1")).fetchone()
            check(status == "claimed", "request-1 claims the product key")
            conn.execute(f"INSERT INTO {table} (name, model) VALUES ('acme', 'X1')")
            conn.rollback()  # e.g. a later step of the request failed
            (owner,) = conn.execute("SELECT idem_owner(%s)", (key,)).fetchone()
            rows = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            check(owner is None and rows == 0, "rollback removed the product AND its claim")
            conn.rollback()

            # 2. The same, committed.
            status, _ = conn.execute("SELECT status, owner FROM idem_claim(%s, %s, NULL)",
                                     (key, b"request-2")).fetchone()
            (product_id,) = conn.execute(
                f"INSERT INTO {table} (name, model) VALUES ('acme', 'X1') RETURNING id").fetchone()
            conn.commit()
            check(status == "claimed", f"request-2 created product {product_id} with its claim")

            # 3. A duplicate request: told who holds the key, inserts nothing.
            status, owner = conn.execute("SELECT status, owner FROM idem_claim(%s, %s, NULL)",
                                         (key, b"request-3")).fetchone()
            conn.rollback()
            check(status == "held" and bytes(owner) == b"request-2",
                  "a duplicate gets 'held' by request-2 (answer with the existing product)")

            # 4. Run an operation once: begin, do the work, commit its result.
            op = f"grant:user-7:gold:{run}".encode()
            status, fence, attempt, _ = conn.execute(
                "SELECT status, fence, n, result FROM idem_begin(%s, %s, %s)", (op, b"fp-1", 30000)).fetchone()
            check(status == "started" and attempt == 1, f"idem_begin started attempt 1 with fence {fence}")
            conn.execute(f"INSERT INTO {table} (name, model) VALUES ('grant', 'gold')")
            (res,) = conn.execute("SELECT idem_commit(%s, %s, %s, %s)",
                                  (op, fence, b"granted", 86400000)).fetchone()
            conn.commit()
            check(res == "ok", "the grant and its result committed together")
            status, _, _, result = conn.execute(
                "SELECT status, fence, n, result FROM idem_begin(%s, %s, %s)", (op, b"fp-1", 30000)).fetchone()
            conn.rollback()
            check(status == "done" and bytes(result) == b"granted", "a replay gets the stored result")
        finally:
            conn.rollback()
            conn.execute(f"DROP TABLE {table}")
            conn.commit()


# ---------------------------------------------------------- MySQL / MariaDB
# PyMySQL: autocommit is off, so statements run in a transaction until
# commit() or rollback(). Every idem procedure returns one result set. The
# procedures read with locking reads, so this is correct under REPEATABLE READ.


def mysql_demo():
    import pymysql

    print(f"MySQL / MariaDB ({MYSQL_URL})")
    u = urlparse(MYSQL_URL)
    conn = pymysql.connect(host=u.hostname or "127.0.0.1", port=u.port or 3306,
                           user=unquote(u.username or "root"), password=unquote(u.password or ""),
                           database=u.path.lstrip("/") or "test", autocommit=False)
    run = secrets.token_hex(6)
    table = f"example_products_{run}"
    key = f"user:openid:{run}".encode()
    cur = conn.cursor()
    cur.execute(f"CREATE TABLE {table} (id BIGINT AUTO_INCREMENT PRIMARY KEY, openid VARCHAR(64) NOT NULL)")
    try:
        # 1. Claim and insert, then roll back.
        cur.execute("CALL idem_claim(%s, %s, NULL)", (key, b"request-1"))
        status, _ = cur.fetchone()
        check(status == "claimed", "request-1 claims the openid")
        cur.execute(f"INSERT INTO {table} (openid) VALUES (%s)", (run,))
        conn.rollback()
        cur.execute("CALL idem_owner(%s)", (key,))
        (owner,) = cur.fetchone()
        cur.execute(f"SELECT COUNT(*) FROM {table}")
        (rows,) = cur.fetchone()
        check(owner is None and rows == 0, "rollback removed the user AND its claim")
        conn.rollback()

        # 2. The same, committed. (Read your insert's id before calling a
        # procedure that draws a fence: they change LAST_INSERT_ID().)
        cur.execute("CALL idem_claim(%s, %s, NULL)", (key, b"request-2"))
        status, _ = cur.fetchone()
        cur.execute(f"INSERT INTO {table} (openid) VALUES (%s)", (run,))
        user_id = cur.lastrowid
        conn.commit()
        check(status == "claimed", f"request-2 registered user {user_id} with its claim")

        # 3. The replayed registration: 'held', never 'Duplicate entry'.
        cur.execute("CALL idem_claim(%s, %s, NULL)", (key, b"request-3"))
        status, owner = cur.fetchone()
        conn.rollback()
        check(status == "held" and owner == b"request-2", "a replay gets 'held' by request-2")

        # 4. Run an operation once.
        op = f"grant:user-7:gold:{run}".encode()
        cur.execute("CALL idem_begin(%s, %s, %s)", (op, b"fp-1", 30000))
        status, fence, attempt, _ = cur.fetchone()
        check(status == "started" and attempt == 1, f"idem_begin started attempt 1 with fence {fence}")
        cur.execute(f"INSERT INTO {table} (openid) VALUES ('granted')")
        cur.execute("CALL idem_commit(%s, %s, %s, %s)", (op, fence, b"granted", 86400000))
        (res,) = cur.fetchone()
        conn.commit()
        check(res == "ok", "the grant and its result committed together")
        cur.execute("CALL idem_begin(%s, %s, %s)", (op, b"fp-1", 30000))
        status, _, _, result = cur.fetchone()
        conn.rollback()
        check(status == "done" and result == b"granted", "a replay gets the stored result")
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
