"""Long-track races: pairs against the clock, ranked on time (DOMAIN.md §1), and the
team events raced in pairs of teams (§3).

One ``LongTrackRace`` per distance, fed its routed inputs by ``competition.Competition``;
what it shares with the pack engine (the input log, revisions, official times,
decisions) is in ``race.RaceBase``.
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
from .pairs import Draw, read_pairs
from .race import SLOWEST, RaceBase

#: Team events (DOMAIN.md §3), raced in pairs of teams, and how many of a team's skaters
#: must cross for its passage: the team pursuit is timed on the third skater; in the
#: team sprint and the mixed relay the team's time is the one skater finishing.
TEAM_KINDS = {"team_pursuit": 3, "team_sprint": 1, "mixed_relay": 1}
#: Finish references a projection is compared with for a "record pace" line, best first.
PACE_FLAGS = ("WR", "TR", "PB")


class LongTrackRace(RaceBase):
    """One long-track distance: pairs of skaters (or of teams, in a team event) against
    the clock, ranked on time.

    State lives in preallocated arrays of shape (skaters, passages); a passing
    updates one cell and reads one column.
    """

    status_actions: ClassVar[dict[str, str]] = {"dq": "DQ", "dns": "DNS", "dnf": "DNF"}
    retells: ClassVar[bool] = True

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

    def _on_crossing(self, input_id: str, row: int, t_common: int, emit: bool) -> list[RaceEvent]:
        pair = self.pair_no[row]
        # A finished pair has left the ice, but a late re-read of its finish still
        # counts against its last run.
        run = self.on_ice.get(pair) or self._last_run.get(pair)
        k = self.next_k[row]
        if run is None or self.status[row] is not None:
            return []
        t = run.race_time(t_common)
        if t - self.anchor[row] < self.min_seg[min(k, len(self.passage_m) - 1)]:
            # A re-read within the debounce (the other ankle, another decoder): the
            # reads come in race-time order, so the earliest read is the one recorded.
            return []
        if k >= len(self.passage_m) or pair not in self.on_ice:
            return []
        if k < len(self.passage_m) - 1:
            k = self._place(row, k, t)
        if k == len(self.passage_m) - 1:
            if self.official.get(row, (0, 0))[1] > t:
                # A later official time stands for this finish: it is recorded at its
                # own place in the log, after the reads before it.
                return []
            t, _ = self._official_finish(row, t)
        return self._record(input_id, row, k, t, emit)

    def _place(self, row: int, k: int, t: int, t0: int | None = None) -> int:
        """The passage (index, ``k`` or later) a read at race time ``t`` (µs) is: the one
        whose expected time it is nearest, at the skater's pace so far (before her
        first passage: her personal best's pace, else half ``max_speed_mps``), from
        ``t0`` at passage ``k - 1`` (default: her last recorded passage). A read about two
        laps after the last one is the passage after next: one was missed."""
        passage_m = self.passage_m
        last = len(passage_m) - 1
        m0 = passage_m[k - 1] if k else 0
        if t0 is None:
            t0 = self.anchor[row]
        pace = t0 / m0 if k and m0 else self.pace0[row]  # µs per metre
        gap = t - t0
        while k < last:
            # Nearer this passage's expected time than the next one's: this passage.
            if 2 * gap < pace * (passage_m[k] + passage_m[k + 1] - 2 * m0):
                return k
            k += 1
        return k

    def _on_team_crossing(self, input_id: str, row: int, skater: str, t_common: int,
                          emit: bool) -> list[RaceEvent]:
        """A team pursuit skater crosses: the passage is the team's when the `need`-th
        of its skaters has crossed (the team's time is hers); the others are kept."""
        pair = self.pair_no[row]
        run = self.on_ice.get(pair)
        k = self.next_k[row]
        if run is None or self.status[row] is not None or k >= len(self.passage_m):
            return []
        t = run.race_time(t_common)
        if t - self.anchor[row] < self.min_seg[k]:
            return []  # still the last passage (a re-read, or the last skater of it)
        k = self._team_passage(row, k, t)
        crossed = self.crossed[row].setdefault(k, {})
        if skater in crossed:
            return []  # the other ankle
        crossed[skater] = t
        if len(crossed) < self.need:
            return []
        self.crossed[row] = {j: c for j, c in self.crossed[row].items() if j > k}
        if k == len(self.passage_m) - 1:
            t, _ = self._official_finish(row, t)
        events = self._record(input_id, row, k, t, emit)
        entry = self.rows[row][k]
        if entry is not None:
            entry["skaters"] = dict(crossed)
        return events

    def _team_passage(self, row: int, k: int, t: int) -> int:
        """Which passage (``k`` or later) a team skater's read at race time ``t`` (µs) is,
        by its time: a teammate's missed read leaves that passage without its time, not
        every later passage a lap out. Within the debounce of a teammate's crossing for
        a passage not yet made, it is that passage (they skate in a line); later, it is
        placed from there."""
        last = len(self.passage_m) - 1
        pending = self.crossed[row]
        if pending:
            j = max(pending)
            tj = max(pending[j].values())
            if t - tj < self.min_seg[min(j + 1, last)] or j == last:
                return j
            k, t0 = j + 1, tj
        else:
            t0 = None
        return self._place(row, k, t, t0) if k < last else k

    def _record(self, input_id: str, row: int, k: int, t: int, emit: bool) -> list[RaceEvent]:
        passage_m = self.passage_m
        last = len(passage_m) - 1
        tm = self.t
        tm[row, k] = t
        prev_k = self.next_k[row]
        # Time since the skater's previous recorded passage (over any missed ones).
        lap_time = t - self.anchor[row]
        if k >= prev_k:
            self.next_k[row] = k + 1
            self.anchor[row] = t
        else:  # a manual time for a missed passage: the later ones stand
            lap_time = t - self._recorded_before(row, k)
            self._refill_after(row, k)
        rank = 1 + int(np.count_nonzero(tm[:, k] < t))
        prev_best_row = self.best_row[k]
        prev_best = self.best[k]
        if t < prev_best:
            self.best[k] = t
            self.best_row[k] = row
        best_row = self.best_row[k]
        gap_best = t - self.best[k]
        p = self.partner_of[row]
        gap_partner = None
        if p >= 0:
            pt = tm.item(p, k)
            if pt != NOT_PASSED:
                gap_partner = t - pt
        leader = self.cls.leader()
        gap_leader = projected = None
        if leader >= 0 and leader != row and tm.item(leader, k) != NOT_PASSED:
            lt = tm.item(leader, k)
            gap_leader = t - lt
            projected = to_thousandths(tm.item(leader, last) * t // lt)
        entry = {"k": k, "m": passage_m[k], "t": t, "input": input_id, "lap_time": lap_time,
                 "rank": rank,
                 "gap_best": gap_best,
                 "best_bib": self.bibs[best_row], "gap_leader": gap_leader,
                 "leader_bib": self.bibs[leader] if leader >= 0 else None,
                 "gap_partner": gap_partner, "projected": projected if k < last else None}
        if k > prev_k:
            # The passages between were missed: empty, and named here.
            entry["missing"] = passage_m[prev_k:k]
        self.rows[row][k] = entry
        base = {"race": self.id, "input": input_id, "bib": self.bibs[row],
                "pair": self.pair_no[row], "lane": self.lane_of[row], "row": entry}
        if k < last:
            if not emit:
                return []
            name = self.skaters[row].short
            prev_name = self.skaters[prev_best_row].short if prev_best_row >= 0 else None
            margin = prev_best - t if prev_best_row >= 0 and t < prev_best else None
            pace = None
            if projected is not None:
                pace = next(((f, projected) for f, ref in self.refs[row]
                             if f in PACE_FLAGS and projected < ref), None)
            lines = stories.at_passage(
                name, passage_m[k], rank, prev_name, margin,
                self.skaters[leader].short if leader >= 0 else None, gap_leader, pace)
            self._tell(lines)
            return [{"type": "passage", **base, "stories": lines}]
        return self._finish(base, row, t, leader, emit)

    def _recorded_before(self, row: int, k: int) -> int:
        """Race time (µs) of the row's last recorded passage before passage ``k`` (0:
        the gun)."""
        col = self.t[row, :k]
        done = col[col != NOT_PASSED]
        return int(done[-1]) if len(done) else 0

    def _refill_after(self, row: int, k: int) -> None:
        """Passage ``k`` was filled late (a manual time): the next recorded passage no
        longer names it missing, and its lap time is from ``k``."""
        for j in range(k + 1, len(self.passage_m)):
            entry = self.rows[row][j]
            if entry is None:
                continue
            missing = [m for m in entry.get("missing", []) if m != self.passage_m[k]]
            entry = {**entry, "lap_time": entry["t"] - int(self.t[row, k])}
            entry.pop("missing", None)
            if missing:
                entry["missing"] = missing
            self.rows[row][j] = entry
            return

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
        reached it: the run's gun plus the time (common clock, µs); None before a run."""
        if type(inp) is Decision and inp.action == "manual_time" and inp.time_us is not None:
            bib, time_us = inp.bib, inp.time_us
        elif type(inp) is FinishTime:
            bib, time_us = inp.bib, inp.time_us
        else:
            return None
        row = self.row_of.get(str(bib))
        run = self._last_run.get(self.pair_no[row]) if row is not None else None
        return None if run is None else run.zero_us + to_thousandths(time_us)

    def _revision_lines(self, reason: str, before: dict[str, list[Any]]) -> list[str]:
        """What a correction changed in the classification: who moved, to which rank."""
        after = self.classification()
        old = dict(zip(before["bib"], before["rank"], strict=True))
        moved = [(self.skaters[self.row[b]].short, r, old.get(b))
                 for b, r in zip(after["bib"], after["rank"], strict=True) if old.get(b) != r]
        gone = [self.skaters[self.row[b]].short for b in old if b not in after["bib"]]
        return stories.corrected(reason, moved, gone) if moved or gone else []

    def _official_final(self, input_id: str, row: int, emit: bool) -> list[RaceEvent]:
        """An official finish time for a skater with no final, who started: it is her
        final, with no transponder read at all."""
        pair = self.pair_no[row]
        if self.final[row] is not None or self.status[row] is not None \
                or pair not in self._last_run:
            return []
        t, _ = self._official_finish(row, 0)
        return self._record(input_id, row, len(self.passage_m) - 1, t, emit)

    def _finish(self, base: RaceEvent, row: int, t: int, prev_leader: int, emit: bool
                ) -> list[RaceEvent]:
        cls = self.cls
        at, rank = cls.insert(row, t)
        behind = t - cls.t.item(0)
        skater = self.skaters[row]
        flags = [f for f, ref in self.refs[row] if t < ref]
        _, origin = self._official_finish(row, t)
        self.final[row] = {"t": t, "flags": flags, "origin": origin}
        done = self._pair_done(self.pair_no[row])
        if not emit:
            return []
        prev_name = self.skaters[prev_leader].short if prev_leader >= 0 else None
        margin = cls.t.item(1) - t if rank == 1 and cls.n > 1 else None
        lines = stories.at_finish(skater.short, t, rank, behind, prev_name, margin, flags,
                                  self._digits(t))
        self._tell(lines)
        if self.replaying:
            return []  # the stories told; the event would be dropped
        # Her place in the classification, not the whole of it: every row behind her
        # goes down one rank (none shares her time: she is placed after equal times).
        ranked = {"at": at, "rank": rank, "t": t, "behind": behind, "tied": 0}
        return [{"type": "finish", **base, "final": self.final[row], "ranked": ranked,
                 "pair_done": done, "stories": lines}]

    def _digits(self, t: int) -> int:
        """Decimals a finish time ``t`` (µs) is told with: 3 when another ranked time is
        equal to the hundredth but not to the thousandth (DOMAIN.md §1.4), else 2."""
        ct = self.cls.t[:self.cls.n]
        tie = (ct // 10_000 == t // 10_000) & (ct != t)
        return 3 if bool(tie.any()) else 2

    def _on_split(self, input_id: str, row: int, t_common: int, point: str,
                  emit: bool) -> list[RaceEvent]:
        """An unofficial split at an extra loop: where in the race it is, and the speed."""
        pair = self.pair_no[row]
        run = self.on_ice.get(pair) or self._last_run.get(pair)
        if run is None or self.status[row] is not None or point not in self.loops:
            return []
        t = run.race_time(t_common)
        if t <= 0:
            return []
        passed = [(self.passage_m[k], self.t.item(row, k)) for k in range(self.next_k[row])]
        entry = self.splits.cross(row, point, t, passed)
        if entry is None or not emit:
            return []
        return [{"type": "split", "race": self.id, "input": input_id, "bib": self.bibs[row],
                 "pair": pair, "lane": self.lane_of[row], "split": entry}]

    def _pair_done(self, pair: int) -> bool:
        rows = self.pair_rows[pair]
        done = all(self.final[r] is not None or self.status[r] is not None for r in rows)
        if done:
            self.on_ice.pop(pair, None)
        return done

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
        k = self.passage_m.index(m) if m is not None else len(self.passage_m) - 1
        t = to_thousandths(time_us)
        if k == len(self.passage_m) - 1:
            self._set_official(row, "manual", t)
        if self.t[row, k] != NOT_PASSED:
            self.t[row, k] = t
            self.rows[row][k] = {**(self.rows[row][k] or {}), "t": t, "input": input_id}
            final = self.final[row]
            if k == len(self.passage_m) - 1 and final is not None:
                self.final[row] = {**final, "t": t, "origin": "manual"}
            self._rebuild_bests()
        elif self.status[row] is None:
            # A skater with a status has no passages to record (as for her reads); in a
            # replay the status is in place before her manual time comes again.
            self._record(input_id, row, k, t, emit=False)

    def _restart(self, decision: Decision) -> None:
        if decision.pair is None:
            raise InputError(f"race {self.id}: a restart in a pair race names the pair")
        pair = decision.pair
        if pair not in self.pair_rows:
            raise InputError(f"race {self.id}: no pair {pair}")
        self._clear_rows(self.pair_rows[pair])
        self.on_ice.pop(pair, None)

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

