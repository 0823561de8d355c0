"""memmon's demo app: a tiny aiohttp service that leaks memory on request, watched by the memmon sidecar.

    GET  /healthz          200 {"status": "ok", "held_mb": N}
    POST /leak?mb=N        holds N MiB more (pages touched, so they count as resident), 200 {"held_mb": total}
    POST /free             drops everything held, 200 {"held_mb": 0}
    GET  /slow?seconds=S   answers after S seconds (at most 60): a request in flight, to watch a drain

On SIGTERM (or SIGINT) it stops accepting connections, lets the requests in flight finish (at most
DEMO_DRAIN_SECONDS), prints "drained" and exits 0. Listens on 0.0.0.0:DEMO_PORT (default 8000).
Only the standard library and aiohttp (memmon's own dependency, so the memmon image can run it).
"""

from __future__ import annotations

import asyncio
import os
import signal

from aiohttp import web

MIB = 1024 * 1024
PAGE = 4096
MAX_MB_PER_REQUEST = 4096
MAX_SLOW_SECONDS = 60.0

HELD = web.AppKey("held", list)


def _held_mb(request: web.Request) -> int:
    return sum(len(block) for block in request.app[HELD]) // MIB


def _number(request: web.Request, name: str, kind: type[int] | type[float], upper: float) -> int | float:
    raw = request.query.get(name, "")
    try:
        value = kind(raw)
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name} must be a number, got {raw!r}\n") from None
    if not 0 <= value <= upper:
        raise web.HTTPBadRequest(text=f"{name} must be between 0 and {upper:g}, got {raw}\n")
    return value


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "held_mb": _held_mb(request)})


async def leak(request: web.Request) -> web.Response:
    mb = int(_number(request, "mb", int, MAX_MB_PER_REQUEST))
    block = bytearray(mb * MIB)
    block[::PAGE] = b"\x01" * len(range(0, len(block), PAGE))  # touch every page: resident, not just reserved
    request.app[HELD].append(block)
    return web.json_response({"held_mb": _held_mb(request)})


async def free(request: web.Request) -> web.Response:
    request.app[HELD].clear()
    return web.json_response({"held_mb": 0})


async def slow(request: web.Request) -> web.Response:
    seconds = float(_number(request, "seconds", float, MAX_SLOW_SECONDS))
    await asyncio.sleep(seconds)
    return web.json_response({"slept_seconds": seconds})


def make_app() -> web.Application:
    app = web.Application()
    app[HELD] = []
    app.router.add_get("/healthz", healthz)
    app.router.add_post("/leak", leak)
    app.router.add_post("/free", free)
    app.router.add_get("/slow", slow)
    return app


async def main() -> None:
    port = int(os.environ.get("DEMO_PORT", "8000"))
    drain_seconds = float(os.environ.get("DEMO_DRAIN_SECONDS", "20"))
    runner = web.AppRunner(make_app(), access_log=None, shutdown_timeout=drain_seconds)
    await runner.setup()
    site = web.TCPSite(runner, "0.0.0.0", port)
    await site.start()
    print(f"demo app listening on 0.0.0.0:{port}", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()

    print("stopping: no new connections, draining the requests in flight", flush=True)
    await runner.cleanup()  # stops the listener, then waits for the handlers still running
    print("drained", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
