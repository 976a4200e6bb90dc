"""The same FastAPI app behind idem_client's IdempotencyMiddleware (on idem) and
behind asgi-idempotency-header (on Redis): duplicates, failure handling, throughput.

Run through bench/python-middleware.sh, which starts the servers:

    python python-middleware.py serve --impl idem|peer --port P --store URL
    python python-middleware.py drive --url http://127.0.0.1:P --impl NAME
"""

import argparse
import asyncio
import json
import time
import uuid
from collections import Counter
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

#: Pairs of concurrent duplicates in the replay run.
PAIRS = 2000
#: Unique-key requests in the throughput run (and as many replays).
REQUESTS = 2000
#: Requests in flight at once in the throughput run.
CONCURRENCY = 32


def make_app() -> Any:
    app = FastAPI()
    effects: Counter[str] = Counter()

    @app.post("/orders")
    async def orders(request: Request) -> JSONResponse:
        item = str((await request.json())["item"])
        effects[item] += 1
        return JSONResponse({"item": item, "n": effects[item]}, status_code=201)

    @app.post("/fail-once/{name}")
    async def fail_once(name: str) -> JSONResponse:
        effects[name] += 1
        if effects[name] == 1:
            raise RuntimeError("the first call fails")
        return JSONResponse({"n": effects[name]})

    @app.get("/effects")
    async def get_effects() -> JSONResponse:
        return JSONResponse(effects)

    return app


def serve(impl: str, port: int, store: str) -> None:
    import uvicorn

    app = make_app()
    if impl == "idem":
        from idem_client import AsyncClient
        from idem_client.asgi import IdempotencyMiddleware

        app.add_middleware(IdempotencyMiddleware, client=AsyncClient.from_url(store))
    else:
        from idempotency_header_middleware import IdempotencyHeaderMiddleware
        from idempotency_header_middleware.backends.redis import RedisBackend
        from redis.asyncio import BlockingConnectionPool, Redis

        prefix = f"bench-{uuid.uuid4().hex[:8]}-"
        # As many connections as idem_client's two pools hold together.
        pool = BlockingConnectionPool.from_url(store, max_connections=64 + 256)
        redis = Redis(connection_pool=pool)
        backend = RedisBackend(redis, keys_key=prefix + "keys", response_key=prefix + "resp-")
        app.add_middleware(IdempotencyHeaderMiddleware, backend=backend)
    # Idle keep-alive connections stay open longer than any phase of the run, so the
    # driver never reuses one that the server is closing.
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="error", access_log=False, timeout_keep_alive=300)


async def drive(url: str, impl: str) -> dict[str, Any]:
    import httpx

    run = uuid.uuid4().hex[:8]
    limits = httpx.Limits(max_connections=512, max_keepalive_connections=512)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as http:

        async def post(path: str, key: str, body: dict[str, Any]) -> httpx.Response:
            return await http.post(path, json=body, headers={"Idempotency-Key": key})

        # 1. PAIRS x 2 concurrent duplicates.
        pair_keys = [f"{run}-p{i}" for i in range(PAIRS)]
        sem = asyncio.Semaphore(400)

        async def pair(key: str) -> tuple[httpx.Response, httpx.Response]:
            async with sem:
                a, b = await asyncio.gather(post("/orders", key, {"item": key}), post("/orders", key, {"item": key}))
                return a, b

        pairs = await asyncio.gather(*(pair(k) for k in pair_keys))
        effects = (await http.get("/effects")).json()
        statuses: Counter[str] = Counter()
        identical = 0
        for a, b in pairs:
            statuses["+".join(sorted(map(str, (a.status_code, b.status_code))))] += 1
            identical += a.status_code == b.status_code and a.content == b.content
        duplicates = sum(max(0, effects.get(k, 0) - 1) for k in pair_keys)
        not_run = sum(effects.get(k, 0) == 0 for k in pair_keys)

        # 2. An endpoint that raises on its first call, retried twice with the same key.
        name = f"{run}-fail"
        tries = []
        for _ in range(3):
            # A fresh connection each time: uvicorn closes one whose request raised.
            async with httpx.AsyncClient(base_url=url, timeout=120) as fresh:
                tries.append(await fresh.post(f"/fail-once/{name}", json={}, headers={"Idempotency-Key": name}))
        fail_runs = (await http.get("/effects")).json().get(name, 0)

        # 3. Throughput: unique keys, then the same keys again (replays).
        keys = [f"{run}-t{i}" for i in range(REQUESTS)]
        sem = asyncio.Semaphore(CONCURRENCY)

        async def one(key: str) -> int:
            async with sem:
                return (await post("/orders", key, {"item": key})).status_code

        t0 = time.perf_counter()
        firsts = await asyncio.gather(*(one(k) for k in keys))
        t1 = time.perf_counter()
        replays = await asyncio.gather(*(one(k) for k in keys))
        t2 = time.perf_counter()

    return {
        "impl": impl,
        "pairs": PAIRS,
        "duplicate_effects": duplicates,
        "pairs_not_run": not_run,
        "pair_statuses": dict(statuses),
        "identical_pairs": identical,
        "fail_once_statuses": [r.status_code for r in tries],
        "fail_once_runs": fail_runs,
        "unique_rps": REQUESTS / (t1 - t0),
        "unique_ok": sum(s == 201 for s in firsts),
        "replay_rps": REQUESTS / (t2 - t1),
        "replay_ok": sum(s == 201 for s in replays),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--impl", choices=["idem", "peer"], required=True)
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--store", required=True)
    d = sub.add_parser("drive")
    d.add_argument("--url", required=True)
    d.add_argument("--impl", required=True)
    args = parser.parse_args()
    if args.cmd == "serve":
        serve(args.impl, args.port, args.store)
    else:
        print(json.dumps(asyncio.run(drive(args.url, args.impl))))


if __name__ == "__main__":
    main()
