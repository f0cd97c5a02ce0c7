"""The scoring engine: sans-I/O, deterministic, numpy state per race.

This module is its entry point, the ``Competition`` router: the start list,
transponder routing, calls and guns, source clock offsets. What a start list makes
(the races, their skaters and transponders) and what follows from results (rounds and
World Cup standings) is ``startlists.StartLists``, its base; who wears each chip (the
officials' reassignments and their voids) is ``reassignments.Reassignments``, its other
base. The races themselves are
``longtrack.LongTrackRace``, ``pack.PackRace`` and ``marathon.MarathonRace`` on their
common base ``race.RaceBase``.

Contract
--------
``Competition.feed(input_id, input)`` takes one input, typed
(``icetime.messages.FeedInput``, see docs/protocol.md), and returns
``{race_id: [event, ...]}``.
``Competition.view(race_id)`` returns the race view that the events build up:
applying every event of a race, in order, to an empty view gives exactly
``view(race_id)`` (``icetime.view.apply_event`` is that fold).

* No clock reads, no I/O: the same inputs in the same order give the same
  events, so a restarted worker that replays the raw log rebuilds identical
  state. Feeding an ``input_id`` twice is a no-op (idempotent).
* Times are integer µs. Race times are truncated to thousandths when recorded
  (``icetime.timefmt.to_thousandths``), since thousandths are what decide ranks
  (DOMAIN.md §1.4) and what is published.
* Corrections (official decisions, a late photo-finish time, a changed start
  list) never patch state: the race replays its own input log and publishes a
  ``revision`` carrying the whole recomputed view.
"""
from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import MutableMapping
from typing import Any, assert_never

import msgspec

from icetime.messages import Call, Clock, Decision, FeedInput, FinishTime, Gun, Passing, StartList
from icetime.rules import Rules
from icetime.rules import load as load_rules
from icetime.timefmt import to_thousandths

from . import rounds
from .distances import LAP_M
from .model import InputError, RaceEvent, RoutedGun, RoutedPassing, Skater
from .race import IMPLAUSIBLE, OFFICIAL_READ
from .reassignments import Reassignments
from .startlists import Race, StartLists
from .wallclock import WallClock

__all__ = ["HELD_MAX", "Competition", "Race"]

#: Reads held per bib while no gun has started the bib (they land when it does); the
#: oldest go first beyond this (a skater warming up over the loop).
HELD_MAX = 64


class Competition(Reassignments, StartLists):
    """All races of a competition, the start list and transponder routing.

    Feed typed inputs with :meth:`feed`; read views with :meth:`view`. Counters of
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
        #: Chips the officials reassigned (``reassign`` decisions): key -> bib, ahead of
        #: the start list's transponders.
        self.reassigned: dict[str, str] = {}
        #: The reassign decisions behind it, by input id, in order (a void undoes one).
        self.reassigns: dict[str, tuple[str, str]] = {}
        #: Chip key -> the id of the reassign decision that gives it (as ``reassigned``).
        self.reassign_ids: dict[str, str] = {}
        #: The reads a reassignment routed (held reads it handed over, later reads of its
        #: chip): reassign id -> read ids; each read as routed; the race it went to (none:
        #: held). A void of the reassignment routes them again as if it had never been.
        self.routed_by: dict[str, list[str]] = {}
        self.rerouted: dict[str, RoutedPassing] = {}
        self.placed: dict[str, str] = {}
        #: Timing points besides the finish line, of every race and per race
        #: (team events' lines, marathon courses).
        self.lines: set[str] = set()
        self.race_points: dict[str, set[str]] = {}
        #: Each start-list race's entry as last loaded (a digest): an unchanged race is
        #: left as it is.
        self.race_specs: dict[str, bytes] = {}
        #: The races that count for a cup; each race's teams' names.
        self.cup_races: set[str] = set()
        self.team_names: dict[str, dict[str, dict[str, Any]]] = {}
        self.events: dict[str, rounds.Event] = {}
        self.event_views: dict[str, dict[str, Any]] = {}
        self.event_revs: dict[str, int] = {}
        self.standings_before: dict[str, dict[str, int]] = {}
        self.standings: dict[str, Any] = {}
        self.standings_rev = 0
        #: A plain dict, or a checkpoint's RaceStore (races unpickled when first used).
        self.races: MutableMapping[str, Race] = {}
        # bib -> (common-clock µs, race id) of every gun that started the bib, in time
        # order: a passing goes to the race of the latest gun before it.
        self.guns: dict[str, list[tuple[int, str]]] = {}
        #: bib -> the races whose start lists name her (a relay's members: the relay).
        self.entries: dict[str, set[str]] = {}
        #: race id -> the bibs ``entries`` names it for (forgotten when the race changes).
        self.entered: dict[str, tuple[str, ...]] = {}
        # bib -> passings that came before any gun of the bib, oldest first.
        self.held: dict[str, list[tuple[str, RoutedPassing]]] = {}
        # chip key -> reads of a chip no skater wears, for a reassignment of it.
        self.unknown: dict[str, list[tuple[str, RoutedPassing]]] = {}
        # (race, pair) called to the start; pair is None for a pack race
        self.called: tuple[str, int | None] | None = None
        self.seen: set[str] = set()
        #: How each source's times map onto ingest's wall clock: where a late gun's
        #: running clock starts (``wallclock``).
        self.wallclock = WallClock()
        self.stats: Counter[str] = Counter()
        #: Why the last refused input was refused ("<input id>: <reason>").
        self.last_error = ""
        #: The same reason without the input id.
        self.last_reason = ""
        #: Why the last input, a passing, could be no one's read (unknown transponder or
        #: timing point); "" otherwise. Not a refusal (nothing is wrong with the input),
        #: but a sender waiting for the verdict is told (services/scoring/runner.py).
        self.unread = ""

    def feed(self, input_id: str, inp: FeedInput) -> dict[str, list[RaceEvent]]:
        """Apply one input; returns the events per race. Idempotent on ``input_id``."""
        self.unread = ""
        if input_id in self.seen:
            self.stats["duplicate_input"] += 1
            return {}
        self.seen.add(input_id)
        try:
            out = self._route(input_id, inp)
            # type() rather than isinstance(): a failed isinstance() on a Struct type is
            # slow, and this runs for every passing.
            startlist = type(inp) is StartList
            out = self._with_rounds(input_id, startlist, out)
            out = self._with_standings(input_id, startlist, out)
        except (InputError, KeyError, ValueError, TypeError) as exc:
            self.refuse(input_id, str(exc))
            return {}
        self.stats["applied"] += 1
        return out

    def refuse(self, input_id: str, reason: str) -> None:
        """Count an input that cannot be applied, keeping why in :attr:`last_error`
        (the runner also refuses this way a raw entry that is not an input at all)."""
        self.stats["refused"] += 1
        self.last_error = f"{input_id}: {reason}"
        self.last_reason = reason

    def _route(self, input_id: str, inp: FeedInput) -> dict[str, list[RaceEvent]]:
        match inp:
            case Passing():
                return self._passing(input_id, inp)
            case StartList():
                return self._startlist(input_id, inp)
            case Clock():
                # A measured offset replaces the configured one for this source's later
                # inputs; it is in the input log, so a rebuild maps every time the same way.
                if inp.source is None:
                    raise InputError("a clock input names no source")
                self.offsets[inp.source] = inp.offset_us
                self.wallclock.forget(inp.source)
                self.stats["clock_offsets"] += 1
                return {}
            case Call():
                race = self._race(inp.race)
                if not race.can_call(inp.pair):
                    what = "the whole field ('pair': the pair to call)" if inp.pair is None \
                        else f"pair {inp.pair}"
                    raise InputError(f"race {race.id}: cannot call {what} to the start")
                self.called = (race.id, inp.pair)
                return {}
            case Gun():
                return self._gun(input_id, inp)
            case FinishTime() | Decision():
                return self._official(input_id, inp)
        assert_never(inp)

    def _official(self, input_id: str, inp: FinishTime | Decision
                  ) -> dict[str, list[RaceEvent]]:
        """An official time or decision, to the race it names."""
        race = self._race(inp.race)
        if inp.bib is not None:
            race._row(inp.bib)  # refuse an unknown bib before it enters the log
        if inp.time_us is not None and to_thousandths(inp.time_us) == 0:
            # Truncated to thousandths it is 0.000: no time any skater can have skated.
            raise InputError(f"time_us: {inp.time_us} is no race time: a race time is at "
                             "least a thousandth of a second (1000)")
        if type(inp) is Decision and inp.action == "reassign":
            return self._reassign(input_id, race, inp)
        if type(inp) is Decision and inp.action == "void":
            return self._void(input_id, race, inp)
        return {race.id: race.feed(input_id, inp)}

    def _passing(self, input_id: str, inp: Passing) -> dict[str, list[RaceEvent]]:
        """A passing to the race of the latest gun of its skater at or before its time;
        counted and dropped when the transponder or the timing point is unknown, held
        (counted) until its gun lands when no gun of the skater is that early."""
        t = self._common(inp)
        self.wallclock.seen((inp.source or "", inp.session), inp.rx_us, t)
        bib, by = self._wearer(inp)
        point = inp.point
        known_point = point == "finish" or point in self.loops or point in self.lines
        if bib is None:
            self.stats["unknown_transponder"] += 1
            self.unread = (f"transponder {inp.transponder} is on no skater of the start "
                           "lists loaded")
            if known_point:  # a spare chip's, maybe: a reassignment places it
                self._keep_unknown(input_id, RoutedPassing(inp, "", t))
            return {}
        if not known_point:
            self.stats["unknown_point"] += 1
            self.unread = f"timing point {point!r} is not a loop of this venue"
            return {}
        routed = RoutedPassing(inp, bib, t)
        race_id, events = self._place(input_id, routed, by, arriving=True)
        if race_id is None:
            return {}
        self._count(events)
        return {race_id: events} if events else {}

    def _count(self, events: list[RaceEvent]) -> None:
        """Count what a read fed to a race did, when it made no passage."""
        if not events:
            self.stats["passing_ignored"] += 1
        elif events[0].get("reason") == IMPLAUSIBLE:
            self.stats["implausible_read"] += 1
        elif events[0].get("reason") == OFFICIAL_READ:
            self.stats["official_read"] += 1

    def _place(self, input_id: str, routed: RoutedPassing, by: str | None,
               arriving: bool = False) -> tuple[str | None, list[RaceEvent]]:
        """Feed a read to the race of its skater's latest gun at or before it, or hold
        it (race None); ``by``: the id of the reassignment that routed it, kept so that
        its void routes the read again. A read ``arriving`` (not one routed again by a
        decision) that race cannot take is held for her next race, if she has one
        (:meth:`_awaits_gun`); an official race keeps its results
        (``RaceBase.official_read``)."""
        if by is not None:
            self.routed_by.setdefault(by, []).append(input_id)
            self.rerouted[input_id] = routed
        race_id = self._race_at(routed.bib, routed.t)
        if race_id is None:
            self._hold(input_id, routed)
            return None, []
        race = self.races[race_id]
        # The race can no longer take her read: it is official (an official race keeps
        # its results), or her run in it was over before the read.
        if arriving and (race.is_official or race.ended_for(routed.bib, routed.t)):
            if self._awaits_gun(routed.bib):
                self._hold(input_id, routed, "held_for_next_race")
                return None, []
            if race.is_official:
                return race_id, race.official_read(input_id, routed)
        if by is not None:
            self.placed[input_id] = race_id
        return race_id, race.feed(input_id, routed)

    def _awaits_gun(self, bib: str) -> bool:
        """Whether ``bib`` skates a race no gun has started her in yet (a final after
        her heat, her next distance): a read her last race cannot take is hers there."""
        gunned = {race_id for _, race_id in self.guns.get(bib, ())}
        return any(race_id not in gunned for race_id in self.entries.get(bib, ()))

    def _place_again(self, input_id: str, routed: RoutedPassing, by: str | None,
                     out: dict[str, list[RaceEvent]], was_held: bool) -> None:
        """:meth:`_place` for a read routed once already, its events added to ``out``
        (``was_held``: counted as held when it first came)."""
        race_id, events = self._place(input_id, routed, by)
        if race_id is not None:
            out[race_id] = out.get(race_id, []) + events
        elif was_held:
            self.stats["held_before_gun"] -= 1

    def _race_at(self, bib: str, t: int) -> str | None:
        """The race whose gun started ``bib`` last at or before common-clock ``t``."""
        guns = self.guns.get(bib)
        if not guns:
            return None
        if t >= guns[-1][0]:
            return guns[-1][1]  # after the latest gun: nearly every read
        at = bisect.bisect_right(guns, (t, "\U0010ffff"))
        return guns[at - 1][1] if at else None

    def _hold(self, input_id: str, routed: RoutedPassing, why: str = "held_before_gun"
              ) -> None:
        """Hold a read until a gun of its skater at or before it lands (counted as
        ``why``)."""
        held = self.held.setdefault(routed.bib, [])
        held.append((input_id, routed))
        self.stats[why] += 1
        if len(held) > HELD_MAX:
            del held[0]
            self.stats["held_dropped"] += 1

    def _gun(self, input_id: str, inp: Gun) -> dict[str, list[RaceEvent]]:
        """A gun starts its race's skaters (a gun naming no race: the pair called);
        the reads held for them that are not earlier than the gun land after it."""
        if inp.race is None:
            if self.called is None:
                raise InputError("a gun with no race or pair, and no pair called to the start")
            called_race, called_pair = self.called
            inp = msgspec.structs.replace(inp, race=called_race, pair=called_pair)
            self.called = None
        race = self._race(inp.race)
        t = self._common(inp)
        origin = self.wallclock.origin((inp.source or "", inp.session), inp.rx_us, t,
                                       float(inp.rate) if inp.rate is not None else 1.0)
        routed = RoutedGun(inp, t, origin)
        bibs = race.starters(inp)
        events = race.feed(input_id, routed)
        for bib in bibs:
            bisect.insort(self.guns.setdefault(bib, []), (routed.t, race.id))
        out = {race.id: events}
        for iid, passing in self._release(bibs, routed.t):
            self.stats["held_placed"] += 1
            if iid in self.rerouted:
                self.placed[iid] = race.id
            more = race.feed(iid, passing)
            out[race.id] = out[race.id] + more
            self._count(more)
        return out

    def _release(self, bibs: list[str], gun_t: int) -> list[tuple[str, RoutedPassing]]:
        """The held reads of ``bibs`` at or after ``gun_t``, in time order (taken out)."""
        out = []
        for bib in bibs:
            held = self.held.get(bib)
            if not held:
                continue
            out += [h for h in held if h[1].t >= gun_t]
            self.held[bib] = [h for h in held if h[1].t < gun_t]
        out.sort(key=lambda h: h[1].t)
        return out

    def _race(self, race_id: str | int | None) -> Race:
        """The race an input names; InputError for an unknown one."""
        race = self.races.get(str(race_id))
        if race is None:
            raise InputError(f"unknown race {race_id!r}")
        return race

    def _common(self, inp: Passing | Gun) -> int:
        """Map a source's time onto the common clock (per-source offset)."""
        return inp.t + self.offsets.get(inp.source or "", 0)
