"""A FastAPI app for the middleware tests: each endpoint counts its effects per key."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

#: Size of /big's body; the tests configure a smaller stored-response bound.
BIG_BYTES = 4096


def make_app() -> tuple[FastAPI, Counter[str]]:
    app = FastAPI()
    effects: Counter[str] = Counter()

    @app.post("/orders")
    @app.patch("/orders")
    @app.get("/orders")
    async def orders(request: Request) -> Response:
        body: dict[str, Any] = await request.json() if await request.body() else {}
        item = str(body.get("item", "none"))
        effects[item] += 1
        n = effects[item]
        response = JSONResponse({"item": item, "n": n}, status_code=201)
        response.headers["Location"] = f"/orders/{item}/{n}"
        response.headers["ETag"] = f'"{n}"'
        response.headers["X-Private"] = "not stored"
        response.set_cookie("session", f"s{n}")
        return response

    @app.post("/fail-once/{name}")
    async def fail_once(name: str) -> dict[str, int]:
        effects[name] += 1
        if effects[name] == 1:
            raise RuntimeError("the first call fails")
        return {"n": effects[name]}

    @app.post("/status/{code}")
    async def status(code: int, request: Request) -> Response:
        effects[request.url.path] += 1
        return JSONResponse({"n": effects[request.url.path]}, status_code=code)

    @app.post("/slow/{name}")
    async def slow(name: str) -> dict[str, int]:
        effects[name] += 1
        await asyncio.sleep(0.3)
        return {"n": effects[name]}

    @app.post("/big/{name}")
    async def big(name: str) -> Response:
        effects[name] += 1
        return Response(b"x" * BIG_BYTES, media_type="application/octet-stream")

    @app.post("/users")
    async def users(request: Request) -> dict[str, int]:
        body = await request.json()
        openid = str(body.get("user", {}).get("openid"))
        effects[openid] += 1
        return {"n": effects[openid]}

    @app.post("/pay/{order}")
    async def pay(order: str) -> dict[str, int]:
        effects[order] += 1
        await asyncio.sleep(0.3)
        return {"n": effects[order]}

    @app.post("/opt")
    async def opt(request: Request) -> dict[str, int]:
        effects["opt"] += 1
        return {"n": effects["opt"]}

    return app, effects
