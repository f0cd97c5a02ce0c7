"""What every race kind shares: skaters, runs, errors, and the constants of timing.

Pure data and small helpers; the race engines (``longtrack.LongTrackRace``,
``pack.PackRace``, on their common base ``race.RaceBase``) and the
``competition.Competition`` that routes inputs build on it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from msgspec import Struct

from icetime.messages import Decision, FinishTime, Gun, Passing
from icetime.timefmt import parse_time, to_thousandths

#: "Not passed yet". The largest int64 sorts after every real time, so a rank is
#: one ``count_nonzero(column < t)`` with no validity mask.
NOT_PASSED = np.iinfo(np.int64).max

#: A race event as published (docs/protocol.md: ``passage``, ``finish``, ``revision``…).
#: A competition event (one distance raced in rounds) is ``rounds.Event``.
RaceEvent = dict[str, Any]
#: Precedence of an official finish time's origin (higher wins), DOMAIN.md §1.4.
FINISH_PRECEDENCE = {"transponder": 0, "beam": 1, "photo": 2, "manual": 3}


class InputError(ValueError):
    """An input the engine cannot apply (unknown race, bib, action). Counted, never raised out."""


class RoutedPassing(Struct, frozen=True, gc=False):
    """A passing as its race takes it: ``bib`` is whom the transponder belonged to when it
    arrived, ``t`` its time on the common clock (µs, the source's offset applied)."""

    passing: Passing
    bib: str
    t: int


class RoutedGun(Struct, frozen=True, gc=False):
    """A gun as its race takes it: ``gun`` names its race (and pair: from the call when
    the gun did not), ``t`` is its time on the common clock (µs), ``origin_us`` that
    instant on ingest's wall clock (µs, ``wallclock.WallClock.origin``; 0 when fed
    without ingest): where the screens' running clock starts."""

    gun: Gun
    t: int
    origin_us: int = 0


#: What a race's input log holds: the routing is kept with the input, so a replay of
#: the log sees each passing and gun exactly as it was first routed.
RaceInput = RoutedGun | RoutedPassing | FinishTime | Decision


@dataclass(frozen=True)
class Skater:
    bib: str
    name: str
    short: str
    nation: str
    transponders: tuple[str, ...]
    pb: dict[int, int] = field(default_factory=dict)
    sb: dict[int, int] = field(default_factory=dict)
    club: str = ""

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
            club=str(s.get("club") or ""),
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
class Run:
    """One start on the ice: the common-clock instant of its gun and the attempt number.

    A pair race has one per pair (``pair`` set); a pack race one for the whole field.
    """

    zero_us: int
    clock_origin_us: int
    attempt: int
    #: How fast the race clock runs against the wall clock (1 live; >1 in a fast replay).
    rate: float = 1.0
    pair: int | None = None

    @classmethod
    def from_gun(cls, routed: RoutedGun, attempt: int, pair: int | None = None) -> Run:
        """The run a routed gun starts: its common-clock ``t`` (µs) is its zero, its
        ``origin_us`` (the gun's instant on the wall clock, however late it arrived) the
        running clock's origin."""
        gun = routed.gun
        return cls(routed.t, routed.origin_us, attempt,
                   float(gun.rate) if gun.rate is not None else 1.0, pair)

    def public(self) -> dict[str, Any]:
        """The run as published: attempt, running clock's origin (µs) and rate."""
        return {"attempt": self.attempt, "clock_origin_us": self.clock_origin_us,
                "rate": self.rate}

    def race_time(self, t_common: int) -> int:
        """A common-clock time (µs) as a race time of this run, truncated to thousandths."""
        return to_thousandths(t_common - self.zero_us)


def team_skater(team: dict[str, Any]) -> Skater:
    """A team as the competitor of a race (relays, team events): named like a skater."""
    tid = str(team["id"])
    name = str(team.get("name", tid))
    return Skater(bib=tid, name=name, short=str(team.get("short", name)),
                  nation=str(team.get("nation", tid)), transponders=())
