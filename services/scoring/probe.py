"""Scoring's health and readiness listener, for a container orchestrator's probes.

Scoring serves nothing itself; with ``scoring.http_port`` set, :func:`serve` runs the
scorer (:func:`services.scoring.runner.serve`) beside a small HTTP listener:

* ``GET /healthz``: 200 while the process serves HTTP;
* ``GET /api/ready``: 200 while Redis answers, else 503 (:func:`icetime.service.readiness`).

Without ``scoring.http_port`` it is the scorer alone, as before. The scorer is the
pool (:mod:`services.scoring.pool`) with ``scoring.competitions = "*"``, else the one
competition's runner.
"""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from icetime.service import Ports, Ready, binding, healthz, listen_port, readiness
from icetime.settings import Settings

from . import pool, runner

if TYPE_CHECKING:
    import redis.asyncio as aioredis


async def serve(settings: Settings, r: aioredis.Redis, stop: asyncio.Event,
                ready: Ready | None = None) -> None:
    """Score until ``stop`` is set; ``ready`` gets ``{"scoring_http_port": port}`` once
    the probe listener is bound (``{}`` without one). Raises BindFailed for a taken
    port, and what the scorer raised if it died."""
    port = settings.scoring_http_port
    scorer = pool.serve if settings.scoring_any_competition else runner.serve
    if port is None:
        await scorer(settings, r, stop, ready)
        return
    from aiohttp import web  # only with the listener: plain scoring starts without it

    app = web.Application()
    app.add_routes([web.get("/healthz", healthz), web.get("/api/ready", readiness(r))])
    site_runner = web.AppRunner(app, access_log=None)
    await site_runner.setup()
    try:
        with binding("scoring_http_port", settings.host, port):
            await web.TCPSite(site_runner, settings.host, port).start()
        bound: Ports = {"scoring_http_port": listen_port(site_runner.addresses)}

        async def scorer_ready(ports: Ports) -> None:
            if ready:
                await ready({**ports, **bound})

        await scorer(settings, r, stop, scorer_ready)
    finally:
        await site_runner.cleanup()
