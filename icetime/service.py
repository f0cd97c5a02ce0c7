"""What every service process shares: arguments, logging, Redis, clean shutdown.

A service is ``async def serve(settings, redis, stop: asyncio.Event, ready=None)``.
Once every listener is bound it awaits ``ready(ports)`` (when given) with the ports
it got, keyed by the settings field they stand for (``{"ingest_http_port": 40123,
"ingest_tcp_port": 40124}``; a service without listeners reports ``{}``): a port of
0 in the configuration means "any free port", and this is how the caller learns which.
SIGINT and SIGTERM set ``stop`` and the service returns after closing its listeners.

A service process publishes its report in the Redis hash :data:`icetime.keys.LISTENING`
(field: the service name; value: JSON ``{"pid", "host", "ports"}``), which is where
``icetime run`` reads the ports for its readiness check and the URLs it prints.

Exit codes: 0 stopped, 1 failed while running, 2 the configuration (file or
environment) is wrong: one line on stderr says what, and ``icetime run`` does not
restart a service that exits with it. 3 a listener could not bind its port (in use,
or an address this machine does not have): one line names ``host:port`` and the key.
A service binds each listener inside :func:`binding`, which turns the OSError into
:class:`BindFailed`.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator
from typing import TYPE_CHECKING, Any, NoReturn

from icetime import keys, logs, settings

if TYPE_CHECKING:
    import asyncio

    import redis.asyncio as aioredis
    from aiohttp import web

# asyncio, Redis, the bus and a service's own modules are imported once the configuration
# has been read: a process refused its configuration exits in a fraction of a second.

#: Settings field -> the port a listener got, e.g. ``{"broadcast_ws_port": 40125}``.
Ports = dict[str, int]
#: Awaited by a service once all its listeners are bound, with the ports they got.
Ready = Callable[[Ports], Awaitable[None]]
Serve = Callable[[settings.Settings, "aioredis.Redis", "asyncio.Event", "Ready | None"],
                 Awaitable[None]]
#: A service's own command-line flags: adds them to the parser and returns what turns
#: the parsed arguments into settings fields to replace (``{}``: none).
Flags = Callable[[argparse.ArgumentParser], Callable[[argparse.Namespace], dict[str, Any]]]
#: Set by ``icetime run`` for a service it restarts: JSON :data:`Ports`, the ports the
#: service had before, so a listener configured on port 0 comes back where clients knew it.
LISTEN_ENV = "ICETIME_LISTEN"
#: Set by ``icetime run``: its own pid, so a service stops when it is gone.
SUPERVISOR_ENV = "ICETIME_SUPERVISOR_PID"
#: The exit code of a process refused its configuration (argparse uses it for bad arguments).
EXIT_CONFIG = 2
#: The exit code of a service that could not bind a listener's port.
EXIT_BIND = 3
log = logging.getLogger(__name__)


def settings_key(field: str) -> str:
    """The TOML key a port field stands for: ``ingest_http_port`` -> ``ingest.http_port``."""
    return field.replace("_", ".", 1)


class BindFailed(OSError):
    """A listener could not bind: ``field`` (a settings field such as
    ``ingest_tcp_port``), ``host``, ``port`` and the system's reason; ``errno`` is the
    bind's (EADDRINUSE for a port in use)."""

    def __init__(self, field: str, host: str, port: int, reason: str,
                 errno: int | None = None) -> None:
        super().__init__(f"cannot listen on {host}:{port} ({settings_key(field)}): {reason}")
        self.errno = errno  # set after: OSError(errno, text) would prefix "[Errno N]"


@contextlib.contextmanager
def binding(field: str, host: str, port: int) -> Iterator[None]:
    """Wrap the bind of the listener configured by settings ``field``: an OSError
    becomes :class:`BindFailed`, which :func:`main` reports in one line, exit EXIT_BIND."""
    try:
        yield
    except BindFailed:
        raise
    except OSError as exc:
        # asyncio words the message "error while attempting to bind on address ...":
        # the errno's own text is the part worth a line.
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise BindFailed(field, host, port, reason, exc.errno) from exc


def listen_port(addresses: Iterable[Any]) -> int:
    """The port of a listener from its sockets' addresses (``getsockname()`` tuples).

    Raises ValueError when the host resolved to several addresses that got different
    ports (port 0 with a host name such as ``localhost``): give one address instead.
    """
    ports = {int(a[1]) for a in addresses}
    if len(ports) != 1:
        raise ValueError(f"a listener bound {sorted(ports) or 'no'} ports; with port 0, "
                         "configure a host that is one address (127.0.0.1, 0.0.0.0)")
    return ports.pop()


def with_ports(cfg: settings.Settings, ports: Ports) -> settings.Settings:
    """``cfg`` with the given port fields replaced (unknown fields: ValueError)."""
    fields = {f.name for f in dataclasses.fields(cfg)}
    unknown = set(ports) - fields
    if unknown:
        raise ValueError(f"not settings fields: {', '.join(sorted(unknown))}")
    return dataclasses.replace(cfg, **ports)  # type: ignore[arg-type]


def pinned_ports() -> Ports:
    """The ports ``icetime run`` asks a restarted service to bind again (:data:`LISTEN_ENV`)."""
    raw = os.environ.get(LISTEN_ENV, "")
    return {str(k): int(v) for k, v in json.loads(raw).items()} if raw else {}


def main(name: str, load: Callable[[], Serve], flags: Flags | None = None) -> None:
    """Run service ``name`` as a process: its ``serve`` is what ``load()`` returns,
    called once the configuration has been read (so a refusal costs no heavy imports).
    Exits with EXIT_CONFIG or EXIT_BIND as the module docstring says."""
    parser = argparse.ArgumentParser(prog=f"python -m services.{name}")
    parser.add_argument("--config", help="venue configuration (TOML); see docs/configuration.md")
    overrides = flags(parser) if flags else None
    args = parser.parse_args()
    try:
        logs.configure(name)
        cfg = settings.load(args.config)
        if overrides:
            cfg = dataclasses.replace(cfg, **overrides(args))
        if not cfg.redis_url:
            raise settings.ConfigError("set REDIS_URL (or [redis] url), or start icetime with "
                                       "`icetime run`, which provides its embedded Redis")
    except settings.ConfigError as exc:
        config_exit(name, exc)
    try:
        run_loop(_run(name, load(), cfg, cfg.redis_url))
    except BindFailed as exc:
        print(f"{name}: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_BIND) from None


def config_exit(prog: str, exc: settings.ConfigError) -> NoReturn:
    """Say what is wrong with the configuration in one line and exit with EXIT_CONFIG."""
    print(f"{prog}: {exc}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_CONFIG)


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run on uvloop where it is installed (Linux, macOS): the fan-out's per-socket
    writes and the feed's per-line reads cost about half what they do on asyncio's
    own loop. Falls back to asyncio's loop elsewhere."""
    import asyncio

    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


async def _run(name: str, serve: Serve, cfg: settings.Settings, url: str) -> None:
    import asyncio

    from icetime import bus

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    cfg = with_ports(cfg, pinned_ports())
    watchdog = asyncio.create_task(_watch_parent(name, stop))
    r = bus.connect(url)

    async def ready(ports: Ports) -> None:
        await _publish(r, name, {"pid": os.getpid(), "host": cfg.host, "ports": ports})
        log.info("%s listening: %s", name, ", ".join(
            f"{settings_key(k)} {v}" for k, v in sorted(ports.items())) or "no ports")

    try:
        await serve(cfg, r, stop, ready)
    finally:
        watchdog.cancel()
        await _unpublish(r, name)
        await r.aclose()
        log.info("%s stopped", name)


async def _publish(r: aioredis.Redis, name: str, entry: dict[str, Any]) -> None:
    """Tell the supervisor where we listen; a Redis that is not up yet is waited for."""
    import asyncio

    from redis.exceptions import RedisError

    for attempt in range(50):
        try:
            await r.hset(keys.LISTENING, name, json.dumps(entry))
            return
        except (RedisError, OSError) as exc:
            if attempt == 0:
                log.warning("%s: cannot publish the ports yet: %s", name, exc)
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{name}: could not publish its ports to Redis")


async def _unpublish(r: aioredis.Redis, name: str) -> None:
    """Withdraw our entry on a clean stop, unless a newer process of the service wrote it."""
    from redis.exceptions import RedisError

    try:
        raw = await r.hget(keys.LISTENING, name)
        if raw and json.loads(raw).get("pid") == os.getpid():
            await r.hdel(keys.LISTENING, name)
    except (RedisError, OSError, ValueError):
        pass  # best effort: the supervisor matches entries by pid anyway


async def _watch_parent(name: str, stop: asyncio.Event) -> None:
    """Stop when the process that started us is gone (a supervisor killed with -9),
    rather than live on as an orphan holding the ports. The supervisor's pid comes from
    :data:`SUPERVISOR_ENV`: one that died while we were still starting is noticed too."""
    import asyncio

    parent = int(os.environ.get(SUPERVISOR_ENV) or os.getppid())
    while not stop.is_set():
        if os.getppid() != parent:
            log.warning("%s: parent process %d is gone; stopping", name, parent)
            stop.set()
            return
        await asyncio.sleep(1.0)


#: The pages' icon. Browsers also ask for /favicon.ico on their own, so both nodes
#: serve it at the root too (no 404 in a page's console).
FAVICON = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       "web", "favicon.svg")


async def favicon(_request: web.Request) -> web.FileResponse:
    """``GET /favicon.svg`` and ``GET /favicon.ico``: web/favicon.svg (image/svg+xml)."""
    from aiohttp import web

    return web.FileResponse(FAVICON, headers={"Content-Type": "image/svg+xml"})


async def healthz(_request: web.Request) -> web.Response:
    """``GET /healthz``: the process is up and serving HTTP."""
    from aiohttp import web  # here: a service without HTTP (scoring) never loads aiohttp

    return web.Response(text="ok")


async def storage_unavailable(request: web.Request,
                              handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                              ) -> web.StreamResponse:
    """aiohttp middleware (wrap it in ``web.middleware``): a request whose handler finds
    Redis not answering (down, restarting, still loading its files) is answered 503
    ``{"ok": false, "error": "storage unavailable; try again", "retry": true}`` with
    ``Retry-After: 1``, not a 500 with a traceback in the log (docs/protocol.md)."""
    from aiohttp import web
    from redis.exceptions import RedisError

    try:
        return await handler(request)
    except RedisError as exc:
        log.debug("%s %s: storage unavailable (%s)", request.method, request.path, exc)
        return web.json_response(
            {"ok": False, "error": "storage unavailable; try again", "retry": True},
            status=503, headers={"Retry-After": "1"})


#: How long ``/api/ready`` waits for Redis to answer its PING, in seconds.
READY_PING_S = 1.0


def readiness(r: aioredis.Redis) -> Callable[[web.Request], Awaitable[web.Response]]:
    """``GET /api/ready``: 200 ``{"ready": true}`` while Redis answers a PING within
    READY_PING_S, else 503 ``{"ready": false, "reason": ...}``. A load balancer or a
    Kubernetes readiness probe takes a node that cannot reach its data out of rotation
    (``/healthz`` only says the process serves HTTP)."""

    async def ready(_request: web.Request) -> web.Response:
        import asyncio

        from aiohttp import web
        from redis.exceptions import RedisError

        try:
            async with asyncio.timeout(READY_PING_S):
                await r.ping()
        except (RedisError, OSError) as exc:  # TimeoutError is an OSError
            # A hung Redis (a cut uplink) times out with no words of its own.
            why = str(exc) or f"no answer within {READY_PING_S:g} s"
            return web.json_response({"ready": False, "reason": f"redis: {why}"}, status=503)
        return web.json_response({"ready": True})

    return ready
