"""A race view (docs/protocol.md, "The race view") as rows: one per competitor, the
classification first.

Pure functions, no I/O: the results document and CSV (:mod:`services.broadcast.results`),
the PDF sheet (:mod:`services.broadcast.sheet`) and the RMonitor feed all read the
rows built here, so every output carries the same numbers as the view the WebSocket
serves (docs/results.md).

Times are text in thousandths, ``M:SS.fff`` (``SS.fff`` under a minute), or in
seconds (``SS.fff``, "in seconds") when asked; the view's µs stay exact. Truncated,
never rounded (docs/time.md).
"""
from __future__ import annotations

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
    #: Since the previous passage (the opener for the first), µs; None where the
    #: passage before this one was missed (long track): the time since the last one
    #: recorded would span two laps, which no official reads as a lap time.
    lap_time: int | None
    rank: int | None  # long track: rank there; pack: place across the line
    behind: int | None  # long track: behind the fastest there; pack: behind the first
    point: str | None = None  # marathon: the timing point's name
    origin: str | None = None  # long track, intermediate: "manual" when keyed in


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
                       lap_time=None if p.get("missing") else p["lap_time"],
                       rank=p.get("position") if pack else p.get("rank"),
                       behind=p.get("gap_leader") if pack else p.get("gap_best"),
                       origin=p.get("origin")))
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


def point_places(view: dict[str, Any]) -> dict[str, list[tuple[int, int] | None]]:
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
    places = point_places(view)

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


def best_lap(row: Row, lap_m: float) -> tuple[int, Lap] | None:
    """The competitor's fastest whole lap, as (its lap time µs, the lap): a passage one
    lap after the previous (the opener of a 500 m or 1000 m is shorter, and one after a
    missed passage has no lap time: neither counts); None before one."""
    full = []
    prev = 0.0
    for lap in row.laps:
        if lap.lap_time is not None and abs((lap.m - prev) - lap_m) < 1.0:
            full.append((lap.lap_time, lap))
        prev = lap.m
    return min(full, key=lambda x: (x[0], x[1].number), default=None)
