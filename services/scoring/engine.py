"""The scoring engine: sans-I/O, deterministic, numpy state per race.

Contract
--------
``Competition.feed(input_id, input)`` takes one raw input (a dict as ingest
stored it, see docs/protocol.md) and returns ``{race_id: [event, ...]}``.
``Competition.view(race_id)`` returns the race view that the events build up:
applying every event of a race, in order, to an empty view gives exactly
``view(race_id)`` (``icetime.view.apply_event`` is that fold).

* No clock reads, no I/O: the same inputs in the same order give the same
  events, so a restarted worker that replays the raw log rebuilds identical
  state. Feeding an ``input_id`` twice is a no-op (idempotent).
* Times are integer µs. Race times are truncated to thousandths when recorded,
  since thousandths are what decide ranks (DOMAIN.md §1.4) and what is published.
* Corrections (official decisions, a late photo-finish time, a changed start
  list) never patch state: the race replays its own input log and publishes a
  ``revision`` carrying the whole recomputed view.
"""
from __future__ import annotations

import bisect
from collections import Counter
from typing import Any

import numpy as np

from icetime.rules import Rules
from icetime.rules import load as load_rules

from . import rounds, standings, stories
from .distances import LAP_M, min_segment_us, passages
from .model import (
    FINISH_PRECEDENCE,
    NOT_PASSED,
    Event,
    InputError,
    PairRun,
    RaceBase,
    Skater,
    req_time,
)
from .pack import KINDS as PACK_KINDS
from .pack import PackRace

#: Team events (DOMAIN.md §3), raced in pairs of teams, and how many of a team's skaters
#: must cross for its passage: the team pursuit is timed on the third skater; in the
#: team sprint and the mixed relay the team's time is the one skater finishing.
TEAM_KINDS = {"team_pursuit": 3, "team_sprint": 1, "mixed_relay": 1}
#: Finish references a projection is compared with for a "record pace" line, best first.
PACE_FLAGS = ("WR", "TR", "PB")


class LongTrackRace(RaceBase):
    """One long-track individual distance: pairs against the clock, ranked on time.

    State lives in preallocated arrays of shape (skaters, passages); a passing
    updates one cell and reads one column.
    """

    def __init__(self, spec: dict[str, Any], skaters: dict[str, Skater], max_speed_mps: float,
                 loops: dict[str, int] | None = None):
        self.id = str(spec["id"])
        self.revision = 0
        self.log: list[tuple[str, dict[str, Any]]] = []
        # Lines already told stay told: a revision replays results, not the commentary.
        self.story_log: list[str] = []
        self.max_speed_mps = max_speed_mps
        #: Extra loops in the ice: point id -> metres past the finish line along the lap.
        self.loops = dict(loops or {})
        self.configure(spec, skaters)

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
        self.points = passages(self.distance)
        self.min_seg = min_segment_us(self.points, self.max_speed_mps)
        records = spec.get("records") or {}
        self.records = {k: req_time(v) for k, v in records.items()}
        self.pairs: list[tuple[int, str | None, str | None]] = []
        bibs: list[str] = []
        for p in spec.get("pairs", []):
            inner = str(p["inner"]) if p.get("inner") is not None else None
            outer = str(p["outer"]) if p.get("outer") is not None else None
            self.pairs.append((int(p["pair"]), inner, outer))
            bibs += [b for b in (inner, outer) if b is not None]
        missing = [b for b in bibs if b not in skaters]
        if missing:
            raise InputError(f"race {self.id}: bibs not in the start list: {missing}")
        if len(set(bibs)) != len(bibs):
            raise InputError(f"race {self.id}: a bib appears twice in the pairs")
        self.skaters = [skaters[b] for b in bibs]
        self.bibs = bibs
        self.row = {b: i for i, b in enumerate(bibs)}
        # Whose crossings count for which row: the skater's own, or her team's.
        self.row_of = dict(self.row)
        for tid, ms in self.teams.items():
            if tid in self.row:
                self.row_of.update({m: self.row[tid] for m in ms})
        self.bib_arr = np.array(bibs, dtype=object)
        n = len(bibs)
        # Per-skater scalars are read one at a time on the hot path: plain lists.
        self.pair_no: list[int] = [0] * n
        self.lane_of = [""] * n
        self.partner_of: list[int] = [-1] * n
        self.pair_rows: dict[int, list[int]] = {}
        for pair, inner, outer in self.pairs:
            rows = [self.row[b] for b in (inner, outer) if b is not None]
            self.pair_rows[pair] = rows
            for r in rows:
                self.pair_no[r] = pair
            if inner is not None:
                self.lane_of[self.row[inner]] = "I"
            if outer is not None:
                self.lane_of[self.row[outer]] = "O"
            if len(rows) == 2:
                self.partner_of[rows[0]], self.partner_of[rows[1]] = rows[1], rows[0]
        # The times a finish is compared with, per skater: records, PB, SB.
        self.refs = [[(f, ref) for f, ref in (
            ("WR", self.records.get("WR")), ("TR", self.records.get("TR")),
            ("PB", sk.pb.get(self.distance)), ("SB", sk.sb.get(self.distance)))
            if ref is not None] for sk in self.skaters]
        self._reset()

    def _reset(self) -> None:
        n, p = len(self.bibs), len(self.points)
        # Column-major: a passing compares one whole passage column, kept contiguous.
        self.t = np.full((n, p), NOT_PASSED, np.int64, order="F")
        # Per-passage and per-skater scalars are read one at a time: plain lists
        # beat numpy scalars there. numpy keeps the columns and the classification.
        self.best: list[int] = [int(NOT_PASSED)] * p
        self.best_row: list[int] = [-1] * p
        self.next_k: list[int] = [0] * n
        self.anchor: list[int] = [0] * n
        self.status: list[str | None] = [None] * n
        self.rows: list[list[dict[str, Any] | None]] = [[None] * p for _ in range(n)]
        self.splits: list[dict[int, dict[str, Any]]] = [{} for _ in range(n)]  # by race metre
        self.final: list[dict[str, Any] | None] = [None] * n
        self.official: dict[int, tuple[int, int, str]] = {}  # row -> (precedence, t, origin)
        self.on_ice: dict[int, PairRun] = {}
        self._last_run: dict[int, PairRun] = {}
        self.attempts: dict[int, int] = {}
        self.current_pair: int | None = None
        # The provisional classification: finish times ascending with their rows,
        # in arrays preallocated for every skater; the first n_cls entries count.
        self.cls_t_buf = np.empty(n, np.int64)
        self.cls_rows_buf = np.empty(n, np.int64)
        self.cls_rank_buf = np.empty(n, np.int64)
        self.n_cls = 0
        # Team events: the skaters of each team who have crossed for its next passage.
        self.crossed: list[dict[str, int]] = [{} for _ in range(n)]
        self.is_official = False  # set by an official's decision; World Cup points count

    # ------------------------------------------------------------------ input
    def feed(self, input_id: str, inp: dict[str, Any]) -> list[Event]:
        """Apply one routed input; decisions and late official times give a revision."""
        self.log.append((input_id, inp))
        kind = inp["type"]
        if kind == "decision":
            return self.recompute(input_id, f"decision: {inp['action']}")
        if kind == "finish_time":
            row = self._row(inp["bib"])
            if self.final[row] is not None:
                return self.recompute(input_id, f"official time ({inp.get('origin', 'photo')})")
        if kind == "gun":
            rows = self.pair_rows.get(int(inp["pair"]), [])
            if any(self.next_k[r] > 0 for r in rows):
                return self.recompute(input_id, f"restart of pair {inp['pair']}")
        return self._apply(input_id, inp, emit=True)

    def recompute(self, input_id: str, reason: str) -> list[Event]:
        """Replay the race's input log from scratch and describe the result as one revision."""
        self._reset()
        self._replay_log()
        self.revision += 1
        return [{"type": "revision", "race": self.id, "input": input_id, "reason": reason,
                 "view": self.view()}]

    def starters(self, inp: dict[str, Any]) -> list[str]:
        """The skaters a gun starts: its pair (in a team event, both teams' skaters)."""
        if "pair" not in inp:
            raise InputError(f"race {self.id}: a gun for a pair race must name the pair")
        bibs = [self.bibs[r] for r in self.pair_rows.get(int(inp["pair"]), ())]
        return [m for b in bibs for m in self.teams.get(b, [b])]

    def can_call(self, pair: int | None) -> bool:
        return pair in self.pair_rows

    def _apply(self, input_id: str, inp: dict[str, Any], emit: bool) -> list[Event]:
        kind = inp["type"]
        if kind == "gun":
            return self._on_gun(input_id, inp)
        if kind == "passing":
            row = self.row_of.get(inp["_bib"])
            if row is None:  # the bib left the start list since
                return []
            point = inp.get("point", "finish")
            line = self.lines[self.lane_of[row]] if self.teams else "finish"
            if point != line:
                if point in self.lines.values():
                    return []  # the other team's line, half a lap round
                return self._on_split(input_id, row, inp["_t"], point, emit)
            if self.need > 1:
                return self._on_team_crossing(input_id, row, inp["_bib"], inp["_t"], emit)
            if not self.teams:
                return self._on_passing(input_id, row, inp["_t"], emit)
            k = self.next_k[row]
            events = self._on_passing(input_id, row, inp["_t"], emit)
            entry = self.rows[row][k] if k < len(self.points) else None
            if self.next_k[row] == k + 1 and entry is not None:
                entry["skaters"] = {inp["_bib"]: entry["t"]}  # who skated the lap
            return events
        if kind == "finish_time":
            row = self._row(inp["bib"])
            origin = str(inp.get("origin", "photo"))
            t = int(inp["time_us"]) // 1000 * 1000
            prec = FINISH_PRECEDENCE.get(origin, 2)
            if row not in self.official or prec >= self.official[row][0]:
                self.official[row] = (prec, t, origin)
            return []
        if kind == "decision":
            self._on_decision(inp)
            return []
        raise InputError(f"unknown input type {kind!r}")

    def _on_gun(self, input_id: str, inp: dict[str, Any]) -> list[Event]:
        pair = int(inp["pair"])
        rows = self.pair_rows.get(pair)
        if rows is None:
            raise InputError(f"race {self.id}: no pair {pair}")
        if any(self.next_k[r] > 0 for r in rows):
            # A second gun for a pair that already skated is a restart: the
            # earlier attempt stays in the log but no longer counts.
            self._clear_rows(rows)
        attempt = self.attempts.get(pair, 0) + 1
        self.attempts[pair] = attempt
        run = PairRun(pair, int(inp["_t"]), int(inp.get("rx_us", 0)), attempt,
                      float(inp.get("rate", 1.0)))
        self.on_ice[pair] = run
        self._last_run[pair] = run
        self.current_pair = pair
        for r in rows:
            if self.status[r] != "DNS":
                self.anchor[r] = 0
        return [{"type": "pair_start", "race": self.id, "input": input_id, "pair": pair,
                 "attempt": attempt, "clock_origin_us": run.clock_origin_us, "rate": run.rate,
                 "bibs": [self.bibs[r] for r in rows]}]

    def _on_passing(self, input_id: str, row: int, t_common: int, emit: bool) -> list[Event]:
        pair = self.pair_no[row]
        # A finished pair has left the ice, but a late re-read of its finish still
        # counts against its last run.
        run = self.on_ice.get(pair) or self._last_run.get(pair)
        k = self.next_k[row]
        if run is None or self.status[row] is not None:
            return []
        t = (t_common - run.zero_us) // 1000 * 1000
        if t - self.anchor[row] < self.min_seg[min(k, len(self.points) - 1)]:
            # A re-read within the debounce: the anchor stays where it was, unless
            # it is an earlier read of the passage just recorded (the other ankle, or
            # another decoder, reporting late): then the earliest read wins.
            if k and t < self.t.item(row, k - 1) and self._transponder_timed(row, k - 1):
                if emit:
                    return self.recompute(input_id, "earlier read of a passage")
                self._unrecord(row, k - 1)
                self._record(input_id, row, k - 1, t, emit=False)
            return []
        if k >= len(self.points) or pair not in self.on_ice:
            return []
        if k == len(self.points) - 1 and row in self.official:
            t = self.official[row][1]
        return self._record(input_id, row, k, t, emit)

    def _on_team_crossing(self, input_id: str, row: int, skater: str, t_common: int,
                          emit: bool) -> list[Event]:
        """A team pursuit skater crosses: the passage is the team's when the `need`-th
        of its skaters has crossed (the team's time is hers); the others are kept."""
        pair = self.pair_no[row]
        run = self.on_ice.get(pair)
        k = self.next_k[row]
        if run is None or self.status[row] is not None or k >= len(self.points):
            return []
        t = (t_common - run.zero_us) // 1000 * 1000
        if t - self.anchor[row] < self.min_seg[k]:
            return []  # still the last passage (a re-read, or the last skater of it)
        crossed = self.crossed[row]
        if skater in crossed:
            return []  # the other ankle
        crossed[skater] = t
        if len(crossed) < self.need:
            return []
        self.crossed[row] = {}
        if k == len(self.points) - 1 and row in self.official:
            t = self.official[row][1]
        events = self._record(input_id, row, k, t, emit)
        entry = self.rows[row][k]
        if entry is not None:
            entry["skaters"] = dict(crossed)
        return events

    def _record(self, input_id: str, row: int, k: int, t: int, emit: bool) -> list[Event]:
        points = self.points
        last = len(points) - 1
        tm = self.t
        tm[row, k] = t
        self.next_k[row] = k + 1
        self.anchor[row] = t
        rank = 1 + int(np.count_nonzero(tm[:, k] < t))
        prev_best_row = self.best_row[k]
        prev_best = self.best[k]
        if t < prev_best:
            self.best[k] = t
            self.best_row[k] = row
        best_row = self.best_row[k]
        gap_best = t - self.best[k]
        prev_t = tm.item(row, k - 1) if k else 0
        lap = t - prev_t if prev_t != NOT_PASSED else t
        p = self.partner_of[row]
        gap_partner = None
        if p >= 0:
            pt = tm.item(p, k)
            if pt != NOT_PASSED:
                gap_partner = t - pt
        leader = self.cls_rows_buf.item(0) if self.n_cls else -1
        gap_leader = projected = None
        if leader >= 0 and leader != row:
            lt = tm.item(leader, k)
            gap_leader = t - lt
            projected = tm.item(leader, last) * t // lt // 1000 * 1000
        entry = {"k": k, "m": points[k], "t": t, "lap": lap, "rank": rank, "gap_best": gap_best,
                 "best_bib": self.bibs[best_row], "gap_leader": gap_leader,
                 "leader_bib": self.bibs[leader] if leader >= 0 else None,
                 "gap_partner": gap_partner, "projected": projected if k < last else None}
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
                name, points[k], rank, prev_name, margin,
                self.skaters[leader].short if leader >= 0 else None, gap_leader, pace)
            self._tell(lines)
            return [{"type": "passage", **base, "stories": lines}]
        return self._finish(base, row, t, leader, emit)

    def _finish(self, base: Event, row: int, t: int, prev_leader: int, emit: bool) -> list[Event]:
        n = self.n_cls
        ct, cr, rk = self.cls_t_buf, self.cls_rows_buf, self.cls_rank_buf
        # bisect reads log2(n) items: cheaper than searchsorted's call overhead at any n here.
        pos = bisect.bisect_right(ct, t, 0, n)
        # Insert after any equal time: shift the tail one place (numpy copes with
        # the overlap). Everything behind is strictly slower, so its rank moves down
        # by one; a tie takes the rank of the time it equals.
        ct[pos + 1:n + 1] = ct[pos:n]
        cr[pos + 1:n + 1] = cr[pos:n]
        rk[pos + 1:n + 1] = rk[pos:n] + 1
        rank = rk.item(pos - 1) if pos and ct.item(pos - 1) == t else pos + 1
        ct[pos] = t
        cr[pos] = row
        rk[pos] = rank
        self.n_cls = n = n + 1
        behind = t - ct.item(0)
        skater = self.skaters[row]
        flags = [f for f, ref in self.refs[row] if t < ref]
        official = self.official.get(row)
        self.final[row] = {"t": t, "flags": flags,
                           "origin": official[2] if official else "transponder"}
        done = self._pair_done(self.pair_no[row])
        if not emit:
            return []
        prev_name = self.skaters[prev_leader].short if prev_leader >= 0 else None
        margin = ct.item(1) - t if rank == 1 and n > 1 else None
        lines = stories.at_finish(skater.short, t, rank, behind, prev_name, margin, flags)
        self._tell(lines)
        return [{"type": "finish", **base, "final": self.final[row],
                 "classification": self.classification(), "pair_done": done, "stories": lines}]

    def _on_split(self, input_id: str, row: int, t_common: int, point: str,
                  emit: bool) -> list[Event]:
        """An unofficial split at an extra loop: where in the race it is, and the speed.

        The crossing's race metre is the loop's first crossing after the skater's last
        official passage *before this time*, so a split that arrives after a later
        finish-line passage (another decoder, another path) still lands in its place.
        """
        pair = self.pair_no[row]
        run = self.on_ice.get(pair) or self._last_run.get(pair)
        if run is None or self.status[row] is not None or point not in self.loops:
            return []
        t = (t_common - run.zero_us) // 1000 * 1000
        if t <= 0:
            return []
        start_pos = (LAP_M - self.distance % LAP_M) % LAP_M  # the start, on the lap
        m = (self.loops[point] - start_pos) % LAP_M or LAP_M
        known = [(self.points[k], self.t.item(row, k)) for k in range(self.next_k[row])]
        known += [(e["m"], e["t"]) for e in self.splits[row].values()]
        before = [(km, kt) for km, kt in known if kt < t]
        last_official = max((km for km, kt in before if km in self.points), default=0)
        while m <= last_official:
            m += LAP_M
        if m >= self.distance or m in self.splits[row]:
            return []  # past the finish, or a re-read of a split we have
        prev_m, prev_t = max(before, key=lambda x: x[1], default=(0, 0))
        speed = round((m - prev_m) / ((t - prev_t) / 1e6) * 3.6, 2) if m > prev_m else None
        entry = {"point": point, "m": m, "t": t, "speed_kmh": speed}
        self.splits[row][m] = entry
        if not emit:
            return []
        return [{"type": "split", "race": self.id, "input": input_id, "bib": self.bibs[row],
                 "pair": pair, "lane": self.lane_of[row], "split": entry}]

    def _transponder_timed(self, row: int, k: int) -> bool:
        """Whether passage k's time came from a transponder (official times stand)."""
        if k < len(self.points) - 1:
            return True
        final = self.final[row]
        return final is None or final["origin"] == "transponder"

    def _unrecord(self, row: int, k: int) -> None:
        """Take back the skater's last passage k (to record it again, corrected)."""
        self.t[row, k] = NOT_PASSED
        self.rows[row][k] = None
        self.next_k[row] = k
        self.anchor[row] = self.t.item(row, k - 1) if k else 0
        if k == len(self.points) - 1:
            self.final[row] = None
            self.on_ice.setdefault(self.pair_no[row], self._last_run[self.pair_no[row]])
        self._rebuild_bests()

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
            self.rows[r] = [None] * len(self.points)
            self.splits[r] = {}
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
        finals = self.t[rows, len(self.points) - 1]
        order = np.argsort(finals, kind="stable")
        self.n_cls = n = len(rows)
        self.cls_rows_buf[:n] = rows[order]
        ct = self.cls_t_buf[:n]
        ct[:] = finals[order]
        # Equal thousandths share a rank: each time's rank is where its value starts.
        starts = np.empty(n, bool)
        starts[:1] = True
        np.not_equal(ct[1:], ct[:-1], out=starts[1:])
        self.cls_rank_buf[:n] = np.maximum.accumulate(np.where(starts, np.arange(1, n + 1), 0))

    def _on_decision(self, inp: dict[str, Any]) -> None:
        action = inp["action"]
        if action == "void":
            return  # handled by recompute(), which skips the target input
        if action == "official":
            self.is_official = True
        elif action in ("dq", "dns", "dnf"):
            row = self._row(inp["bib"])
            self.status[row] = action.upper()
            self._rebuild_bests()
            self._pair_done(self.pair_no[row])
        elif action == "reinstate":
            self.status[self._row(inp["bib"])] = None
            self._rebuild_bests()
        elif action == "manual_time":
            row = self._row(inp["bib"])
            k = self.points.index(int(inp["m"])) if "m" in inp else len(self.points) - 1
            t = int(inp["time_us"]) // 1000 * 1000
            if k == len(self.points) - 1:
                self.official[row] = (FINISH_PRECEDENCE["manual"], t, "manual")
            if self.t[row, k] != NOT_PASSED:
                self.t[row, k] = t
                self.rows[row][k] = {**(self.rows[row][k] or {}), "t": t}
                final = self.final[row]
                if k == len(self.points) - 1 and final is not None:
                    self.final[row] = {**final, "t": t, "origin": "manual"}
                self._rebuild_bests()
            else:
                self._record("", row, k, t, emit=False)
        elif action == "restart":
            if "pair" not in inp:
                raise InputError(f"race {self.id}: a restart in a pair race names the pair")
            pair = int(inp["pair"])
            if pair not in self.pair_rows:
                raise InputError(f"race {self.id}: no pair {pair}")
            self._clear_rows(self.pair_rows[pair])
            self.on_ice.pop(pair, None)
        else:
            raise InputError(f"unknown decision {action!r}")

    # ------------------------------------------------------------------ output
    def classification(self) -> dict[str, list[Any]]:
        """The provisional classification, columnar: equal thousandths share a rank."""
        n = self.n_cls
        ct = self.cls_t_buf[:n]
        lead = ct.item(0) if n else 0
        return {"bib": self.bib_arr[self.cls_rows_buf[:n]].tolist(),
                "rank": self.cls_rank_buf[:n].tolist(),
                "t": ct.tolist(), "behind": (ct - lead).tolist()}

    def view(self) -> dict[str, Any]:
        """The whole race as clients hold it (see docs/protocol.md, "The race view")."""
        return {
            "race": {"id": self.id, "name": self.name, "kind": self.kind,
                     "distance": self.distance, "passages": self.points,
                     "records": self.records, "official": self.is_official},
            "skaters": {s.bib: s.public(self.distance) for s in self.skaters},
            **self._teams_view(),
            "pairs": [{"pair": p, "inner": i, "outer": o} for p, i, o in self.pairs],
            "current_pair": self.current_pair,
            "on_ice": {str(p): {"pair": r.pair, "attempt": r.attempt,
                                "clock_origin_us": r.clock_origin_us, "rate": r.rate}
                       for p, r in self.on_ice.items()},
            "results": {b: {"passages": self.rows[i], "final": self.final[i],
                            "status": self.status[i],
                            "splits": [self.splits[i][m] for m in sorted(self.splits[i])]}
                        for i, b in enumerate(self.bibs)},
            "classification": self.classification(),
            "stories": list(self.story_log),
            "revision": self.revision,
        }


#: Any race the competition holds: they share feed(), view(), starters() and can_call().
Race = LongTrackRace | PackRace


class Competition:
    """All races of a competition, the start list and transponder routing.

    Feed raw inputs with :meth:`feed`; read views with :meth:`view`. Counters of
    what was ignored or refused are in :attr:`stats`.
    """

    def __init__(self, source_offsets: dict[str, int] | None = None,
                 max_speed_mps: float = 20.0, loops: dict[str, int] | None = None,
                 rules: Rules | None = None) -> None:
        self.offsets = dict(source_offsets or {})
        self.rules = rules or load_rules()
        self.max_speed_mps = max_speed_mps
        self.loops = dict(loops or {})
        bad = {k: v for k, v in self.loops.items() if not 0 < v < LAP_M}
        if bad:
            raise ValueError(f"a loop must lie between 0 and {LAP_M} m past the finish line "
                             f"(the finish line itself is the official point): {bad}")
        self.skaters: dict[str, Skater] = {}
        self.by_transponder: dict[str, str] = {}
        self.lines: set[str] = set()  # team events' own timing lines
        self.events: dict[str, rounds.Event] = {}
        self.event_views: dict[str, dict[str, Any]] = {}
        self.event_revs: dict[str, int] = {}
        self.standings_before: dict[str, dict[str, int]] = {}
        self.standings: dict[str, Any] = {}
        self.standings_rev = 0
        self.races: dict[str, Race] = {}
        self.racing: dict[str, str] = {}  # bib -> race whose gun last started the bib's pair
        # (race, pair) called to the start; pair is None for a pack race
        self.called: tuple[str, int | None] | None = None
        self.seen: set[str] = set()
        self.stats: Counter[str] = Counter()
        #: Why the last refused input was refused ("<input id>: <reason>").
        self.last_error = ""

    def feed(self, input_id: str, inp: dict[str, Any]) -> dict[str, list[Event]]:
        """Apply one input; returns the events per race. Idempotent on ``input_id``."""
        if input_id in self.seen:
            self.stats["duplicate_input"] += 1
            return {}
        self.seen.add(input_id)
        try:
            out = self._route(input_id, inp)
            out = self._with_rounds(input_id, inp, out)
            out = self._with_standings(input_id, inp, out)
        except (InputError, KeyError, ValueError, TypeError) as exc:
            self.stats["refused"] += 1
            self.last_error = f"{input_id}: {exc}"
            return {}
        self.stats["applied"] += 1
        return out

    def _route(self, input_id: str, inp: dict[str, Any]) -> dict[str, list[Event]]:
        kind = inp["type"]
        if kind == "startlist":
            return self._startlist(input_id, inp)
        if kind == "clock":
            # A measured offset replaces the configured one for this source's later
            # inputs; it is in the input log, so a rebuild maps every time the same way.
            self.offsets[str(inp["source"])] = int(inp["offset_us"])
            self.stats["clock_offsets"] += 1
            return {}
        if kind == "gun" and "race" not in inp:
            if self.called is None:
                raise InputError("a gun with no race or pair, and no pair called to the start")
            called_race, called_pair = self.called
            inp = {**inp, "race": called_race,
                   **({"pair": called_pair} if called_pair is not None else {})}
            self.called = None
        if kind == "passing":
            bib = self.by_transponder.get(str(inp["transponder"]))
            if bib is None:
                self.stats["unknown_transponder"] += 1
                return {}
            point = inp.get("point", "finish")
            if point != "finish" and point not in self.loops and point not in self.lines:
                self.stats["unknown_point"] += 1
                return {}
            race_id = self.racing.get(bib)
            if race_id is None:
                self.stats["not_on_ice"] += 1
                return {}
            race = self.races[race_id]
            routed = {**inp, "_bib": bib, "_t": self._common(inp)}
            events = race.feed(input_id, routed)
            if not events:
                self.stats["passing_ignored"] += 1
            return {race_id: events} if events else {}
        named = self.races.get(str(inp.get("race")))
        if named is None:
            raise InputError(f"unknown race {inp.get('race')!r}")
        race = named
        if kind == "call":
            pair = int(inp["pair"]) if "pair" in inp else None
            if not race.can_call(pair):
                raise InputError(f"race {race.id}: cannot call pair {pair} to the start")
            self.called = (race.id, pair)
            return {}
        if kind == "gun":
            inp = {**inp, "_t": self._common(inp)}
            for bib in race.starters(inp):
                self.racing[bib] = race.id
        elif kind in ("decision", "finish_time"):
            if "bib" in inp:
                race._row(inp["bib"])  # refuse an unknown bib before it enters the log
        else:
            raise InputError(f"unknown input type {kind!r}")
        return {race.id: race.feed(input_id, inp)}

    def _common(self, inp: dict[str, Any]) -> int:
        """Map a source's time onto the common clock (per-source offset)."""
        return int(inp["t"]) + self.offsets.get(str(inp.get("source", "")), 0)

    def _startlist(self, input_id: str, inp: dict[str, Any]) -> dict[str, list[Event]]:
        skaters = {**self.skaters}
        for s in inp.get("skaters", []):
            sk = Skater.from_spec(s)
            skaters[sk.bib] = sk
        transponders = dict(self.by_transponder)
        for sk in skaters.values():
            for tr in sk.transponders:
                owner = transponders.get(tr)
                if owner is not None and owner != sk.bib:
                    raise InputError(f"transponder {tr} given to bibs {owner} and {sk.bib}")
                transponders[tr] = sk.bib
        # Validate every race before changing anything: a bad file changes nothing.
        staged = []
        for spec in inp.get("races", []):
            rid = str(spec["id"])
            probe = self._new_race(spec, skaters)
            staged.append((rid, spec, probe))
        self.skaters, self.by_transponder = skaters, transponders
        for spec in inp.get("events", []):
            if str(spec["id"]) not in self.events:
                self.events[str(spec["id"])] = rounds.Event(spec)
        if "standings_before" in inp:
            self.standings_before = {str(c): {str(b): int(p) for b, p in t.items()}
                                     for c, t in inp["standings_before"].items()}
        out: dict[str, list[Event]] = {}
        for rid, spec, probe in staged:
            race = self.races.get(rid)
            if race is None:
                self.races[rid] = race = probe
            else:
                race.configure(spec, skaters)
            out[rid] = race.recompute(input_id, "start list")
        self.lines = {line for r in self.races.values() if isinstance(r, LongTrackRace)
                      for line in r.lines.values()}
        return out

    def _names(self) -> dict[str, dict[str, Any]]:
        """Every competitor's name: skaters, and the teams of relays and team events."""
        names: dict[str, dict[str, Any]] = {
            b: {"bib": b, "name": sk.name, "short": sk.short, "nation": sk.nation}
            for b, sk in self.skaters.items()}
        for race in self.races.values():
            for tid in race.teams:
                sk = race.skaters[race.row[tid]]
                names[tid] = {"bib": tid, "name": sk.name, "short": sk.short,
                              "nation": sk.nation}
        return names

    def _with_rounds(self, input_id: str, inp: dict[str, Any],
                     out: dict[str, list[Event]]) -> dict[str, list[Event]]:
        """Rounds: when a round is official, create the next round's races; keep each
        event's ranking (a revision of ``event-<id>`` when it changes)."""
        for ev in self.events.values():
            if inp["type"] != "startlist" and not ev.race_ids() & set(out):
                continue
            for spec in ev.step(self.races):
                race = self._new_race(spec, self.skaters)
                self.races[race.id] = race
                out = {**out, race.id: race.recompute(input_id, "start list (next round)")}
            ev.rank(self.races)
            fresh = ev.view(self._names())
            if fresh != self.event_views.get(ev.id):
                self.event_views[ev.id] = fresh
                self.event_revs[ev.id] = self.event_revs.get(ev.id, 0) + 1
                vid = f"event-{ev.id}"
                out = {**out, vid: [{"type": "revision", "race": vid, "input": input_id,
                                     "reason": "rounds", "view": self.view(vid)}]}
        return out

    def _with_standings(self, input_id: str, inp: dict[str, Any],
                        out: dict[str, list[Event]]) -> dict[str, list[Event]]:
        """World Cup standings move when a cup race's official result changes."""
        touched = any(self.races[r].world_cup and self.races[r].is_official
                      for r in out if r in self.races) or any(
            r.startswith("event-") and self.events[r[6:]].world_cup for r in out)
        if not touched and inp["type"] != "startlist":
            return out
        scored: list[standings.Scored] = [*self.races.values(), *self.events.values()]
        fresh = standings.compute(scored, self.rules, self.standings_before, self._names())
        if fresh == self.standings or not (fresh["cups"] or self.standings):
            return out
        self.standings = fresh
        self.standings_rev += 1
        return {**out, standings.STANDINGS_ID: [
            {"type": "revision", "race": standings.STANDINGS_ID, "input": input_id,
             "reason": "official results", "view": self.view(standings.STANDINGS_ID)}]}

    def _new_race(self, spec: dict[str, Any], skaters: dict[str, Skater]) -> Race:
        kind = spec.get("kind", "long_track_individual")
        if kind == "long_track_individual" or kind in TEAM_KINDS:
            return LongTrackRace(spec, skaters, self.max_speed_mps, self.loops)
        if kind in PACK_KINDS:
            return PackRace(spec, skaters, self.rules, self.max_speed_mps)
        raise InputError(f"race {spec.get('id')}: unknown kind {kind!r}")

    def view(self, race_id: str) -> dict[str, Any]:
        if race_id == standings.STANDINGS_ID:
            return {**self.standings, "revision": self.standings_rev}
        if race_id.startswith("event-") and race_id[6:] in self.events:
            return {**self.event_views[race_id[6:]], "revision": self.event_revs[race_id[6:]]}
        return self.races[race_id].view()
