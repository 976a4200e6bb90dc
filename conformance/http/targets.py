"""Implementations under test, behind one interface.

A :class:`Target` starts an implementation of the gateway's semantics in
front of an upstream, with routes in the gateway's ``--route`` syntax and
settings named as the gateway's config keys (README.md lists the ones the
cases use). Another implementation joins the suite by registering a
factory with :func:`register`, in a module named by ``IDEM_HTTP_PLUGINS``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

#: Settings values: what a TOML config file can hold.
Setting = str | int | bool | list[str] | list[int]


@dataclass
class Store:
    """Where one set of records lives; two gateways given the same Store share records."""

    name: str
    args: list[str]
    key_prefix: str
    cleanup: Callable[[], None] = lambda: None


class Gateway(ABC):
    """A running implementation."""

    base_url: str

    @abstractmethod
    def stop(self) -> None:
        """Stops it (gracefully) and frees its resources."""

    def kill9_and_restart(self) -> None:
        """Kills it with SIGKILL, then starts it again on the same records and address."""
        raise NotImplementedError


class Target(ABC):
    """An implementation and a record store, as the cases see them."""

    name: str
    #: Two processes may serve one record set (``two_gateways`` case).
    shares_store: bool = True
    #: It is a reverse proxy (hop-by-hop and X-Forwarded-* cases, refused upstream connections).
    is_proxy: bool = True
    #: It serves HTTP/2 with prior knowledge.
    http2: bool = True
    #: :meth:`Gateway.kill9_and_restart` works.
    can_kill9: bool = True
    #: It renews a first request's lease while the upstream call runs, so a
    #: call may outlive ``lease_ms`` (an implementation whose lease must cover
    #: the whole call leaves this off).
    renews_lease: bool = False

    def available(self) -> str | None:
        """``None`` when usable here, or why not (the cases are then skipped)."""
        return None

    @abstractmethod
    def new_store(self) -> Store:
        """A fresh record set."""

    @abstractmethod
    def start(
        self,
        routes: Sequence[str],
        store: Store,
        upstream: str,
        settings: Mapping[str, Setting],
    ) -> Gateway:
        """Starts the implementation in front of ``upstream``; returns once it serves."""

    def close(self) -> None:
        """Frees what the target shares between cases."""


_FACTORIES: dict[str, Callable[[], Target]] = {}


def register(name: str, factory: Callable[[], Target]) -> None:
    """Adds a target; ``IDEM_HTTP_TARGETS`` (comma-separated names) selects among them."""
    _FACTORIES[name] = factory


def registered() -> dict[str, Callable[[], Target]]:
    return dict(_FACTORIES)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_listening(
    port: int,
    proc: subprocess.Popen[bytes] | None,
    log: Path | None,
    timeout_s: float = 20,
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            text = log.read_text() if log is not None and log.exists() else ""
            raise RuntimeError(f"process exited with {proc.returncode}: {text[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listens on port {port} after {timeout_s} s")


def idem_bin() -> str:
    path = os.environ.get("IDEM_BIN") or str(REPO / "target" / "debug" / "idem")
    if not Path(path).exists():
        raise RuntimeError(
            f"{path} does not exist: run `cargo build -p idem` or set IDEM_BIN"
        )
    return path


def _toml_value(v: Setting) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return "[" + ", ".join(_toml_value(x) for x in v) + "]"


class IdemGateway(Gateway):
    """An `idem gateway` process."""

    def __init__(self, args: list[str], workdir: Path, port: int) -> None:
        self._args = args
        self._workdir = workdir
        self._port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self._proc: subprocess.Popen[bytes] | None = None
        self._spawn()

    def _spawn(self) -> None:
        log = self._workdir / "gateway.log"
        with open(log, "ab") as out:
            env = {k: v for k, v in os.environ.items() if not k.startswith("IDEM_")}
            env["RUST_LOG"] = env.get("RUST_LOG", "warn")
            self._proc = subprocess.Popen(self._args, stdout=out, stderr=out, env=env)
        wait_listening(self._port, self._proc, log)

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def kill9_and_restart(self) -> None:
        assert self._proc is not None
        self._proc.send_signal(signal.SIGKILL)
        self._proc.wait()
        self._spawn()


class IdemGatewayTarget(Target):
    """`idem gateway` over one kind of record store."""

    def __init__(self, kind: str) -> None:
        self.name = f"gateway-{kind}"
        self.kind = kind
        self.renews_lease = True
        # The embedded store belongs to one process (its data directory is locked).
        self.shares_store = kind != "embedded"
        self._server: subprocess.Popen[bytes] | None = None
        self._server_url: str | None = None
        self._tmp = Path(tempfile.mkdtemp(prefix=f"idem-http-{kind}-"))

    def available(self) -> str | None:
        try:
            idem_bin()
        except RuntimeError as e:
            return str(e)
        need = {"postgres": 5432, "redis": 6379}.get(self.kind)
        if need is not None:
            try:
                with socket.create_connection(("127.0.0.1", need), timeout=0.5):
                    pass
            except OSError:
                return f"{self.kind} is not running on 127.0.0.1:{need}"
        return None

    def _remote_url(self) -> str:
        if self._server_url is None:
            port = free_port()
            data = self._tmp / "server-data"
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
                        str(data),
                    ],
                    stdout=out,
                    stderr=out,
                    env=env,
                )
            wait_listening(port, self._server, log)
            self._server_url = f"redis://127.0.0.1:{port}"
        return self._server_url

    def new_store(self) -> Store:
        prefix = f"gw-{uuid.uuid4().hex[:12]}:"
        if self.kind == "embedded":
            data = Path(tempfile.mkdtemp(prefix="data-", dir=self._tmp))
            return Store(
                self.name,
                ["--data", str(data)],
                prefix,
                lambda: shutil.rmtree(data, ignore_errors=True),
            )
        if self.kind == "postgres":
            url = os.environ.get(
                "IDEM_TEST_PG", "postgres://postgres@127.0.0.1:5432/test"
            )
            return Store(self.name, ["--store", url], prefix)
        if self.kind == "redis":
            url = os.environ.get("IDEM_TEST_REDIS", "redis://127.0.0.1:6379")
            return Store(self.name, ["--store", url], prefix)
        if self.kind == "remote":
            return Store(self.name, ["--idem", self._remote_url()], prefix)
        raise ValueError(self.kind)

    def start(
        self,
        routes: Sequence[str],
        store: Store,
        upstream: str,
        settings: Mapping[str, Setting],
    ) -> Gateway:
        port = free_port()
        workdir = Path(tempfile.mkdtemp(prefix="gw-", dir=self._tmp))
        config = workdir / "gateway.toml"
        merged: dict[str, Setting] = {"key_prefix": store.key_prefix, **settings}
        config.write_text(
            "".join(f"{k} = {_toml_value(v)}\n" for k, v in merged.items())
        )
        args = [
            idem_bin(),
            "gateway",
            "--listen",
            f"127.0.0.1:{port}",
            "--upstream",
            upstream,
            "--config",
            str(config),
        ]
        args += store.args
        for r in routes:
            args += ["--route", r]
        return IdemGateway(args, workdir, port)

    def close(self) -> None:
        if self._server is not None:
            self._server.terminate()
            try:
                self._server.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._server.kill()
        shutil.rmtree(self._tmp, ignore_errors=True)


def _factory(kind: str) -> Callable[[], Target]:
    return lambda: IdemGatewayTarget(kind)


for _kind in ("embedded", "postgres", "redis", "remote"):
    register(f"gateway-{_kind}", _factory(_kind))


@dataclass
class Started:
    """What a case gets from the ``gateway`` fixture."""

    target: Target
    upstream: str
    started: list[Gateway] = field(default_factory=list)
    stores: list[Store] = field(default_factory=list)

    def store(self) -> Store:
        s = self.target.new_store()
        self.stores.append(s)
        return s

    def start(
        self,
        routes: Sequence[str] = (),
        settings: Mapping[str, Setting] | None = None,
        store: Store | None = None,
        upstream: str | None = None,
    ) -> Gateway:
        g = self.target.start(
            routes, store or self.store(), upstream or self.upstream, settings or {}
        )
        self.started.append(g)
        return g

    def close(self) -> None:
        for g in self.started:
            g.stop()
        for s in self.stores:
            s.cleanup()
