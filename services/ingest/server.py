"""Ingest: the timing feed over TCP (newline-delimited JSON) and HTTP POST.

Contract: an input is acknowledged ``ok`` only after it is in the raw stream.
A repeat of (source, session, seq) with the same content is acknowledged as a
duplicate and stored once; with other content it is refused (``conflict``).
Anything refused gets an error line back, is counted, and is kept in the
rejects stream with the bytes as they came; the connection carries on. No line,
whatever its bytes, ends a connection without a reply or gives HTTP 500: a line
that trips an unforeseen error is refused like any other (and logged with its
traceback). Tokens travel in the Authorization header or the TCP hello only: a
``token`` in a URL's query string is refused on every HTTP endpoint.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import redis.asyncio as aioredis
from aiohttp import web
from redis.exceptions import RedisError

from icetime import bus, keys
from icetime.logs import about
from icetime.messages import FeedInput, stored
from icetime.service import Ready, binding, healthz, listen_port
from icetime.settings import Settings
from icetime.timefmt import now_us

from .decoders.link import DecoderLink, make_link
from .feed import MAX_LINE, FeedError, LineSplitter, NotJSON, decode_line, parse_json, validate

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
REJECTS_MAXLEN = 100_000
REJECT_KEEP_BYTES = 4096
#: A decoder link task that fails is restarted after this long, doubling up to
#: RESTART_MAX_S while it keeps failing (reset once a run lasted RESTART_STABLE_S).
RESTART_FIRST_S = 0.1
RESTART_MAX_S = 30.0
RESTART_STABLE_S = 10.0
#: Query parameters that would put a token in a URL (proxy and access logs keep URLs).
URL_TOKEN_PARAMS = ("token", "access_token")
TOKEN_IN_URL = ("a token in the URL is refused (URLs are kept in proxy and access logs); "
                "send it in the header 'Authorization: Bearer <token>'")
NOT_AUTHENTICATED = 'first send {"type":"hello","token":"..."} with a valid token'


def unforeseen(exc: Exception, source: str) -> FeedError:
    """A refusal for an input that raised what the feed's checks did not foresee (a bug):
    logged with its traceback, answered and kept like any refusal."""
    log.error("input from %s raised %r; refused", source, exc, exc_info=exc)
    return FeedError(f"ingest could not read this input ({type(exc).__name__}); "
                     "it is kept in the rejects stream for the desk")


class Ingest:
    """The transport-independent core: authenticate, validate, append or reject."""

    def __init__(self, settings: Settings, r: aioredis.Redis) -> None:
        self.r = r
        self.bus = bus.Bus(r)
        self.tokens = {s.token: s.id for s in settings.sources}
        self.links: list[DecoderLink] = []
        #: Logs a Redis outage once (a warning, then "recovered"), not per input.
        self.outage = bus.Outage(log, "ingest")

    def source_for(self, token: Any) -> str | None:
        """The source a token belongs to; None for anything else (any JSON value may
        arrive as a hello's ``token``)."""
        return self.tokens.get(token) if isinstance(token, str) and token else None

    async def accept(self, obj: Any, source: str, raw: bytes, *,
                     refuse_conflict: bool = True) -> dict[str, Any]:
        """Type, stamp and store one parsed input (HTTP, decoder links); the reply.
        ``refuse_conflict=False``: a conflict is answered but not kept as a refusal (a
        decoder link tries the input in another session)."""
        rx = now_us()
        try:
            inp = validate(obj, source)
        except FeedError as exc:
            return await self.refuse(source, raw, exc, obj)
        except Exception as exc:  # a bug must cost this input, not the connection
            return await self.refuse(source, raw, unforeseen(exc, source))
        return await self.store(inp, rx, raw, refuse_conflict)

    async def accept_line(self, line: bytes, source: str) -> dict[str, Any]:
        """The same for one TCP line, decoded straight into its input type."""
        rx = now_us()
        try:
            inp = decode_line(line, source)
        except FeedError as exc:
            return await self.refuse(source, line, exc)
        except Exception as exc:
            return await self.refuse(source, line, unforeseen(exc, source))
        return await self.store(inp, rx, line)

    async def refuse(self, source: str, raw: bytes, exc: FeedError,
                     obj: Any = None) -> dict[str, Any]:
        """Count and keep a refused input (``obj``: as parsed, for the log's race and
        input id); the reply to send."""
        await self.reject(source, raw, str(exc), obj)
        if isinstance(exc, NotJSON):
            return {"ok": False, "error": str(exc)}
        return {"ok": False, "error": str(exc), "seq": exc.seq}

    async def store(self, inp: FeedInput, rx: int, raw: bytes = b"",
                    refuse_conflict: bool = True) -> dict[str, Any]:
        """Append a typed input once; the reply. A repeat of its (source, session, seq)
        with the same content is acknowledged as a duplicate; with other content it is
        refused (``conflict``), counted and kept in the rejects stream like any refusal."""
        inp.rx_us = rx
        doc = stored(inp)
        try:
            stream_id, what = await self.bus.append_input(doc)
        except RedisError as exc:
            self.outage.failed(exc, "storing inputs (sources are told to resend)")
            log.debug("cannot store input from %s: %s", inp.source, exc, extra=about(inp))
            return {"ok": False, "error": "storage unavailable; resend this input",
                    "retry": True, "seq": inp.seq}
        self.outage.ok()
        if what == "conflict":
            where = f" in session '{inp.session}'" if inp.session is not None else ""
            error = (f"seq {inp.seq}{where} was already used by source '{inp.source}' for "
                     f"another input (stored as {stream_id}); a new input needs a new seq, "
                     "or a new session")
            if refuse_conflict:
                await self.reject(inp.source, raw or msgspec.json.encode(doc), error, doc)
                with contextlib.suppress(RedisError):
                    await self.r.hincrby(keys.INGEST_STATS, "conflict", 1)
            return {"ok": False, "error": error, "seq": inp.seq, "conflict": True}
        reply: dict[str, Any] = {"ok": True, "id": stream_id, "seq": inp.seq}
        if what == "duplicate":
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
            self.outage.failed(exc, "recording a reject")

    async def last_seq(self, source: str, session: str | None = None) -> int | None:
        """The highest seq stored from ``source`` (in ``session``, if given); None if none."""
        v = await self.r.hget(bus.SOURCE_SEQ, bus.seq_field(source, session))
        return int(v) if v is not None else None

    # ------------------------------------------------------------------ TCP
    async def hello(self, line: bytes, peer: Any
                    ) -> tuple[str | None, dict[str, Any], bool]:
        """A TCP connection's first line: (its source or None, the reply, close after
        the reply).

        Not JSON: refused, the connection may send its hello again. JSON that is not a
        hello with a valid token: refused, and the connection is closed. Storage
        unavailable: a ``retry`` reply, and the connection stays open for another hello.
        """
        try:
            obj = parse_json(line)
        except FeedError as exc:
            await self.reject(None, line, str(exc))
            return None, {"ok": False, "error": str(exc)}, False
        source = self.source_for(obj.get("token") if isinstance(obj, dict) else None)
        if source is None or obj.get("type") != "hello":
            await self.reject(None, line, "not authenticated")
            return None, {"ok": False, "error": NOT_AUTHENTICATED}, True
        session = obj.get("session")
        if isinstance(session, int) and not isinstance(session, bool):
            session = str(session)
        if session is not None and not (isinstance(session, str) and 0 < len(session) <= 64):
            await self.reject(source, line, "hello: bad session")
            return None, {"ok": False, "error": "'session' must be a name of 1 to 64 "
                          "characters"}, True
        try:
            last_seq = await self.last_seq(source, session)
        except RedisError as exc:
            self.outage.failed(exc, "answering a hello (sources are told to retry)")
            log.debug("source %s said hello from %s while storage is unavailable: %s",
                      source, peer, exc)
            return None, {"ok": False, "error": "storage unavailable; send the hello again",
                          "retry": True}, False
        self.outage.ok()
        log.debug("source %s connected from %s", source, peer)
        reply = {"ok": True, "source": source, "last_seq": last_seq}
        if session is not None:
            reply["session"] = session
        return source, reply, False

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
                    elif source is None:
                        source, answer, close = await self.hello(line, peer)
                        await reply(answer)
                        if close:
                            return
                    else:
                        await reply(await self.accept_line(line, source))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            log.debug("source %s disconnected (%s)", source or "?", peer)
            writer.close()

    # ------------------------------------------------------------------ HTTP
    @web.middleware
    async def no_token_in_url(self, request: web.Request, handler: Handler
                              ) -> web.StreamResponse:
        """Refuse, on every endpoint, a request whose URL carries a token: the token
        is already in some log by then, and accepting it would keep it there."""
        if any(name in request.query for name in URL_TOKEN_PARAMS):
            log.warning("refused %s %s: a token in the URL (query string not logged)",
                        request.method, request.path)
            await self.reject(None, b"", "a token in the URL")
            return web.json_response({"ok": False, "error": TOKEN_IN_URL}, status=400)
        return await handler(request)

    def _auth(self, request: web.Request) -> str:
        header = request.headers.get("Authorization", "")
        source = self.source_for(header[7:] if header[:7].lower() == "bearer " else None)
        if source is None:
            raise web.HTTPUnauthorized(text=json.dumps({
                "ok": False, "error": "bad token: send 'Authorization: Bearer <token>'"}),
                content_type="application/json")
        return source

    async def _body(self, request: web.Request, source: str) -> bytes | web.Response:
        """The request body, or the reply refusing it (too long, or empty)."""
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            error = f"body longer than {MAX_LINE} bytes"
        else:
            if body.strip():
                return body
            error = ("empty body: send one JSON object, an array of them, or "
                     "newline-delimited objects")
        await self.reject(source, b"", error)
        status = 413 if error.startswith("body longer") else 400
        return web.json_response({"ok": False, "error": error}, status=status)

    async def http_feed(self, request: web.Request) -> web.Response:
        source = self._auth(request)
        body = await self._body(request, source)
        if isinstance(body, web.Response):
            return body
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
        body = await self._body(request, source)
        if isinstance(body, web.Response):
            return body
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
        try:
            counters = await self.r.hgetall(keys.INGEST_STATS)
            raw_length = await self.r.xlen(keys.RAW_STREAM)
        except RedisError as exc:
            self.outage.failed(exc, "answering /api/stats")
            return web.json_response({"ok": False, "error": f"storage unavailable: {exc}",
                                      "retry": True}, status=503)
        # The counters a reader looks for are there at 0 too, not only once they move.
        stats: dict[str, Any] = dict.fromkeys(("accepted", "duplicate", "conflict", "rejected"), 0)
        stats.update({bus.text(k): int(v) for k, v in counters.items()})
        stats["raw_length"] = raw_length
        stats["decoders"] = {link.cfg.id: link.state() for link in self.links}
        return web.json_response(stats)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_LINE, middlewares=[self.no_token_in_url])
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
