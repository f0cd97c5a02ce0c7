"""Race scripts: a fixture's passage times turned into the feed inputs a venue would send.

``script_inputs`` is pure: it lays every gun and passing on a timeline (µs from
the start of the replay). ``icetime replay`` and the demo send them over the real
TCP feed, in real time or faster; tests feed them straight into the engine.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from icetime.timefmt import parse_time

GUN_SOURCE = "gun"
LOOP_SOURCE = "finish-loop"
PHOTO_SOURCE = "photo-finish"
OFFICIALS_SOURCE = "officials"
#: The second ankle transponder crosses the loop a moment after the first: the
#: engine must count the skater once (minimum-lap debounce).
SECOND_ANKLE_US = 23_000


@dataclass(frozen=True)
class Timed:
    at_us: int  # offset from the start of the replay
    source: str
    inp: dict[str, Any]


def load_fixture(path: str | Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(Path(path).read_text())
    return doc


def script_inputs(doc: dict[str, Any], clock_base_us: int = 0, lead_us: int = 2_000_000,
                  rate: float = 1.0) -> list[Timed]:
    """Every gun and passing of a fixture's script, ordered by time.

    ``clock_base_us`` is the sources' clock reading at replay start (their ``t``
    values are ``clock_base_us + at_us``). Each source numbers its inputs from 1.
    """
    script = doc["script"]
    race = script["race"]
    transponders = {s["bib"]: s["transponders"] for s in doc["startlist"]["skaters"]}
    out: list[Timed] = []
    if script.get("format") == "pack":
        _pack_script(script, race, transponders, clock_base_us, lead_us, rate, out)
        return _numbered(out)
    if script.get("format") == "marathon":
        return _numbered(_timed_script(script, clock_base_us, lead_us, rate))
    interval = int(float(script.get("pair_interval_s", 15)) * 1_000_000)
    at = lead_us
    for pair in script["pairs"]:
        gun_at = at
        out.append(Timed(gun_at, GUN_SOURCE, {"type": "gun", "race": race, "pair": pair["pair"],
                                              "t": clock_base_us + gun_at, "rate": rate}))
        longest = _crossings(pair["times"], gun_at, clock_base_us, transponders, out)
        at = gun_at + longest + interval
    if script.get("declare_official"):
        out.append(Timed(at, OFFICIALS_SOURCE, {"type": "decision", "race": race,
                                                "action": "official"}))
    return _numbered(out)


def _numbered(out: list[Timed]) -> list[Timed]:
    """In time order, each source numbering its inputs from 1."""
    out.sort(key=lambda x: x.at_us)
    seqs: dict[str, int] = {}
    for item in out:
        seqs[item.source] = seqs.get(item.source, 0) + 1
        item.inp["seq"] = seqs[item.source]
    return out


def _time(v: Any) -> int:
    t = parse_time(v)
    assert t is not None, v
    return t


def _crossings(crossings: dict[str, list[Any]], gun_at: int, clock_base_us: int,
               transponders: dict[str, list[str]], out: list[Timed]) -> int:
    """Each skater's finish-line crossings (race times), on both ankles; the last one.

    In a relay the key is the team and each crossing is ``[time, bib]``: who of the team
    was on the track.
    """
    last = 0
    for bib, times in crossings.items():
        for crossing in times:
            by = bib
            if isinstance(crossing, list):
                crossing, by = crossing
            t = _time(crossing)
            last = max(last, t)
            for i, tr in enumerate(transponders[by][:2]):
                when = gun_at + t + i * SECOND_ANKLE_US
                out.append(Timed(when, LOOP_SOURCE, {
                    "type": "passing", "transponder": tr, "point": "finish",
                    "t": clock_base_us + when}))
    return last


def _timed_script(script: dict[str, Any], clock_base_us: int, lead_us: int, rate: float
                  ) -> list[Timed]:
    """A script that lists its inputs already timed (a generated marathon,
    bench/marathon.py): ``[arrival µs, source, input]``, arrival and ``t`` from the
    replay's start, in the order they arrive (not the order they were timed)."""
    out = []
    for at, source, inp in script["inputs"]:
        inp = {**inp, "t": clock_base_us + inp["t"]}
        if inp["type"] == "gun":
            inp["rate"] = rate
        out.append(Timed(lead_us + at, source, inp))
    return out


def _pack_script(script: dict[str, Any], race: str, transponders: dict[str, list[str]],
                 clock_base_us: int, lead_us: int, rate: float, out: list[Timed]) -> None:
    """A pack race: one gun for everyone, then every crossing; voided attempts (a
    restart) first; photo-finish times and officials' decisions at their moments."""
    gun_at = lead_us
    for attempt in script.get("attempts", []):
        out.append(Timed(gun_at, GUN_SOURCE, {"type": "gun", "race": race,
                                              "t": clock_base_us + gun_at, "rate": rate}))
        _crossings(attempt["crossings"], gun_at, clock_base_us, transponders, out)
        stop = gun_at + _time(attempt["restart_at"])
        out.append(Timed(stop, OFFICIALS_SOURCE, {"type": "decision", "race": race,
                                                  "action": "restart",
                                                  "reason": attempt.get("reason", "restart")}))
        gun_at = stop + int(float(attempt.get("restart_after_s", 20)) * 1_000_000)
    out.append(Timed(gun_at, GUN_SOURCE, {"type": "gun", "race": race,
                                          "t": clock_base_us + gun_at, "rate": rate}))
    last = _crossings(script["crossings"], gun_at, clock_base_us, transponders, out)
    photo_at = gun_at + last + int(float(script.get("official_after_s", 3)) * 1_000_000)
    for bib, t in script.get("official", {}).items():
        out.append(Timed(photo_at, PHOTO_SOURCE, {"type": "finish_time", "race": race,
                                                  "bib": bib, "time_us": _time(t),
                                                  "origin": "photo"}))
    for d in script.get("decisions", []):
        out.append(Timed(gun_at + _time(d["at"]), OFFICIALS_SOURCE,
                         {"type": "decision", "race": race, **d["decision"]}))
    if script.get("declare_official"):
        # After the photo finish and the referees: the results are official.
        done = max([photo_at] + [gun_at + _time(d["at"]) for d in script.get("decisions", [])])
        out.append(Timed(done + 2_000_000, OFFICIALS_SOURCE, {
            "type": "decision", "race": race, "action": "official"}))
