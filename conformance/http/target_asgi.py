"""A target that runs the reference upstream wrapped in idem_client's ASGI middleware.

``IdempotencyMiddleware(upstream_app.app, ...)`` is served by uvicorn in a
thread of the test process, so the cases count the same effects as for
the gateway. Its records live on one `idem serve` started for the target;
two "gateways" given the same store share that server and key prefix.

It is not a reverse proxy (no hop-by-hop, X-Forwarded-* or refused-upstream
cases), serves HTTP/1.1 only, and runs in the test process (no kill -9).

Enable it with ``IDEM_HTTP_PLUGINS=target_asgi`` (scripts/test.sh does).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import uvicorn

import targets
import upstream_app
from targets import (
    Gateway,
    Setting,
    Store,
    Target,
    free_port,
    idem_bin,
    register,
    wait_listening,
)

#: Gateway settings that mean the same for the middleware, and its argument names.
SETTINGS = {
    "key_prefix": "key_prefix",
    "concurrent": "concurrent",
    "wait_ms": "wait_ms",
    "keep_ms": "keep_ms",
    "lease_ms": "lease_ms",
    "scope": "scope",
    "on_5xx": "on_5xx",
    "on_timeout": "on_timeout",
    "release_statuses": "release_statuses",
    "replay_headers": "replay_headers",
    "request_bytes_max": "request_bytes_max",
    "stored_body_bytes_max": "stored_body_bytes_max",
    # The app stands where the upstream stands: its deadline is the app's.
    "upstream_timeout_ms": "app_timeout_ms",
}
#: Gateway settings about sockets the middleware does not own (the ASGI server reads
#: the request and writes the response): accepted and not applied.
SERVER_ONLY = {"response_read_timeout_ms", "body_read_timeout_ms"}


class AsgiGateway(Gateway):
    """uvicorn serving the middleware around the reference upstream, in a thread."""

    def __init__(self, idem_url: str, kwargs: dict[str, Any]) -> None:
        from idem_client import AsyncClient
        from idem_client.asgi import IdempotencyMiddleware

        port = free_port()
        self.base_url = f"http://127.0.0.1:{port}"
        self._client = AsyncClient.from_url(idem_url)
        app = IdempotencyMiddleware(upstream_app.app, client=self._client, **kwargs)
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="critical", lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the middleware's server did not start")
            time.sleep(0.01)

    def _serve(self) -> None:
        async def run() -> None:
            try:
                await self._server.serve()
            finally:
                await self._client.close()

        asyncio.run(run())

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


class AsgiTarget(Target):
    name = "asgi-middleware"
    shares_store = True
    is_proxy = False
    http2 = False
    can_kill9 = False
    renews_lease = True

    def __init__(self) -> None:
        self._tmp = Path(tempfile.mkdtemp(prefix="idem-http-asgi-"))
        self._server: subprocess.Popen[bytes] | None = None
        self._url: str | None = None

    def available(self) -> str | None:
        try:
            import idem_client.asgi  # noqa: F401
        except ImportError as e:
            return f"idem_client is not installed: {e}"
        try:
            idem_bin()
        except RuntimeError as e:
            return str(e)
        return None

    def _idem_url(self) -> str:
        if self._url is None:
            port = free_port()
            log = self._tmp / "server.log"
            with open(log, "ab") as out:
                env = {k: v for k, v in os.environ.items() if not k.startswith("IDEM_")}
                self._server = subprocess.Popen(
                    [
                        idem_bin(),
                        "serve",
                        "--port",
                        str(port),
                        "--http-port",
                        "0",
                        "--data",
                        str(self._tmp / "data"),
                    ],
                    stdout=out,
                    stderr=out,
                    env=env,
                )
            wait_listening(port, self._server, log)
            self._url = f"redis://127.0.0.1:{port}"
        return self._url

    def new_store(self) -> Store:
        return Store(self.name, [self._idem_url()], f"asgi-{uuid.uuid4().hex[:12]}:")

    def start(
        self,
        routes: Sequence[str],
        store: Store,
        upstream: str,
        settings: Mapping[str, Setting],
    ) -> Gateway:
        kwargs: dict[str, Any] = {
            "routes": list(routes),
            "key_prefix": store.key_prefix,
        }
        for name, value in settings.items():
            if name in SERVER_ONLY:
                continue
            if name not in SETTINGS:
                raise ValueError(
                    f"{self.name}: no equivalent of the gateway setting {name!r}"
                )
            kwargs[SETTINGS[name]] = value
        return AsgiGateway(store.args[0], kwargs)

    def close(self) -> None:
        if self._server is not None:
            self._server.terminate()
            try:
                self._server.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._server.kill()
                self._server.wait()
        shutil.rmtree(self._tmp, ignore_errors=True)


register(AsgiTarget.name, AsgiTarget)
assert targets.registered()[AsgiTarget.name] is AsgiTarget
