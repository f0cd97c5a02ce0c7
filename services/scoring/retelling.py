"""Corrections and retelling in both race engines: an input that lands earlier in
race time than one applied, or a correction (a decision, a late official time, a
restart), makes the race feed its log again in race-time order (:meth:`Retelling.reorder`)
or replay it (:meth:`Retelling.recompute`) and publish one ``revision``; a race that
``retells`` tells its stories again from the corrected log, each correction applied in
place, in one pass (docs/time.md). Checkpoints of the state (what is saved and
restored) let a late read replay from the last one before it.

:class:`Retelling` builds on ``officials.Officials``; ``race.RaceBase`` builds on it.
"""
from __future__ import annotations

import bisect
from typing import Any

from icetime.messages import Decision, FinishTime

from .model import RaceEvent, RaceInput, RoutedGun, RoutedPassing
from .officials import Officials
from .racestate import LATE_READ, START, Key, LogEntry, key_of

#: Once a race has had a late read, it keeps a checkpoint of its state every this many
#: inputs (or one per competitor, if more: a checkpoint copies every row), so the next
#: late read replays the log from the last checkpoint before it, not from the start.
#: A race whose reads all come in order keeps none and pays nothing.
CHECK_EVERY = 16
#: Checkpoints a race keeps, the oldest dropped: a read later than all of them (rare)
#: replays the log from the start.
CHECKPOINTS_MAX = 32


class Retelling(Officials):
    """Revisions: replays, retellings, checkpoints."""

    # ------------------------------------------------------------------ checkpoints
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
                "passage_official": dict(self.passage_official),
                "story_log": list(self.story_log), "field": dict(self.field), "now": self.now,
                "dwelt": self.dwelt, "plausible_until": self.plausible_until,
                "reassigned": dict(self.reassigned)}

    def _load(self, state: dict[str, Any]) -> None:
        """Take back a state :meth:`_save` made (it stays usable: nothing is shared)."""
        self.t = state["t"].copy(order="F")
        self.rows = [list(r) for r in state["rows"]]
        self.status, self.final = list(state["status"]), list(state["final"])
        self.official, self.is_official = dict(state["official"]), state["is_official"]
        self.passage_official = dict(state["passage_official"])
        self.story_log = list(state["story_log"])
        self.field, self.now = dict(state["field"]), state["now"]
        self.dwelt, self.plausible_until = state["dwelt"], state["plausible_until"]
        self.reassigned = dict(state["reassigned"])
        self.restart_pending = False


    # ------------------------------------------------------------------ corrections
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
        # Only a late read compares views (a late re-read tells nothing): a correction
        # or a start list always sends its revision, so it builds its view once.
        before = self.view() if reason == LATE_READ else None
        before_cls = self.classification()
        if self.restarts:
            entries = self._sorted_log()
        else:
            # The log is in race-time order but for the late input, just appended.
            entries = self.log
            if entries:
                bisect.insort(entries, entries.pop(), key=key_of)
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
        self._put_passage_times(entries, voided)
        for row, status in self._statuses(live).items():
            self._set_status(row, status)
        self.reassigned = self._reassignments(live)
        # From the start, the state is a replay's (of no input yet) unless the replay
        # would put official finish times in place first.
        self.as_replayed = from_start and not self._official_times(live)
        return voided

    def _correction(self, input_id: str, reason: str, before: dict[str, list[Any]]) -> None:
        """Tell, and keep for every later retelling, what the correction ``input_id``
        changed in the classification (``before``: the classification before it)."""
        lines = self._revision_lines(reason, before)
        if lines:
            self.corrections[input_id] = lines
            self._tell(lines)

