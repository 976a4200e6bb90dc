"""Fixtures of the HTTP conformance suite: the reference upstream (in this
process, served by uvicorn in a thread) and the targets under test."""

from __future__ import annotations

import importlib
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parent))

import targets
import upstream_app

for _plugin in filter(None, os.environ.get("IDEM_HTTP_PLUGINS", "").split(",")):
    importlib.import_module(_plugin.strip())


class Upstream:
    """The reference upstream, served by uvicorn on a port of its own."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or targets.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            upstream_app.app,
            host="127.0.0.1",
            port=self.port,
            log_level="critical",
            lifespan="off",
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the upstream did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=5)


def effects(name: str) -> int:
    """How many times the operation named ``name`` reached the upstream."""
    return upstream_app.effects(name)


def release(name: str) -> None:
    """Lets the upstream answer the requests held under ``name``."""
    upstream_app.release(name)


@pytest.fixture(scope="session")
def upstream() -> Iterator[Upstream]:
    u = Upstream()
    yield u
    u.stop()


def _selected() -> list[str]:
    chosen = os.environ.get("IDEM_HTTP_TARGETS")
    names = list(targets.registered())
    if chosen:
        names = [n.strip() for n in chosen.split(",") if n.strip()]
    return names


@pytest.fixture(scope="session", params=_selected())
def target(request: pytest.FixtureRequest) -> Iterator[targets.Target]:
    factory = targets.registered().get(request.param)
    if factory is None:
        pytest.fail(
            f"no target named {request.param}; registered: {sorted(targets.registered())}"
        )
    t = factory()
    why = t.available()
    if why is not None:
        pytest.skip(f"{request.param}: {why}")
    yield t
    t.close()


@pytest.fixture
def gw(target: targets.Target, upstream: Upstream) -> Iterator[targets.Started]:
    s = targets.Started(target, upstream.url)
    yield s
    s.close()
