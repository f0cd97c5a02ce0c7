"""The HTTP feed: inputs, start lists, counters and the token's own role, over HTTP.

``POST /feed`` takes one JSON object, an array of them, or newline-delimited objects;
``POST /api/startlist`` a start list; ``GET /api/stats`` the counters and each decoder
link's state; ``GET /api/whoami`` the token's source and role (docs/protocol.md). The
token travels in the Authorization header only: a token in a URL is refused on every
endpoint (:meth:`HttpFeed.no_token_in_url`).
"""
from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, cast

import msgspec
from aiohttp import web
from redis.exceptions import RedisError

from icetime import bus, keys
from icetime.settings import ROLE_INPUTS, Source

from .core import IngestCore
from .feed import MAX_LINE, FeedError, parse_json

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: Query parameters that would put a token in a URL (proxy and access logs keep URLs).
URL_TOKEN_PARAMS = ("token", "access_token")
TOKEN_IN_URL = ("a token in the URL is refused (URLs are kept in proxy and access logs); "
                "send it in the header 'Authorization: Bearer <token>'")
IDEMPOTENCY_KEY_MAX = 128
WAIT_VALUES = ("1", "true", "yes")
NO_WAIT_VALUES = ("0", "false", "no")


class HttpFeed(IngestCore):
    """Ingest's HTTP side: its handlers (routed by ``Ingest.app``)."""

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

    def _auth(self, request: web.Request) -> Source:
        """The source of the request's bearer token; raises HTTPUnauthorized."""
        header = request.headers.get("Authorization", "")
        src = self.source_for(header[7:] if header[:7].lower() == "bearer " else None)
        if src is None:
            raise web.HTTPUnauthorized(text=json.dumps({
                "ok": False, "error": "bad token: send 'Authorization: Bearer <token>'"}),
                content_type="application/json")
        return src

    @staticmethod
    def _options(request: web.Request) -> tuple[bool | None, str]:
        """(wait for the verdict: True, False, or None when ``wait`` is not given (the
        default: people's inputs wait), the Idempotency-Key header or "")."""
        asked = request.query.get("wait", "").lower()
        wait = True if asked in WAIT_VALUES else False if asked in NO_WAIT_VALUES else None
        return wait, request.headers.get("Idempotency-Key", "")[:IDEMPOTENCY_KEY_MAX]

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

    async def _posted(self, request: web.Request
                      ) -> tuple[Source, bool | None, str, bytes] | web.Response:
        """(source, wait, idempotency key, body) of a POST (:meth:`_auth`,
        :meth:`_options`, :meth:`_body`), or the reply refusing its body."""
        src = self._auth(request)
        wait, key = self._options(request)
        body = await self._body(request, src.id)
        return body if isinstance(body, web.Response) else (src, wait, key, body)

    async def http_feed(self, request: web.Request) -> web.Response:
        posted = await self._posted(request)
        if isinstance(posted, web.Response):
            return posted
        src, wait, key, body = posted
        source = src.id
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
        for i, (obj, raw) in enumerate(zip(items, raws, strict=True)):
            if isinstance(obj, FeedError):
                await self.reject(source, raw, str(obj))
                results.append({"ok": False, "error": str(obj)})
            else:
                results.append(await self.accept(
                    obj, source, raw, src=src, wait=wait,
                    key=key if single or not key else f"{key}:{i}"))
        return web.json_response(results[0] if single and results else results)

    async def http_startlist(self, request: web.Request) -> web.Response:
        posted = await self._posted(request)
        if isinstance(posted, web.Response):
            return posted
        src, wait, key, body = posted
        source = src.id
        try:
            doc = parse_json(body)
        except FeedError as exc:
            await self.reject(source, body, str(exc))
            return web.json_response({"ok": False, "error": str(exc)}, status=400)
        if isinstance(doc, dict):
            doc = {**doc, "type": "startlist"}
        result = await self.accept(doc, source, body, src=src, wait=wait, key=key)
        if result["ok"] or result.get("verdict") == "pending":
            await self.remember_chips(doc)
        status = 200 if result["ok"] else 202 if result.get("verdict") == "pending" else 400
        return web.json_response(result, status=status)

    async def remember_chips(self, doc: Any) -> None:
        """Whose each transponder of an accepted start list is (keys.chips), for the
        desk's flags. Best effort: a Redis error leaves the desk learning owners from
        the passages, as before."""
        skaters = doc.get("skaters") if isinstance(doc, dict) else None
        chips = {str(t): str(s["bib"]) for s in skaters or [] if isinstance(s, dict) and "bib" in s
                 for t in s.get("transponders") or []} if isinstance(skaters, list) else {}
        if chips:
            with contextlib.suppress(RedisError, OSError):
                await self.r.hset(keys.chips(self.competition), mapping=cast(Any, chips))

    async def http_stats(self, request: web.Request) -> web.Response:
        try:
            counters = await self.r.hgetall(keys.ingest_stats(self.competition))
            raw_length = await self.r.xlen(keys.raw_stream(self.competition))
        except RedisError as exc:
            self.outage.failed(exc, "answering /api/stats")
            # The links' own state still shows what they hold (their spools).
            return web.json_response({"ok": False, "error": f"storage unavailable: {exc}",
                                      "retry": True, "decoders": self.decoder_states()},
                                     status=503)
        # The counters a reader looks for are there at 0 too, not only once they move.
        stats: dict[str, Any] = dict.fromkeys(
            ("accepted", "duplicate", "conflict", "rejected", "refused_role", "undos"), 0)
        stats.update({bus.text(k): int(v) for k, v in counters.items()})
        stats["raw_length"] = raw_length
        stats["decoders"] = self.decoder_states()
        return web.json_response(stats)

    def decoder_states(self) -> dict[str, dict[str, Any]]:
        """Each decoder link's state (:meth:`DecoderLink.state`) by decoder id."""
        return {link.cfg.id: link.state() for link in self.links}

    async def http_whoami(self, request: web.Request) -> web.Response:
        """The token's source, its role and the input types it may send."""
        src = self._auth(request)
        return web.json_response({"source": src.id, "role": src.effective_role,
                                  "inputs": sorted(ROLE_INPUTS[src.effective_role])})
