"""Results out: a race view (docs/protocol.md, "The race view") as a results document.

Pure functions, no I/O: the HTTP API (:mod:`services.broadcast.results_http`), the CSV
export, the PDF sheet (:mod:`services.broadcast.sheet`) and the RMonitor feed all read
the rows built here, so every output carries the same numbers as the view the
WebSocket serves. The document follows the shape of the ISU's live results (a result
per competitor with ``startNumber``, ``startLane``, ``rank``, ``time``, ``timeBehind``
and ``laps`` of ``{number, time, passageTime, rank}``); docs/results.md defines it.

Times in a document are text in thousandths, ``M:SS.fff`` (``SS.fff`` under a minute),
or in seconds (``SS.fff``, "in seconds") when asked; the view's µs stay exact.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Any

#: Race kinds with results (rows, a classification); rounds and standings have none.
PAIR_KINDS = ("long_track_individual", "team_pursuit", "team_sprint", "mixed_relay")
PACK_KINDS = ("short_track", "mass_start", "short_track_relay")
#: A marathon: skaters in waves, timed at timing points along a course.
MARATHON = "marathon"
#: A long-track lap, metres.
LONG_TRACK_LAP_M = 400.0
LANES = {"inner": "I", "outer": "O"}


def has_results(view: dict[str, Any] | None) -> bool:
    """Whether ``view`` is a race with per-competitor results (not rounds, standings)."""
    return bool(view) and view["race"].get("kind") in (  # type: ignore[index]
        *PAIR_KINDS, *PACK_KINDS, MARATHON)


def clock(t_us: int | None, in_seconds: bool = False) -> str | None:
    """A race time (µs) as text in thousandths: ``1:14.446``, ``6:02:11.250`` from an
    hour on (a marathon), or ``74.446`` in seconds; None stays None. Truncated, never
    rounded (docs/time.md)."""
    if t_us is None:
        return None
    if in_seconds:
        sign = "-" if t_us < 0 else ""
        ms = abs(t_us) // 1000
        return f"{sign}{ms // 1000}.{ms % 1000:03d}"
    return long_time(t_us)


def long_time(t_us: int, digits: int = 3) -> str:
    """A time truncated to ``digits`` (2 or 3) decimals: ``SS.fff``, ``M:SS.fff``, and
    ``H:MM:SS.fff`` from an hour on. Called per cell of a 10,000-row sheet: plain
    integer arithmetic."""
    if t_us < 0:
        return "-" + long_time(-t_us, digits)
    ms = t_us // 1000
    s, frac = divmod(ms, 1000)
    m, s = divmod(s, 60)
    h, m = divmod(m, 60)
    f = f"{frac:03d}" if digits == 3 else f"{frac // 10:02d}"
    if h:
        return f"{h}:{m:02d}:{s:02d}.{f}"
    if m:
        return f"{m}:{s:02d}.{f}"
    return f"{s}.{f}"


@dataclass(slots=True)
class Lap:
    """One passage of the finish line by one competitor."""

    number: int  # 1-based
    m: float  # metres from the start
    t: int  # race time at the passage, µs
    lap_time: int  # since the previous passage (the opener for the first), µs
    rank: int | None  # long track: rank there; pack: place across the line
    behind: int | None  # long track: behind the fastest there; pack: behind the first
    point: str | None = None  # marathon: the timing point's name


@dataclass
class Row:
    """One competitor of a race, as every output shows it."""

    bib: str
    name: str
    short: str
    nation: str
    rank: int | None = None
    t: int | None = None  # final time, µs
    behind: int | None = None  # behind the winner, µs
    status: str | None = None  # DQ, DNS, DNF, PEN, ...
    origin: str | None = None  # where the final time came from
    records: list[str] = field(default_factory=list)
    pair: int | None = None
    lane: str | None = None  # I or O (pair races)
    start_position: int | None = None  # pack races: place in the start order, 1-based
    laps: list[Lap] = field(default_factory=list)
    sprint_points: int | None = None  # mass start
    club: str | None = None  # marathon
    wave: int | None = None  # marathon: the start wave
    point: str | None = None  # marathon: the furthest timing point, where ``t`` was taken


def lap_length(view: dict[str, Any]) -> float:
    """The length of one lap of the race's track, metres."""
    race = view["race"]
    return float(race.get("lap_m") or LONG_TRACK_LAP_M)


def _laps(result: dict[str, Any], pack: bool) -> list[Lap]:
    out = []
    for p in result["passages"]:
        if p is None:
            continue
        out.append(Lap(number=p.get("lap_number", p["k"] + 1), m=p["m"], t=p["t"],
                       lap_time=p["lap_time"],
                       rank=p.get("position") if pack else p.get("rank"),
                       behind=p.get("gap_leader") if pack else p.get("gap_best")))
    return out


def _lanes(view: dict[str, Any]) -> dict[str, tuple[int, str]]:
    lanes: dict[str, tuple[int, str]] = {}
    for pair in view.get("pairs", []):
        for side, lane in LANES.items():
            if pair.get(side):
                lanes[pair[side]] = (pair["pair"], lane)
    return lanes


def rows(view: dict[str, Any]) -> list[Row]:
    """Every competitor of a race: the classification first, in its order (rank, final
    time, behind), then those with a status (DQ, DNF, ...), then the rest in start
    order. Raises KeyError for a view without results (see :func:`has_results`)."""
    if view["race"]["kind"] == MARATHON:
        return marathon_rows(view)
    pack = view["race"]["kind"] in PACK_KINDS
    cls = view["classification"]
    lanes = _lanes(view)
    order = list(view.get("start_order") or [
        b for p in view.get("pairs", []) for b in (p.get("inner"), p.get("outer")) if b])
    start = {b: i + 1 for i, b in enumerate(view.get("start_order") or [])}

    def row(bib: str) -> Row:
        sk = view["skaters"].get(bib, {})
        res = view["results"].get(bib, {"passages": [], "final": None, "status": None})
        final = res.get("final") or {}
        pair, lane = lanes.get(bib, (None, None))
        return Row(bib=bib, name=sk.get("name", bib), short=sk.get("short", bib),
                   nation=sk.get("nation", ""), status=res.get("status"),
                   t=final.get("t"), origin=final.get("origin"),
                   records=list(final.get("flags") or []), pair=pair, lane=lane,
                   start_position=start.get(bib), laps=_laps(res, pack))

    out = []
    ranked = set(cls["bib"])
    for i, bib in enumerate(cls["bib"]):
        r = row(bib)
        r.rank, r.t, r.behind = cls["rank"][i], cls["t"][i], cls["behind"][i]
        if "sprint_points" in cls:
            r.sprint_points = cls["sprint_points"][i]
        out.append(r)
    rest = [row(b) for b in order + sorted(set(view["results"]) - set(order))
            if b not in ranked]
    out += [r for r in rest if r.status] + [r for r in rest if not r.status]
    return out


def _point_places(view: dict[str, Any]) -> dict[str, list[tuple[int, int] | None]]:
    """A marathon: per bib, per timing point, (rank, behind the first µs) there; None
    where she has no ranked passage. Equal times share a rank. One pass over
    ``view.order``."""
    results = view["results"]
    n = len(view["order"])
    out: dict[str, list[tuple[int, int] | None]] = {}
    for k, order in enumerate(view["order"]):
        if not order:
            continue
        first = results[order[0]]["t"][k]
        prev_t, rank = None, 0
        for i, bib in enumerate(order):
            t = results[bib]["t"][k]
            if t != prev_t:
                rank, prev_t = i + 1, t
            out.setdefault(bib, [None] * n)[k] = (rank, t - first)
    return out


def _furthest(times: list[int | None]) -> int:
    for k in range(len(times) - 1, -1, -1):
        if times[k] is not None:
            return k
    return -1


def marathon_classification(view: dict[str, Any]) -> list[tuple[str, int, int, int, int]]:
    """A marathon's classification from its view, as the engine's and the pages'
    ``classification()``: finishers by time, then the others by the furthest timing
    point reached and their time there. ``[(bib, rank, k, t µs, behind µs)]``, behind
    the first at that point; equal times at the same point share a rank."""
    results = view["results"]
    out: list[tuple[str, int, int, int, int]] = []
    for k in range(len(view["order"]) - 1, -1, -1):
        order = view["order"][k]
        prev: tuple[int, int] | None = None
        first = results[order[0]]["t"][k] if order else 0
        for bib in order:
            t = results[bib]["t"][k]
            if _furthest(results[bib]["t"]) != k:
                continue
            rank = out[-1][1] if prev == (k, t) else len(out) + 1
            prev = (k, t)
            out.append((bib, rank, k, t, t - first))
    return out


def marathon_rows(view: dict[str, Any]) -> list[Row]:
    """Every skater of a marathon: the classification (``t``: the time at ``point``, the
    furthest timing point reached), then those with a status, then those with no
    passage yet, in wave order. ``laps`` are the timing points passed, each with its
    rank and time behind the first there, ``lap_time`` since the previous timing point
    passed. Costs one pass over the skaters and the points' orders."""
    course = view["race"]["course"]
    results = view["results"]
    places = _point_places(view)

    def row(bib: str) -> Row:
        sk = view["skaters"].get(bib, {})
        res = results.get(bib) or {"t": [], "status": None, "manual": []}
        laps, prev = [], 0
        mine = places.get(bib)
        for k, t in enumerate(res["t"]):
            if t is None:
                continue
            place = mine[k] if mine is not None else None
            laps.append(Lap(number=k + 1, m=course[k]["m"], t=t, lap_time=t - prev,
                            rank=place[0] if place else None,
                            behind=place[1] if place else None, point=course[k]["point"]))
            prev = t
        return Row(bib=bib, name=sk.get("name", bib), short=sk.get("short", bib),
                   nation=sk.get("nation", ""), club=sk.get("club"), wave=sk.get("wave"),
                   status=res["status"], laps=laps)

    out = []
    ranked = set()
    last = len(course) - 1
    for bib, rank, k, t, behind in marathon_classification(view):
        r = row(bib)
        r.rank, r.t, r.behind, r.point = rank, t, behind, course[k]["point"]
        if k == last:
            r.origin = "manual" if last in results[bib]["manual"] else "transponder"
        ranked.add(bib)
        out.append(r)
    with_status = [b for b, res in results.items() if res["status"] and b not in ranked]
    out += [row(b) for b in with_status]
    done = ranked | set(with_status)
    out += [row(b) for b in view["skaters"] if b not in done]
    return out


def best_lap(row: Row, lap_m: float) -> Lap | None:
    """The competitor's fastest whole lap (a passage one lap after the previous; the
    opener of a 500 m or 1000 m is shorter and does not count); None before one."""
    full = []
    prev = 0.0
    for lap in row.laps:
        if abs((lap.m - prev) - lap_m) < 1.0:
            full.append(lap)
        prev = lap.m
    return min(full, key=lambda lap: (lap.lap_time, lap.number), default=None)


@dataclass(frozen=True)
class Meta:
    """What a race's document says beyond its view: where it sits and when it changed."""

    competition: dict[str, str] | None = None
    #: Wall time (ms since the epoch) of the event the view is as of.
    updated_ms: int | None = None
    #: Wall time (ms) of the decision that made the race official (None: provisional).
    official_ms: int | None = None
    #: Whether a pair or the pack is on the ice now.
    live: bool = False


def iso_ms(ms: int | None) -> str | None:
    """Milliseconds since the epoch as ISO 8601 UTC, ``2023-11-17T09:45:17.123Z``."""
    if ms is None:
        return None
    import datetime as dt  # here: only documents need it

    when = dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def race_info(view: dict[str, Any], meta: Meta) -> dict[str, Any]:
    """The race's own part of a document (also the entry of the competitions list)."""
    race = view["race"]
    official = bool(race.get("official"))
    if race["kind"] == MARATHON:
        course = race["course"]
        return {"id": race["id"], "name": race["name"], "kind": race["kind"],
                "distance": race.get("distance"), "round": None, "lapCount": len(course),
                "passages": [p["m"] for p in course], "course": course,
                "competition": meta.competition, "isLive": meta.live,
                "isOfficial": official, "status": "official" if official else "provisional",
                "officialAt": iso_ms(meta.official_ms) if official else None,
                "lastUpdate": iso_ms(meta.updated_ms)}
    return {
        "id": race["id"], "name": race["name"], "kind": race["kind"],
        "distance": race.get("distance"),
        "round": race.get("round"),
        "lapCount": race.get("laps") if race["kind"] in PACK_KINDS
        else len(race.get("passages") or []),
        "passages": race.get("passages") or [],
        "competition": meta.competition,
        "isLive": meta.live,
        "isOfficial": official,
        "status": "official" if official else "provisional",
        "officialAt": iso_ms(meta.official_ms) if official else None,
        "lastUpdate": iso_ms(meta.updated_ms),
    }


def _lap_doc(lap: Lap, in_seconds: bool) -> dict[str, Any]:
    doc = {"number": lap.number, "distance": lap.m, "passageTime": clock(lap.t, in_seconds),
           "time": clock(lap.lap_time, in_seconds), "rank": lap.rank,
           "timeBehind": clock(lap.behind, in_seconds)}
    if lap.point is not None:
        doc["timingPoint"] = lap.point
    return doc


def result_doc(row: Row, official: bool, in_seconds: bool = False) -> dict[str, Any]:
    """One competitor as the results API gives it (docs/results.md)."""
    doc: dict[str, Any] = {
        "rank": row.rank, "startNumber": row.bib,
        "competitor": {"number": row.bib, "name": row.name, "shortName": row.short,
                       "country": row.nation},
        "pair": row.pair, "startLane": row.lane, "startPosition": row.start_position,
        "status": row.status, "time": clock(row.t, in_seconds),
        "timeBehind": clock(row.behind, in_seconds), "timeOrigin": row.origin,
        "records": row.records, "isOfficial": official and row.rank is not None,
        "laps": [_lap_doc(lap, in_seconds) for lap in row.laps],
    }
    if row.sprint_points is not None:
        doc["sprintPoints"] = row.sprint_points
    if row.wave is not None:
        doc["competitor"]["club"] = row.club
        doc["wave"] = row.wave
        doc["timingPoint"] = row.point
    return doc


def race_document(view: dict[str, Any], meta: Meta, in_seconds: bool = False
                  ) -> dict[str, Any]:
    """A race's whole results document: ``{"race": …, "records": …, "results": […]}``."""
    info = race_info(view, meta)
    records = {k: clock(v, in_seconds) for k, v in (view["race"].get("records") or {}).items()}
    return {"race": info, "records": records,
            "results": [result_doc(r, info["isOfficial"], in_seconds) for r in rows(view)]}


def csv_text(view: dict[str, Any]) -> str:
    """The race as CSV (RFC 4180, a header line, one line per competitor in the order
    of :func:`rows`): rank, bib, name, nation, pair, lane, status, time, behind,
    records, origin, then per passage its time, lap time and rank. Times in thousandths,
    ``M:SS.fff``; empty where there is nothing. A marathon: :func:`marathon_csv`."""
    if view["race"]["kind"] == MARATHON:
        return marathon_csv(view)
    all_rows = rows(view)
    metres = _passage_metres(view, all_rows)
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\r\n")
    head = ["rank", "bib", "name", "nation", "pair", "lane", "status", "time", "behind",
            "records", "origin"]
    if view["race"]["kind"] == "mass_start":
        head.append("sprint_points")
    for m in metres:
        label = _metres_label(m)
        head += [f"{label} time", f"{label} lap time", f"{label} rank"]
    w.writerow(head)
    for r in all_rows:
        line: list[Any] = [r.rank or "", r.bib, r.name, r.nation, r.pair or "", r.lane or "",
                           r.status or "", clock(r.t) or "", clock(r.behind) or "",
                           " ".join(r.records), r.origin or ""]
        if view["race"]["kind"] == "mass_start":
            line.append("" if r.sprint_points is None else r.sprint_points)
        by_m = {lap.m: lap for lap in r.laps}
        for m in metres:
            lap = by_m.get(m)
            line += ["", "", ""] if lap is None else [clock(lap.t), clock(lap.lap_time),
                                                      lap.rank or ""]
        w.writerow(line)
    return out.getvalue()


def _passage_metres(view: dict[str, Any], all_rows: list[Row]) -> list[float]:
    listed = [float(m) for m in view["race"].get("passages") or []]
    seen = {lap.m for r in all_rows for lap in r.laps}
    return sorted(set(listed) | {float(m) for m in seen})


def _metres_label(m: float) -> str:
    return f"{m:g} m"


def marathon_csv(view: dict[str, Any]) -> str:
    """A marathon as CSV, one line per skater in the order of :func:`rows`: rank, bib,
    name, nation, club, wave, status, time (at ``point``), behind, point, origin, then
    per timing point of the course its race time and rank. Built straight from the
    view's columns (the same classification and ranks as :func:`marathon_rows`), as
    this runs over 10,000 skaters."""
    course = view["race"]["course"]
    results, skaters = view["results"], view["skaters"]
    places = _point_places(view)
    last = len(course) - 1
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\r\n")
    head = ["rank", "bib", "name", "nation", "club", "wave", "status", "time", "behind",
            "point", "origin"]
    for p in course:
        head += [f"{p['point']} time", f"{p['point']} rank"]
    w.writerow(head)
    nothing = [None] * len(course)

    def line(bib: str, lead: list[Any]) -> list[Any]:
        sk = skaters.get(bib, {})
        res = results.get(bib)
        cells = [*lead[:1], bib, sk.get("name", bib), sk.get("nation", ""), sk.get("club") or "",
                 sk.get("wave", ""), (res or {}).get("status") or "", *lead[1:]]
        if res is None:
            return cells + [""] * (2 * len(course))
        mine = places.get(bib) or nothing
        for t, place in zip(res["t"], mine, strict=True):
            cells += ("", "") if t is None else (long_time(t), place[0] if place else "")
        return cells

    done = set()
    for bib, rank, k, t, behind in marathon_classification(view):
        origin = ("manual" if last in results[bib]["manual"] else "transponder") \
            if k == last else ""
        w.writerow(line(bib, [rank, long_time(t), long_time(behind), course[k]["point"],
                              origin]))
        done.add(bib)
    rest = [b for b, res in results.items() if res["status"] and b not in done]
    done.update(rest)
    rest += [b for b in skaters if b not in done]
    w.writerows(line(b, ["", "", "", "", ""]) for b in rest)
    return out.getvalue()
