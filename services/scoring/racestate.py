"""What a race holds, for both race engines: its rows (skaters or teams), the input
log and where an input sorts in it (:data:`Key`), the results kept per row, and the
hooks each race kind supplies for what differs; lookups of rows and the view's shared
parts.

``officials.Officials`` (what officials' inputs do), ``retelling.Retelling``
(corrections, replays and checkpoints) and ``race.RaceBase`` (how an input enters the
race) build on :class:`RaceState` in that order; ``longtrack.LongTrackRace`` and
``pack.PackRace`` subclass ``race.RaceBase``.
"""
from __future__ import annotations

from operator import itemgetter
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from icetime.messages import Decision, Gun
from icetime.view import STORY_LOG_MAX

from .model import (
    NOT_PASSED,
    InputError,
    RaceEvent,
    RaceInput,
    RoutedGun,
    RoutedPassing,
    Run,
    Skater,
    team_skater,
)

#: Where an input sorts among the race's inputs at one common-clock instant: the
#: gun before the passings it times, and an input with no time of its own (an
#: official's decision, a photo-finish time) after both.
RESTART, GUN, PASSING, OFFICIAL = -1, 0, 1, 2
#: An input's place in race-time order: (common-clock µs, class, timing point,
#: transponder, arrival number). An official time (a manual time, a photo-finish time)
#: sits at the instant it stands for, like a read; an input with no time of its own at
#: the latest instant applied when it arrived. In race-time order the arrival number only
#: orders inputs that are otherwise equal (the same read twice), which act alike in either
#: order; it also tells which of two officials' times was keyed last, and which came
#: before a restart (``officials.Officials._overruled``).
Key = tuple[int, int, str, str, int]
#: One entry of a race's input log: its key, the input's raw stream id, the input.
LogEntry = tuple[Key, str, RaceInput]
#: Before every input.
START: Key = (-(2**63), -2, "", "", -1)
#: Reason of a revision caused by a read that landed earlier, in race time, than an
#: input the race had already applied.
LATE_READ = "late read"
#: The key of a log entry.
key_of = itemgetter(0)


class RaceState:
    """One race's state and the hooks a race kind supplies (see ``race.RaceBase``)."""

    id: str
    kind: str
    revision: int
    log: list[LogEntry]
    #: The key of the latest timed input (gun, passing) applied; START before any.
    horizon: Key
    #: Inputs fed so far (their arrival numbers).
    arrivals: int
    #: A restart voided the attempt and no gun has started the next one (pack races):
    #: a read arriving now belongs before the restart, so it is replayed into place.
    restart_pending: bool
    #: (largest key among the inputs it covers, how many inputs of the log it covers,
    #: the state then), oldest first.
    checkpoints: list[tuple[Key, int, dict[str, Any]]]
    #: Inputs between checkpoints; 0 until the race's first late read (none kept).
    check_every: int
    #: In :meth:`reorder`: stories are told again, events are not built.
    replaying: bool
    #: Restart decisions in the log (a pack race places them by the guns).
    restarts: int
    story_log: list[str]
    max_speed_mps: float
    bibs: list[str]
    skaters: list[Skater]
    row: dict[str, int]
    bib_arr: npt.NDArray[Any]
    row_of: dict[str, int]
    #: A read later than this (µs) after its gun is no passage of the race (``SLOWEST``).
    slowest_us: int
    teams: dict[str, list[str]]
    members: dict[str, Skater]
    distance: int
    #: Race time (µs) of each row at each passage; NOT_PASSED until it passes.
    t: npt.NDArray[np.int64]
    #: Per row, per passage: the row entry published (None: not passed yet).
    rows: list[list[dict[str, Any] | None]]
    status: list[str | None]
    final: list[dict[str, Any] | None]
    #: row -> (precedence, time in µs truncated to thousandths, origin)
    official: dict[int, tuple[int, int, str]]
    #: (row, index of an intermediate passage) -> (common-clock µs of the gun the time
    #: counts from, race time in µs truncated to thousandths) of the official's manual
    #: time that counts there: a fact about the whole race, in place before a replay
    #: (``officials.Officials._put_passage_times``).
    passage_official: dict[tuple[int, int], tuple[int, int]]
    is_official: bool
    world_cup: dict[str, Any] | None
    #: Decision actions that give a skater a status, and the status they give.
    status_actions: ClassVar[dict[str, str]] = {}
    #: A revision tells the race's stories again from the corrected log (the lines a
    #: correction made wrong are replaced), rather than keeping the lines already told.
    retells: ClassVar[bool] = False
    #: The race takes manual times at intermediate passages (:meth:`_intermediate`).
    times_intermediate: ClassVar[bool] = False
    #: True: every earlier correction a retelling meets replays the log fed so far, as
    #: before one-pass retellings (:meth:`_revise`). Same results, events and stories,
    #: at about k replays for the k-th correction: the tests' oracle and the bench's
    #: baseline, never set in service.
    replay_each_correction: bool = False

    def __init__(self, spec: dict[str, Any], skaters: dict[str, Skater],
                 max_speed_mps: float) -> None:
        self.id = str(spec["id"])
        self.revision = 0
        self.log = []
        self.horizon = START
        self.arrivals = 0
        self.restart_pending = False
        self.checkpoints = []
        self.check_every = 0
        self.replaying = False
        self.restarts = 0
        # Lines already told stay told: a revision replays results, not the commentary.
        self.story_log = []
        self.max_speed_mps = max_speed_mps
        #: A relay's dwells found so far: (member, common-clock µs of the visit's first
        #: read), and a reason to replay the whole race once the current input is in.
        self.dwell_starts: set[tuple[str, int]] = set()
        self.redo: str | None = None
        #: Relays: a dwell's first read is no crossing (a teammate resting by the line).
        self.undo_dwells = False
        #: Who lay in the loop field in the last event sent; a dwell read noted a change.
        self.shown_lying: list[str] = []
        self.field_changed = False
        #: Reads held as implausible, for the officials: never passages, never replayed.
        self.held_reads: list[dict[str, Any]] = []
        #: A race that ``retells``: per correcting input, the lines saying what it
        #: changed, told at its place in every later retelling.
        self.corrections: dict[str, list[str]] = {}
        #: While a race that ``retells`` feeds its log again: the whole log, whose
        #: statuses, reassigned chips, voids and official times hold from the start.
        self.facts: list[LogEntry] | None = None
        #: While a race that ``retells`` feeds its log again (else None): whether its
        #: state is the one a quiet replay of the log fed so far gives (:meth:`_revise`).
        self.as_replayed: bool | None = None
        self.configure(spec, skaters)

    # ------------------------------------------------------------------ what differs
    def configure(self, spec: dict[str, Any], skaters: dict[str, Skater]) -> None:
        """Read the race's start-list entry (again, when the start list changes)."""
        raise NotImplementedError

    def _reset(self) -> None:
        """Empty every result, ready for a replay of the input log."""
        raise NotImplementedError

    def starters(self, gun: Gun) -> list[str]:
        """The bibs of the skaters a gun starts (transponders route to them)."""
        raise NotImplementedError

    def can_call(self, pair: int | None) -> bool:
        """Whether ``pair`` (None: the whole field) can be called to the start."""
        raise NotImplementedError

    def classification(self) -> dict[str, list[Any]]:
        raise NotImplementedError

    def view(self) -> dict[str, Any]:
        raise NotImplementedError

    def _on_gun(self, input_id: str, routed: RoutedGun) -> list[RaceEvent]:
        raise NotImplementedError

    def _on_passing(self, input_id: str, routed: RoutedPassing, emit: bool) -> list[RaceEvent]:
        """A routed passing: ``routed.bib`` crossed at ``routed.t`` (common clock, µs)."""
        raise NotImplementedError

    def _prepare(self, entries: list[LogEntry]) -> None:
        """Read what a replay needs from the whole log, in race-time order (``entries``)."""

    def _implausible(self, routed: RoutedPassing) -> str | None:
        """Why a read cannot be a passage of this race (its time is far outside what
        the distance allows), or None."""
        return None

    def _run_of(self, row: int) -> Run | None:
        """The run (gun) ``row``'s times count from now, or None (no gun yet, a race
        kind that does not say)."""
        return None

    def ended_for(self, bib: str, t: int) -> bool:
        """Whether ``bib``'s run in this race was over before common-clock ``t`` (µs):
        she finished before ``t``, or ``t`` is later after her gun than the distance
        allows (``slowest_us``). False for a bib not in the race or with no run."""
        row = self.row_of.get(bib)
        run = None if row is None else self._run_of(row)
        if row is None or run is None:
            return False
        if t - run.zero_us > self.slowest_us:
            return True
        final = self.final[row]
        return final is not None and t > run.zero_us + int(final["t"])

    def _official_final(self, input_id: str, row: int, time_us: int, emit: bool
                        ) -> list[RaceEvent]:
        """An official finish time ``time_us`` (µs) has come for ``row``: the events of
        the final it makes when the row has none (a race kind that times a finish
        without a read)."""
        return []

    def _manual_finish(self, inp: RaceInput) -> bool:
        """Whether ``inp`` is a manual time for the finish that, like an official finish
        time, is a fact about the whole race (a pair race's); else it is applied where
        it stands in the log."""
        return False

    def _check_gun(self, routed: RoutedGun) -> None:
        """Raise :class:`InputError` for a gun the race refuses before it is logged."""

    def _restarted_by(self, key: Key, restart: Decision) -> tuple[str, RoutedGun] | None:
        """The live gun (id, input) that started again what the ``restart`` decision
        (logged at ``key``) voided, or None: undoing the restart would then change
        nothing (a race kind with restarts supplies it)."""
        return None

    def _intermediate(self, m: int | None) -> int | None:
        """The index of the intermediate passage at ``m`` metres, or None (the finish,
        or a race kind that times its finish only)."""
        return None

    def _restart_reason(self, gun: Gun) -> str | None:
        """Why a gun restarts what already skated (a revision), or None for a start."""
        raise NotImplementedError

    def _set_status(self, row: int, status: str | None) -> None:
        raise NotImplementedError

    def _manual_time(self, input_id: str, row: int, time_us: int, m: int | None) -> None:
        """A time keyed in by an official (decision ``input_id``): ``time_us`` at passage
        ``m`` (metres; None: the finish)."""
        raise NotImplementedError

    def _restart(self, decision: Decision) -> None:
        """An official's ``restart`` decision: the attempt no longer counts."""
        raise NotImplementedError

    def _official_at(self, inp: RaceInput) -> int | None:
        """The common-clock instant (µs) an official input stands for (a manual time at
        a passage, a photo-finish time), or None: it then takes its place at the latest
        instant applied when it arrived."""
        return None

    def _unknown_decision(self, action: str) -> InputError:
        return InputError(f"unknown decision {action!r}")

    def _decision_lines(self, decision: Decision) -> list[str]:
        """Story lines a decision tells, before its revision."""
        return []

    def _revision_lines(self, reason: str, before: dict[str, list[Any]]) -> list[str]:
        """Story lines a revision tells, given the classification before it."""
        return []

    def _reset_results(self, n_passages: int) -> None:
        """Empty what both engines keep per row: the passage times and entries, the
        status, the final, the official finish times; and the race is not official."""
        n = len(self.bibs)
        # Column-major: a passing compares one whole passage column, kept contiguous.
        self.t = np.full((n, n_passages), NOT_PASSED, np.int64, order="F")
        self.rows = [[None] * n_passages for _ in range(n)]
        self.status = [None] * n
        self.final = [None] * n
        self.official = {}
        self.passage_official = {}
        self.is_official = False  # set by an official's decision; World Cup points count
        self.restart_pending = False
        # Per chip (its skater's bib): (first, last) common-clock µs of its current visit
        # to the loop field and whether that visit made a passage; and the latest read
        # of the race, which tells who has left the field.
        self.field: dict[str, tuple[int, int, bool]] = {}
        self.now = 0
        self.dwelt = False  # some visit to the field has been a dwell
        #: Common-clock µs before which no read is implausible (a bound: a read after
        #: it is checked by :meth:`_implausible`); set by each gun.
        self.plausible_until = int(NOT_PASSED)  # a Python int: compared on every read
        #: Chips the officials reassigned (``transponder_key`` -> bib), from the
        #: ``reassign`` decisions in the log: facts about the whole race, like statuses.
        self.reassigned: dict[str, str] = {}

    # ------------------------------------------------------------------ lookups
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

    def _require_known(self, bibs: list[str], skaters: dict[str, Skater]) -> None:
        missing = [b for b in bibs if b not in skaters]
        if missing:
            raise InputError(f"race {self.id}: bibs not in the start list: {missing}")

    def _set_competitors(self, bibs: list[str], competitors: list[Skater]) -> None:
        """The race's rows: row i is ``bibs[i]``, competing as ``competitors[i]``."""
        self.bibs = bibs
        self.skaters = competitors
        self.row = {b: i for i, b in enumerate(bibs)}
        self.bib_arr = np.array(bibs, dtype=object)

    def _read_teams(self, specs: list[dict[str, Any]], skaters: dict[str, Skater]
                    ) -> list[Skater]:
        """Set ``teams`` and ``members`` from the start list's teams; return the teams
        as competitors. Every member must be in ``skaters``."""
        self.teams = {str(t["id"]): [str(b) for b in t["skaters"]] for t in specs}
        self._require_known([b for ms in self.teams.values() for b in ms], skaters)
        self.members = {b: skaters[b] for ms in self.teams.values() for b in ms}
        return [team_skater(t) for t in specs]

    # ------------------------------------------------------------------ output
    def _teams_view(self) -> dict[str, Any]:
        """The view's ``teams`` entry, when the competitors are teams."""
        if not self.teams:
            return {}
        return {"teams": {tid: {"skaters": ms,
                                "members": {m: self.members[m].public(self.distance)
                                            for m in ms}}
                          for tid, ms in self.teams.items()}}

    def _results_view(self, splits: list[list[dict[str, Any]]] | None = None
                      ) -> dict[str, dict[str, Any]]:
        """The view's ``results``: each competitor's passages, final, status, splits."""
        return {b: {"passages": self.rows[i], "final": self.final[i], "status": self.status[i],
                    "splits": splits[i] if splits is not None else []}
                for i, b in enumerate(self.bibs)}

