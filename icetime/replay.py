"""Race scripts: a fixture's split times turned into the feed inputs a venue would send.

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
    interval = int(float(script.get("pair_interval_s", 15)) * 1_000_000)
    out: list[Timed] = []
    at = lead_us
    for pair in script["pairs"]:
        gun_at = at
        out.append(Timed(gun_at, GUN_SOURCE, {"type": "gun", "race": race, "pair": pair["pair"],
                                              "t": clock_base_us + gun_at, "rate": rate}))
        longest = 0
        for bib, splits in pair["times"].items():
            for split in splits:
                t = parse_time(split)
                assert t is not None
                longest = max(longest, t)
                for i, tr in enumerate(transponders[bib][:2]):
                    when = gun_at + t + i * SECOND_ANKLE_US
                    out.append(Timed(when, LOOP_SOURCE, {
                        "type": "passing", "transponder": tr, "point": "finish",
                        "t": clock_base_us + when}))
        at = gun_at + longest + interval
    out.sort(key=lambda x: x.at_us)
    seqs: dict[str, int] = {}
    for item in out:
        seqs[item.source] = seqs.get(item.source, 0) + 1
        item.inp["seq"] = seqs[item.source]
    return out
