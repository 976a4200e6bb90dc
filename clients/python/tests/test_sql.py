"""The in-transaction helpers against the real PostgreSQL and MariaDB: a rollback takes the claim with it."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from types import ModuleType
from typing import Any
from urllib.parse import unquote, urlparse

import psycopg
import pymysql
import pytest
from conftest import idem_bin

from idem_client import Applied, Claimed, Done, Held, Mismatch, Refused, Replayed, Stale, Started
from idem_client.sql import mysql, postgres

PG_URL = os.environ.get("IDEM_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test")
MYSQL_URL = os.environ.get("IDEM_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")


def _migrate(url: str) -> None:
    subprocess.run([idem_bin(), "migrate", "--store", url], check=True, capture_output=True, timeout=120)


def _pg() -> Any:
    return psycopg.connect(PG_URL)


def _my() -> Any:
    u = urlparse(MYSQL_URL)
    return pymysql.connect(
        host=u.hostname or "127.0.0.1",
        port=u.port or 3306,
        user=unquote(u.username or "root"),
        password=unquote(u.password or ""),
        database=u.path.lstrip("/") or "test",
        autocommit=False,
    )


class Engine:
    """One engine: its helper module, a connection factory and its SQL dialect for the test table."""

    def __init__(self, name: str, module: ModuleType, connect: Any, serial: str) -> None:
        self.name, self.module, self.connect, self.serial = name, module, connect, serial

    def exec(self, conn: Any, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        cur = conn.cursor()
        try:
            cur.execute(sql, params)
            return list(cur.fetchall()) if cur.description else []
        finally:
            cur.close()


ENGINES = {
    "postgres": Engine("postgres", postgres, _pg, "id serial PRIMARY KEY, name text NOT NULL"),
    "mysql": Engine("mysql", mysql, _my, "id BIGINT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(64) NOT NULL"),
}
_migrated: set[str] = set()


@pytest.fixture(params=sorted(ENGINES))
def engine(request: pytest.FixtureRequest) -> Engine:
    e = ENGINES[request.param]
    if e.name not in _migrated:
        _migrate(PG_URL if e.name == "postgres" else MYSQL_URL)
        _migrated.add(e.name)
    return e


@pytest.fixture
def table(engine: Engine, run: str) -> Iterator[str]:
    name = "py_products_" + run.strip(":")
    conn = engine.connect()
    engine.exec(conn, f"CREATE TABLE {name} ({engine.serial})")
    conn.commit()
    yield name
    conn.rollback()
    engine.exec(conn, f"DROP TABLE {name}")
    conn.commit()
    conn.close()


def test_rollback_removes_the_claim_and_commit_keeps_it(engine: Engine, table: str, run: str) -> None:
    m, key = engine.module, (run + "product:acme:X1").encode()
    conn = engine.connect()
    try:
        assert m.claim(conn, key, b"request-1") == Claimed()
        engine.exec(conn, f"INSERT INTO {table} (name) VALUES ('X1')")
        conn.rollback()
        assert m.owner(conn, key) is None
        assert engine.exec(conn, f"SELECT count(*) FROM {table}") == [(0,)]
        conn.rollback()

        assert m.claim(conn, key, b"request-2") == Claimed()
        engine.exec(conn, f"INSERT INTO {table} (name) VALUES ('X1')")
        conn.commit()
        assert m.claim(conn, key, b"request-3") == Held(b"request-2")
        conn.rollback()

        # A logical delete releases the claim in the same transaction.
        assert m.release(conn, key, b"request-3") is False
        assert m.release(conn, key, b"request-2") is True
        conn.rollback()
        assert m.owner(conn, key) == b"request-2", "the release rolled back too"
        conn.rollback()
    finally:
        conn.rollback()
        conn.close()


def test_begin_commit_replay_and_rollback(engine: Engine, run: str) -> None:
    m, key = engine.module, (run + "grant").encode()
    conn = engine.connect()
    try:
        started = m.begin(conn, key, fingerprint=b"fp-1")
        assert isinstance(started, Started) and started.attempt == 1
        conn.rollback()
        again = m.begin(conn, key, fingerprint=b"fp-1")
        assert isinstance(again, Started) and again.attempt == 1, "the rolled-back begin left nothing"
        m.commit(conn, key, again.fence, b"granted")
        conn.commit()
        assert m.begin(conn, key, fingerprint=b"fp-1") == Done(b"granted")
        with pytest.raises(Mismatch):
            m.begin(conn, key, fingerprint=b"fp-2")
        with pytest.raises(Stale):
            m.commit(conn, key, again.fence, b"twice")
        conn.rollback()

        other = (run + "aborted").encode()
        first = m.begin(conn, other)
        assert isinstance(first, Started)
        m.abort(conn, other, first.fence)
        conn.commit()
        with pytest.raises(Stale):
            m.abort(conn, other, first.fence)
        conn.rollback()
    finally:
        conn.rollback()
        conn.close()


def test_counter_add(engine: Engine, run: str) -> None:
    m, key = engine.module, (run + "stock").encode()
    conn = engine.connect()
    try:
        assert m.counter_add(conn, key, 5, max=10) == Applied(5)
        conn.rollback()
        assert m.counter_add(conn, key, 5, max=10) == Applied(5), "the rollback undid the first add"
        assert m.counter_add(conn, key, 6, max=10) == Refused(5)
        assert m.counter_add(conn, key, -2, min=0, op=b"order-1") == Applied(3)
        conn.commit()
        assert m.counter_add(conn, key, -2, min=0, op=b"order-1") == Replayed(3)
        conn.commit()
        with pytest.raises(ValueError):
            m.counter_add(conn, key, 1, keep_ms=5)
    finally:
        conn.rollback()
        conn.close()
