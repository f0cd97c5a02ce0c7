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
  first six at the finish score the season's sprint points, the finish's by the finish
  times that count (photo finish, manual), as the ranking goes; the ranking is DOMAIN.md
  §2's.
  The sprints and the breakaways are read in massstart.py, the crossings in
  packcrossings.py, the order and classification in packorder.py; what every race
  shares (input log, revisions, official times, decisions) is ``race.RaceBase``.
* A second gun (or an official ``restart``) voids the attempt, which stays on record.
* A crossing's event carries what it changed (the crossing competitor's move in the
  order, her place in the classification), not the race-wide state. The order, each
  line's crossing times and the classification are kept sorted from crossing to
  crossing (bisection and one list shift), and rebuilt from the arrays after a reset,
  a checkpoint load, a status or an official's time: no sort per passing.
"""
from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from icetime.messages import Decision, FinishTime, Gun
from icetime.rules import Rules

from . import stories
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
from .packcrossings import PackCrossings
from .race import DWELL_US, LEAVE_US, RESTART, SLOWEST, Key, LogEntry
from .racestate import key_of

KINDS = ("short_track", "mass_start", "short_track_relay")
#: Sanctions and results that take a skater out of the ranking (ADV advances them).
EXCLUDED = ("PEN", "YC", "RC", "DNF", "DNS", "DQ")
SANCTIONS = {"pen": "PEN", "yc": "YC", "rc": "RC", "adv": "ADV",
             "dnf": "DNF", "dns": "DNS", "dq": "DQ"}


class PackRace(PackCrossings):
    """One pack race. Feed its inputs with :meth:`feed`; read the state with :meth:`view`."""

    status_actions: ClassVar[dict[str, str]] = SANCTIONS

    def __init__(self, spec: dict[str, Any], skaters: dict[str, Skater], rules: Rules,
                 max_speed_mps: float) -> None:
        self.rules = rules
        super().__init__(spec, skaters, max_speed_mps)

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
        self.scored: list[int] = []
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
        self.refinished: list[int] = []
        self.moved_points: list[int] = []
        self.now_stopped: list[str] = []
        self._forget_order()

    def _save(self) -> dict[str, Any]:
        return {**super()._save(), "crossings": self.crossings.copy(), "last": self.last.copy(),
                "excluded": self.excluded.copy(), "stopped": self.stopped.copy(),
                "final_t": self.final_t.copy(), "sprint_points": list(self.sprint_points),
                "scored": list(self.scored),
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
        self.sprint_points, self.scored = list(state["sprint_points"]), list(state["scored"])
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

    def _run_of(self, row: int) -> Run | None:
        return self.run

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
        # The official flag is about the race's result, whichever attempt it came in.
        # The official times kept are those a replay put in place, which a restart
        # voids the attempt's of (_attempt_voided); the next gun takes the log's again.
        self.official, self.is_official = official, is_official
        for i, st in enumerate(status):
            self._set_status(i, st)

    def _attempt_voided(self, live: list[LogEntry], times: list[LogEntry]) -> set[str]:
        """The official ``times`` of an attempt that a restart voided: a live ``restart``
        keyed after the time, or a live gun after the race's first that sorts after it
        (a pack race's official time sits where it arrived: :meth:`_sorted_log`)."""
        restarts = [k[4] for k, _, inp in live
                    if type(inp) is Decision and inp.action == "restart"]
        guns = sorted(k for k, _, inp in live if type(inp) is RoutedGun)[1:]
        return {iid for key, iid, _ in times
                if any(n > key[4] for n in restarts) or any(g > key for g in guns)}

    def _restarted_by(self, key: Key, restart: Decision) -> tuple[str, RoutedGun] | None:
        for k, iid, gun in self._live_guns():
            if type(gun) is RoutedGun and k[0] > key[0]:
                return iid, gun  # a restart sorts right before the next gun
        return None

    def _check_gun(self, routed: RoutedGun) -> None:
        """Refuse a gun earlier than the race's latest gun (no void undoes): in race-time
        order that gun comes after it and restarts whatever it starts once a lap is
        made, so it could never start the attempt that counts."""
        later = [(k[0], iid) for k, iid, _ in self._live_guns() if k[0] > routed.t]
        if later:
            t, iid = max(later)
            raise InputError(
                f"race {self.id}: this gun is {(t - routed.t) / 1e6:.3f} s before the race's "
                f"latest gun ({iid}), which starts the race again after it: a gun restarts "
                "what came before it, so this one would start an attempt that gun voids; if "
                "this one is the real start, void that gun first")

    def _official_at(self, inp: RaceInput) -> int | None:
        """A pack race's official time takes its place where it arrives (None); InputError
        while the race has no run (no gun yet, or restarted and no new gun yet), as in a
        pair race: a time counts from the race's gun, and one keyed in before it would
        count for nothing."""
        if self.run is None and (type(inp) is FinishTime or (
                type(inp) is Decision and inp.action == "manual_time")):
            raise InputError(f"race {self.id}: bib {inp.bib} has no gun yet: an official "
                             "time counts from the race's gun")
        return None

    def _on_gun(self, input_id: str, routed: RoutedGun) -> list[RaceEvent]:
        if self.run is not None and int(self.crossings.max(initial=0)) > 0:
            self._void_attempt("restart")
        self.attempt += 1
        if self.attempt > 1:
            # A new attempt: the official times of the log so far that count for it
            # (none of the voided attempts'; in a replay, the later ones already).
            _, live = self._live(sorted(self.log, key=key_of))
            self.official = {}
            self._put_official_times(live)
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
        """A finish time keyed in by an official (a pack race times the finish only:
        InputError for ``m`` other than the finish's metres)."""
        if m is not None and m != self.distance:
            raise InputError(f"race {self.id}: a pack race times its finish only (m: {m}; "
                             f"the finish is {self.distance})")
        self._set_official(row, "manual", time_us)
        final = self.final[row]
        if final is not None:
            self.final[row] = {**final, "t": self.official[row][1], "origin": "manual"}
            self.final_t[row] = self.official[row][1]
            self._forget_order()
            self._finish_rows()
            if self.kind == "mass_start":
                self._score_finish(None)

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

    # ------------------------------------------------------------------ output
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
