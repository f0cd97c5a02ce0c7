"""What every service process shares: arguments, logging, Redis, clean shutdown.

A service is ``async def serve(settings, redis, stop: asyncio.Event)``; SIGINT
and SIGTERM set ``stop`` and the service returns after closing its listeners.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import redis.asyncio as aioredis

from icetime import bus, settings

Serve = Callable[[settings.Settings, aioredis.Redis, asyncio.Event], Awaitable[None]]


def main(name: str, serve: Serve) -> None:
    parser = argparse.ArgumentParser(prog=f"python -m services.{name}")
    parser.add_argument("--config", help="venue configuration (TOML); see docs/configuration.md")
    args = parser.parse_args()
    logging.basicConfig(level=os.environ.get("ICETIME_LOG", "INFO"),
                        format=f"%(asctime)s {name:9s} %(levelname)s %(message)s")
    cfg = settings.load(args.config)
    url = cfg.redis_url or os.environ.get("REDIS_URL", "")
    if not url:
        raise SystemExit(f"{name}: set REDIS_URL, or start icetime with `icetime run`, "
                         "which provides its embedded Redis")
    run_loop(_run(name, serve, cfg, url))


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run on uvloop where it is installed (Linux, macOS): the fan-out's per-socket
    writes and the feed's per-line reads cost about half what they do on asyncio's
    own loop. Falls back to asyncio's loop elsewhere."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


async def _run(name: str, serve: Serve, cfg: settings.Settings, url: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    watchdog = asyncio.create_task(_watch_parent(name, stop))
    r = bus.connect(url)
    try:
        await serve(cfg, r, stop)
    finally:
        watchdog.cancel()
        await r.aclose()
        logging.getLogger(name).info("stopped")


async def _watch_parent(name: str, stop: asyncio.Event) -> None:
    """Stop when the process that started us is gone (a supervisor killed with -9),
    rather than live on as an orphan holding the ports."""
    parent = os.getppid()
    while not stop.is_set():
        await asyncio.sleep(1.0)
        if os.getppid() != parent:
            logging.getLogger(name).warning("parent process %d is gone; stopping", parent)
            stop.set()


async def healthz(_request: object) -> object:
    """``GET /healthz``: the process is up and serving HTTP."""
    from aiohttp import web

    return web.Response(text="ok")
