"""What every race kind shares: skaters, runs, errors, and the constants of timing.

Pure data and small helpers; the race engines (``engine.LongTrackRace``,
``pack.PackRace``) and the ``engine.Competition`` that routes inputs build on it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from icetime.timefmt import parse_time

#: "Not passed yet". The largest int64 sorts after every real time, so a rank is
#: one ``count_nonzero(column < t)`` with no validity mask.
NOT_PASSED = np.iinfo(np.int64).max

Event = dict[str, Any]
#: Precedence of an official finish time's origin (higher wins), DOMAIN.md §1.4.
FINISH_PRECEDENCE = {"transponder": 0, "beam": 1, "photo": 2, "manual": 3}
STATUSES = ("DNS", "DNF", "DQ")


class InputError(ValueError):
    """An input the engine cannot apply (unknown race, bib, action). Counted, never raised out."""


@dataclass(frozen=True)
class Skater:
    bib: str
    name: str
    short: str
    nation: str
    transponders: tuple[str, ...]
    pb: dict[int, int] = field(default_factory=dict)
    sb: dict[int, int] = field(default_factory=dict)

    @classmethod
    def from_spec(cls, s: dict[str, Any]) -> Skater:
        name = str(s["name"])
        return cls(
            bib=str(s["bib"]),
            name=name,
            short=str(s.get("short") or name.split()[-1]),
            nation=str(s.get("nation", "")),
            transponders=tuple(str(t) for t in s.get("transponders", ())),
            pb={int(k): req_time(v) for k, v in (s.get("pb") or {}).items()},
            sb={int(k): req_time(v) for k, v in (s.get("sb") or {}).items()},
        )

    def public(self, distance: int) -> dict[str, Any]:
        return {"bib": self.bib, "name": self.name, "short": self.short, "nation": self.nation,
                "pb": self.pb.get(distance), "sb": self.sb.get(distance)}


def req_time(v: Any) -> int:
    t = parse_time(v)
    if t is None:
        raise InputError(f"missing time: {v!r}")
    return t


@dataclass
class PairRun:
    """A pair on the ice: the common-clock instant of its gun and the attempt number."""

    pair: int
    zero_us: int
    clock_origin_us: int
    attempt: int
    #: How fast the race clock runs against the wall clock (1 live; >1 in a fast replay).
    rate: float = 1.0
