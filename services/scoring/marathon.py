"""Marathons on natural ice: thousands of skaters started in waves, timed at timing
points along a course (start, km points, finish), ranked at each point by elapsed time.

Sans-I/O and deterministic like the other race kinds, on the common ``race.RaceBase``
(input log, decisions, revisions), but built so that nothing a passing costs grows with
the field:

* A skater's time runs from her wave's gun (the latest gun of that wave: a wave called
  back and started again runs from the new gun; reads before it are no passages).
* A read is placed at the timing point its decoder belongs to (``Passing.point``). A
  point is passed once: the **earliest** read of a skater at a point after her gun is
  her passage there. A later read (a duplicate, the second ankle, a chip resting at the
  mat) changes nothing; an earlier read arriving late replaces the passage. So the
  state is a function of the set of reads, never of their arrival order, and a late
  read needs no replay (unlike a pair race, where a read's place depends on the reads
  before it).
* Each timing point keeps its passages in a list sorted by (race time, bib): a passing
  is one bisect and one insert, and its event says where (``at``) and the rank there
  (skaters strictly faster, plus one). The classification is never sent: it follows
  from those lists (:meth:`MarathonRace.classification`; the pages do the same).
* A missed read is a visible gap (``None`` at that point); the skater still ranks at
  the points she was read at.
* DNF, DNS and DQ (officials' decisions) take a skater out of every point's ranking
  (a revision); her passages stay on record. ``manual_time`` keys in a passage at a
  point (``m``: its metres; the finish if absent); it overrides the reads there.
* A read faster than ``max_speed_mps`` from the gun to that point is no passage.
"""
from __future__ import annotations

import bisect
from typing import Any, ClassVar

from icetime.messages import Decision, FinishTime, Gun
from icetime.timefmt import to_thousandths

from .model import (
    NOT_PASSED,
    InputError,
    RaceEvent,
    RaceInput,
    RoutedGun,
    RoutedPassing,
    Run,
    Skater,
)
from .race import GUN, PASSING, LogEntry, RaceBase

KIND = "marathon"
STATUSES = {"dnf": "DNF", "dns": "DNS", "dq": "DQ"}


class MarathonRace(RaceBase):
    """One marathon. Feed routed inputs with :meth:`feed`; read :meth:`view`."""

    status_actions: ClassVar[dict[str, str]] = STATUSES
    name: str

    # ------------------------------------------------------------------ setup
    def configure(self, spec: dict[str, Any], skaters: dict[str, Skater]) -> None:
        self.kind = KIND
        self.name = str(spec.get("name") or spec["id"])
        course = spec["course"]
        self.points = [str(p["point"]) for p in course]
        self.point_m = [int(p["m"]) for p in course]
        self.point_k = {p: k for k, p in enumerate(self.points)}
        self.distance = self.point_m[-1] - self.point_m[0]
        # The earliest plausible race time at each point (µs): its metres at max speed.
        self.min_us = [int((m - self.point_m[0]) / self.max_speed_mps * 1e6)
                       for m in self.point_m]
        self.waves = {int(w["wave"]): [str(b) for b in w["skaters"]] for w in spec["waves"]}
        self.wave_names = {int(w["wave"]): w.get("name") for w in spec["waves"]}
        bibs = [b for w in sorted(self.waves) for b in self.waves[w]]
        self._require_known(bibs, skaters)
        self._set_competitors(bibs, [skaters[b] for b in bibs])
        self.row_of = self.row
        self.wave_of = [w for w in sorted(self.waves) for _ in self.waves[w]]
        self.teams: dict[str, list[str]] = {}
        self.members: dict[str, Skater] = {}
        self.world_cup = None
        self.season: str | None = None
        self._skaters_view = {
            s.bib: {"bib": s.bib, "name": s.name, "short": s.short, "nation": s.nation,
                    "club": s.club, "wave": w}
            for s, w in zip(self.skaters, self.wave_of, strict=True)}
        self.checkpoints = []
        self._reset()

    def _reset(self) -> None:
        self._reset_results(len(self.points))
        #: wave -> its run (the latest gun of the wave applied).
        self.runs: dict[int, Run] = {}
        #: In a replay: wave -> common-clock µs of its latest gun in the log.
        self.last_gun: dict[int, int] = {}
        #: (row, point) -> a manual time (race µs), in force over every read there.
        self.manual: dict[tuple[int, int], int] = {}
        #: Per point, (race time µs, bib) of every ranked passage, sorted.
        self.order: list[list[tuple[int, str]]] = [[] for _ in self.points]
        #: The same bibs, in the same order, as the view shows them.
        self.order_bibs: list[list[str]] = [[] for _ in self.points]
        #: Per row, per point: the race time (µs) shown; None: no passage there.
        self.times: list[list[int | None]] = [[None] * len(self.points) for _ in self.bibs]
        #: Per row: the furthest point read (-1: none yet).
        self.reached = [-1] * len(self.bibs)
        #: bib -> the result entry shown (skaters with a passage or a status).
        self.shown: dict[str, dict[str, Any]] = {}
        self.n_started = 0
        self.n_status = 0

    def starters(self, gun: Gun) -> list[str]:
        """The skaters of the wave a gun names."""
        return list(self._wave(gun))

    def can_call(self, pair: int | None) -> bool:
        return False  # a marathon's guns name their wave

    def _wave(self, gun: Gun) -> list[str]:
        if gun.wave is None or gun.wave not in self.waves:
            given = "" if gun.wave is None else f", not {gun.wave}"
            raise InputError(f"race {self.id}: wave: a marathon gun names one of its waves "
                             f"({', '.join(map(str, sorted(self.waves)))}){given}")
        return self.waves[gun.wave]

    # ------------------------------------------------------------------ input
    def _feed(self, input_id: str, inp: RaceInput) -> list[RaceEvent]:
        """Reads and guns are applied as they arrive, whatever their time (the state is
        a function of the set of reads: no reordering, no replay); the rest as in
        every race."""
        n = self.arrivals
        if type(inp) is RoutedPassing:
            self.arrivals = n + 1
            passing = inp.passing
            self.log.append(((inp.t, PASSING, str(passing.point), str(passing.transponder), n),
                             input_id, inp))
            return self._on_passing(input_id, inp, emit=True)
        if type(inp) is RoutedGun:
            self._wave(inp.gun)  # refused before it enters the log
            self.arrivals = n + 1
            self.log.append(((inp.t, GUN, "", "", n), input_id, inp))
            return self._step(input_id, inp)
        if type(inp) is FinishTime:
            raise InputError(f"race {self.id}: a marathon is timed at its timing points "
                             "(a manual_time decision keys in a passage)")
        if type(inp) is Decision and inp.action == "restart":
            raise InputError(f"race {self.id}: a wave starts again with a new gun")
        return super()._feed(input_id, inp)

    def _prepare(self, entries: list[LogEntry]) -> None:
        """Before a replay: each wave's latest gun, and the manual times (they hold
        over every read at their point, whenever they arrived; of two at one point, the
        one keyed last: ``officials.Officials._overruled``)."""
        voided, _ = self._live(entries)
        for _, iid, inp in entries:
            if iid in voided:
                continue
            if type(inp) is RoutedGun and inp.gun.wave is not None:
                self.last_gun[inp.gun.wave] = max(self.last_gun.get(inp.gun.wave, inp.t), inp.t)
            elif type(inp) is Decision and inp.action == "manual_time" \
                    and inp.time_us is not None:
                self.manual[(self._row(inp.bib), self._point_of(inp.m))] = \
                    to_thousandths(inp.time_us)

    def _restart_reason(self, gun: Gun) -> str | None:
        """A second gun of a wave that has passages starts it again: a revision."""
        wave = gun.wave
        if wave in self.runs and any(self.reached[self.row[b]] >= 0 for b in self._wave(gun)):
            return f"wave {wave} started again"
        return None

    def _on_gun(self, input_id: str, routed: RoutedGun) -> list[RaceEvent]:
        wave = routed.gun.wave
        assert wave is not None  # _feed refused a gun without one
        run = self.runs.get(wave)
        if (run is not None and routed.t <= run.zero_us) \
                or routed.t < self.last_gun.get(wave, routed.t):
            return []  # not the wave's latest gun
        self.runs[wave] = Run.from_gun(routed, 1)
        self.last_gun[wave] = routed.t
        if self.replaying:
            return []
        return [{"type": "wave_start", "race": self.id, "input": input_id, "wave": wave,
                 "run": self._run_view(wave), "counts": self.counts()}]

    def _on_passing(self, input_id: str, routed: RoutedPassing, emit: bool) -> list[RaceEvent]:
        row = self.row.get(routed.bib)
        k = self.point_k.get(str(routed.passing.point))
        if row is None or k is None:
            return []
        run = self.runs.get(self.wave_of[row])
        if run is None or routed.t < run.zero_us:
            return []  # before the wave's gun (a chip by the start mat, a restarted wave)
        t = run.race_time(routed.t)
        if t < self.min_us[k] or t >= self.t[row, k] or (row, k) in self.manual:
            return []  # too fast to be true; or no earlier than the passage there
        return self._place(input_id, row, k, t, "transponder", emit)

    def _place(self, input_id: str, row: int, k: int, t: int, origin: str, emit: bool
               ) -> list[RaceEvent]:
        """Make ``t`` (race µs) ``row``'s passage at point ``k``, replacing any later one."""
        bib = self.bibs[row]
        old = int(self.t[row, k])
        self.t[row, k] = t
        self.times[row][k] = t
        if origin == "manual":
            self._show(row)
            self.shown[bib]["manual"] = sorted({*self.shown[bib]["manual"], k})
        if self.reached[row] < 0:
            self.n_started += 1
        self.reached[row] = max(self.reached[row], k)
        self._show(row)
        at = rank = None
        if self.status[row] is None:
            order, names = self.order[k], self.order_bibs[k]
            if old != NOT_PASSED:
                gone = bisect.bisect_left(order, (old, bib))
                del order[gone], names[gone]
            at = bisect.bisect_left(order, (t, bib))
            order.insert(at, (t, bib))
            names.insert(at, bib)
            rank = bisect.bisect_left(order, (t, "")) + 1
        if not emit or self.replaying:
            return []
        entry = {"k": k, "point": self.points[k], "m": self.point_m[k], "t": t}
        return [{"type": "course_passage", "race": self.id, "input": input_id, "bib": bib,
                 "row": entry, "rank": rank, "at": at, "counts": self.counts()}]

    def _show(self, row: int) -> None:
        bib = self.bibs[row]
        if bib not in self.shown:
            self.shown[bib] = {"t": self.times[row], "status": self.status[row], "manual": []}

    def _point_of(self, m: int | None) -> int:
        """The timing point at ``m`` metres along the course (None: the finish)."""
        if m is None:
            return len(self.points) - 1
        if m not in self.point_m:
            raise InputError(f"race {self.id}: no timing point at {m} m "
                             f"(the course has {', '.join(map(str, self.point_m))})")
        return self.point_m.index(m)

    # ------------------------------------------------------------------ decisions
    def _set_status(self, row: int, status: str | None) -> None:
        self.status[row] = status
        self.n_status = sum(1 for s in self.status if s is not None)  # rare: a decision
        if status is not None:
            self._show(row)
            self.shown[self.bibs[row]]["status"] = status

    def _apply(self, input_id: str, inp: RaceInput, emit: bool) -> list[RaceEvent]:
        """A manual time is keyed in here (it names a timing point by its metres); the
        rest as in every race."""
        if type(inp) is Decision and inp.action == "manual_time" and inp.time_us is not None:
            k = self._point_of(inp.m)
            t = to_thousandths(inp.time_us)
            row = self._row(inp.bib)
            self.manual[(row, k)] = t
            self._place(input_id, row, k, t, "manual", emit=False)
            return []
        return super()._apply(input_id, inp, emit)

    def _restart(self, decision: Decision) -> None:
        raise InputError(f"race {self.id}: a wave starts again with a new gun")

    # ------------------------------------------------------------------ output
    def counts(self) -> dict[str, Any]:
        """The live count: started, per point, finished, waves started, with a status."""
        passed = [len(o) for o in self.order]
        return {"started": self.n_started, "passed": passed, "finished": passed[-1],
                "waves": len(self.runs),
                "status": self.n_status}

    def _run_view(self, wave: int) -> dict[str, Any] | None:
        run = self.runs.get(wave)
        return None if run is None else {"clock_origin_us": run.clock_origin_us,
                                         "rate": run.rate}

    def classification(self) -> dict[str, list[Any]]:
        """Every ranked skater with a passage, columnar: finishers by time, then the
        others by the furthest point reached, and by their time there. ``point`` is
        that point's name; ``behind`` is to the first at that point. Ranks are shared
        by equal times at the same point. Costs one pass over the passages."""
        out: dict[str, list[Any]] = {"bib": [], "rank": [], "t": [], "behind": [],
                                     "point": []}
        for k in range(len(self.points) - 1, -1, -1):
            order = self.order[k]
            first = order[0][0] if order else 0
            prev: tuple[int, int] | None = None
            for t, bib in order:
                if self.reached[self.row[bib]] != k:
                    continue
                n = len(out["bib"]) + 1
                rank = out["rank"][-1] if prev == (k, t) else n
                prev = (k, t)
                out["bib"].append(bib)
                out["rank"].append(rank)
                out["t"].append(t)
                out["behind"].append(t - first)
                out["point"].append(self.points[k])
        return out

    def view(self) -> dict[str, Any]:
        return {
            "race": {"id": self.id, "name": self.name, "kind": self.kind,
                     "distance": self.distance,
                     "course": [{"point": p, "m": m}
                                for p, m in zip(self.points, self.point_m, strict=True)],
                     "official": self.is_official},
            "skaters": self._skaters_view,
            "waves": {str(w): {"wave": w, "name": self.wave_names[w], "size": len(bibs),
                               "run": self._run_view(w)}
                      for w, bibs in sorted(self.waves.items())},
            "results": dict(self.shown),
            "order": [list(names) for names in self.order_bibs],
            "counts": self.counts(),
            "stories": list(self.story_log),
            "revision": self.revision,
        }
