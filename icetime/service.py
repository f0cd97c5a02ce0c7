"""What every service process shares: arguments, logging, Redis, clean shutdown.

A service is ``async def serve(settings, redis, stop: asyncio.Event)``; SIGINT
and SIGTERM set ``stop`` and the service returns after closing its listeners.

Exit codes: 0 stopped, 1 failed while running, 2 the configuration (file or
environment) is wrong: one line on stderr says what, and ``icetime run`` does not
restart a service that exits with it.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, NoReturn

import redis.asyncio as aioredis

from icetime import bus, logs, settings

Serve = Callable[[settings.Settings, aioredis.Redis, asyncio.Event], Awaitable[None]]
#: The exit code of a process refused its configuration (argparse uses it for bad arguments).
EXIT_CONFIG = 2
log = logging.getLogger(__name__)
#: The supervisor's process id, set for the services it starts.
SUPERVISOR_ENV = "ICETIME_SUPERVISOR"


def main(name: str, serve: Serve) -> None:
    parser = argparse.ArgumentParser(prog=f"python -m services.{name}")
    parser.add_argument("--config", help="venue configuration (TOML); see docs/configuration.md")
    args = parser.parse_args()
    try:
        logs.configure(name)
        cfg = settings.load(args.config)
        if not cfg.redis_url:
            raise settings.ConfigError("set REDIS_URL (or [redis] url), or start icetime with "
                                       "`icetime run`, which provides its embedded Redis")
    except settings.ConfigError as exc:
        config_exit(name, exc)
    run_loop(_run(name, serve, cfg, cfg.redis_url))


def config_exit(prog: str, exc: settings.ConfigError) -> NoReturn:
    """Say what is wrong with the configuration in one line and exit with EXIT_CONFIG."""
    print(f"{prog}: {exc}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_CONFIG)


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
        log.info("%s stopped", name)


async def _watch_parent(name: str, stop: asyncio.Event) -> None:
    """Stop when the process that started us is gone (a supervisor killed with -9),
    rather than live on as an orphan holding the ports. The supervisor names itself in
    ICETIME_SUPERVISOR: a parent that died while we were still importing would
    otherwise leave us taking init as the parent to watch."""
    parent = int(os.environ.get(SUPERVISOR_ENV) or os.getppid())
    while not stop.is_set():
        await asyncio.sleep(1.0)
        if os.getppid() != parent:
            log.warning("%s: parent process %d is gone; stopping", name, parent)
            stop.set()


async def healthz(_request: object) -> object:
    """``GET /healthz``: the process is up and serving HTTP."""
    from aiohttp import web

    return web.Response(text="ok")
