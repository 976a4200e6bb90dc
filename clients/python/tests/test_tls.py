"""TLS with redis-py (`ssl=True`) and idem_client (`rediss://`) against `idem serve --tls-only`.

The certificates are made here with the openssl command (a CA and a
localhost certificate it signs); no key is committed.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from conftest import PATIENCE_S, free_port, idem_bin

from idem_client import Client
from idem_client.client import no_retry
from idem_client.replies import Stored


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _make_certs(d: Path) -> None:
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "1",
        "-subj",
        "/CN=idem test CA",
        cwd=d,
    )
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "key.pem",
        "-out",
        "srv.csr",
        "-subj",
        "/CN=localhost",
        cwd=d,
    )
    (d / "ext.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    _openssl(
        "x509",
        "-req",
        "-in",
        "srv.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "cert.pem",
        "-days",
        "1",
        "-extfile",
        "ext.cnf",
        cwd=d,
    )


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    d = tmp_path_factory.mktemp("tls")
    _make_certs(d)
    port = free_port()
    proc = subprocess.Popen(
        [
            idem_bin(),
            "serve",
            "--tls-only",
            "--tls-port",
            str(port),
            "--http-port",
            "0",
            "--tls-cert",
            str(d / "cert.pem"),
            "--tls-key",
            str(d / "key.pem"),
            "--data",
            str(d / "data"),
            "--log",
            "warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={k: v for k, v in os.environ.items() if not k.startswith("IDEM_")},
    )
    try:
        deadline = time.monotonic() + PATIENCE_S
        while True:
            try:
                if redis.Redis(host="localhost", port=port, ssl=True, ssl_ca_certs=str(d / "ca.pem")).ping():
                    break
            except redis.ConnectionError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.05)
        yield port, d / "ca.pem"
    finally:
        proc.terminate()
        proc.wait(PATIENCE_S)


def test_redis_py_ssl(tls_server: tuple[int, Path]) -> None:
    port, ca = tls_server
    r = redis.Redis(host="localhost", port=port, ssl=True, ssl_ca_certs=str(ca))
    assert r.execute_command("VALUE.SET", "tls:py", "v") == [b"ok", 1]  # type: ignore[no-untyped-call]
    assert r.execute_command("VALUE.GET", "tls:py") == [b"v", 1]  # type: ignore[no-untyped-call]
    # A client that does not trust the server's CA is refused.
    with pytest.raises(redis.ConnectionError):
        redis.Redis(host="localhost", port=port, ssl=True, retry=no_retry()).ping()
    # Plaintext on the TLS-only port gets no answer.
    with pytest.raises(redis.ConnectionError):
        redis.Redis(host="localhost", port=port, socket_timeout=PATIENCE_S, retry=no_retry()).ping()


def test_idem_client_over_rediss(tls_server: tuple[int, Path]) -> None:
    port, ca = tls_server
    with Client.from_url(f"rediss://localhost:{port}", ssl_ca_certs=str(ca)) as c:
        assert c.value_set("tls:client", b"x") == Stored(1)
