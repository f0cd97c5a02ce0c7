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

from icetime.timefmt import format_time

#: Race kinds with results (rows, a classification); rounds and standings have none.
PAIR_KINDS = ("long_track_individual", "team_pursuit", "team_sprint", "mixed_relay")
PACK_KINDS = ("short_track", "mass_start", "short_track_relay")
#: A long-track lap, metres.
LONG_TRACK_LAP_M = 400.0
LANES = {"inner": "I", "outer": "O"}


def has_results(view: dict[str, Any] | None) -> bool:
    """Whether ``view`` is a race with per-competitor results (not rounds, standings)."""
    return bool(view) and view["race"].get("kind") in PAIR_KINDS + PACK_KINDS  # type: ignore[index]


def clock(t_us: int | None, in_seconds: bool = False) -> str | None:
    """A race time (µs) as text in thousandths: ``1:14.446``, or ``74.446`` in seconds;
    None stays None. Truncated, never rounded (docs/time.md)."""
    if t_us is None:
        return None
    if in_seconds:
        sign = "-" if t_us < 0 else ""
        ms = abs(t_us) // 1000
        return f"{sign}{ms // 1000}.{ms % 1000:03d}"
    return format_time(t_us, 3)


@dataclass
class Lap:
    """One passage of the finish line by one competitor."""

    number: int  # 1-based
    m: float  # metres from the start
    t: int  # race time at the passage, µs
    lap_time: int  # since the previous passage (the opener for the first), µs
    rank: int | None  # long track: rank there; pack: place across the line
    behind: int | None  # long track: behind the fastest there; pack: behind the first


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
    return {"number": lap.number, "distance": lap.m, "passageTime": clock(lap.t, in_seconds),
            "time": clock(lap.lap_time, in_seconds), "rank": lap.rank,
            "timeBehind": clock(lap.behind, in_seconds)}


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
    ``M:SS.fff``; empty where there is nothing."""
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
