"""Long-track races: pairs against the clock, ranked on time (DOMAIN.md §1), and the
team events raced in pairs of teams (§3).

One ``LongTrackRace`` per distance, fed its routed inputs by ``competition.Competition``;
what it shares with the pack engine (the input log, revisions, official times,
decisions) is in ``race.RaceBase``; how reads become passages, with their ranks and
gaps, is in ``pairpassages.PairPassages``.
"""
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from icetime.messages import Decision, FinishTime, Gun
from icetime.timefmt import to_thousandths

from . import stories
from .classification import TimeClassification
from .distances import LAP_M, min_segment_us, passages
from .loops import LoopSplits
from .model import (
    NOT_PASSED,
    InputError,
    RaceEvent,
    RaceInput,
    RoutedGun,
    RoutedPassing,
    Run,
    Skater,
    req_time,
)
from .pairpassages import PairPassages
from .pairs import Draw, read_pairs
from .race import SLOWEST, Key, LogEntry

#: Team events (DOMAIN.md §3), raced in pairs of teams, and how many of a team's skaters
#: must cross for its passage: the team pursuit is timed on the third skater; in the
#: team sprint and the mixed relay the team's time is the one skater finishing.
TEAM_KINDS = {"team_pursuit": 3, "team_sprint": 1, "mixed_relay": 1}


class LongTrackRace(PairPassages):
    """One long-track distance: pairs of skaters (or of teams, in a team event) against
    the clock, ranked on time.

    State lives in preallocated arrays of shape (skaters, passages); a passing
    updates one cell and reads one column.
    """

    status_actions: ClassVar[dict[str, str]] = {"dq": "DQ", "dns": "DNS", "dnf": "DNF"}
    retells: ClassVar[bool] = True
    times_intermediate: ClassVar[bool] = True

    def __init__(self, spec: dict[str, Any], skaters: dict[str, Skater], max_speed_mps: float,
                 loops: dict[str, int] | None = None):
        #: Extra loops in the ice: point id -> metres past the finish line along the lap.
        self.loops = dict(loops or {})
        super().__init__(spec, skaters, max_speed_mps)

    # ------------------------------------------------------------------ setup
    def configure(self, spec: dict[str, Any], skaters: dict[str, Skater]) -> None:
        self.name = str(spec.get("name", self.id))
        self.kind = str(spec.get("kind", "long_track_individual"))
        self.season: str | None = spec.get("season")
        self.world_cup: dict[str, Any] | None = spec.get("world_cup")
        # Team events race pairs of teams: a team is one row, and a passage is done
        # when `need` of its skaters have crossed (team pursuit: the third).
        self.need = TEAM_KINDS.get(self.kind, 1)
        self.teams: dict[str, list[str]] = {}
        self.members: dict[str, Skater] = {}
        if self.kind in TEAM_KINDS:
            # The pairs name teams: they race as the competitors.
            competitors = self._read_teams(spec.get("teams", []), skaters)
            skaters = {**skaters, **{t.bib: t for t in competitors}}
            spec = {**spec, "distance": int(spec["laps"]) * LAP_M}
        # The teams start on opposite straights, each timed at its own line: the
        # timing point of each line (one loop for both works too: the other line
        # comes half a lap round, inside the minimum-lap debounce).
        lines = spec.get("lines") or {}
        self.lines = {"I": str(lines.get("inner", "finish")),
                      "O": str(lines.get("outer", "finish"))}
        self.distance = int(spec["distance"])
        self.passage_m = passages(self.distance)
        self.min_seg = min_segment_us(self.passage_m, self.max_speed_mps)
        self.slowest_us = int(self.distance / self.max_speed_mps * SLOWEST * 1_000_000)
        records = spec.get("records") or {}
        self.records = {k: req_time(v) for k, v in records.items()}
        self.pairs, bibs = read_pairs(spec.get("pairs", []))
        self._require_known(bibs, skaters)
        if len(set(bibs)) != len(bibs):
            raise InputError(f"race {self.id}: a bib appears twice in the pairs")
        self._set_competitors(bibs, [skaters[b] for b in bibs])
        # The pace (µs per metre) a skater's first passage is expected at.
        nominal = 2_000_000 / self.max_speed_mps
        self.pace0 = [sk.pb[self.distance] / self.distance if self.distance in sk.pb
                      else nominal for sk in self.skaters]
        # Whose crossings count for which row: the skater's own, or her team's.
        self.row_of = dict(self.row)
        for tid, ms in self.teams.items():
            if tid in self.row:
                self.row_of.update({m: self.row[tid] for m in ms})
        draw = Draw.of(self.pairs, self.row)
        self.pair_no, self.lane_of = draw.pair_no, draw.lane_of
        self.partner_of, self.pair_rows = draw.partner_of, draw.pair_rows
        # The times a finish is compared with, per skater: records, PB, SB.
        self.checkpoints = []  # the rows may have changed: no state before fits
        self.refs = [[(f, ref) for f, ref in (
            ("WR", self.records.get("WR")), ("TR", self.records.get("TR")),
            ("PB", sk.pb.get(self.distance)), ("SB", sk.sb.get(self.distance)))
            if ref is not None] for sk in self.skaters]
        self._reset()

    def _reset(self) -> None:
        n, p = len(self.bibs), len(self.passage_m)
        self._reset_results(p)
        # Per-passage and per-skater scalars are read one at a time: plain lists
        # beat numpy scalars there. numpy keeps the columns and the classification.
        self.best: list[int] = [int(NOT_PASSED)] * p
        self.best_row: list[int] = [-1] * p
        self.next_k: list[int] = [0] * n
        self.anchor: list[int] = [0] * n
        self.splits = LoopSplits(self.loops, self.distance, self.passage_m, n)
        self.on_ice: dict[int, Run] = {}
        self._last_run: dict[int, Run] = {}
        self.attempts: dict[int, int] = {}
        self.current_pair: int | None = None
        self.cls = TimeClassification(n)  # the provisional classification
        # Team events: per team, per passage not yet made, its skaters who have crossed
        # for it (bib -> race time, µs).
        self.crossed: list[dict[int, dict[str, int]]] = [{} for _ in range(n)]

    def _save(self) -> dict[str, Any]:
        cls = self.cls
        return {**super()._save(), "best": list(self.best), "best_row": list(self.best_row),
                "next_k": list(self.next_k), "anchor": list(self.anchor),
                "splits": [dict(d) for d in self.splits.by_row],
                "on_ice": dict(self.on_ice), "last_run": dict(self._last_run),
                "attempts": dict(self.attempts), "current_pair": self.current_pair,
                "cls": (cls.t.copy(), cls.rows.copy(), cls.rank.copy(), cls.n),
                "crossed": [{k: dict(c) for k, c in cs.items()} for cs in self.crossed]}

    def _load(self, state: dict[str, Any]) -> None:
        super()._load(state)
        self.best, self.best_row = list(state["best"]), list(state["best_row"])
        self.next_k, self.anchor = list(state["next_k"]), list(state["anchor"])
        self.splits.by_row = [dict(d) for d in state["splits"]]
        self.on_ice, self._last_run = dict(state["on_ice"]), dict(state["last_run"])
        self.attempts, self.current_pair = dict(state["attempts"]), state["current_pair"]
        t, rows, rank, n = state["cls"]
        self.cls.t, self.cls.rows, self.cls.rank, self.cls.n = t.copy(), rows.copy(), rank.copy(), n
        self.crossed = [{k: dict(c) for k, c in cs.items()} for cs in state["crossed"]]

    # ------------------------------------------------------------------ input
    def _restart_reason(self, gun: Gun) -> str | None:
        rows = self.pair_rows.get(self._gun_pair(gun), [])
        if any(self.next_k[r] > 0 for r in rows):
            return f"restart of pair {gun.pair}"
        return None

    def starters(self, gun: Gun) -> list[str]:
        """The skaters a gun starts: its pair (in a team event, both teams' skaters)."""
        bibs = [self.bibs[r] for r in self.pair_rows.get(self._gun_pair(gun), ())]
        return [m for b in bibs for m in self.teams.get(b, [b])]

    def _gun_pair(self, gun: Gun) -> int:
        if gun.pair is None:
            raise InputError(f"race {self.id}: a gun for a pair race must name the pair")
        return gun.pair

    def can_call(self, pair: int | None) -> bool:
        return pair in self.pair_rows

    def _check_gun(self, routed: RoutedGun) -> None:
        """Refuse a gun for a pair not on the start list, and one earlier than its pair's
        latest gun (no void undoes): in race-time order that gun comes after it and times
        the pair from then on, so this one would start an attempt that gun voids."""
        pair = self._gun_pair(routed.gun)
        if pair not in self.pair_rows:
            raise InputError(f"race {self.id}: no pair {pair}")
        later = [(k[0], iid) for k, iid, g in self._live_guns()
                 if type(g) is RoutedGun and g.gun.pair == pair and k[0] > routed.t]
        if not later:
            return
        t, iid = max(later)
        raise InputError(
            f"race {self.id}: this gun is {(t - routed.t) / 1e6:.3f} s before pair {pair}'s "
            f"latest gun ({iid}), which starts the pair again after it: a gun restarts what "
            "came before it, so this one would start an attempt that gun voids; if this one "
            "is the real start, void that gun first")

    def _check_restart(self, decision: Decision) -> None:
        """Refuse a ``restart`` of a pair with no run to void: no gun yet, or restarted
        already and no new gun yet (it would change nothing)."""
        if decision.pair is None:
            raise InputError(f"race {self.id}: a restart in a pair race names the pair")
        pair = decision.pair
        if pair not in self.pair_rows:
            raise InputError(f"race {self.id}: no pair {pair}")
        if pair in self._last_run:
            return
        if any(type(g) is RoutedGun and g.gun.pair == pair for _, _, g in self._live_guns()):
            raise InputError(f"race {self.id}: pair {pair} was restarted already and has no "
                             "new gun yet: this restart would change nothing")
        raise InputError(f"race {self.id}: pair {pair} has no gun yet: there is no attempt "
                         "to restart")

    def _on_passing(self, input_id: str, routed: RoutedPassing, emit: bool) -> list[RaceEvent]:
        row = self.row_of.get(routed.bib)
        if row is None:  # the bib left the start list since
            return []
        point = str(routed.passing.point)
        line = self.lines[self.lane_of[row]] if self.teams else "finish"
        if point != line:
            if point in self.lines.values():
                return []  # the other team's line, half a lap round
            return self._on_split(input_id, row, routed.t, point, emit)
        if self._in_field(routed.bib, routed.t):
            return []  # the chip never left the field (a skater down on the line)
        if self.need > 1:
            return self._on_team_crossing(input_id, row, routed.bib, routed.t, emit)
        if not self.teams:
            return self._on_crossing(input_id, row, routed.t, emit)
        k = self.next_k[row]
        events = self._on_crossing(input_id, row, routed.t, emit)
        entry = self.rows[row][k] if k < len(self.passage_m) else None
        if self.next_k[row] == k + 1 and entry is not None:
            entry["skaters"] = {routed.bib: entry["t"]}  # who skated the lap
        return events

    def _on_gun(self, input_id: str, routed: RoutedGun) -> list[RaceEvent]:
        pair = self._gun_pair(routed.gun)
        rows = self.pair_rows.get(pair)
        if rows is None:
            raise InputError(f"race {self.id}: no pair {pair}")
        if any(self.next_k[r] > 0 for r in rows):
            # A second gun for a pair that already skated is a restart: the
            # earlier attempt stays in the log but no longer counts.
            self._clear_rows(rows)
        attempt = self.attempts.get(pair, 0) + 1
        self.attempts[pair] = attempt
        run = Run.from_gun(routed, attempt, pair)
        self.on_ice[pair] = run
        self.plausible_until = min(r.zero_us for r in self.on_ice.values()) + self.slowest_us
        self._last_run[pair] = run
        self.current_pair = pair
        for r in rows:
            if self.status[r] != "DNS":
                self.anchor[r] = 0
        return [{"type": "pair_start", "race": self.id, "input": input_id, "pair": pair,
                 **run.public(), "bibs": [self.bibs[r] for r in rows]}]

    def _run_of(self, row: int) -> Run | None:
        return self._last_run.get(self.pair_no[row])

    def _implausible(self, routed: RoutedPassing) -> str | None:
        """A read at a finish line later after the gun than the whole distance takes at
        ``max_speed_mps`` / ``SLOWEST``, for a skater who has passages to go."""
        row = self.row_of.get(routed.bib)
        if row is None:
            return None
        run = self.on_ice.get(self.pair_no[row])
        if run is None or routed.t - run.zero_us <= self.slowest_us \
                or self.next_k[row] >= len(self.passage_m):
            return None
        return (f"{(routed.t - run.zero_us) / 1e6:.3f} s after the gun: a {self.distance} m "
                f"takes at most {self.slowest_us // 1_000_000} s")

    def _official_at(self, inp: RaceInput) -> int | None:
        """A manual time or a photo-finish time stands for the instant its skater's run
        reached it: the run's gun plus the time (common clock, µs). InputError when her
        pair has no run (no gun yet, or restarted and no new gun yet): a time counts
        from its pair's gun, and one keyed in before it names the wrong skater (or
        waits for a gun still to come: it is keyed in again once the gun is in)."""
        if type(inp) is Decision and inp.action == "restart":
            self._check_restart(inp)  # here: refused before it is logged, never in a replay
            return None
        if type(inp) is Decision and inp.action == "manual_time" and inp.time_us is not None:
            bib, time_us = inp.bib, inp.time_us
        elif type(inp) is FinishTime:
            bib, time_us = inp.bib, inp.time_us
        else:
            return None
        row = self._row(bib)
        run = self._last_run.get(self.pair_no[row])
        if run is None:
            raise InputError(f"race {self.id}: pair {self.pair_no[row]} of bib {bib} has no "
                             "gun yet: an official time counts from its pair's gun")
        return run.zero_us + to_thousandths(time_us)

    def _attempt_voided(self, live: list[LogEntry], times: list[LogEntry]) -> set[str]:
        """The official ``times`` of a pair's attempt that a restart voided: a live
        ``restart`` of its pair keyed after it, or a live gun of its pair later than
        the gun it counts from (its key is that gun plus the time: :meth:`_official_at`)."""
        restarts = [(k[4], inp.pair) for k, _, inp in live
                    if type(inp) is Decision and inp.action == "restart"]
        guns = [(inp.gun.pair, inp.t) for _, _, inp in live if type(inp) is RoutedGun]
        out = set()
        for key, iid, inp in times:
            if not isinstance(inp, FinishTime | Decision):
                continue  # for the type: only official times come here
            row, time_us = self._row_or_none(inp.bib), inp.time_us
            if row is None or time_us is None:
                continue
            pair, zero = self.pair_no[row], key[0] - to_thousandths(time_us)
            if any(p == pair and n > key[4] for n, p in restarts) \
                    or any(p == pair and t > zero for p, t in guns):
                out.add(iid)
        return out

    def _restarted_by(self, key: Key, restart: Decision) -> tuple[str, RoutedGun] | None:
        for k, iid, gun in self._live_guns():
            if type(gun) is RoutedGun and gun.gun.pair == restart.pair and k > key:
                return iid, gun
        return None

    def _manual_finish(self, inp: RaceInput) -> bool:
        return type(inp) is Decision and inp.action == "manual_time" \
            and inp.m in (None, self.passage_m[-1])

    def _revision_lines(self, reason: str, before: dict[str, list[Any]]) -> list[str]:
        """What a correction changed in the classification: who moved, to which rank."""
        after = self.classification()
        old = dict(zip(before["bib"], before["rank"], strict=True))
        moved = [(self.skaters[self.row[b]].short, r, old.get(b))
                 for b, r in zip(after["bib"], after["rank"], strict=True) if old.get(b) != r]
        gone = [self.skaters[self.row[b]].short for b in old if b not in after["bib"]]
        return stories.corrected(reason, moved, gone) if moved or gone else []

    def _official_final(self, input_id: str, row: int, time_us: int, emit: bool
                        ) -> list[RaceEvent]:
        """An official finish time for a skater with no final, who started: it is her
        final, with no transponder read at all; recorded here unless the time that
        counts (of higher precedence) is later: then at its own place."""
        pair = self.pair_no[row]
        if self.final[row] is not None or self.status[row] is not None \
                or pair not in self._last_run or self.official[row][1] > to_thousandths(time_us):
            return []
        t, _ = self._official_finish(row, 0)
        return self._record(input_id, row, len(self.passage_m) - 1, t, emit)

    def _clear_rows(self, rows: list[int]) -> None:
        for r in rows:
            self.t[r, :] = NOT_PASSED
            self.next_k[r] = 0
            self.anchor[r] = 0
            self.rows[r] = [None] * len(self.passage_m)
            self.splits.clear(r)
            self.final[r] = None
            self.crossed[r] = {}
        self._rebuild_bests()

    def _rebuild_bests(self) -> None:
        """Recompute per-passage bests and the classification after rows left the race."""
        best = self.t.min(axis=0)
        self.best = best.tolist()
        self.best_row = np.where(best == NOT_PASSED, -1, self.t.argmin(axis=0)).tolist()
        ok = np.array([self.final[r] is not None and self.status[r] is None
                       for r in range(len(self.bibs))], bool)
        rows = np.flatnonzero(ok)
        self.cls.rebuild(rows, self.t[rows, len(self.passage_m) - 1])

    def _set_status(self, row: int, status: str | None) -> None:
        self.status[row] = status
        self._rebuild_bests()
        if status is not None:
            self._pair_done(self.pair_no[row])

    def _manual_time(self, input_id: str, row: int, time_us: int, m: int | None) -> None:
        """A time keyed in by an official (decision ``input_id``): at the finish (or at
        passage ``m``, metres); the passage is then the decision's."""
        k = self._passage_k(m)
        t, origin = to_thousandths(time_us), "manual"
        if k == len(self.passage_m) - 1:
            # A fact of the whole race (_manual_finish): in place before the reads, so a
            # finish read earlier than the time that counts made no finish.
            self._set_official(row, "manual", t)
            if self.official[row][1] > t:
                return  # a later official time counts: its own place records it
            t, origin = self._official_finish(row, t)
        if self.t[row, k] != NOT_PASSED:
            self.t[row, k] = t
            self.rows[row][k] = {**(self.rows[row][k] or {}), "t": t, "input": input_id}
            final = self.final[row]
            if k == len(self.passage_m) - 1 and final is not None:
                self.final[row] = {**final, "t": t, "origin": origin}
            self._rebuild_bests()
        elif self.status[row] is None:
            # A skater with a status has no passages to record (as for her reads); in a
            # replay the status is in place before her manual time comes again.
            self._record(input_id, row, k, t, emit=False)
        entry = self.rows[row][k]
        if k < len(self.passage_m) - 1 and entry is not None:
            # The finish's origin is the final's; an intermediate passage says its own,
            # so a result sheet can tell a keyed-in time from a read.
            self.rows[row][k] = {**entry, "origin": "manual"}

    def _intermediate(self, m: int | None) -> int | None:
        if m is None or m not in self.passage_m[:-1]:
            return None
        return self.passage_m.index(m)

    def _passage_k(self, m: int | None) -> int:
        """The index of the passage at ``m`` metres (None: the finish); InputError for
        metres that are no passage of the race."""
        if m is None:
            return len(self.passage_m) - 1
        if m not in self.passage_m:
            raise InputError(f"m: {m} is not a passage of race {self.id} "
                             f"({', '.join(map(str, self.passage_m))})")
        return self.passage_m.index(m)

    def _restart(self, decision: Decision) -> None:
        if decision.pair is None:
            raise InputError(f"race {self.id}: a restart in a pair race names the pair")
        pair = decision.pair
        if pair not in self.pair_rows:
            raise InputError(f"race {self.id}: no pair {pair}")
        self._clear_rows(self.pair_rows[pair])
        self.on_ice.pop(pair, None)
        # The voided run times nothing more (its late reads, an official time keyed in
        # before the next gun).
        self._last_run.pop(pair, None)

    # ------------------------------------------------------------------ output
    def classification(self) -> dict[str, list[Any]]:
        """The provisional classification, columnar: equal thousandths share a rank."""
        return self.cls.columns(self.bib_arr)

    def view(self) -> dict[str, Any]:
        """The whole race as clients hold it (see docs/protocol.md, "The race view")."""
        return {
            "race": {"id": self.id, "name": self.name, "kind": self.kind,
                     "distance": self.distance, "passages": self.passage_m,
                     "records": self.records, "official": self.is_official},
            "skaters": {s.bib: s.public(self.distance) for s in self.skaters},
            **self._teams_view(),
            "pairs": [{"pair": p, "inner": i, "outer": o} for p, i, o in self.pairs],
            "current_pair": self.current_pair,
            "on_ice": {str(p): {"pair": r.pair, **r.public()} for p, r in self.on_ice.items()},
            "results": self._results_view([self.splits.listed(i) for i in range(len(self.bibs))]),
            "classification": self.classification(),
            "stories": list(self.story_log),
            "held": list(self.held_reads),
            "in_field": self.lying(),
            "revision": self.revision,
        }
