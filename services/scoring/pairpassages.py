"""How reads become passages in a pair race, and the ranks and gaps at each (DOMAIN.md
§1, team events §3): a read placed at the passage whose expected time it is nearest (a
missed read leaves its passage empty, named ``missing``); a team's passage when its
``need``-th skater crosses; at each passage the rank, the gap to the best, to the
partner and to the leader, and the projected finish; the finish, its final and its
place in the classification; unofficial splits at extra loops.

:class:`PairPassages` builds on ``race.RaceBase``; ``longtrack.LongTrackRace`` builds
on it and fills the state (``configure``, ``_reset``).
"""
from __future__ import annotations

import numpy as np

from icetime.timefmt import to_thousandths

from . import stories
from .classification import TimeClassification
from .loops import LoopSplits
from .model import NOT_PASSED, RaceEvent, Run
from .race import RaceBase

#: Finish references a projection is compared with for a "record pace" line, best first.
PACE_FLAGS = ("WR", "TR", "PB")


class PairPassages(RaceBase):
    """A pair race's passages: ``_on_crossing`` (``_on_team_crossing`` in a team event)
    takes a read at a skater's line, ``_on_split`` one at an extra loop."""

    #: Metres of every finish-line passage; per passage, the least time (µs) since the
    #: previous one (the minimum-lap debounce).
    passage_m: list[int]
    min_seg: list[int]
    #: Extra loops in the ice: point id -> metres past the finish line along the lap.
    loops: dict[str, int]
    #: Team events: how many of a team's skaters must cross for its passage; the teams
    #: (id -> its skaters' bibs; empty in an individual race).
    need: int
    teams: dict[str, list[str]]
    #: The draw, per row: pair number, lane, partner's row; and each pair's rows.
    pair_no: list[int]
    lane_of: list[str]
    partner_of: list[int]
    pair_rows: dict[int, list[int]]
    #: Per row: the pace (µs per metre) of her first passage; the times a finish is
    #: compared with (flag, µs).
    pace0: list[float]
    refs: list[list[tuple[str, int]]]
    #: Per passage: the best time (µs) and its row (-1: none yet).
    best: list[int]
    best_row: list[int]
    #: Per row: the next passage (index) and the race time (µs) of the last recorded one.
    next_k: list[int]
    anchor: list[int]
    splits: LoopSplits
    #: Runs: per pair on the ice, and each pair's latest.
    on_ice: dict[int, Run]
    _last_run: dict[int, Run]
    cls: TimeClassification
    #: Team events: per team, per passage not yet made, its skaters who have crossed.
    crossed: list[dict[int, dict[str, int]]]

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
        counts = self._time_that_counts(row, k, t, run)
        if counts is None:
            return []
        return self._record(input_id, row, k, counts, emit)

    def _time_that_counts(self, row: int, k: int, t: int, run: Run) -> int | None:
        """The race time (µs) passage ``k`` of ``row`` is recorded at for a read at race
        time ``t`` of ``run``: the official finish time at the finish, else ``t``; None
        when a later official time (of this run) stands for the passage: it is recorded
        at its own place in the log, after the reads before it, so its lap time, rank
        and gaps are those of the time that counts."""
        if k == len(self.passage_m) - 1:
            if self.official.get(row, (0, 0))[1] > t:
                return None
            return self._official_finish(row, t)[0]
        official = self.passage_official.get((row, k))
        if official is not None and official[0] == run.zero_us and official[1] > t:
            return None
        return t

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
        counts = self._time_that_counts(row, k, t, run)
        if counts is None:
            return []
        events = self._record(input_id, row, k, counts, emit)
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
        leader, gap_leader, projected = self._to_leader(row, k, t, gap_partner)
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

    def _to_leader(self, row: int, k: int, t: int, gap_partner: int | None
                   ) -> tuple[int, int | None, int | None]:
        """Passage ``k`` of ``row`` at race time ``t`` (µs) against the leader: its row
        (-1: none), the gap (µs; None for the leader itself or without one) and the
        projected finish (µs, from the leader's finish; None without one). The leader is
        the provisional one; in a team event before any team has finished, the pair's
        team across this lap first (the partner, when ``gap_partner`` says it crossed
        first, else ``row`` itself), so the gap between the teams shows at every lap."""
        tm = self.t
        leader = self.cls.leader()
        if leader >= 0 and leader != row and tm.item(leader, k) != NOT_PASSED:
            lt = tm.item(leader, k)
            projected = to_thousandths(tm.item(leader, len(self.passage_m) - 1) * t // lt)
            return leader, t - lt, projected
        if leader < 0 and self.teams:
            if gap_partner is None:
                return row, None, None
            return self.partner_of[row], gap_partner, None
        return leader, None, None

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
