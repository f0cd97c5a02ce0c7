"""Pack races: everyone starts together and the order is what counts.

Short-track individual distances and the long-track mass start (DOMAIN.md §2, §4).
Sans-I/O and deterministic like the long-track engine: one race, fed its inputs in
log order, emits events; corrections replay the race's own input log and publish a
``revision`` with the whole view.

* Every finish-line crossing is a passage. The order at a passage is the order in
  which the skaters crossed that line; the order of the race is by crossings made,
  then by who made the last one first. Laps to go follow the leader; the bell rings
  when the leader starts the last lap.
* The finish order is the order of the final crossing, unless photo-finish (or beam,
  or manual) times are given: they decide, and arriving late they revise the result.
* A skater who has not crossed for ``STOPPED_AFTER_LAPS`` of the lap just skated by
  someone else has stopped (a fall); crossing again clears it.
* Mass start: the first three across the line at each intermediate sprint and the
  first six at the finish score the season's sprint points; the ranking is DOMAIN.md §2's.
  The sprints and the breakaways are read in massstart.py; what every race shares
  (input log, revisions, official times, decisions) is ``race.RaceBase``.
* A second gun (or an official ``restart``) voids the attempt, which stays on record.
* A crossing's event carries what it changed (the crossing competitor's move in the
  order, her place in the classification), not the race-wide state. The order, each
  line's crossing times and the classification are kept sorted from crossing to
  crossing (bisection and one list shift), and rebuilt from the arrays after a reset,
  a checkpoint load, a status or an official's time: no sort per passing.
"""
from __future__ import annotations

import bisect
import math
from typing import Any, ClassVar

import numpy as np

from icetime.messages import Decision, Gun
from icetime.rules import Rules

from . import stories
from .massstart import SprintsAndBreakaways
from .model import NOT_PASSED, InputError, RaceEvent, RoutedGun, RoutedPassing, Run, Skater
from .race import DWELL_US, LEAVE_US, RESTART, SLOWEST, Key, LogEntry

KINDS = ("short_track", "mass_start", "short_track_relay")
#: Relays: the warning shot with this many laps to go (DOMAIN.md §4).
WARNING_LAPS = 3
#: No crossing for this many laps (of the lap just skated by someone else): stopped.
STOPPED_AFTER_LAPS = 2.0
#: The same, judged at a finish: the race has to end.
STOPPED_AT_FINISH_LAPS = 1.5
#: Mass start: the first this many across the finish line are 1-2-3, whatever their points.
PODIUM = 3
#: Sanctions and results that take a skater out of the ranking (ADV advances them).
EXCLUDED = ("PEN", "YC", "RC", "DNF", "DNS", "DQ")
SANCTIONS = {"pen": "PEN", "yc": "YC", "rc": "RC", "adv": "ADV",
             "dnf": "DNF", "dns": "DNS", "dq": "DQ"}


class PackRace(SprintsAndBreakaways):
    """One pack race. Feed its inputs with :meth:`feed`; read the state with :meth:`view`."""

    status_actions: ClassVar[dict[str, str]] = SANCTIONS

    def __init__(self, spec: dict[str, Any], skaters: dict[str, Skater], rules: Rules,
                 max_speed_mps: float) -> None:
        self.rules = rules
        super().__init__(spec, skaters, max_speed_mps)

    # ------------------------------------------------------------------ setup
    def configure(self, spec: dict[str, Any], skaters: dict[str, Skater]) -> None:
        self.kind = str(spec["kind"])
        if self.kind not in KINDS:
            raise InputError(f"race {self.id}: kind must be one of {', '.join(KINDS)}")
        self.name = str(spec.get("name", self.id))
        self.round = spec.get("round")
        if self.kind == "short_track":
            self.distance = int(spec["distance"])
            laps = self.rules.short_track_laps(self.distance)
            lap_m = self.rules.short_track_lap_m
        elif self.kind == "short_track_relay":
            self.distance = int(spec["distance"])
            laps = self.rules.relay_laps(self.distance)
            lap_m = self.rules.short_track_lap_m
        else:
            laps = float(spec.get("laps", self.rules.mass_start_laps))
            lap_m = self.rules.mass_start_lap_m
            self.distance = int(spec.get("distance") or round(laps * lap_m))
        self.laps, self.lap_m = laps, lap_m
        self.n_cross = math.ceil(laps)
        # The start line sits this fraction of a lap before the first crossing.
        first = laps - math.floor(laps) or 1.0
        self.cross_m = [round((first + k) * lap_m, 2) for k in range(self.n_cross)]
        # The minimum-lap debounce, and the start blanking: the first crossing needs
        # at least the first segment at max_speed_mps (a 1000 m starts just behind the
        # finish line, so the crossing right after the gun is not a lap).
        first_us = int(first * lap_m / self.max_speed_mps * 1e6)
        lap_us = int(lap_m / self.max_speed_mps * 1e6)
        self.min_seg = [first_us] + [lap_us] * (self.n_cross - 1)
        self.undo_dwells = self.kind == "short_track_relay"
        self.slowest_us = int(self.distance / self.max_speed_mps * SLOWEST * 1_000_000)
        # A relay's competitors are its teams: each team is one row, and a crossing by
        # any of its skaters (only the active one is on the track) is the team's.
        self.teams: dict[str, list[str]] = {}
        self.members: dict[str, Skater] = {}
        if self.kind == "short_track_relay":
            competitors = self._read_teams(spec.get("teams", []), skaters)
            bibs = list(self.teams)
        else:
            bibs = [str(b) for b in spec.get("skaters", [])]
            self._require_known(bibs, skaters)
            competitors = [skaters[b] for b in bibs]
        self._set_competitors(bibs, competitors)
        # Whose crossings count for which row: the skater's own, or her team's.
        self.row_of = dict(self.row) if not self.teams else {
            m: self.row[tid] for tid, ms in self.teams.items() for m in ms}
        self.season = spec.get("season")
        self.world_cup: dict[str, Any] | None = spec.get("world_cup")
        self._configure_sprints(spec)
        self.checkpoints = []  # the rows may have changed: no state before fits
        self._reset()

    def _reset(self) -> None:
        n = len(self.bibs)
        self._reset_results(self.n_cross)
        self.crossings = np.zeros(n, np.int64)   # crossings made
        self.lead = 0  # the most crossings anyone made: crossings.max(), kept
        self.last = np.zeros(n, np.int64)   # race time of the last crossing
        self.excluded = np.zeros(n, bool)      # mirrors status in EXCLUDED, for numpy
        self.stopped = np.zeros(n, bool)
        self.final_t = np.full(n, NOT_PASSED, np.int64)  # mirrors final[i]["t"]
        self.index = np.arange(n)
        self.sprint_points = [0] * n
        self.sprints: list[dict[str, Any]] = []
        self.run: Run | None = None
        self.attempt = 0
        self.voided: list[dict[str, Any]] = []
        self.breakaway: dict[str, Any] | None = None
        self.bell = False
        self.warning = False
        self.active: list[str | None] = [None] * n  # relays: the skater on the track
        self.exchanges = [0] * n
        self.late_exchange: list[str] = []
        #: The latest finisher's place in the classification (:meth:`_classify`), and
        #: who stopped at the latest crossing: what its event carries.
        self.ranked: dict[str, Any] | None = None
        self.now_stopped: list[str] = []
        self._forget_order()

    def _forget_order(self) -> None:
        """Drop the kept order and classification: rebuilt from the arrays when next
        needed (after a reset, a checkpoint load, a status or an official's time)."""
        self.okeys: list[tuple[int, int, int, int]] | None = None
        self.okey: list[tuple[int, int, int, int]] = []
        self.by_time: list[tuple[int, int]] | None = None
        self.by_points: list[tuple[int, int, int, int]] = []
        self.times: list[list[int]] | None = None

    def _save(self) -> dict[str, Any]:
        return {**super()._save(), "crossings": self.crossings.copy(), "last": self.last.copy(),
                "excluded": self.excluded.copy(), "stopped": self.stopped.copy(),
                "final_t": self.final_t.copy(), "sprint_points": list(self.sprint_points),
                "sprints": [{**sp, "bibs": list(sp["bibs"]),
                             "sprint_points": list(sp["sprint_points"])} for sp in self.sprints],
                "run": self.run, "attempt": self.attempt, "voided": list(self.voided),
                "breakaway": self.breakaway, "bell": self.bell, "warning": self.warning,
                "active": list(self.active), "exchanges": list(self.exchanges),
                "late_exchange": list(self.late_exchange)}

    def _load(self, state: dict[str, Any]) -> None:
        super()._load(state)
        for name in ("crossings", "last", "excluded", "stopped", "final_t"):
            setattr(self, name, state[name].copy())
        self.lead = int(self.crossings.max(initial=0))
        self.sprint_points = list(state["sprint_points"])
        self.sprints = [{**sp, "bibs": list(sp["bibs"]), "sprint_points": list(sp["sprint_points"])}
                        for sp in state["sprints"]]
        self.run, self.attempt, self.voided = state["run"], state["attempt"], list(state["voided"])
        self.breakaway, self.bell = state["breakaway"], state["bell"]
        self.warning = state["warning"]
        self.active, self.exchanges = list(state["active"]), list(state["exchanges"])
        self.late_exchange = list(state["late_exchange"])
        self._forget_order()

    def starters(self, gun: Gun) -> list[str]:
        """The skaters a gun starts: everyone (in a relay, every team member)."""
        return list(self.row_of)

    def can_call(self, pair: int | None) -> bool:
        return pair is None

    # ------------------------------------------------------------------ input
    def _decision_lines(self, decision: Decision) -> list[str]:
        if decision.action in SANCTIONS:
            who = self.skaters[self._row(decision.bib)].short
            reason = None if decision.reason is None else str(decision.reason)
            return [stories.pack_sanction(who, SANCTIONS[decision.action], reason)]
        return []

    def _restart_reason(self, gun: Gun) -> str | None:
        if self.run is not None and int(self.crossings.max(initial=0)) > 0:
            return "restart"
        return None

    def _revision_lines(self, reason: str, before: dict[str, list[Any]]) -> list[str]:
        """Who moved in the classification, and to which rank."""
        after = self.classification()
        moved = [(b, r) for b, r in zip(after["bib"], after["rank"], strict=True)
                 if b not in before["bib"] or before["rank"][before["bib"].index(b)] != r]
        if moved and before["bib"]:
            names = [(self.skaters[self.row[b]].short, r) for b, r in moved]
            return [stories.pack_revised(reason, names)]
        return []

    def _implausible(self, routed: RoutedPassing) -> str | None:
        """A read later after the gun than the whole distance takes at
        ``max_speed_mps`` / ``SLOWEST``, for a skater with crossings to go."""
        row = self.row_of.get(routed.bib)
        run = self.run
        if row is None or run is None or routed.t - run.zero_us <= self.slowest_us \
                or self.crossings[row] >= self.n_cross:
            return None
        return (f"{(routed.t - run.zero_us) / 1e6:.3f} s after the gun: a {self.distance} m "
                f"takes at most {self.slowest_us // 1_000_000} s")

    def _on_passing(self, input_id: str, routed: RoutedPassing, emit: bool) -> list[RaceEvent]:
        row = self.row_of.get(routed.bib)
        if row is None or routed.passing.point != "finish":
            return []
        left = 0
        if self.run is not None and not self.excluded[row]:
            visit = self.field.get(routed.bib)
            if self._in_field(routed.bib, routed.t):
                return []  # the chip never left the field: no passage
            if self.undo_dwells and (routed.bib, routed.t) in self.dwell_starts:
                return []  # a teammate resting by the line
            if visit is not None and visit[1] - visit[0] > DWELL_US and not self.teams:
                # She lay on the line until her chip's last read there: her lap starts then.
                left = self.run.race_time(visit[1])
        return self._on_crossing(input_id, row, routed.t, emit, routed.bib, left)

    def _prepare(self, entries: list[LogEntry]) -> None:
        """Relays: the visits to the loop field, in the log, that are dwells (their first
        read is no crossing), as (member, common-clock µs of the first read)."""
        if not self.undo_dwells:
            return
        visits: dict[str, tuple[int, int]] = {}
        dwells = set()
        for _, _, inp in entries:
            if type(inp) is not RoutedPassing or inp.passing.point != "finish":
                continue
            visit = visits.get(inp.bib)
            if visit is not None and inp.t - visit[1] < LEAVE_US:
                visits[inp.bib] = (visit[0], inp.t)
                if inp.t - visit[0] > DWELL_US:
                    dwells.add((inp.bib, visit[0]))
            else:
                visits[inp.bib] = (inp.t, inp.t)
        self.dwell_starts = dwells

    def _void_attempt(self, reason: str) -> None:
        """Keep the attempt on record, then clear the ice for the next start."""
        if self.run is None:
            return
        lead = int(self.crossings.max(initial=0))
        self.voided.append({"attempt": self.run.attempt, "reason": reason,
                            "crossings": lead, "order": self._order()[:3]})
        attempt, status, voided = self.run.attempt, self.status, self.voided
        official, is_official = self.official, self.is_official
        self._reset()
        self.voided, self.attempt = voided, attempt
        # Official times and the official flag are about the race's result, whichever
        # attempt they arrived during.
        self.official, self.is_official = official, is_official
        for i, st in enumerate(status):
            self._set_status(i, st)

    def _on_gun(self, input_id: str, routed: RoutedGun) -> list[RaceEvent]:
        if self.run is not None and int(self.crossings.max(initial=0)) > 0:
            self._void_attempt("restart")
        self.attempt += 1
        self.run = Run.from_gun(routed, self.attempt)
        self.plausible_until = routed.t + self.slowest_us
        self.restart_pending = False
        return [{"type": "start", "race": self.id, "input": input_id, "attempt": self.attempt,
                 "bibs": list(self.bibs), "pack": self.pack_state()}]

    def _sorted_log(self) -> list[LogEntry]:
        """The input log in race-time order, where a restart comes right before the
        next gun: every read before that gun, however late it arrives, belongs to the
        attempt the restart voids."""
        if not self.restarts:
            return super()._sorted_log()
        guns = sorted(k[0] for k, _, inp in self.log if type(inp) is RoutedGun)

        def key(entry: LogEntry) -> Key:
            k, _, inp = entry
            if type(inp) is not Decision or inp.action != "restart":
                return k
            after = next((g for g in guns if g > k[0]), NOT_PASSED)
            return (after, RESTART, "", "", k[4])
        return sorted(self.log, key=key)

    def _manual_time(self, input_id: str, row: int, time_us: int, m: int | None) -> None:
        """A finish time keyed in by an official (a pack race times the finish only)."""
        self._set_official(row, "manual", time_us)
        final = self.final[row]
        if final is not None:
            self.final[row] = {**final, "t": self.official[row][1], "origin": "manual"}
            self.final_t[row] = self.official[row][1]
            self._forget_order()

    def _restart(self, decision: Decision) -> None:
        self._void_attempt("restart" if decision.reason is None else str(decision.reason))
        self.run = None
        self.restart_pending = True

    def _unknown_decision(self, action: str) -> InputError:
        return InputError(f"unknown decision {action!r} for a {self.kind} race")

    def _set_status(self, row: int, status: str | None) -> None:
        self.status[row] = status
        self.excluded[row] = status in EXCLUDED
        self._forget_order()

    # ------------------------------------------------------------------ crossings
    def _on_crossing(self, input_id: str, row: int, t_common: int, emit: bool,
                     skater: str, left: int = 0) -> list[RaceEvent]:
        """A read of ``skater`` (for ``row``) at common-clock ``t_common`` (µs) that may be a
        crossing; ``left``: race time (µs) her chip left the loop field after lying in
        it (0: it did not)."""
        run = self.run
        if run is None or self.excluded[row]:
            return []
        prev_k, prev = int(self.crossings[row]), int(self.last[row])
        t = run.race_time(t_common)
        k = self._crossing_of(row, t, left)
        if k is None:
            return []
        # The kept order and classification are rebuilt, if they have to be, from the
        # state before this crossing: the move it makes is measured from there.
        self._order_keys()
        self._ranked_keys()
        times = self._times_at(k)
        self.now_stopped = []
        position = 1 + bisect.bisect_left(times, t)
        first_t = times[0] if times else t
        gap_leader = t - first_t if first_t < t else 0
        self.t[row, k] = t
        bisect.insort(times, t)
        self.crossings[row] = k + 1
        self.lead = max(self.lead, k + 1)
        self.last[row] = t
        self._made_passage(skater, t_common)
        # Since her previous recorded crossing (over any missed ones).
        lap_time = t - prev
        lines: list[str] = []
        self.stopped[row] = False
        entry: dict[str, Any] = {"k": k, "lap_number": k + 1, "m": self.cross_m[k], "t": t,
                                 "input": input_id, "lap_time": lap_time, "position": position,
                                 "gap_leader": gap_leader}
        if k > prev_k:
            # The crossings between were missed: empty, and named here (metres).
            entry["missing"] = self.cross_m[prev_k:k]
        if self.teams:
            entry["skater"] = skater
            lines += self._exchange(row, k, skater)
        self.rows[row][k] = entry
        laps_to_go = self.n_cross - self.lead
        if position == 1:
            lines += self._leader_lines(row, k, laps_to_go, emit)
        if k in self.sprint_k:
            lines += self._sprint(row, k, position)
        if k and lap_time:
            # At a finish, the race is ending: a skater a lap and a half adrift by then is
            # not coming (the race must be able to end without her).
            factor = STOPPED_AT_FINISH_LAPS if k == self.n_cross - 1 else STOPPED_AFTER_LAPS
            lines += self._check_stopped(row, t, int(factor * lap_time) // (k - prev_k + 1))
        self._update_breakaway(k, row, position, lines, laps_to_go)
        finished = k == self.n_cross - 1
        if finished:
            lines += self._finish(row, t, position)
        move = self._move(row)
        if not emit:
            return []  # a replay: the state is rebuilt, the lines were told already
        self._tell(lines)
        # Replaying a late read: the stories are told, an event would be dropped.
        return [] if self.replaying else [
            self._crossing_event(input_id, row, entry, lines, move, finished)]

    def _crossing_of(self, row: int, t: int, left: int) -> int | None:
        """The crossing (index) ``row``'s read at race time ``t`` (µs) makes, or None: a
        cool-down lap, the other ankle, a re-read, the start line right by the finish."""
        k = int(self.crossings[row])
        if k >= self.n_cross:
            return None
        prev = int(self.last[row])
        if t - prev < self.min_seg[k]:
            return None
        return self._place(row, k, t, max(prev, left))

    def _place(self, row: int, k: int, t: int, since: int) -> int:
        """The crossing (index, ``k`` or later) a read at race time ``t`` (µs) is: the one
        whose expected time it is nearest. The next crossing is expected a lap
        (:meth:`_lap_us`) after ``since`` (her last crossing, or when she got up off the
        line), the first one when the field's first skater made it; each later one a
        lap after that. A read about two laps after her last crossing is the crossing
        after next: one read was missed."""
        last = self.n_cross - 1
        if k >= last:
            return k
        lap = self._lap_us(row, k)
        if k:
            expect = since + lap
        else:
            # Nobody has crossed yet: the race's first crossing (a read a lap later
            # would have the field's first crossings before it).
            first = self._times_at(0)
            if not first:
                return 0
            expect = first[0]
        if t <= expect:
            return k
        return min(k + (2 * (t - expect) + lap) // (2 * lap), last)

    def _lap_us(self, row: int, k: int) -> int:
        """The lap time (µs) ``row`` is expected to skate next, having made ``k``
        crossings: her own last lap; else the field leader's last lap; else her first
        segment's pace; else a lap at half ``max_speed_mps``."""
        tm = self.t
        if k >= 2:
            b = tm.item(row, k - 1)
            for j in range(k - 2, -1, -1):
                a = tm.item(row, j)
                if a != NOT_PASSED:
                    return max(1, (b - a) // (k - 1 - j))
        for j in range(self.lead - 1, 0, -1):
            after, before = self._times_at(j), self._times_at(j - 1)
            if after and before:
                return max(1, after[0] - before[0])
        if k == 1:
            return max(1, int(tm.item(row, 0) * self.lap_m / self.cross_m[0]))
        return int(2 * self.lap_m / self.max_speed_mps * 1_000_000)

    def _crossing_event(self, input_id: str, row: int, entry: dict[str, Any], lines: list[str],
                        move: dict[str, int], finished: bool) -> RaceEvent:
        """A ``passage`` event, or a ``finish`` with the final and her place in the
        classification (``ranked``; the whole ``classification`` when her finish moves
        another row too). Both carry what changed (:meth:`_pack_change`), not the
        race-wide state: its size does not grow with the field."""
        base: RaceEvent = {"race": self.id, "input": input_id, "bib": self.bibs[row], "row": entry,
                           "pack": self._pack_change(row, move), "stories": lines}
        if finished:
            ranked: dict[str, Any] = {"classification": self.classification()} \
                if self.ranked is None else {"ranked": self.ranked}
            return {"type": "finish", **base, "final": self.final[row], **ranked,
                    "race_done": self._done()}
        return {"type": "passage", **base}

    def _pack_change(self, row: int, move: dict[str, int]) -> dict[str, Any]:
        """What a crossing by ``row`` changed in :meth:`pack_state`: her ``move`` in the
        order (``from``, ``to``: indices, ``to`` counted after taking her out), her
        crossings made and sprint points, who stopped at it (``now_stopped``; she herself
        is no longer stopped), her relay's active skater and exchanges; the fields that
        do not grow with the field (laps to go, bell, sprints, breakaway...) whole."""
        run = self.run
        return {
            "run": None if run is None or self._done() else run.public(),
            "move": move,
            "laps_to_go": self.n_cross - self.lead,
            "bell": self.bell,
            "crossings": int(self.crossings[row]),
            "now_stopped": self.now_stopped,
            "sprint_points": self.sprint_points[row] if self.kind == "mass_start" else None,
            "sprints": self.sprints,
            "breakaway": self.breakaway,
            "attempt": self.attempt,
            "in_field": self.lying(),
            **({"warning": self.warning, "active": self.active[row],
                "exchanges": self.exchanges[row], "late_exchange": list(self.late_exchange)}
               if self.teams else {}),
        }

    def _exchange(self, row: int, k: int, skater: str) -> list[str]:
        """Who crossed for a team at crossing ``k``: a new name is an exchange since the
        last lap. Returns the story of an exchange in the last two laps."""
        lines = []
        if self.active[row] is not None and self.active[row] != skater:
            self.exchanges[row] += 1
            if k >= self.n_cross - 2 and self.bibs[row] not in self.late_exchange:
                # One skater must skate the last two laps (DOMAIN.md §4): the
                # referee's call, so it is flagged, not sanctioned.
                self.late_exchange.append(self.bibs[row])
                lines.append(stories.relay_late_exchange(self.skaters[row].short))
        self.active[row] = skater
        return lines

    def _leader_lines(self, row: int, k: int, laps_to_go: int, emit: bool) -> list[str]:
        """The leader at crossing ``k``: a new leader's story, and the relay's warning
        shot and the bell when they are due (each once)."""
        lines = []
        name = self.skaters[row].short
        if k and emit:
            before = self.t[:, k - 1]
            if self.bibs[int(np.argmin(before))] != self.bibs[row] and laps_to_go:
                lines.append(stories.pack_lead(name, laps_to_go))
        if self.teams and laps_to_go == WARNING_LAPS and not self.warning:
            self.warning = True
            lines.append(stories.relay_warning(name))
        if laps_to_go == 1 and not self.bell:
            self.bell = True
            lines.append(stories.pack_bell(name))
        return lines

    def _check_stopped(self, row: int, t: int, limit: int) -> list[str]:
        quiet = (t - self.last > limit) & ~self.stopped \
            & ~self.excluded & (self.final_t == NOT_PASSED)
        quiet[row] = False
        lines = []
        for j in np.flatnonzero(quiet).tolist():
            self.stopped[j] = True
            self.now_stopped.append(self.bibs[j])
            lines.append(stories.pack_stopped(self.skaters[j].short, int(self.crossings[j])))
        return lines

    def _finish(self, row: int, t: int, position: int) -> list[str]:
        final_t, origin = self._official_finish(row, t)
        self.final[row] = {"t": final_t, "origin": origin, "position": position}
        self.final_t[row] = final_t
        if self.kind == "mass_start" and position <= len(self.table_final):
            self.sprint_points[row] += self.table_final[position - 1]
        self.ranked = self._classify(row)
        if self.ranked is not None:
            rank: int | None = self.ranked["rank"]
        else:
            cls = self.classification()
            rank = cls["rank"][cls["bib"].index(self.bibs[row])]
        sprint_points = self.sprint_points[row] if self.kind == "mass_start" else None
        return stories.pack_finish(self.skaters[row].short, final_t, rank, sprint_points)

    def _done(self) -> bool:
        if self.run is None:
            return False
        return bool(np.all((self.final_t != NOT_PASSED) | self.stopped | self.excluded))

    # ------------------------------------------------------------------ output
    def _order(self) -> list[str]:
        """The race order now: crossings made, then who made the last one first; the
        finished by their (official) finish time; sanctioned skaters last."""
        bibs = self.bibs
        return [bibs[key[3]] for key in self._order_keys()]

    def _order_key(self, i: int) -> tuple[int, int, int, int]:
        """Row ``i``'s sort key in the race order (:meth:`_order`)."""
        final = self.final_t.item(i)
        when = final if final != NOT_PASSED else self.last.item(i)
        return (int(self.excluded.item(i)), -self.crossings.item(i), when, i)

    def _order_keys(self) -> list[tuple[int, int, int, int]]:
        """The race order as sorted keys, kept from crossing to crossing (a crossing
        moves one key: :meth:`_move`); built from the arrays when it was dropped."""
        if self.okeys is None:
            self.okey = [self._order_key(i) for i in range(len(self.bibs))]
            self.okeys = sorted(self.okey)
        return self.okeys

    def _move(self, row: int) -> dict[str, int]:
        """Take ``row``, whose crossings, last crossing or finish changed, to her new
        place in the kept order: where she was (``from``) and where she goes (``to``,
        counted after taking her out). Two bisections and a list shift: no sort."""
        keys = self._order_keys()
        at = bisect.bisect_left(keys, self.okey[row])
        del keys[at]
        new = self.okey[row] = self._order_key(row)
        to = bisect.bisect_left(keys, new)
        keys.insert(to, new)
        return {"from": at, "to": to}

    def _times_at(self, k: int) -> list[int]:
        """The race times (µs) of crossing ``k`` made so far, ascending: kept from
        crossing to crossing (a crossing adds one by bisection); built from the
        crossings table when dropped."""
        if self.times is None:
            self.times = [sorted(col[col != NOT_PASSED].tolist()) for col in self.t.T]
        return self.times[k]

    def _points_key(self, i: int) -> tuple[int, int, int, int]:
        """Finisher ``i``'s sort key behind a mass start's podium (:meth:`classification`)."""
        pts = self.sprint_points[i]
        return (0 if pts else 1, -pts, self.final_t.item(i), i)

    def _ranked_keys(self) -> list[tuple[int, int]]:
        """The classified finishers as sorted (finish time, row), kept from finish to
        finish (and, for a mass start, ``by_points``: :meth:`_points_key` sorted);
        built from the arrays when they were dropped."""
        if self.by_time is None:
            rows = np.flatnonzero((self.final_t != NOT_PASSED) & ~self.excluded).tolist()
            self.by_time = sorted((self.final_t.item(i), i) for i in rows)
            self.by_points = sorted(self._points_key(i) for i in rows)
        return self.by_time

    def _classify(self, row: int) -> dict[str, Any] | None:
        """Classify ``row``, who has just finished, in the kept classification: her
        place ``at`` (index), ``rank``, finish time ``t`` and ``behind`` the leader (µs),
        her ``sprint_points`` (mass start), and ``tied``: how many rows right behind her
        share her time, and so her rank. Every other row behind her goes down one rank;
        at ``at`` 0, everyone's ``behind`` is measured from her. None when her finish
        moves another row too (a mass start's podium taken from one who finished
        earlier, by an official time): the event then carries the whole classification."""
        by_time = self._ranked_keys()
        t = self.final_t.item(row)
        pos = bisect.bisect_left(by_time, (t, row))
        by_time.insert(pos, (t, row))
        change: dict[str, Any] = {"at": pos, "rank": pos + 1, "t": t,
                                  "behind": t - by_time[0][0], "tied": 0}
        if self.kind != "mass_start":
            # Equal times share the rank where that time starts.
            change["rank"] = bisect.bisect_left(by_time, (t, -1)) + 1
            change["tied"] = bisect.bisect_left(by_time, (t + 1, -1)) - pos - 1
            return change
        key = self._points_key(row)
        bisect.insort(self.by_points, key)
        change["sprint_points"] = self.sprint_points[row]
        if pos < PODIUM:
            # On the podium, whatever her points: another row leaves it, unless the
            # podium was not full.
            return change if len(by_time) <= PODIUM else None
        # Behind the podium by points: her place among the finishers by points, less
        # the podium's skaters ahead of her there.
        ahead = sum(1 for _, i in by_time[:PODIUM] if self._points_key(i) < key)
        at = PODIUM + bisect.bisect_left(self.by_points, key) - ahead
        change.update(at=at, rank=at + 1)
        return change

    def pack_state(self) -> dict[str, Any]:
        """The live state of the race as a whole: the view's ``pack``, and a ``start``
        event's. A crossing's event carries what it changed (:meth:`_pack_change`)."""
        lead = int(self.crossings.max(initial=0))
        run = self.run
        return {
            "run": None if run is None or self._done() else run.public(),
            "order": self._order(),
            "laps_to_go": self.n_cross - lead,
            "bell": self.bell,
            "crossings": dict(zip(self.bibs, self.crossings.tolist(), strict=True)),
            "stopped": self.bib_arr[self.stopped].tolist(),
            "sprint_points": (dict(zip(self.bibs, self.sprint_points, strict=True))
                       if self.kind == "mass_start" else None),
            "sprints": self.sprints,
            "breakaway": self.breakaway,
            "attempt": self.attempt,
            "in_field": self.lying(),
            **({"warning": self.warning,
                "active": dict(zip(self.bibs, self.active, strict=True)),
                "exchanges": dict(zip(self.bibs, self.exchanges, strict=True)),
                "late_exchange": list(self.late_exchange)}
               if self.teams else {}),
        }

    def classification(self) -> dict[str, list[Any]]:
        """Finishers only, columnar like the long-track one (plus ``sprint_points`` for a
        mass start).

        Short track: by finish time (official first); equal thousandths share a place.
        Mass start (DOMAIN.md §2): the first three across the line are 1-2-3; then by
        sprint points; those without sprint points behind, in finishing order.
        """
        rows = np.flatnonzero((self.final_t != NOT_PASSED) & ~self.excluded).tolist()
        final_t = self.final_t.tolist()

        def t_of(i: int) -> int:
            return int(final_t[i])
        rows.sort(key=lambda i: (t_of(i), i))
        if self.kind == "mass_start":
            podium, rest = rows[:PODIUM], rows[PODIUM:]
            pts = self.sprint_points
            rest.sort(key=lambda i: (0 if pts[i] else 1, -pts[i], t_of(i), i))
            rows = podium + rest
        ranks: list[int] = []
        for n, i in enumerate(rows):
            tie = (n and self.kind != "mass_start" and t_of(i) == t_of(rows[n - 1]))
            ranks.append(ranks[-1] if tie else n + 1)
        lead = t_of(rows[0]) if rows else 0
        out: dict[str, list[Any]] = {"bib": [self.bibs[i] for i in rows], "rank": ranks,
                                     "t": [t_of(i) for i in rows],
                                     "behind": [t_of(i) - lead for i in rows]}
        if self.kind == "mass_start":
            out["sprint_points"] = [self.sprint_points[i] for i in rows]
        return out

    def view(self) -> dict[str, Any]:
        return {
            "race": {"id": self.id, "name": self.name, "kind": self.kind,
                     "distance": self.distance, "laps": self.laps, "lap_m": self.lap_m,
                     "passages": self.cross_m, "round": self.round,
                     "official": self.is_official,
                     "sprint_laps": [k + 1 for k in sorted(self.sprint_k)],
                     "sprint_points_table": {"sprint": list(self.table_intermediate),
                                "final": list(self.table_final)}
                     if self.kind == "mass_start" else None},
            "skaters": {s.bib: s.public(self.distance) for s in self.skaters},
            **self._teams_view(),
            "start_order": list(self.bibs),
            "voided": list(self.voided),
            "results": self._results_view(),
            "pack": self.pack_state(),
            "classification": self.classification(),
            "stories": list(self.story_log),
            "held": list(self.held_reads),
            "revision": self.revision,
        }
