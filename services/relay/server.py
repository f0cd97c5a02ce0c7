"""The relay service: the mirror (:mod:`.mirror`) and its health listener.

``REDIS_URL`` (or ``redis.url``) is the venue's Redis, ``relay.cloud_url`` (or
``ICETIME_CLOUD_URL``) the cloud's. HTTP on ``relay.http_port``:

* ``GET /healthz``: 200 while the process serves HTTP;
* ``GET /api/ready``: 200 ``{"ready": true}`` once a pass has read the venue and written
  the cloud, and until one fails or none has ended for STALLED_S; else 503 with why;
* ``GET /api/health``: 200, what the relay has done and where each race stands
  (:meth:`.mirror.Relay.stats`).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import redis.asyncio as aioredis
from aiohttp import web

from icetime import bus
from icetime.service import Ready, binding, config_exit, healthz, listen_port
from icetime.settings import ConfigError, Settings

from .mirror import BLOCK_MS, Relay

#: Seconds without a finished pass after which the relay says it is not ready: three
#: times the longest a quiet pass blocks (BLOCK_MS).
STALLED_S = 3 * BLOCK_MS / 1000

log = logging.getLogger(__name__)


class RelayApp:
    """The HTTP face of one :class:`Relay`."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay

    async def ready(self, _request: web.Request) -> web.Response:
        # A pass ends at least every BLOCK_MS: one that has not ended for STALLED_S is a
        # write or read hanging on a cut link, long before the reply timeout says so.
        stalled = self.relay.synced and time.time() - self.relay.counters.synced_at > STALLED_S
        if self.relay.synced and not stalled:
            return web.json_response({"ready": True})
        down = [s.name for s in (self.relay.venue, self.relay.cloud)
                if s.outage.since is not None]
        reason = (f"{' and '.join(down)} Redis away" if down
                  else f"no pass for {STALLED_S:g} s (a link hanging)" if stalled
                  else "first pass not done yet")
        return web.json_response({"ready": False, "reason": reason}, status=503)

    async def health(self, _request: web.Request) -> web.Response:
        return web.json_response(self.relay.stats())

    def app(self) -> web.Application:
        app = web.Application()
        app.add_routes([web.get("/healthz", healthz), web.get("/api/ready", self.ready),
                        web.get("/api/health", self.health)])
        return app


async def serve(settings: Settings, r: aioredis.Redis, stop: asyncio.Event,
                ready: Ready | None = None) -> None:
    """Mirror the venue (``r``) to ``settings.relay_cloud_url`` until ``stop`` is set;
    ``ready`` gets ``{"relay_http_port": port}`` once the listener is bound. Without a
    cloud URL it exits with EXIT_CONFIG (one line); raises BindFailed for a taken port."""
    if not settings.relay_cloud_url:
        config_exit("relay", ConfigError("set relay.cloud_url (or ICETIME_CLOUD_URL): the "
                                         "cloud Redis to mirror to"))
    cloud = bus.connect(settings.relay_cloud_url)
    relay = Relay(r, cloud, settings.competition_id)
    runner = web.AppRunner(RelayApp(relay).app(), access_log=None)
    await runner.setup()
    task: asyncio.Task[None] | None = None
    try:
        with binding("relay_http_port", settings.host, settings.relay_http_port):
            await web.TCPSite(runner, settings.host, settings.relay_http_port).start()
        port = listen_port(runner.addresses)
        log.info("relay: mirroring to the cloud Redis; health on http://%s:%d/api/health",
                 settings.host, port)
        task = asyncio.create_task(relay.run(stop), name="relay")
        if ready:
            await ready({"relay_http_port": port})
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if task.done():
            task.result()  # the mirror died of a fault of its own: say so
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await runner.cleanup()
        await cloud.aclose()
