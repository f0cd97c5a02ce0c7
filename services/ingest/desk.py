"""The officials' desk (docs/desk.md): the page ``/desk`` and what it reads.

Ingest serves the desk, not broadcast: broadcast nodes are public and read-only, and
the desk's inputs go to ``/feed`` on the same origin. Every ``/api/desk/*`` endpoint
needs a bearer token whose role may open the desk (``referee`` or ``admin``,
icetime.settings.DESK_ROLES): 401 without a valid token, 403 for another role.

* ``GET /api/desk/races``: ``[{id, name, kind, distance, official, current_pair}]``.
* ``GET /api/desk/race?race=ID[&after=OFFSET]``: ``{race, epoch, offset, view,
  events, last, chips, health}``: the race's latest view, and its events after ``after``
  (without: the last DESK_EVENTS of them), ``last`` the offset to ask from next time;
  ``health`` scoring's last rebuild and the supervisor's restarts
  (:func:`icetime.restarts.desk_health`).
* ``GET /api/desk/reads[?after=ID]``: ``{reads, last}``: the passings in the raw log
  after ``after`` (without: among the last DESK_RAW_SCAN inputs), each ``{input,
  source, point, transponder, t, rx_us}`` (``t``: the decoder's time, µs), with
  ``refused`` (scoring's reason) for a read scoring refused (an unknown transponder or
  timing point) and ``judged`` false for a read scoring has not reached yet; ``last``
  the raw id to ask from next time: the last one judged, so a read not judged yet comes
  again, with its verdict, in a later answer.
* ``GET /api/desk/reads?race=ID[&after=ID]``: the same for the desk of one race, each
  read with ``other`` (true: it concerns another race: a chip of a skater not in this
  race, that this race did not take) and ``bib`` (whose chip, by the start lists, when
  known). Up to DESK_READS of the race's own reads and as many of the others', so other
  races' reads never push the race's own out; ``dropped`` counts the other reads not sent
  (beyond DESK_READS). The first look goes back until DESK_READS of its own are found
  (DESK_RAW_SCAN_MAX inputs at most). 404 for a race with no view.
* ``GET /api/desk/audit[?after=ID | ?before=ID][&format=csv]``: the officials' stream
  (icetime.keys.officials_stream(self.competition)): who sent what, when, and scoring's verdict;
  ``{entries, last, first, older}``, entries oldest first (at most DESK_BATCH): after
  ``after``, the next ones; else the newest (before ``before``, when given), so the
  latest input is in the first answer however long the log; ``last`` and ``first`` the
  newest and oldest ids sent (to ask from next time), ``older`` whether entries before
  ``first`` remain. With ``format=csv`` or ``format=json``, every entry as a file to
  save. 400 for an ``after`` or ``before`` that is no stream id.
"""
from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from icetime import bus, keys, restarts, snapshot
from icetime.service import favicon
from icetime.settings import DESK_ROLES, Source
from icetime.startlist import transponder_key

if TYPE_CHECKING:
    from .server import Ingest

WEB_DIR = Path(__file__).resolve().parents[2] / "web"
#: Events of a race sent to a desk that asks for the first time.
DESK_EVENTS = 300
#: Events or audit entries sent in one answer, at most.
DESK_BATCH = 1000
#: Raw inputs a desk's first look at the reads goes back through.
DESK_RAW_SCAN = 2000
#: Reads sent in one answer, at most (the newest); for one race, as many of its own reads
#: and as many of the others'.
DESK_READS = 300
#: Raw inputs a desk's first look at one race's reads goes back through, at most, to find
#: DESK_READS of its own among other races' reads.
DESK_RAW_SCAN_MAX = 20_000
#: The audit's columns in CSV, in order.
AUDIT_COLUMNS = ("input", "received_utc", "source", "type", "race", "action", "bib", "pair",
                 "time_us", "target", "reason", "verdict", "refused_because", "transponder",
                 "passage")
#: Official inputs that are always about one passage: a time without ``m`` is the finish.
PASSAGE_ACTIONS = ("manual_time",)
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
       "frame-ancestors 'none'")


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Every ingest response: the desk runs only its own scripts, talks only to its
    origin and is never framed; answers that carry officials' data are not cached."""
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    if request.path.startswith("/api/"):
        response.headers["Cache-Control"] = "no-store"


def _after(request: web.Request, name: str = "after") -> str | None:
    """The stream id a request's parameter ``name`` (``after``, ``before``) gives, None
    without one; HTTPBadRequest when it is not one."""
    after = request.query.get(name)
    if after is None or after == "":
        return None
    if not bus.valid_id(after):
        raise web.HTTPBadRequest(text=json.dumps({"ok": False, "error": f"'{name}' must be a "
                                                  "stream id such as 1700000000000-0"}),
                                 content_type="application/json")
    return after


def utc(us: Any) -> str:
    """µs since the epoch as an ISO 8601 UTC time with milliseconds ("" if not a number)."""
    if not isinstance(us, int):
        return ""
    return datetime.fromtimestamp(us / 1e6, UTC).isoformat(timespec="milliseconds")


def audit_csv(entries: list[dict[str, Any]]) -> str:
    """The audit entries (officials' stream records) as CSV text, one row each."""
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(AUDIT_COLUMNS)
    for e in entries:
        f = e.get("input_fields") or {}
        w.writerow([e.get("input", ""), utc(e.get("rx_us")), e.get("source") or "",
                    e.get("type") or "", f.get("race", ""), f.get("action", ""),
                    f.get("bib", ""), f.get("pair", ""), f.get("time_us", ""),
                    f.get("target", ""), f.get("reason", ""), e.get("verdict", ""),
                    e.get("reason", ""), f.get("transponder", ""), passage(e)])
    return out.getvalue()


def passage(entry: dict[str, Any]) -> str:
    """The passage an audit entry's time is for: its ``m`` (metres, "600"), "finish" for a
    manual time without one or a finish time, "" for inputs about no passage."""
    f = entry.get("input_fields") or {}
    if f.get("m") is not None:
        return str(f["m"])
    if entry.get("type") == "finish_time" or f.get("action") in PASSAGE_ACTIONS:
        return "finish"
    return ""


def passings(got: list[tuple[str, Any]], scope: RaceReads | None) -> list[dict[str, Any]]:
    """The passings among raw entries, each ``{input, source, point, transponder, t,
    rx_us}``; without ``scope`` only the last DESK_READS."""
    out = []
    for sid, fields in got:
        data = (fields or {}).get(b"d")
        try:
            inp = bus.unpack_input(data) if data else {}
        except ValueError:
            continue  # not an input: scoring refuses it, and the audit says so
        if isinstance(inp, dict) and inp.get("type") == "passing":
            out.append({"input": sid, "source": inp.get("source"),
                        "point": inp.get("point", "finish"),
                        "transponder": inp.get("transponder"), "t": inp.get("t"),
                        "rx_us": inp.get("rx_us")})
    return out if scope is not None else out[-DESK_READS:]


class RaceReads:
    """Which reads concern one race (docs/desk.md, "Reads"): those it took (a passage or
    a held read in its view), those scoring refused (an unknown chip or loop concerns
    every race), and those of its skaters' chips; the others are another race's."""

    def __init__(self, view: dict[str, Any], owners: dict[str, str]) -> None:
        #: transponder_key -> bib, of the start lists loaded (keys.chips).
        self.owners = owners
        self.bibs = set(view.get("skaters") or {}) | set(view.get("results") or {})
        for team in (view.get("teams") or {}).values():
            self.bibs |= set(team.get("skaters") or [])
        self.taken = {row["input"] for res in (view.get("results") or {}).values()
                      for row in res.get("passages") or [] if row and row.get("input")}
        self.taken |= {h["input"] for h in view.get("held") or []}

    def mark(self, reads: list[dict[str, Any]]) -> None:
        """Mark each read ``other`` (True: another race's), with ``bib`` when the start
        lists say whose chip it is. A chip whose read the race took is the race's (a
        chip reassigned on the desk, or a start list not loaded over HTTP)."""
        mine = {transponder_key(r["transponder"]) for r in reads if r["input"] in self.taken}
        for read in reads:
            key = transponder_key(read["transponder"])
            bib = self.owners.get(key)
            if bib is not None:
                read["bib"] = bib
            if read["input"] in self.taken or "refused" in read or key in mine:
                read["other"] = False
            elif bib is not None:
                read["other"] = bib not in self.bibs
            else:  # judged and placed, but not here: whoever wears it, not this race
                read["other"] = read["judged"]


class Desk:
    """The desk's page and endpoints, on ingest's HTTP server."""

    def __init__(self, ingest: Ingest) -> None:
        self.ingest = ingest
        self.r = ingest.r
        self.competition = ingest.competition

    def routes(self, app: web.Application) -> None:
        async def page(request: web.Request) -> web.FileResponse:
            return web.FileResponse(WEB_DIR / "desk.html")

        app.add_routes([web.get("/desk", page),
                        web.get("/api/desk/races", self.races),
                        web.get("/api/desk/race", self.race),
                        web.get("/api/desk/reads", self.reads),
                        web.get("/api/desk/audit", self.audit),
                        web.get("/favicon.svg", favicon),
                        web.get("/favicon.ico", favicon),
                        web.static("/static", WEB_DIR, append_version=False)])

    def auth(self, request: web.Request) -> Source:
        """The request's source, if its role may open the desk; raises HTTPUnauthorized
        (no valid token) or HTTPForbidden (another role)."""
        src = self.ingest._auth(request)
        if src.effective_role not in DESK_ROLES:
            raise web.HTTPForbidden(text=json.dumps({
                "ok": False, "error": f"role '{src.effective_role}' (source '{src.id}') may "
                f"not open the desk; {' or '.join(sorted(DESK_ROLES))} may"}),
                content_type="application/json")
        return src

    async def races(self, request: web.Request) -> web.Response:
        self.auth(request)
        out = []
        for race in sorted(bus.text(m) for m in
                           await self.r.smembers(keys.races_set(self.competition))):
            got = await snapshot.latest(self.r, keys.snapshot_key(self.competition, race),
                                        keys.events_stream(self.competition, race))
            view = got.view if got is not None and got.view is not None else {}
            info = view.get("race", {})
            out.append({"id": race, "name": info.get("name", race), "kind": info.get("kind"),
                        "distance": info.get("distance"), "official": info.get("official"),
                        "current_pair": view.get("current_pair")})
        return web.json_response(out)

    async def race(self, request: web.Request) -> web.Response:
        self.auth(request)
        race = request.query.get("race", "")
        after = _after(request)
        snap = await snapshot.latest(self.r, keys.snapshot_key(self.competition, race),
                                     keys.events_stream(self.competition, race)) if race else None
        if snap is None:
            return web.json_response({"ok": False, "error": f"no race {race!r}"}, status=404)
        stream = keys.events_stream(self.competition, race)
        if after is None:
            got = list(reversed(bus.entries(
                await self.r.xrevrange(stream, "+", "-", count=DESK_EVENTS))))
        else:
            got = bus.entries(await self.r.xrange(stream, f"({after}", "+", count=DESK_BATCH))
        events = [json.loads(bus.text((f or {}).get(b"e"))) for _, f in got]
        for (sid, _), ev in zip(got, events, strict=True):
            ev.pop("view", None)  # a revision's view is the view below, or older
            ev["offset"] = sid
        chips = {bus.text(k): bus.text(v) for k, v in
                 (await self.r.hgetall(keys.chips(self.competition))).items()}
        return web.json_response({
            "race": race, "epoch": snap.epoch, "offset": snap.offset, "view": snap.view,
            "events": events, "last": got[-1][0] if got else after, "chips": chips,
            "health": await restarts.desk_health(self.r, self.competition)})

    async def reads(self, request: web.Request) -> web.Response:
        self.auth(request)
        after = _after(request)
        race = request.query.get("race") or None
        # The mark first, then the race, then the log: a read the mark says is judged is
        # in the race's view already, so it is never taken for another race's.
        mark = await self.r.get(keys.scoring_progress(self.competition))
        judged = bus.parse_id(mark) if mark else (0, -1)
        scope = await self._scope(race) if race is not None else None
        got, found = await self._scan(after, judged, scope)
        last = next((sid for sid, _ in reversed(got) if bus.parse_id(sid) <= judged), after)
        if scope is None:
            return web.json_response({"reads": found[-DESK_READS:], "last": last})
        own = [r for r in found if not r["other"]][-DESK_READS:]
        others = [r for r in found if r["other"]]
        sent = {r["input"] for r in own} | {r["input"] for r in others[-DESK_READS:]}
        return web.json_response({"reads": [r for r in found if r["input"] in sent],
                                  "last": last, "dropped": max(0, len(others) - DESK_READS)})

    async def _scope(self, race: str) -> RaceReads:
        """What tells race ``race``'s reads from the others: its view and whose each chip
        is; HTTPNotFound for a race with no view."""
        snap = await snapshot.latest(self.r, keys.snapshot_key(self.competition, race),
                                     keys.events_stream(self.competition, race))
        if snap is None or snap.view is None:
            raise web.HTTPNotFound(text=json.dumps({"ok": False, "error": f"no race {race!r}"}),
                                   content_type="application/json")
        owners = {transponder_key(bus.text(k)): bus.text(v) for k, v in
                  (await self.r.hgetall(keys.chips(self.competition))).items()}
        return RaceReads(snap.view, owners)

    async def _scan(self, after: str | None, judged: tuple[int, int], scope: RaceReads | None
                    ) -> tuple[list[tuple[str, Any]], list[dict[str, Any]]]:
        """The raw entries looked through, oldest first, and the reads among them, judged
        and (with ``scope``) marked ``other``. After ``after``: at most DESK_BATCH entries.
        Without: DESK_RAW_SCAN entries back, and for a race further back in as many again
        until DESK_READS of the race's own reads are found (at most DESK_RAW_SCAN_MAX)."""
        raw = keys.raw_stream(self.competition)
        if after is not None:
            batch = bus.entries(await self.r.xrange(raw, f"({after}", "+", count=DESK_BATCH))
            return batch, await self._judge(passings(batch, scope), judged, scope)
        got: list[tuple[str, Any]] = []
        found: list[dict[str, Any]] = []
        end = "+"
        while True:
            chunk = list(reversed(bus.entries(
                await self.r.xrevrange(raw, end, "-", count=DESK_RAW_SCAN))))
            got = chunk + got
            found = await self._judge(passings(chunk, scope), judged, scope) + found
            if (scope is None or len(chunk) < DESK_RAW_SCAN or len(got) >= DESK_RAW_SCAN_MAX
                    or sum(not r["other"] for r in found) >= DESK_READS):
                return got, found
            end = f"({chunk[0][0]}"

    async def _judge(self, reads: list[dict[str, Any]], judged: tuple[int, int],
                     scope: RaceReads | None) -> list[dict[str, Any]]:
        """``reads`` with ``judged``, scoring's ``refused`` reason, and (with ``scope``)
        ``other``."""
        for read in reads:
            read["judged"] = bus.parse_id(read["input"]) <= judged
        if reads:
            verdicts = await self.r.mget([keys.verdict_key(self.competition, r["input"])
                                         for r in reads])
            for read, v in zip(reads, verdicts, strict=True):
                verdict = json.loads(v) if v else {}
                if verdict.get("verdict") == "refused":
                    read["refused"] = verdict.get("reason", "")
        if scope is not None:
            scope.mark(reads)
        return reads

    async def audit(self, request: web.Request) -> web.Response:
        self.auth(request)
        after = _after(request)
        export = request.query.get("format")
        if export in ("csv", "json"):
            entries = [{**json.loads(bus.text((f or {}).get(b"v"))), "offset": sid} for sid, f
                       in bus.entries(await self.r.xrange(keys.officials_stream(self.competition)))]
            name = f'attachment; filename="icetime-audit.{export}"'
            if export == "csv":
                return web.Response(text=audit_csv(entries), content_type="text/csv",
                                    headers={"Content-Disposition": name})
            return web.json_response(entries, headers={"Content-Disposition": name})
        before = _after(request, "before")
        stream = keys.officials_stream(self.competition)
        if after is not None:
            got = bus.entries(await self.r.xrange(stream, f"({after}", "+", count=DESK_BATCH))
        else:
            # The newest first: the gun keyed a moment ago is in the first answer however
            # long the log is; older pages on demand (``before``).
            end = f"({before}" if before is not None else "+"
            got = list(reversed(bus.entries(
                await self.r.xrevrange(stream, end, "-", count=DESK_BATCH))))
        entries = [{**json.loads(bus.text((f or {}).get(b"v"))), "offset": sid}
                   for sid, f in got]
        first = got[0][0] if got else before
        older = bool(first) and bool(await self.r.xrevrange(stream, f"({first}", "-", count=1))
        return web.json_response({"entries": entries, "last": got[-1][0] if got else after,
                                  "first": first, "older": older})
