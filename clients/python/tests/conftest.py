"""Fixtures: a real `idem serve` (target/debug/idem, or $IDEM_BIN) on a free port with a temp data dir."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from idem_client import AsyncClient, Client

REPO = Path(__file__).resolve().parents[3]
#: Upper bound on any wait in a test, so a bug fails the test instead of hanging it.
PATIENCE_S = 30.0


def idem_bin() -> str:
    path = os.environ.get("IDEM_BIN") or str(REPO / "target" / "debug" / "idem")
    if not os.access(path, os.X_OK):
        pytest.fail(f"no idem binary at {path}: run `cargo build -p idem` or set IDEM_BIN")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class IdemServer:
    """One `idem serve` process."""

    def __init__(self, data: Path) -> None:
        self.data = data
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        for _ in range(5):
            self.port = free_port()
            self._proc = subprocess.Popen(
                [
                    idem_bin(),
                    "serve",
                    "--port",
                    str(self.port),
                    "--http-port",
                    "0",
                    "--data",
                    str(self.data),
                    "--log",
                    "warn",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                # idem reads IDEM_* variables as settings; the tests' own must not leak in.
                env={k: v for k, v in os.environ.items() if not k.startswith("IDEM_")},
            )
            deadline = time.monotonic() + PATIENCE_S
            while time.monotonic() < deadline and self._proc.poll() is None:
                if _answers_ping(self.port):
                    return
                time.sleep(0.02)
            self.stop()
        raise RuntimeError("idem serve did not start")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(PATIENCE_S)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None


@pytest.fixture(scope="session")
def idem_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IdemServer]:
    server = IdemServer(tmp_path_factory.mktemp("idem-data"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def idem_url(idem_server: IdemServer) -> str:
    return idem_server.url


@pytest.fixture
def client(idem_url: str) -> Iterator[Client]:
    # A generous connect timeout: the suite shares a loaded machine with builds.
    with Client.from_url(idem_url, socket_connect_timeout=PATIENCE_S) as c:
        yield c


@pytest.fixture
async def aclient(idem_url: str) -> AsyncIterator[AsyncClient]:
    async with AsyncClient.from_url(idem_url, socket_connect_timeout=PATIENCE_S) as c:
        yield c


@pytest.fixture
def run() -> str:
    """A prefix unique to this test, for keys."""
    return f"t{uuid.uuid4().hex[:12]}:"
