"""Broadcast: the WebSocket endpoint (websockets) and the pages (aiohttp).

WebSocket messages are JSON text frames, documented in docs/protocol.md.

The WebSocket clients' side is :mod:`.ws_endpoint`'s.
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST
from websockets.asyncio.server import ServerConnection
from websockets.asyncio.server import serve as ws_serve
from yarl import URL

from icetime import bus, keys, restarts
from icetime.service import (
    Ready,
    binding,
    favicon,
    healthz,
    listen_port,
    readiness,
    storage_unavailable,
)
from icetime.settings import Settings
from icetime.timefmt import now_us

from .fanout import Hub
from .keepalive import Keepalive
from .metrics import Metrics
from .results_http import ResultsApi
from .rmonitor import RMonitorFeed
from .ws_endpoint import WsEndpoint

log = logging.getLogger(__name__)
WEB_DIR = Path(__file__).resolve().parents[2] / "web"
#: How long ``/api/health`` waits for one part of its report, in seconds.
HEALTH_PART_S = 2.0
#: The pages: URL path -> file in web/ (plain ES modules, no build step).
PAGES = {"/": "index.html", "/live": "live.html", "/board": "board.html",
         "/monitor": "monitor.html", "/overlay": "overlay.html"}
#: A host a CSP source can name: a DNS name or an IPv4 address. Anything else (an IPv6
#: literal, which CSP cannot express, or a forged Host header) is matched by ``*``.
CSP_HOST = re.compile(r"[A-Za-z0-9.-]{1,253}")


def ws_source(scheme: str, host: str | None, port: int | None) -> str:
    """A CSP source for a WebSocket endpoint, e.g. ``ws://arena.local:8081``."""
    name = host if host and CSP_HOST.fullmatch(host) else "*"
    return f"{scheme}://{name}" + (f":{port}" if port else "")


def content_security_policy(ws: str) -> str:
    """The policy every response carries: the pages run only their own scripts and
    styles from /static, talk to this node and its WebSocket ``ws`` (a CSP source),
    and embed nothing. A value from a start list that slipped past escaping still
    cannot run: no inline script, no event-handler attributes, no plugins, no <base>."""
    return ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
            f"connect-src 'self' {ws}; object-src 'none'; base-uri 'none'; "
            "form-action 'self'")


def page(name: str) -> Callable[[web.Request], Awaitable[web.FileResponse]]:
    async def handler(request: web.Request) -> web.FileResponse:
        return web.FileResponse(WEB_DIR / name)
    return handler


class Broadcast(WsEndpoint):
    """A broadcast node: its WebSocket clients (:class:`WsEndpoint`), pages and APIs."""

    def __init__(self, settings: Settings, r: aioredis.Redis) -> None:
        self.settings = settings
        self.r = r
        #: The node's own competition: its races are named by id alone.
        self.competition = settings.competition_id
        self.metrics = Metrics(r, self.node_stats, self.competition)
        self.hub = Hub(r, settings.client_queue_max, settings.client_buffer_max,
                       observe=self.metrics.observe, competition=self.competition)
        self.results = ResultsApi(r, settings.results_max_age_s, self.competition)
        self.rmonitor = RMonitorFeed(self.hub, r, settings.rmonitor_race)
        #: Pings every WebSocket client (one task for all; the library's own is off).
        self.keepalive = Keepalive(settings.ping_interval_s, settings.ping_timeout_s)
        #: The WebSocket listener's port as bound (the configured one, or the one port 0 got).
        self.ws_port = settings.broadcast_ws_port
        #: Connections told when the data goes stale (docs/protocol.md, "Stale data"):
        #: those that subscribed in protocol 2 (protocol-1 clients predate the message).
        self.status_clients: set[ServerConnection] = set()
        #: When this node lost Redis (µs), while it is away; None while it answers.
        self.stale_since_us: int | None = None
        self.hub.outage.on_change = self.stale_changed

    # ------------------------------------------------------------------ HTTP
    def ws_csp_source(self, request: web.Request) -> str:
        """Where this request's page will open its WebSocket (as /api/config tells
        it): the configured public URL's origin; for a public path (``/ws``, behind a
        load balancer) the host and port the browser asked for, as ``ws://`` and
        ``wss://`` (a proxy in front may end TLS: the page's scheme is not known here);
        else the host the browser asked for at the WebSocket port (what the pages
        build from ``location.hostname``)."""
        public = self.settings.public_ws_url
        if public and not public.startswith("/"):
            url = URL(public)
            return ws_source(url.scheme, url.raw_host, url.explicit_port)
        host, port = None, None
        try:
            asked = URL.build(scheme="http", authority=request.host)
            host, port = asked.raw_host, asked.explicit_port
        except ValueError:
            pass
        if public:
            return " ".join(ws_source(scheme, host, port) for scheme in ("ws", "wss"))
        return ws_source("ws", host, self.ws_port)

    async def security_headers(self, request: web.Request,
                               response: web.StreamResponse) -> None:
        response.headers["Content-Security-Policy"] = content_security_policy(
            self.ws_csp_source(request))
        response.headers["X-Content-Type-Options"] = "nosniff"

    async def config(self, request: web.Request) -> web.Response:
        return web.json_response({"ws_url": self.settings.public_ws_url,
                                  "ws_port": self.ws_port})

    async def races(self, request: web.Request) -> web.Response:
        """The races of the node's competition, or of the one ``?competition=`` names."""
        competition = request.query.get("competition", self.competition)
        if not keys.COMPETITION_ID.fullmatch(competition):
            return web.json_response({"ok": False, "error": "not a competition id"},
                                     status=400)
        out = []
        for race in sorted(bus.text(m) for m in
                           await self.r.smembers(keys.races_set(competition))):
            # The stored snapshot, not folded: a race's name, distance and kind change
            # only by a revision, and scoring stores the snapshot with every revision.
            view = await self.r.hget(keys.snapshot_key(competition, race), "view")
            info = json.loads(view)["race"] if view else {"id": race}
            out.append({"id": race, "name": info.get("name", race),
                        "distance": info.get("distance"), "kind": info.get("kind")})
        return web.json_response(out)

    async def time(self, request: web.Request) -> web.Response:
        return web.json_response({"s": now_us()})

    async def health(self, request: web.Request) -> web.Response:
        """Always 200: a part that cannot be read (Redis away or slow, a bad value) is
        left out and named under ``errors`` with what went wrong."""
        out: dict[str, Any] = {}
        errors: dict[str, str] = {}

        async def counters(key: str) -> dict[str, int]:
            return {bus.text(k): int(v) for k, v in (await self.r.hgetall(key)).items()}

        async def decoders() -> list[Any]:
            return [json.loads(v) for _, v in
                    sorted((await self.r.hgetall(keys.decoders_hash(self.competition))).items())]

        async def latency() -> dict[str, Any]:
            return self.metrics.recent_latency()

        async def last_passing() -> Any:
            raw = await self.r.get(keys.last_passing(self.competition))
            return json.loads(raw) if raw else None

        parts: dict[str, Callable[[], Awaitable[Any]]] = {
            "ingest": lambda: counters(keys.ingest_stats(self.competition)),
            "scoring": lambda: restarts.scoring_health(self.r, self.competition),
            "service_restarts": lambda: restarts.service_restarts(self.r, self.competition),
            "broadcast": self.broadcast_stats, "decoders": decoders, "latency": latency,
            "last_passing": last_passing}
        for name, part in parts.items():
            try:
                async with asyncio.timeout(HEALTH_PART_S):
                    out[name] = await part()
            except Exception as exc:  # health reports what it can; it never fails
                errors[name] = f"{type(exc).__name__}: {exc}"
        if errors:
            log.warning("health: partial report: %s", errors)
            out["errors"] = errors
        out["server_us"] = now_us()
        return web.json_response(out)

    async def broadcast_stats(self) -> dict[str, Any]:
        return {**self.hub.stats(), "keepalive_closed": self.keepalive.closed}

    def node_stats(self) -> dict[str, Any]:
        """The node's own figures for /metrics: the hub's, with the RMonitor feed's
        subscriber taken out of the WebSocket clients."""
        stats = self.hub.stats()
        stats["clients"] -= int(self.rmonitor.sub is not None)
        stats["rmonitor_clients"] = len(self.rmonitor.clients)
        stats["rmonitor_lines"] = self.rmonitor.sent_lines
        return stats

    async def prometheus(self, request: web.Request) -> web.Response:
        """``GET /metrics``: the Prometheus text format (docs/results.md, "Metrics")."""
        body = await self.metrics.scrape()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    def app(self) -> web.Application:
        app = web.Application(middlewares=[web.middleware(storage_unavailable)])
        # Every response, pages and static files and the API alike (errors included).
        app.on_response_prepare.append(self.security_headers)
        app.add_routes([web.get(path, page(name)) for path, name in PAGES.items()])
        app.add_routes([
            web.get("/api/config", self.config),
            web.get("/api/races", self.races),
            web.get("/api/time", self.time),
            web.get("/api/health", self.health),
            web.get("/metrics", self.prometheus),
            *self.results.routes(),
            web.get("/healthz", healthz),
            web.get("/favicon.svg", favicon),
            web.get("/favicon.ico", favicon),
            web.get("/api/ready", readiness(self.r)),
            web.static("/static", WEB_DIR, append_version=False),
        ])
        return app


async def serve(settings: Settings, r: aioredis.Redis, stop: asyncio.Event,
                ready: Ready | None = None) -> None:
    """Serve the WebSocket, the pages and APIs, and the RMonitor feed until ``stop`` is
    set; ``ready`` gets ``{"broadcast_http_port", "broadcast_ws_port",
    "broadcast_rmonitor_port"}`` once every listener is bound (port 0: any free port).
    Raises BindFailed (an OSError) when a configured port cannot be bound."""
    b = Broadcast(settings, r)
    runner = web.AppRunner(b.app(), access_log=None)
    await runner.setup()
    try:
        # The WebSocket first: /api/config tells pages its port, so it must be known
        # before the first page can ask. Its keepalive is the node's one task
        # (b.keepalive), not a task per connection (ping_interval=None).
        with binding("broadcast_ws_port", settings.host, settings.broadcast_ws_port):
            ws_server = await ws_serve(b.handle_ws, settings.host, settings.broadcast_ws_port,
                                       compression=None, max_size=64 * 1024,
                                       write_limit=256 * 1024, ping_interval=None)
        b.keepalive.start()
        async with ws_server:
            b.ws_port = listen_port(s.getsockname() for s in ws_server.sockets)
            try:
                with binding("broadcast_rmonitor_port", settings.host,
                             settings.broadcast_rmonitor_port):
                    rm_server = await asyncio.start_server(
                        b.rmonitor.handle, settings.host, settings.broadcast_rmonitor_port)
                async with rm_server:
                    b.rmonitor.start()
                    await _serve_http(b, runner, settings, rm_server, stop, ready)
            finally:
                await b.rmonitor.close()
                await b.hub.close()
    finally:
        await b.keepalive.close()
        await runner.cleanup()


async def _serve_http(b: Broadcast, runner: web.AppRunner, settings: Settings,
                      rm_server: asyncio.Server, stop: asyncio.Event,
                      ready: Ready | None) -> None:
    """Bind the HTTP listener, report every port, and wait for ``stop``."""
    with binding("broadcast_http_port", settings.host, settings.broadcast_http_port):
        await web.TCPSite(runner, settings.host, settings.broadcast_http_port).start()
    ports = {"broadcast_http_port": listen_port(runner.addresses),
             "broadcast_ws_port": b.ws_port,
             "broadcast_rmonitor_port": listen_port(s.getsockname() for s in rm_server.sockets)}
    log.info("pages on http://%s:%d/, websocket on ws://%s:%d/, rmonitor on tcp %d",
             settings.host, ports["broadcast_http_port"], settings.host, b.ws_port,
             ports["broadcast_rmonitor_port"])
    if ready:
        await ready(ports)
    await stop.wait()
