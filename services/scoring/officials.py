"""What officials' inputs do in both race engines: decisions (statuses, void,
official, manual time, restart), official finish times and their precedence
(DOMAIN.md §1.4), chips reassigned to another skater; and the quiet replay of the
input log, which puts statuses, reassigned chips and official finish times in place
first, as facts about the whole race.

:class:`Officials` builds on ``racestate.RaceState``; ``retelling.Retelling`` builds on
it.
"""
from __future__ import annotations

from typing import assert_never

from icetime.messages import Decision, FinishTime
from icetime.startlist import transponder_key
from icetime.timefmt import to_thousandths

from . import stories
from .model import FINISH_PRECEDENCE, InputError, RaceEvent, RaceInput, RoutedGun, RoutedPassing
from .racestate import START, LogEntry, RaceState, key_of


def voided_ids(entries: list[LogEntry]) -> set[str]:
    """The ids of the inputs the ``void`` decisions among ``entries`` void. A void that
    is itself voided voids nothing (an undone void: its target counts again), and a void
    of that brings it back: each void came after its target (a void of an input the race
    has not taken is refused), so the voids are read from the latest arrival back, and a
    void counts unless a later void that counts names it."""
    voids = sorted((key[4], iid, str(inp.target)) for key, iid, inp in entries
                   if type(inp) is Decision and inp.action == "void")
    out: set[str] = set()
    for _, iid, target in reversed(voids):
        if iid not in out:
            out.add(target)
    return out


def _is_official_time(inp: RaceInput) -> bool:
    """A photo-finish (beam, manual) finish time, or an official's manual time."""
    return type(inp) is FinishTime or (type(inp) is Decision and inp.action == "manual_time")


class Officials(RaceState):
    """Decisions, official finish times and reassigned chips; the quiet replay."""

    # ------------------------------------------------------------------ replay
    def _live(self, entries: list[LogEntry]) -> tuple[set[str], list[tuple[str, RaceInput]]]:
        """The ids of the inputs that do not count among ``entries`` (voided, or
        official times overruled: :meth:`_overruled`), and the others (id, input)."""
        voided = voided_ids(entries)
        voided |= self._overruled([e for e in entries if e[1] not in voided])
        return voided, [(iid, inp) for _, iid, inp in entries if iid not in voided]

    def _overruled(self, live: list[LogEntry]) -> set[str]:
        """The ids of the official times among ``live`` (inputs not voided) that do not
        count, though they stay in the log (the desk's audit) and count again once what
        overrules them is undone: those of an attempt a restart voided
        (:meth:`_attempt_voided`), and, of the others, each one a later-keyed official
        time of the same precedence for the same skater and passage replaces: the
        official's last word counts, not the later race time (the arrival number, the
        key's last field, is the order the officials keyed them in)."""
        times = [e for e in live if _is_official_time(e[2])]
        if not times:
            return set()
        out = self._attempt_voided(live, times)
        last: dict[tuple[int, int | None, int], str] = {}
        for _, iid, inp in sorted(times, key=lambda e: e[0][4]):
            slot = self._slot(inp)
            if iid in out or slot is None:
                continue
            if slot in last:
                out.add(last[slot])
            last[slot] = iid
        return out

    def _slot(self, inp: RaceInput) -> tuple[int, int | None, int] | None:
        """What an official time stands for: (row, metres of its passage or None for the
        finish, precedence of its origin); None for a bib no longer in the race."""
        bib: object
        if type(inp) is FinishTime:
            bib, m, origin = inp.bib, None, inp.origin or "photo"
        elif type(inp) is Decision:
            bib, origin = inp.bib, "manual"
            m = None if inp.m in (None, self.distance) else inp.m
        else:
            return None
        row = self._row_or_none(bib)
        return None if row is None else (row, m, FINISH_PRECEDENCE.get(origin, 2))

    def _row_or_none(self, bib: object) -> int | None:
        """The row of a bib or a team (:meth:`_row`), or None: not in the race (now)."""
        return self.row.get(str(bib), self.row_of.get(str(bib)))

    def _attempt_voided(self, live: list[LogEntry], times: list[LogEntry]) -> set[str]:
        """The ids of the official ``times`` (among the ``live`` inputs) of an attempt
        that a restart (a ``restart`` decision, or a second gun) voided: they do not
        apply to the next attempt. A race kind with restarts supplies it."""
        return set()

    @staticmethod
    def _reassignments(live: list[tuple[str, RaceInput]]) -> dict[str, str]:
        return {transponder_key(i.transponder): str(i.bib) for _, i in live
                if type(i) is Decision and i.action == "reassign"}


    def _sorted_log(self) -> list[LogEntry]:
        """The input log in race-time order."""
        return sorted(self.log, key=key_of)

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
                return self._official_final(input_id, row, inp.time_us, emit)
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
        self._put_passage_times(entries if self.facts is None else self.facts, voided)
        live = [(iid, inp) for _, iid, inp in entries if iid not in voided]
        for row, status in self._statuses(facts).items():
            self._set_status(row, status)
        self.reassigned = self._reassignments(facts)
        self._put_official_times(facts)
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


    def check_void(self, decision: Decision, held: set[str]) -> None:
        """Raise :class:`InputError` unless ``decision`` (a ``void``) names an input of
        this race: one in its log, a read it holds as implausible, or one of ``held``
        (reads of its skaters held until their gun)."""
        target = str(decision.target)
        if any(iid == target for _, iid, _ in self.log):
            self._check_restart_void(target)
            return
        if target in held or any(h["input"] == target for h in self.held_reads):
            return
        raise InputError(f"target: {target} is no input of race {self.id} (a read, a gun "
                         "or an official's input it took)")

    def _check_restart_void(self, target: str) -> None:
        """Raise :class:`InputError` when a void of ``target`` would undo (or bring back)
        a ``restart`` whose attempt a later gun has started again: that gun restarts
        what came before it anyway, so the void would change nothing while it stands.
        ``target`` is followed through the voids it names down to the input they undo."""
        by_id = {iid: (key, inp) for key, iid, inp in self.log}
        seen: set[str] = set()
        while target in by_id and target not in seen:
            seen.add(target)
            key, inp = by_id[target]
            if type(inp) is not Decision:
                return
            if inp.action == "void":
                target = str(inp.target)
                continue
            gun = self._restarted_by(key, inp) if inp.action == "restart" else None
            if gun is not None:
                what = "the race" if inp.pair is None else f"pair {inp.pair}"
                raise InputError(f"race {self.id}: {what} was started again after the "
                                 f"restart (gun {gun[0]}): void that gun first")
            return

    def _live_guns(self) -> list[LogEntry]:
        """The guns of the log no void undoes, as log entries."""
        voided = voided_ids(self.log)
        return [e for e in self.log if type(e[2]) is RoutedGun and e[1] not in voided]

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
    def _official_times(self, inputs: list[tuple[str, RaceInput]]) -> bool:
        """Whether ``inputs`` hold an official finish time (a manual one included where
        it is a fact about the whole race, see :meth:`_manual_finish`)."""
        return any(type(inp) is FinishTime or self._manual_finish(inp) for _, inp in inputs)

    def _put_official_times(self, facts: list[tuple[str, RaceInput]]) -> None:
        """Keep the official finish times among ``facts`` before any input is replayed:
        each stands for the transponder finish it replaces, earlier or later."""
        for _, inp in facts:
            if type(inp) is FinishTime:
                self._set_official(self._row(inp.bib), inp.origin or "photo", inp.time_us)
            elif type(inp) is Decision and self._manual_finish(inp) and inp.time_us is not None:
                self._set_official(self._row(inp.bib), "manual", inp.time_us)

    def _put_passage_times(self, entries: list[LogEntry], voided: set[str]) -> None:
        """Keep the manual times at intermediate passages among ``entries`` (all but the
        ``voided`` and overruled ids) before any input is replayed, as facts about the
        whole race: a read of that passage earlier than the time that counts makes no
        passage, the manual time records it at its own place, so its lap time, rank and
        gaps, and those of the passages after it, are the ones of that time (a manual
        time earlier than the read is recorded first and the read is a re-read)."""
        self.passage_official = {}
        if not self.times_intermediate:
            return  # a pack race or a marathon: not a pass over a long log for nothing
        for key, iid, inp in entries:
            if iid in voided or type(inp) is not Decision or inp.action != "manual_time" \
                    or inp.time_us is None:
                continue
            k, row = self._intermediate(inp.m), self._row_or_none(inp.bib)
            if k is not None and row is not None:
                t = to_thousandths(inp.time_us)
                self.passage_official[(row, k)] = (key[0] - t, t)

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

