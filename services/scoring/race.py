"""The common base of both race engines, and how an input enters a race: where it
sorts in the input log (applied at once, or replayed into place when it lands earlier
in race time than one applied), reads held as implausible, and the loop field (a chip
read again before it left the field is no new passage; who lies in it).

The rest of the base is built in layers: ``racestate.RaceState`` (the state and the
hooks), ``officials.Officials`` (decisions, official finish times, reassigned chips,
the quiet replay) and ``retelling.Retelling`` (corrections, retelling, checkpoints).
``longtrack.LongTrackRace`` (pairs against the clock) and ``pack.PackRace``
(everyone starts together) are subclasses of :class:`RaceBase`: each sets up its own
state in ``configure``/``_reset`` and supplies the hooks of ``racestate.RaceState``
for what differs (a gun, a passing, its statuses, a manual time, a restart, how it
tells a revision).
"""
from __future__ import annotations

from operator import itemgetter

from icetime.messages import Decision, FinishTime

from .model import InputError, RaceEvent, RaceInput, RoutedGun, RoutedPassing
from .racestate import GUN, LATE_READ, OFFICIAL, PASSING, RESTART, START, Key, LogEntry, key_of
from .retelling import Retelling

__all__ = ["DWELL_US", "GUN", "IMPLAUSIBLE", "LEAVE_US", "OFFICIAL_READ", "PASSING", "RESTART",
           "SLOWEST", "START", "Key", "LogEntry", "RaceBase"]

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
#: Reason of the revision that shows a read held because its race was already official.
OFFICIAL_READ = "read after official"
#: A read later after its gun than the whole distance takes at ``max_speed_mps`` divided
#: by this is not a passage (a decoder clock days off, a stray chip): it is held for the
#: officials, never taken. 8 gives 200 s for a 500 m, 2000 s for a 5000 m.
SLOWEST = 8


class RaceBase(Retelling):
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
        passing = type(inp) is RoutedPassing
        key: Key
        if type(inp) is RoutedPassing:  # the hot path (ids may be numbers: str to compare)
            if inp.t > self.plausible_until:  # rare: ask the race (costs a call)
                reason = self._implausible(inp)
                if reason is not None:
                    return self._hold_implausible(input_id, inp, reason)
            key = (inp.t, PASSING, str(inp.passing.point), str(inp.passing.transponder), n)
        elif type(inp) is RoutedGun:
            self._check_gun(inp)
            key = (inp.t, GUN, "", "", n)
        else:
            at = self._official_at(inp)
            key = (self.horizon[0] if at is None else at, OFFICIAL, "", "", n)
            self.restarts += type(inp) is Decision and inp.action == "restart"
        self.arrivals = n + 1  # not before: an input refused by its key never arrived
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

    def withdraw(self, ids: set[str]) -> list[LogEntry]:
        """Take the inputs ``ids`` out of the log, as if they had never come (reads that
        an undone reassignment routed here); returns them. The state is the log's again
        after the next replay (:meth:`recompute`, or the revision of a decision)."""
        out = [e for e in self.log if e[1] in ids]
        if out:
            self.log = [e for e in self.log if e[1] not in ids]
            self.checkpoints = []  # they may hold what the inputs did
        return out

    def put_back(self, entries: list[LogEntry]) -> None:
        """Undo :meth:`withdraw` (the decision it was for was refused): the log and the
        state as they were, quietly."""
        self.log = sorted([*self.log, *entries], key=key_of)
        self.checkpoints = []
        self._reset()
        self._replay_log()

    def official_read(self, input_id: str, routed: RoutedPassing) -> list[RaceEvent]:
        """A read that came for this race once it was official. An official race keeps
        its results: the read never enters the log. One later than its skater's run
        here changes nothing (no events); one that could have been her passage is held
        for the officials (the view's ``held``, with the reason) and shown in one
        revision (reason :data:`OFFICIAL_READ`)."""
        if self.ended_for(routed.bib, routed.t):
            return []
        reason = (f"race {self.id} was already official: a read no longer changes its "
                  "results (a decision can)")
        return self._hold_implausible(input_id, routed, reason, OFFICIAL_READ)

    def _hold_implausible(self, input_id: str, routed: RoutedPassing, reason: str,
                          why: str = IMPLAUSIBLE) -> list[RaceEvent]:
        """Keep a read that cannot be a passage apart, for the officials (it never
        enters the log, so no replay takes it), and show it in one revision (reason
        ``why``)."""
        passing = routed.passing
        self.held_reads.append({"input": input_id, "bib": routed.bib,
                                "transponder": str(passing.transponder),
                                "point": str(passing.point), "t": routed.t,
                                "reason": reason})
        self.held_reads.sort(key=itemgetter("t", "input"))
        self.revision += 1
        return [{"type": "revision", "race": self.id, "input": input_id, "reason": why,
                 "view": self.view()}]


def _reason(inp: RaceInput) -> str:
    """The reason of the revision an input makes when it lands before one applied."""
    if type(inp) is Decision:
        return f"decision: {inp.action}"
    if type(inp) is FinishTime:
        return f"official time ({inp.origin})"
    return LATE_READ
