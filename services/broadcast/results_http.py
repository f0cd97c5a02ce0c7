"""The results API on the broadcast node (docs/results.md): JSON in the shape of the
ISU's live results, CSV and the PDF sheet, with CORS, ETags and Cache-Control.

Everything is read from the race's view as of its last event (its stored snapshot
and the events since, folded: :func:`icetime.snapshot.latest`), what a WebSocket
client holds, so the API and the WebSocket give the same numbers. A document's ETag
is the race's (epoch, last event id) and the variant asked for: a request whose
``If-None-Match`` names it is answered ``304`` after one small Redis read, and a built
document is kept in memory until the race changes.

Competitions come from the start lists in the raw log (the views do not carry them):
:class:`StartLists` reads it once, then only what was appended since.

Every route reads one icetime competition (``[competition] id``, part of every key):
the node's own, or the one a ``competition`` query parameter names
(docs/protocol.md, "Competitions").
"""
from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from aiohttp import web
from redis.exceptions import RedisError

from icetime import bus, keys, snapshot

from . import sheet
from .result_rows import has_results
from .results import Meta, csv_text, race_document, race_info

#: Bumped when the documents' shape changes, so no client keeps an old one by its ETag.
FORMAT = "r1"
#: Built documents kept per node (a few races × variants).
CACHE_MAX = 64
#: Raw-log entries read per XRANGE while indexing the start lists.
RAW_CHUNK = 2000
#: Event-stream entries read per XREVRANGE while looking for the official decision.
EVENTS_CHUNK = 20
OFFICIAL_REASON = b'"reason":"decision: official"'


class StartLists:
    """Which competition each race belongs to, from the start lists in the raw log:
    the competition of the latest start list naming the race; a race no start list
    names (the next round's races) belongs to the latest start list's competition."""

    def __init__(self, r: aioredis.Redis, competition: str) -> None:
        self.r = r
        self.raw = keys.raw_stream(competition)
        self.position = "-"
        self.by_race: dict[str, dict[str, str]] = {}
        self.latest: dict[str, str] | None = None
        self.lock = asyncio.Lock()

    async def refresh(self) -> None:
        """Read the raw log from where the last refresh stopped. Raises RedisError."""
        async with self.lock:
            while True:
                entries = bus.entries(await self.r.xrange(self.raw, self.position, "+",
                                                          count=RAW_CHUNK))
                for _sid, fields in entries:
                    self._take(fields)
                if entries:
                    self.position = "(" + entries[-1][0]
                if len(entries) < RAW_CHUNK:
                    return

    def _take(self, fields: bus.Fields | None) -> None:
        data = (fields or {}).get(b"d")
        if data is None:
            return
        try:
            inp = bus.unpack_input(data)
        except Exception:  # msgpack's errors have no one base; scoring refuses it too
            return
        if not isinstance(inp, dict) or inp.get("type") != "startlist":
            return
        comp = inp.get("competition") or {}
        info = {"id": str(comp.get("id", "")), "name": str(comp.get("name", ""))}
        self.latest = info
        for race in inp.get("races") or []:
            if isinstance(race, dict) and "id" in race:
                self.by_race[str(race["id"])] = info

    def competition(self, race: str) -> dict[str, str] | None:
        return self.by_race.get(race, self.latest)


def cors(response: web.StreamResponse) -> None:
    """Any origin may read the results (they are public), and see their ETag."""
    response.headers["Access-Control-Allow-Origin"] = "*"
    response.headers["Access-Control-Expose-Headers"] = "ETag"


class ResultsApi:
    """The ``/api/results/…`` routes of one broadcast node."""

    def __init__(self, r: aioredis.Redis, max_age_s: int,
                 competition: str = keys.DEFAULT_COMPETITION) -> None:
        self.r = r
        self.cache_control = f"public, max-age={max_age_s}"
        #: The node's own competition: the one a request without ``competition`` reads.
        self.competition = competition
        #: Per competition read so far: its start lists.
        self.startlists: dict[str, StartLists] = {}
        self.cache: OrderedDict[str, Any] = OrderedDict()

    def routes(self) -> list[web.AbstractRouteDef]:
        base = "/api/results"
        return [web.get(f"{base}/competitions", self.competitions),
                web.get(f"{base}/races/{{race}}", self.race_json),
                web.get(f"{base}/races/{{race}}/results.csv", self.race_csv),
                web.get(f"{base}/races/{{race}}/results.pdf", self.race_pdf),
                web.options(f"{base}/{{tail:.*}}", self.preflight)]

    async def preflight(self, request: web.Request) -> web.Response:
        """CORS preflight: a page on another origin may send If-None-Match itself."""
        response = web.Response(status=204)
        cors(response)
        response.headers["Access-Control-Allow-Methods"] = "GET, OPTIONS"
        response.headers["Access-Control-Allow-Headers"] = "If-None-Match"
        response.headers["Access-Control-Max-Age"] = "86400"
        return response

    # ------------------------------------------------------------ plumbing
    def _remember(self, key: str, value: Any) -> Any:
        self.cache[key] = value
        self.cache.move_to_end(key)
        while len(self.cache) > CACHE_MAX:
            self.cache.popitem(last=False)
        return value

    def _answer(self, request: web.Request, etag: str, build: Callable[[], Any],
                content_type: str, filename: str | None = None) -> web.Response:
        """304 when the client holds ``etag``; else the body ``build()`` gives."""
        if etag in _etags(request.headers.get("If-None-Match", "")):
            response = web.Response(status=304)
        else:
            body = self.cache.get(etag)
            if body is None:
                body = self._remember(etag, build())
            response = web.Response(body=body, content_type=content_type,
                                    charset="utf-8" if content_type != "application/pdf"
                                    else None)
            if filename:
                response.headers["Content-Disposition"] = f'inline; filename="{filename}"'
        response.headers["ETag"] = etag
        response.headers["Cache-Control"] = self.cache_control
        cors(response)
        return response

    def _competition(self, request: web.Request) -> str | web.Response:
        """The competition a request reads (its ``competition`` parameter, else the
        node's own), or the 400 answer for one that is not a competition id."""
        competition = request.query.get("competition", self.competition)
        if not keys.COMPETITION_ID.fullmatch(competition):
            return _error(400, f"{competition[:64]!r} is not a competition id")
        return competition

    async def _stamp(self, competition: str, race: str) -> tuple[str, str] | None:
        """The race's (epoch, last event id); None when it has no view yet."""
        return await snapshot.end(self.r, keys.snapshot_key(competition, race),
                                  keys.events_stream(competition, race))

    async def _view(self, competition: str, race: str, offset: str) -> dict[str, Any]:
        """The race's view as of event ``offset`` (its stamp); {} without one."""
        got = await snapshot.latest(self.r, keys.snapshot_key(competition, race),
                                    keys.events_stream(competition, race), offset)
        return got.view if got is not None and got.view is not None else {}

    async def _meta(self, competition: str, race: str, view: dict[str, Any],
                    offset: str) -> Meta:
        startlists = self.startlists.get(competition)
        if startlists is None:
            startlists = self.startlists[competition] = StartLists(self.r, competition)
        await startlists.refresh()
        official_ms = (await self._official_ms(competition, race)
                       if view["race"].get("official") else None)
        return Meta(competition=startlists.competition(race),
                    updated_ms=bus.parse_id(offset)[0], official_ms=official_ms,
                    live=_live(view))

    async def _official_ms(self, competition: str, race: str) -> int | None:
        """When the race was declared official: the wall time (ms) of the latest
        revision an ``official`` decision caused."""
        end = "+"
        while True:
            entries = bus.entries(await self.r.xrevrange(
                keys.events_stream(competition, race), end, "-", count=EVENTS_CHUNK))
            for sid, fields in entries:
                if OFFICIAL_REASON in (fields or {}).get(b"e", b""):
                    return bus.parse_id(sid)[0]
            if len(entries) < EVENTS_CHUNK:
                return None
            end = "(" + entries[-1][0]

    async def _race(self, request: web.Request, variant: str
                    ) -> tuple[str, str, str, str] | web.Response:
        """(competition, race, etag, last event id) of a race with results, or the
        error answer."""
        race = request.match_info["race"]
        competition = self._competition(request)
        if isinstance(competition, web.Response):
            return competition
        try:
            stamp = await self._stamp(competition, race)
        except RedisError:
            return _error(503, "storage unavailable; try again", retry=True)
        if stamp is None:
            return _error(404, f"no race {race!r} with results")
        epoch, offset = stamp
        return competition, race, f'"{FORMAT}-{variant}-{epoch}-{offset}"', offset

    async def _race_answer(self, request: web.Request, variant: str, content_type: str,
                           render: Callable[[dict[str, Any], Meta], Any],
                           filename: str | None = None) -> web.Response:
        found = await self._race(request, variant)
        if isinstance(found, web.Response):
            return found
        competition, race, etag, offset = found
        if etag in _etags(request.headers.get("If-None-Match", "")) or etag in self.cache:
            return self._answer(request, etag, lambda: None, content_type, filename)
        try:
            view = await self._view(competition, race, offset)
            if not has_results(view):
                return _error(404, f"race {race!r} has no per-competitor results "
                                   "(rounds and standings: follow them on the WebSocket)")
            meta = await self._meta(competition, race, view, offset)
        except RedisError:
            return _error(503, "storage unavailable; try again", retry=True)
        body = render(view, meta)
        if asyncio.iscoroutine(body):
            body = await body
        self._remember(etag, body)
        return self._answer(request, etag, lambda: body, content_type, filename)

    # ------------------------------------------------------------ routes
    async def race_json(self, request: web.Request) -> web.Response:
        in_seconds = request.query.get("inSeconds") == "1"

        async def render(view: dict[str, Any], meta: Meta) -> bytes:
            # A marathon's 10,000 skaters take a second or two: off the loop (the GIL
            # is handed back every few ms, so clients keep their frames meanwhile).
            return await asyncio.to_thread(
                lambda: bus.dumps(race_document(view, meta, in_seconds)).encode())
        return await self._race_answer(request, "s" if in_seconds else "j",
                                       "application/json", render)

    async def race_csv(self, request: web.Request) -> web.Response:
        race = request.match_info["race"]
        async def render(view: dict[str, Any], meta: Meta) -> bytes:
            return await asyncio.to_thread(lambda: csv_text(view).encode())
        return await self._race_answer(request, "csv", "text/csv", render, f"{race}.csv")

    async def race_pdf(self, request: web.Request) -> web.Response:
        race = request.match_info["race"]

        async def render(view: dict[str, Any], meta: Meta) -> bytes:
            # typst is CPU-bound (tens of ms): off the loop, so clients keep their frames.
            return await asyncio.to_thread(sheet.pdf, view, meta)
        return await self._race_answer(request, "pdf", "application/pdf", render,
                                       f"{race}.pdf")

    async def competitions(self, request: web.Request) -> web.Response:
        """``[{id, name, races: [race info…]}]``: every race with results of the
        icetime competition asked for, grouped by the start lists' competitions."""
        competition = self._competition(request)
        if isinstance(competition, web.Response):
            return competition
        try:
            races = sorted(bus.text(m) for m in
                           await self.r.smembers(keys.races_set(competition)))
            stamps = [await self._stamp(competition, r) for r in races]
            listed = [(r, s) for r, s in zip(races, stamps, strict=True) if s is not None]
            etag = '"{}-c-{}"'.format(FORMAT, _digest(
                "|".join(f"{r}:{e}:{o}" for r, (e, o) in listed)))
            if etag in _etags(request.headers.get("If-None-Match", "")) \
                    or etag in self.cache:
                return self._answer(request, etag, lambda: None, "application/json")
            out: dict[str, dict[str, Any]] = {}
            for race, (_epoch, offset) in listed:
                view = await self._view(competition, race, offset)
                if not has_results(view):
                    continue
                info = race_info(view, await self._meta(competition, race, view, offset))
                info["resultsUrl"] = f"/api/results/races/{race}" + (
                    "" if competition == self.competition else f"?competition={competition}")
                comp = info.pop("competition") or {"id": "", "name": ""}
                entry = out.setdefault(comp["id"], {**comp, "races": []})
                entry["races"].append(info)
        except RedisError:
            return _error(503, "storage unavailable; try again", retry=True)
        body = bus.dumps(list(out.values())).encode()
        self._remember(etag, body)
        return self._answer(request, etag, lambda: body, "application/json")


def _live(view: dict[str, Any]) -> bool:
    if view.get("on_ice"):
        return True
    if "waves" in view:  # a marathon: skaters out on the course
        c = view["counts"]
        return bool(c["waves"]) and c["started"] > c["finished"] + c["status"]
    return bool((view.get("pack") or {}).get("run"))


def _etags(header: str) -> set[str]:
    """The entity tags of an If-None-Match header (weak ones compare as strong: RFC 9110
    says If-None-Match uses the weak comparison); ``*`` matches nothing here."""
    return {t.strip().removeprefix("W/") for t in header.split(",") if t.strip()}


def _digest(text: str) -> str:
    import hashlib  # here: only the competitions list needs it

    return hashlib.sha1(text.encode()).hexdigest()[:20]


def _error(status: int, error: str, retry: bool = False) -> web.Response:
    body: dict[str, Any] = {"ok": False, "error": error}
    if retry:
        body["retry"] = True
    response = web.json_response(body, status=status)
    cors(response)
    return response
