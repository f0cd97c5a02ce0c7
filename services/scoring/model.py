"""What every race kind shares: skaters, runs, errors, and the constants of timing.

Pure data and small helpers; the race engines (``engine.LongTrackRace``,
``pack.PackRace``) and the ``engine.Competition`` that routes inputs build on it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from icetime.timefmt import parse_time
from icetime.view import STORY_LOG_MAX

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


def team_skater(team: dict[str, Any]) -> Skater:
    """A team as the competitor of a race (relays, team events): named like a skater."""
    tid = str(team["id"])
    name = str(team.get("name", tid))
    return Skater(bib=tid, name=name, short=str(team.get("short", name)),
                  nation=str(team.get("nation", tid)), transponders=())


class RaceBase:
    """What both race engines share: the input log and its replay, the story log, bib
    and team lookup. A subclass sets these attributes and defines ``_apply``."""

    id: str
    log: list[tuple[str, dict[str, Any]]]
    story_log: list[str]
    row: dict[str, int]
    row_of: dict[str, int]
    teams: dict[str, list[str]]
    members: dict[str, Skater]
    distance: int

    def _apply(self, input_id: str, inp: dict[str, Any], emit: bool) -> list[Event]:
        raise NotImplementedError

    def _replay_log(self) -> None:
        """Apply the race's own input log again, quietly (emit=False), skipping voided
        inputs. Official finish times are authoritative whenever they arrive, so they
        are in place before the transponder finishes they replace are replayed."""
        voided = {str(i["target"]) for _, i in self.log
                  if i["type"] == "decision" and i["action"] == "void"}
        for iid, inp in self.log:
            if inp["type"] == "finish_time" and iid not in voided:
                self._apply(iid, inp, emit=False)
        for iid, inp in self.log:
            if iid not in voided and inp["type"] != "finish_time":
                self._apply(iid, inp, emit=False)

    def _tell(self, lines: list[str]) -> None:
        if lines:
            self.story_log.extend(lines)
            del self.story_log[:-STORY_LOG_MAX]

    def _row(self, bib: Any) -> int:
        """The row of a bib, or of a team (by its id or by one of its skaters)."""
        row = self.row.get(str(bib), self.row_of.get(str(bib)))
        if row is None:
            raise InputError(f"race {self.id}: no bib {bib!r}")
        return row

    def _read_teams(self, specs: list[dict[str, Any]], skaters: dict[str, Skater]
                    ) -> list[Skater]:
        """Set ``teams`` and ``members`` from the start list's teams; return the teams
        as competitors. Every member must be in ``skaters``."""
        self.teams = {str(t["id"]): [str(b) for b in t["skaters"]] for t in specs}
        missing = [b for ms in self.teams.values() for b in ms if b not in skaters]
        if missing:
            raise InputError(f"race {self.id}: bibs not in the start list: {missing}")
        self.members = {b: skaters[b] for ms in self.teams.values() for b in ms}
        return [team_skater(t) for t in specs]

    def _teams_view(self) -> dict[str, Any]:
        """The view's ``teams`` entry, when the competitors are teams."""
        if not self.teams:
            return {}
        return {"teams": {tid: {"skaters": ms,
                                "members": {m: self.members[m].public(self.distance)
                                            for m in ms}}
                          for tid, ms in self.teams.items()}}
