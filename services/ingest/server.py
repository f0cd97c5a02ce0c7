"""Ingest: the timing feed over TCP (newline-delimited JSON) and HTTP POST.

The rules (the contract, roles, verdicts, idempotency) are :mod:`.core`'s; the TCP
feed is :mod:`.feed_tcp`'s, the HTTP one :mod:`.feed_http`'s; what a source may send,
:mod:`.admission`'s. This module puts them together (:class:`Ingest`), runs the
decoder links (:func:`supervise`) and serves (:func:`serve`).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

import redis.asyncio as aioredis
from aiohttp import web

from icetime.service import Ready, binding, healthz, listen_port, readiness, storage_unavailable
from icetime.settings import Settings

from .decoders.base_link import DecoderLink
from .decoders.link import make_link
from .desk import Desk, security_headers
from .feed import MAX_LINE
from .feed_http import HttpFeed
from .feed_tcp import TcpFeed

log = logging.getLogger(__name__)
#: A decoder link task that fails is restarted after this long, doubling up to
#: RESTART_MAX_S while it keeps failing (reset once a run lasted RESTART_STABLE_S).
RESTART_FIRST_S = 0.1
RESTART_MAX_S = 30.0
RESTART_STABLE_S = 10.0


class Ingest(TcpFeed, HttpFeed):
    """The transport-independent core (:class:`~services.ingest.core.IngestCore`:
    authenticate, validate, append or reject) with its TCP and HTTP feeds."""

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_LINE, middlewares=[
            self.no_token_in_url, web.middleware(storage_unavailable)])
        app.on_response_prepare.append(security_headers)
        app.add_routes([web.post("/feed", self.http_feed),
                        web.post("/api/startlist", self.http_startlist),
                        web.get("/api/stats", self.http_stats),
                        web.get("/api/whoami", self.http_whoami),
                        web.get("/healthz", healthz),
                        web.get("/api/ready", readiness(self.r))])
        Desk(self).routes(app)
        return app


async def supervise(link: DecoderLink, stop: asyncio.Event) -> None:
    """Run one decoder link until ``stop``. If its task fails (an exception the link did
    not handle), the traceback is logged, health shows the link down with the reason
    (event ``failed``), and it is restarted with backoff; a failing link never takes
    ingest or the other links with it."""
    loop = asyncio.get_running_loop()
    delay = RESTART_FIRST_S
    while not stop.is_set():
        started = loop.time()
        try:
            await link.run(stop)
        except Exception as exc:
            link.failed(exc)
            log.exception("decoder %s: link task failed (%d so far); restarting in %.1f s",
                          link.cfg.id, link.stats["failures"], delay)
            await link.publish_health("failed")
        else:
            return
        if loop.time() - started > RESTART_STABLE_S:
            delay = RESTART_FIRST_S
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        delay = min(delay * 2, RESTART_MAX_S)


async def serve(settings: Settings, r: aioredis.Redis, stop: asyncio.Event,
                ready: Ready | None = None) -> None:
    """Run the feed until ``stop`` is set; ``ready`` gets ``{"ingest_http_port",
    "ingest_tcp_port"}`` once both listeners are bound (port 0: any free port).
    Raises BindFailed (an OSError) when a configured port cannot be bound."""
    ingest = Ingest(settings, r)
    runner = web.AppRunner(ingest.app(), access_log=None)
    await runner.setup()
    tcp: asyncio.Server | None = None
    links: list[DecoderLink] = []
    link_tasks: list[asyncio.Task[None]] = []
    try:
        with binding("ingest_http_port", settings.host, settings.ingest_http_port):
            await web.TCPSite(runner, settings.host, settings.ingest_http_port).start()
        with binding("ingest_tcp_port", settings.host, settings.ingest_tcp_port):
            tcp = await asyncio.start_server(ingest.handle_tcp, settings.host,
                                             settings.ingest_tcp_port, limit=MAX_LINE)
        ports = {"ingest_http_port": listen_port(runner.addresses),
                 "ingest_tcp_port": listen_port(s.getsockname() for s in tcp.sockets)}
        log.info("feed on tcp://%s:%d and http://%s:%d/feed", settings.host,
                 ports["ingest_tcp_port"], settings.host, ports["ingest_http_port"])
        links = [make_link(d, ingest, Path(settings.data_dir) / "captures")
                 for d in settings.decoders]
        ingest.links = links
        link_tasks = [asyncio.create_task(supervise(link, stop)) for link in links]
        link_tasks.append(asyncio.create_task(ingest.watch_tokens(stop)))
        if ready:
            await ready(ports)
        await stop.wait()
    finally:
        for task in link_tasks:
            task.cancel()
        await asyncio.gather(*link_tasks, return_exceptions=True)
        if tcp is not None:
            tcp.close()
            await tcp.wait_closed()
        await runner.cleanup()
