"""Ingest: the timing feed over TCP (newline-delimited JSON) and HTTP POST.

Contract: an input is acknowledged ``ok`` only after it is in the raw stream.
A repeat of (source, seq) is acknowledged as a duplicate and stored once.
Anything refused gets an error line back, is counted, and is kept in the
rejects stream with the bytes as they came; the connection carries on.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from pathlib import Path
from typing import Any

import msgspec
import redis.asyncio as aioredis
from aiohttp import web
from redis.exceptions import RedisError

from icetime import bus, keys
from icetime.logs import about
from icetime.messages import FeedInput, stored
from icetime.service import Ready, healthz, listen_port
from icetime.settings import Settings
from icetime.timefmt import now_us

from .decoders.link import DecoderLink, make_link
from .feed import MAX_LINE, FeedError, LineSplitter, NotJSON, decode_line, parse_json, validate

log = logging.getLogger(__name__)
REJECTS_MAXLEN = 100_000
REJECT_KEEP_BYTES = 4096
#: A decoder link task that fails is restarted after this long, doubling up to
#: RESTART_MAX_S while it keeps failing (reset once a run lasted RESTART_STABLE_S).
RESTART_FIRST_S = 0.1
RESTART_MAX_S = 30.0
RESTART_STABLE_S = 10.0


class Ingest:
    """The transport-independent core: authenticate, validate, append or reject."""

    def __init__(self, settings: Settings, r: aioredis.Redis) -> None:
        self.r = r
        self.bus = bus.Bus(r)
        self.tokens = {s.token: s.id for s in settings.sources}
        self.links: list[DecoderLink] = []

    def source_for(self, token: str | None) -> str | None:
        return self.tokens.get(token or "")

    async def accept(self, obj: Any, source: str, raw: bytes) -> dict[str, Any]:
        """Type, stamp and store one parsed input (HTTP, decoder links); the reply."""
        rx = now_us()
        try:
            inp = validate(obj, source)
        except FeedError as exc:
            return await self.refuse(source, raw, exc)
        return await self.store(inp, rx)

    async def accept_line(self, line: bytes, source: str) -> dict[str, Any]:
        """The same for one TCP line, decoded straight into its input type."""
        rx = now_us()
        try:
            inp = decode_line(line, source)
        except FeedError as exc:
            return await self.refuse(source, line, exc)
        return await self.store(inp, rx)

    async def refuse(self, source: str, raw: bytes, exc: FeedError) -> dict[str, Any]:
        await self.reject(source, raw, str(exc))
        if isinstance(exc, NotJSON):
            return {"ok": False, "error": str(exc)}
        return {"ok": False, "error": str(exc), "seq": exc.seq}

    async def store(self, inp: FeedInput, rx: int) -> dict[str, Any]:
        inp.rx_us = rx
        try:
            stream_id, duplicate = await self.bus.append_input(stored(inp))
        except RedisError as exc:
            log.error("cannot store input from %s: %s", inp.source, exc, extra=about(inp))
            return {"ok": False, "error": "storage unavailable; resend this input",
                    "retry": True, "seq": inp.seq}
        reply: dict[str, Any] = {"ok": True, "id": stream_id, "seq": inp.seq}
        if duplicate:
            reply["duplicate"] = True
        return reply

    async def reject(self, source: str | None, raw: bytes, reason: str,
                     obj: Any = None) -> None:
        """Count and keep a refused input (``raw`` as it came; ``obj``, if it was JSON,
        names its race and seq in the log line)."""
        context = about({**obj, "source": source or "?"}) if isinstance(obj, dict) else {}
        log.warning("rejected input from %s: %s", source or "?", reason, extra=context)
        try:
            await self.r.xadd(keys.REJECTS_STREAM, {
                "source": source or "", "reason": reason, "rx_us": now_us(),
                "raw": raw[:REJECT_KEEP_BYTES]}, maxlen=REJECTS_MAXLEN, approximate=True)
            await self.r.hincrby(keys.INGEST_STATS, "rejected", 1)
        except RedisError as exc:
            log.error("cannot record a reject: %s", exc)

    async def last_seq(self, source: str) -> int | None:
        v = await self.r.hget(bus.SOURCE_SEQ, source)
        return int(v) if v is not None else None

    # ------------------------------------------------------------------ TCP
    async def handle_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        splitter = LineSplitter()
        source: str | None = None

        async def reply(obj: dict[str, Any]) -> None:
            writer.write(msgspec.json.encode(obj) + b"\n")
            await writer.drain()

        try:
            while data := await reader.read(65536):
                for line in splitter.feed(data):
                    if isinstance(line, FeedError):
                        await self.reject(source, b"", str(line))
                        await reply({"ok": False, "error": str(line)})
                        continue
                    if source is None:
                        try:
                            obj = parse_json(line)
                        except FeedError as exc:
                            await self.reject(source, line, str(exc))
                            await reply({"ok": False, "error": str(exc)})
                            continue
                        token = obj.get("token") if isinstance(obj, dict) else None
                        source = self.source_for(token)
                        if source is None or obj.get("type") != "hello":
                            await self.reject(None, line, "not authenticated")
                            await reply({"ok": False, "error": "first send "
                                         '{"type":"hello","token":"..."} with a valid token'})
                            return
                        log.debug("source %s connected from %s", source, peer)
                        await reply({"ok": True, "source": source,
                                     "last_seq": await self.last_seq(source)})
                        continue
                    await reply(await self.accept_line(line, source))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            log.debug("source %s disconnected (%s)", source or "?", peer)
            writer.close()

    # ------------------------------------------------------------------ HTTP
    def _auth(self, request: web.Request) -> str:
        header = request.headers.get("Authorization", "")
        token = header[7:] if header.startswith("Bearer ") else request.query.get("token")
        source = self.source_for(token)
        if source is None:
            raise web.HTTPUnauthorized(text=json.dumps({"ok": False, "error": "bad token"}),
                                       content_type="application/json")
        return source

    async def http_feed(self, request: web.Request) -> web.Response:
        source = self._auth(request)
        body = await request.read()
        try:
            parsed = parse_json(body)
            items = parsed if isinstance(parsed, list) else [parsed]
            single = not isinstance(parsed, list)
            raws = [msgspec.json.encode(x) for x in items]
        except FeedError:
            # Not one JSON document: newline-delimited JSON, line by line.
            single = False
            items, raws = [], []
            for line in body.splitlines():
                if line.strip():
                    raws.append(line)
                    try:
                        items.append(parse_json(line))
                    except FeedError as exc:
                        items.append(exc)
        results = []
        for obj, raw in zip(items, raws, strict=True):
            if isinstance(obj, FeedError):
                await self.reject(source, raw, str(obj))
                results.append({"ok": False, "error": str(obj)})
            else:
                results.append(await self.accept(obj, source, raw))
        return web.json_response(results[0] if single and results else results)

    async def http_startlist(self, request: web.Request) -> web.Response:
        source = self._auth(request)
        body = await request.read()
        try:
            doc = parse_json(body)
        except FeedError as exc:
            await self.reject(source, body, str(exc))
            return web.json_response({"ok": False, "error": str(exc)}, status=400)
        if isinstance(doc, dict):
            doc = {**doc, "type": "startlist"}
        result = await self.accept(doc, source, body)
        return web.json_response(result, status=200 if result["ok"] else 400)

    async def http_stats(self, request: web.Request) -> web.Response:
        stats = {k.decode(): int(v) for k, v in (await self.r.hgetall(keys.INGEST_STATS)).items()}
        stats["raw_length"] = await self.r.xlen(keys.RAW_STREAM)
        stats["decoders"] = {link.cfg.id: link.state() for link in self.links}
        return web.json_response(stats)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_LINE)
        app.add_routes([web.post("/feed", self.http_feed),
                        web.post("/api/startlist", self.http_startlist),
                        web.get("/api/stats", self.http_stats),
                        web.get("/healthz", healthz)])
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
    Raises OSError when a configured port is taken."""
    ingest = Ingest(settings, r)
    runner = web.AppRunner(ingest.app(), access_log=None)
    await runner.setup()
    tcp: asyncio.Server | None = None
    links: list[DecoderLink] = []
    link_tasks: list[asyncio.Task[None]] = []
    try:
        await web.TCPSite(runner, settings.host, settings.ingest_http_port).start()
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
