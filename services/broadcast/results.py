"""Results out: a race view (docs/protocol.md, "The race view") as a results document
and as CSV.

Pure functions, no I/O, over the rows of :mod:`services.broadcast.result_rows`: the
HTTP API (:mod:`services.broadcast.results_http`) serves what is built here. The
document follows the shape of the ISU's live results (a result per competitor with
``startNumber``, ``startLane``, ``rank``, ``time``, ``timeBehind`` and ``laps`` of
``{number, time, passageTime, rank}``); docs/results.md defines it.

Times in a document are text in thousandths, ``M:SS.fff`` (``SS.fff`` under a minute),
or in seconds (``SS.fff``, "in seconds") when asked; the view's µs stay exact.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from typing import Any

from .result_rows import (
    MARATHON,
    PACK_KINDS,
    Lap,
    Row,
    clock,
    long_time,
    marathon_classification,
    point_places,
    rows,
)


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
    places = point_places(view)
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
