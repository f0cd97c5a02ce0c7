"""What both race engines share: the input log and how an input enters it, revisions,
official finish times, the decisions every race kind takes, and lookups.

``longtrack.LongTrackRace`` (pairs against the clock) and ``pack.PackRace``
(everyone starts together) are subclasses: each sets up its own state in
``configure``/``_reset`` and supplies the hooks below for what differs (a gun, a
passing, its statuses, a manual time, a restart, how it tells a revision).
"""
from __future__ import annotations

import bisect
from operator import itemgetter
from typing import Any, ClassVar, assert_never

import numpy as np
import numpy.typing as npt

from icetime.messages import Decision, FinishTime, Gun
from icetime.startlist import transponder_key
from icetime.timefmt import to_thousandths
from icetime.view import STORY_LOG_MAX

from . import stories
from .model import (
    FINISH_PRECEDENCE,
    NOT_PASSED,
    InputError,
    RaceEvent,
    RaceInput,
    RoutedGun,
    RoutedPassing,
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
#: the latest instant applied when it arrived. The arrival number only orders inputs that are
#: otherwise equal (the same read twice), which act alike in either order.
Key = tuple[int, int, str, str, int]
#: One entry of a race's input log: its key, the input's raw stream id, the input.
LogEntry = tuple[Key, str, RaceInput]
#: Before every input.
START: Key = (-(2**63), -2, "", "", -1)
#: Reason of a revision caused by a read that landed earlier, in race time, than an
#: input the race had already applied.
LATE_READ = "late read"
_key_of = itemgetter(0)
#: A chip read again sooner than this after its last read has not left the loop field:
#: the same visit, never a new passage (a skater lying on the line, a teammate resting
#: by it). A real crossing gives reads within a few hundredths of a second.
LEAVE_US = 3_000_000
#: A visit to the field longer than this is a dwell: the skater lies (or stands) in it.
DWELL_US = 2_000_000
#: Reason of the revision that shows who lies in the loop field (or that nobody does).
DWELL = "loop dwell"
#: Reason of the revision that shows a read held as implausible.
IMPLAUSIBLE = "implausible read"
#: A read later after its gun than the whole distance takes at ``max_speed_mps`` divided
#: by this is not a passage (a decoder clock days off, a stray chip): it is held for the
#: officials, never taken. 8 gives 200 s for a 500 m, 2000 s for a 5000 m.
SLOWEST = 8
#: Once a race has had a late read, it keeps a checkpoint of its state every this many
#: inputs (or one per competitor, if more: a checkpoint copies every row), so the next
#: late read replays the log from the last checkpoint before it, not from the start.
#: A race whose reads all come in order keeps none and pays nothing.
CHECK_EVERY = 16
#: Checkpoints a race keeps, the oldest dropped: a read later than all of them (rare)
#: replays the log from the start.
CHECKPOINTS_MAX = 32


class RaceBase:
    """One race, fed its routed inputs as they arrive (see ``competition.Competition``).

    :meth:`feed` applies an input and returns the events it causes; a decision, a late
    official time or a restart instead replays the race's own input log
    (:meth:`recompute`) and returns one ``revision`` event carrying the whole view.

    Every result is a function of the inputs in race-time order (:data:`Key`), never of
    their arrival order: an input later than everything applied is applied at once; a
    read that lands earlier than one already applied makes the race replay its whole
    log in race-time order, stories included (:meth:`reorder`), and publish one
    ``revision`` (reason :data:`LATE_READ`) whose view is the one the reads in time
    order would have given. An input with no time of its own (a decision, an official
    time) takes its place after every passing applied when it arrived.
    """

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
    is_official: bool
    world_cup: dict[str, Any] | None
    #: Decision actions that give a skater a status, and the status they give.
    status_actions: ClassVar[dict[str, str]] = {}
    #: A revision tells the race's stories again from the corrected log (the lines a
    #: correction made wrong are replaced), rather than keeping the lines already told.
    retells: ClassVar[bool] = False
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

    def _official_final(self, input_id: str, row: int, emit: bool) -> list[RaceEvent]:
        """An official finish time has been kept for ``row``: the events of the final it
        makes when the row has none (a race kind that times a finish without a read)."""
        return []

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

    # ------------------------------------------------------------------ input
    def feed(self, input_id: str, inp: RaceInput) -> list[RaceEvent]:
        """Apply one routed input; decisions, late official times and restarts give a
        revision, and so does a read earlier in race time than one already applied.
        Raises :class:`InputError` (or KeyError, ValueError) on an input the race cannot
        apply; the race is then as it was."""
        events = self._feed(input_id, inp)
        if self.field_changed or self.shown_lying:  # someone lies in the loop field
            events = self._lying_events(input_id, events)
        return events

    def _lying_events(self, input_id: str, events: list[RaceEvent]) -> list[RaceEvent]:
        """``events`` and, when who lies in the loop field changed and no revision among
        them shows it, one revision (reason :data:`DWELL`): rare, so a whole view."""
        self.field_changed = False
        lying = self.lying()
        if lying == self.shown_lying:
            return events
        self.shown_lying = lying
        if any(e["type"] == "revision" for e in events):
            return events
        self.revision += 1
        return [*events, {"type": "revision", "race": self.id, "input": input_id,
                          "reason": DWELL, "view": self.view()}]

    def _in_field(self, skater: str, t: int) -> bool:
        """Note a read of ``skater`` at common-clock ``t`` (µs): whether her chip is still
        in the loop field from an earlier read (read again within ``LEAVE_US``): then it
        is no passage. With ``undo_dwells``, a visit that turns out a dwell made no
        crossing: if its first read made one, the race replays without it (``redo``)."""
        if t > self.now:
            self.now = t
        visit = self.field.get(skater)
        if visit is None or t - visit[1] >= LEAVE_US:
            self.field[skater] = (t, t, False)
            return False
        first, _, made = visit
        self.field[skater] = (first, t, made)
        if t - first > DWELL_US:
            self.dwelt = True
            self.field_changed = skater not in self.shown_lying
            if made and self.undo_dwells:
                self.dwell_starts.add((skater, first))
                self.field[skater] = (first, t, False)
                self.redo = DWELL
        return True

    def _made_passage(self, skater: str, t: int) -> None:
        """The read of ``skater`` at common-clock ``t`` (µs) made a passage."""
        self.field[skater] = (t, t, True)

    def lying(self) -> list[str]:
        """Skaters (a team's members) whose chip lies in the loop field now: read over
        more than ``DWELL_US`` without leaving, and read within ``LEAVE_US`` of the
        race's latest read."""
        if not self.dwelt:
            return []  # nobody ever lay in the field: every pack event asks
        return sorted(s for s, (first, last, _) in self.field.items()
                      if last - first > DWELL_US and self.now - last < LEAVE_US)

    def _feed(self, input_id: str, inp: RaceInput) -> list[RaceEvent]:
        n = self.arrivals
        self.arrivals = n + 1
        passing = type(inp) is RoutedPassing
        key: Key
        if type(inp) is RoutedPassing:  # the hot path (ids may be numbers: str to compare)
            if inp.t > self.plausible_until:  # rare: ask the race (costs a call)
                reason = self._implausible(inp)
                if reason is not None:
                    return self._hold_implausible(input_id, inp, reason)
            key = (inp.t, PASSING, str(inp.passing.point), str(inp.passing.transponder), n)
        elif type(inp) is RoutedGun:
            key = (inp.t, GUN, "", "", n)
        else:
            at = self._official_at(inp)
            key = (self.horizon[0] if at is None else at, OFFICIAL, "", "", n)
            self.restarts += type(inp) is Decision and inp.action == "restart"
        entry = (key, input_id, inp)
        self.log.append(entry)
        told, n_told = self.story_log, len(self.story_log)
        try:
            if key < self.horizon or (self.restart_pending and passing):
                # A read, or an official time for an instant already passed: put in
                # its place, as if it had arrived then.
                return self.reorder(input_id, key, _reason(inp))
            self.horizon = key
            if type(inp) is RoutedPassing:
                events = self._on_passing(input_id, self._rerouted(inp), emit=True)
            else:
                events = self._step(input_id, inp)
            if self.redo is not None:  # what an earlier read did proved wrong
                reason, self.redo = self.redo, None
                events = self.recompute(input_id, reason)
        except (InputError, KeyError, ValueError, TypeError):
            self.redo = None
            self.corrections.pop(input_id, None)
            self.log.remove(entry)
            self.restarts -= type(inp) is Decision and inp.action == "restart"
            # Checkpoints made since may hold the refused input's effect: the next late
            # read replays from the start instead (a refusal is rare).
            self.checkpoints = []
            self._reset()
            self._replay_log()
            # The quiet replay tells nothing: the stories are those told before it.
            self.story_log = told
            del told[n_told:]
            raise
        if self.check_every:
            self._checkpoint()
        return events

    def _hold_implausible(self, input_id: str, routed: RoutedPassing, reason: str
                          ) -> list[RaceEvent]:
        """Keep a read that cannot be a passage apart, for the officials (it never
        enters the log, so no replay takes it), and show it in one revision."""
        passing = routed.passing
        self.held_reads.append({"input": input_id, "bib": routed.bib,
                                "transponder": str(passing.transponder),
                                "point": str(passing.point), "t": routed.t,
                                "reason": reason})
        self.held_reads.sort(key=itemgetter("t", "input"))
        self.revision += 1
        return [{"type": "revision", "race": self.id, "input": input_id, "reason": IMPLAUSIBLE,
                 "view": self.view()}]

    def _checkpoint(self) -> None:
        """Keep the state as it is after the whole log, when it is time to (not while a
        restart waits for its gun: its place in race-time order is not known yet)."""
        n = len(self.log)
        if n - (self.checkpoints[-1][1] if self.checkpoints else 0) >= self.check_every \
                and not self.restart_pending:
            self.checkpoints.append((self.horizon, n, self._save()))
            del self.checkpoints[:-CHECKPOINTS_MAX]

    def _save(self) -> dict[str, Any]:
        """A copy of the results both engines keep (a subclass adds its own). Row
        entries and finals are never changed once made, so the lists are copied, not
        the entries."""
        return {"t": self.t.copy(order="F"), "rows": [list(r) for r in self.rows],
                "status": list(self.status), "final": list(self.final),
                "official": dict(self.official), "is_official": self.is_official,
                "story_log": list(self.story_log), "field": dict(self.field), "now": self.now,
                "dwelt": self.dwelt, "plausible_until": self.plausible_until,
                "reassigned": dict(self.reassigned)}

    def _load(self, state: dict[str, Any]) -> None:
        """Take back a state :meth:`_save` made (it stays usable: nothing is shared)."""
        self.t = state["t"].copy(order="F")
        self.rows = [list(r) for r in state["rows"]]
        self.status, self.final = list(state["status"]), list(state["final"])
        self.official, self.is_official = dict(state["official"]), state["is_official"]
        self.story_log = list(state["story_log"])
        self.field, self.now = dict(state["field"]), state["now"]
        self.dwelt, self.plausible_until = state["dwelt"], state["plausible_until"]
        self.reassigned = dict(state["reassigned"])
        self.restart_pending = False

    def _step(self, input_id: str, inp: RaceInput) -> list[RaceEvent]:
        """Apply one input that comes last in race-time order, as it arrives."""
        # Passings first: a class pattern that fails costs more on Struct types, and
        # passings are the hot path.
        match inp:
            case RoutedPassing():
                return self._on_passing(input_id, self._rerouted(inp), emit=True)
            case Decision():
                told = self._decision_lines(inp) + self._reassign_lines(inp)
                return self._revise(input_id, inp, f"decision: {inp.action}", told)
            case FinishTime() if self.final[self._row(inp.bib)] is not None:
                return self._revise(input_id, inp, f"official time ({inp.origin})")
            case RoutedGun():
                reason = self._restart_reason(inp.gun)
                if reason is not None:
                    return self._revise(input_id, inp, reason)
        return self._apply(input_id, inp, emit=True)

    def _revise(self, input_id: str, inp: RaceInput, reason: str,
                told: list[str] | None = None) -> list[RaceEvent]:
        """A correction ``inp`` that comes last in race-time order: a revision
        (:meth:`recompute`). A retelling (:meth:`reorder` in a race that ``retells``)
        meets every earlier correction again; each once put the race where a quiet
        replay of the log fed so far puts it. With the statuses, reassigned chips and
        voids of the whole log in place from the start (:meth:`_put_facts`), the state
        already is that replay's, but for the official finish times a replay puts in
        place first: after the first replay (or with none in the log), the correction
        is applied in place, as that replay would, and its ``told`` lines told. So a
        correction costs one pass over the log (two with official times), not one per
        correction before it."""
        if self.as_replayed is None:
            return self.recompute(input_id, reason, told)
        if self.as_replayed and not self.replay_each_correction:
            self._apply(input_id, inp, emit=False)
            self.revision += 1
            self._tell(told or [])
            return []
        events = self.recompute(input_id, reason, told)
        self.as_replayed = True
        return events

    def recompute(self, input_id: str, reason: str, told: list[str] | None = None
                  ) -> list[RaceEvent]:
        """Replay the race's input log from scratch and describe the result as one
        revision; ``told`` are story lines to tell with it. A race that ``retells``
        tells its stories again from the corrected log (:meth:`reorder` from the start),
        ``told`` at the input's place in it."""
        if self.retells and not self.replaying:
            return self.reorder(input_id, START, reason)
        before = self.classification()
        self._reset()
        self._replay_log()
        self.revision += 1
        self._tell(told or [])
        if not self.retells:
            self._tell(self._revision_lines(reason, before))
        if self.replaying:
            return []  # the stories told; the view is built once, at the end
        return [{"type": "revision", "race": self.id, "input": input_id, "reason": reason,
                 "view": self.view()}]

    def reorder(self, input_id: str, late: Key, reason: str = LATE_READ) -> list[RaceEvent]:
        """An input landed earlier in race time (``late``) than an input already applied:
        feed the log again in race-time order from the last checkpoint before it, as if
        it had arrived so (events dropped, stories told, decisions revising as they
        did), and publish the result as one revision (reason ``reason``; none for a late
        read that changed nothing, as a late re-read). Costs one pass over the inputs
        after that checkpoint; and for each decision among them one more over the log
        in a race that does not retell, while a race that retells replays the log at
        most once more (:meth:`_revise`)."""
        before = self.view()
        before_cls = self.classification()
        if self.restarts:
            entries = self._sorted_log()
        else:
            # The log is in race-time order but for the late input, just appended.
            entries = self.log
            if entries:
                bisect.insort(entries, entries.pop(), key=_key_of)
        revision = self.revision
        self.check_every = max(CHECK_EVERY, len(self.bibs))
        while self.checkpoints and not self.checkpoints[-1][0] < late:
            self.checkpoints.pop()
        if self.checkpoints:
            self.horizon, n, state = self.checkpoints[-1]
            self._reset()
            self._load(state)
        else:
            self.horizon, n = START, 0
            self._reset()
            self.story_log = []
        self.log = entries[:n]
        self.replaying = True
        voided = self._put_facts(entries, from_start=n == 0)
        try:
            self._feed_again(entries[n:], voided)
        except BaseException:
            # An input refused on the way (the late one itself, say): the whole log is
            # put back for the caller, who takes the refused input out and replays it.
            self.log = entries
            raise
        finally:
            self.replaying = False
            self.facts = None
            self.as_replayed = None
        if self.retells and reason != LATE_READ:
            self._correction(input_id, reason, before_cls)
        self.revision = revision
        view = self.view()
        if view == before and reason == LATE_READ:
            return []  # a late re-read, say: nothing to tell the clients
        self.revision = view["revision"] = revision + 1
        return [{"type": "revision", "race": self.id, "input": input_id, "reason": reason,
                 "view": view}]

    def _feed_again(self, entries: list[LogEntry], voided: set[str]) -> None:
        """Feed ``entries`` (the log after the state loaded) again, in order, skipping
        the ``voided`` inputs; each correction's line is told at its place."""
        for entry in entries:
            self.log.append(entry)
            self.horizon = max(self.horizon, entry[0])
            if entry[1] in voided:
                continue
            self._step(entry[1], entry[2])
            self._tell(self.corrections.get(entry[1], []))
            self._checkpoint()
        if self.redo is not None:
            self.redo = None
            self._reset()
            self._replay_log()

    def _put_facts(self, entries: list[LogEntry], from_start: bool) -> set[str]:
        """A race that ``retells`` tells its stories from the corrected log: the facts
        about the whole race in ``entries`` (statuses, reassigned chips) are in place
        before any input is fed again, so no line tells what a correction undid. Returns
        the ids of the voided inputs (none for a race that does not retell).
        ``from_start``: the log is fed again from its first input (no checkpoint)."""
        if not self.retells:
            return set()
        self.facts = entries
        voided, live = self._live(entries)
        for row, status in self._statuses(live).items():
            self._set_status(row, status)
        self.reassigned = self._reassignments(live)
        # From the start, the state is a replay's (of no input yet) unless the replay
        # would put official finish times in place first.
        self.as_replayed = from_start and not any(type(inp) is FinishTime for _, inp in live)
        return voided

    def _live(self, entries: list[LogEntry]) -> tuple[set[str], list[tuple[str, RaceInput]]]:
        """The ids of the inputs ``entries`` void, and the others (id, input)."""
        voided = {str(i.target) for _, _, i in entries
                  if type(i) is Decision and i.action == "void"}
        return voided, [(iid, inp) for _, iid, inp in entries if iid not in voided]

    @staticmethod
    def _reassignments(live: list[tuple[str, RaceInput]]) -> dict[str, str]:
        return {transponder_key(i.transponder): str(i.bib) for _, i in live
                if type(i) is Decision and i.action == "reassign"}

    def _correction(self, input_id: str, reason: str, before: dict[str, list[Any]]) -> None:
        """Tell, and keep for every later retelling, what the correction ``input_id``
        changed in the classification (``before``: the classification before it)."""
        lines = self._revision_lines(reason, before)
        if lines:
            self.corrections[input_id] = lines
            self._tell(lines)

    def _sorted_log(self) -> list[LogEntry]:
        """The input log in race-time order."""
        return sorted(self.log, key=_key_of)

    def _apply(self, input_id: str, inp: RaceInput, emit: bool) -> list[RaceEvent]:
        """Apply one input to the state; ``emit=False`` in a replay (state only)."""
        match inp:
            case RoutedPassing():
                return self._on_passing(input_id, self._rerouted(inp), emit)
            case RoutedGun():
                return self._on_gun(input_id, inp)
            case FinishTime():
                row = self._row(inp.bib)
                self._set_official(row, inp.origin or "photo", inp.time_us)
                return self._official_final(input_id, row, emit)
            case Decision():
                self._on_decision(input_id, inp)
                return []
        assert_never(inp)

    def _replay_log(self) -> None:
        """Apply the race's own input log again in race-time order, quietly
        (emit=False), skipping voided inputs. Statuses (DQ, penalties...) and official
        finish times are facts about the whole race, whenever they arrive: they are in
        place before the passings are replayed, so a skater with a status is out of
        every rank, best and gap at every passage, and an official time replaces the
        transponder finish it stands for."""
        entries = self._sorted_log()
        self._prepare(entries)
        # In a retelling, the facts are the whole log's (see _put_facts), voids too: an
        # input voided further on in the log is no more applied here than the
        # retelling applies it, so no line after this tells what it did.
        voided, facts = self._live(entries if self.facts is None else self.facts)
        live = [(iid, inp) for _, iid, inp in entries if iid not in voided]
        for row, status in self._statuses(facts).items():
            self._set_status(row, status)
        self.reassigned = self._reassignments(facts)
        for _, inp in facts:
            if type(inp) is FinishTime:
                self._set_official(self._row(inp.bib), inp.origin or "photo", inp.time_us)
        for iid, inp in live:
            # An official time applied again where it arrived: a skater with no final
            # by then has it from there on.
            self._apply(iid, inp, emit=False)
        # Every key, official times' included: the log stays in race-time order.
        self.horizon = max((k for k, _, _ in entries), default=START)

    def _statuses(self, inputs: list[tuple[str, RaceInput]]) -> dict[int, str | None]:
        """Each row's status after the status decisions among ``inputs``, in order."""
        out: dict[int, str | None] = {}
        for _, inp in inputs:
            if type(inp) is Decision:
                if inp.action in self.status_actions:
                    out[self._row(inp.bib)] = self.status_actions[inp.action]
                elif inp.action == "reinstate":
                    out[self._row(inp.bib)] = None
        return out

    def _on_decision(self, input_id: str, decision: Decision) -> None:
        action = decision.action
        if action == "void":
            return  # handled by the replay, which skips the target input
        if action == "official":
            self.is_official = True
        elif action in self.status_actions or action in ("reinstate", "reassign"):
            return  # in place before the replay (_replay_log)
        elif action == "manual_time":
            if decision.time_us is None:  # Decision itself refuses this; for the type
                raise InputError("a manual time needs 'time_us'")
            self._manual_time(input_id, self._row(decision.bib), decision.time_us,
                              decision.m)
        elif action == "restart":
            self._restart(decision)
        else:
            raise self._unknown_decision(action)

    # ------------------------------------------------------------------ chips
    def check_reassign(self, decision: Decision) -> None:
        """Raise :class:`InputError` unless ``decision`` (a ``reassign``) names a skater of
        this race: a chip is worn by a skater, never by a team."""
        bib = str(decision.bib)
        if bib in self.teams:
            raise InputError(f"race {self.id}: a chip is worn by a skater, not by team {bib}")
        if bib not in self.row_of:
            raise InputError(f"race {self.id}: no skater {bib!r}")

    def _rerouted(self, routed: RoutedPassing) -> RoutedPassing:
        """``routed`` as the officials' reassignments route it: to the skater its chip
        was reassigned to, if it was."""
        if not self.reassigned:
            return routed
        passing = routed.passing
        bib = self.reassigned.get(transponder_key(passing.transponder))
        if bib is None and passing.transponder_alias is not None:
            bib = self.reassigned.get(transponder_key(passing.transponder_alias))
        if bib is None or bib == routed.bib:
            return routed
        return RoutedPassing(passing, bib, routed.t)

    def _reassign_lines(self, decision: Decision) -> list[str]:
        if decision.action != "reassign":
            return []
        bib = str(decision.bib)
        name = (self.members.get(bib) or self.skaters[self.row[bib]]).short
        return [stories.reassigned(str(decision.transponder), name)]

    # ------------------------------------------------------------------ official times
    def _set_official(self, row: int, origin: str, time_us: int) -> None:
        """Keep an official finish time unless one of higher precedence (DOMAIN.md §1.4:
        manual > photo > beam > transponder; an unknown origin ranks as photo) is kept."""
        prec = FINISH_PRECEDENCE.get(origin, 2)
        t = to_thousandths(time_us)
        if row not in self.official or prec >= self.official[row][0]:
            self.official[row] = (prec, t, origin)

    def _official_finish(self, row: int, t: int) -> tuple[int, str]:
        """The finish time that counts for ``row`` and its origin: the official time when
        there is one, else ``t`` (µs) from the transponder."""
        official = self.official.get(row)
        return (official[1], official[2]) if official else (t, "transponder")

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


def _reason(inp: RaceInput) -> str:
    """The reason of the revision an input makes when it lands before one applied."""
    if type(inp) is Decision:
        return f"decision: {inp.action}"
    if type(inp) is FinishTime:
        return f"official time ({inp.origin})"
    return LATE_READ
