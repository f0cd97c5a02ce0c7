"""What a start list makes of a competition, and what follows from its results: the
races (created, or configured again and revised), the skaters and their transponders
(docs/startlist.md); a round's next races and each event's ranking (``rounds``); the
World Cup standings (``standings``); and the views of races, events and standings.

:class:`StartLists` is the base of ``competition.Competition`` (the router), which sets
the state it declares.
"""
from __future__ import annotations

import gc
import hashlib
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any

import msgspec

from icetime.messages import StartList
from icetime.rules import Rules
from icetime.startlist import transponder_key

from . import rounds, standings
from .longtrack import TEAM_KINDS, LongTrackRace
from .marathon import KIND as MARATHON
from .marathon import MarathonRace
from .model import InputError, RaceEvent, Skater
from .pack import KINDS as PACK_KINDS
from .pack import PackRace

#: Any race the competition holds: they share feed(), view(), starters() and can_call().
Race = LongTrackRace | PackRace | MarathonRace


class StartLists:
    """The start list's races, skaters and transponders; rounds, standings, views."""

    rules: Rules
    max_speed_mps: float
    #: Extra loops in the ice: point id -> metres past the finish line.
    loops: dict[str, int]
    skaters: dict[str, Skater]
    #: Transponder (as ``transponder_key`` compares it) -> bib, from the start lists.
    by_transponder: dict[str, str]
    #: bib -> the races whose start lists name her (a relay's members: the relay), and
    #: race id -> the bibs ``entries`` names it for (:meth:`_note_race`).
    entries: dict[str, set[str]]
    entered: dict[str, tuple[str, ...]]
    #: Timing points besides the finish line: team events' lines, marathon courses;
    #: of every race, and per race.
    lines: set[str]
    race_points: dict[str, set[str]]
    #: Each start-list race's entry as last loaded (:func:`_digest`): a start list that
    #: gives a race the same entry, and none of its skaters changed, leaves it as it is.
    race_specs: dict[str, bytes]
    #: The races that count for a cup, and each race's teams' names (:meth:`_note_race`).
    cup_races: set[str]
    team_names: dict[str, dict[str, dict[str, Any]]]
    #: Rounds: the events, their views and revisions.
    events: dict[str, rounds.Event]
    event_views: dict[str, dict[str, Any]]
    event_revs: dict[str, int]
    #: World Cup standings: before this competition, now, and their revision.
    standings_before: dict[str, dict[str, int]]
    standings: dict[str, Any]
    standings_rev: int
    #: A plain dict, or a checkpoint's RaceStore (races unpickled when first used).
    races: MutableMapping[str, Race]

    def _startlist(self, input_id: str, inp: StartList) -> dict[str, list[RaceEvent]]:
        with _collector_paused():
            return self._load(input_id, inp)

    def _load(self, input_id: str, inp: StartList) -> dict[str, list[RaceEvent]]:
        skaters = self._with_skaters(inp.skaters or [])
        transponders = self._transponders(skaters)
        # Validate every race the start list changes before changing anything: a bad
        # file changes nothing. A race it leaves as it was is not touched at all.
        changed = {b for b, sk in self.skaters.items() if skaters[b] != sk}
        staged = []
        for spec in inp.races or []:
            rid, digest = str(spec["id"]), _digest(spec)
            if self.race_specs.get(rid) == digest and not _names_any(spec, changed):
                continue
            staged.append((rid, spec, digest, self._new_race(spec, skaters)))
        self.skaters, self.by_transponder = skaters, transponders
        for spec in inp.events or []:
            if str(spec["id"]) not in self.events:
                self.events[str(spec["id"])] = rounds.Event(spec)
        if inp.standings_before is not None:
            self.standings_before = {str(c): {str(b): int(p) for b, p in t.items()}
                                     for c, t in inp.standings_before.items()}
        out: dict[str, list[RaceEvent]] = {}
        for rid, spec, digest, probe in staged:
            race = self.races.get(rid)
            if race is None:
                self.races[rid] = race = probe
            else:
                race.configure(spec, skaters)
            self.race_specs[rid] = digest
            out[rid] = race.recompute(input_id, "start list")
            self._note_race(race)
        return out

    def _with_skaters(self, specs: list[dict[str, Any]]) -> dict[str, Skater]:
        """The competition's skaters with ``specs`` (a start list's ``skaters``) over them.
        InputError when a spec gives a bib of the competition to another person
        (:func:`_other_person`): reads are routed by bib (the race of the bib's latest
        gun), so two people on one bib would take each other's passages."""
        skaters = {**self.skaters}
        for n, spec in enumerate(specs):
            sk = Skater.from_spec(spec)
            old = self.skaters.get(sk.bib)
            if old is not None and old != sk and _other_person(old, sk):
                raise InputError(self._bib_taken(n, old, sk))
            skaters[sk.bib] = sk
        return skaters

    def _bib_taken(self, n: int, old: Skater, new: Skater) -> str:
        """Why ``skaters[n]`` (``new``) cannot have ``old``'s bib, and what to do."""
        races = sorted(self.entries.get(old.bib, ()))
        where = ("in no race yet" if not races else f"race {races[0]}" if len(races) == 1
                 else f"races {', '.join(races[:3])}{', …' if len(races) > 3 else ''}")
        return (f"skaters[{n}]: bib {old.bib} is {old.name} in this competition ({where}), "
                f"not {new.name}: a bib is one skater in a competition. Give {new.name} "
                "another bib, or load this start list into a competition of its own "
                "(an icetime configured with another competition.id; the file's own "
                "competition id does not choose it); nothing of it was applied")

    def _note_race(self, race: Race) -> None:
        """Keep what the whole competition needs of ``race`` beside it: its timing
        points besides the finish line (team events' lines, marathon courses), whether
        it counts for a cup, its teams' names, the skaters it names. Gathered from every
        race instead, each start list unpickled all the races a restart had left sealed
        (7,634 after a day of 1,000,000 inputs, bench/restart.py)."""
        if isinstance(race, LongTrackRace):
            points = set(race.lines.values())
        elif isinstance(race, MarathonRace):
            points = set(race.points)
        else:
            points = set()
        before = self.race_points.get(race.id, set())
        if points:
            self.race_points[race.id] = points
        else:
            self.race_points.pop(race.id, None)
        # Gathered again only when a race gives up a point (rare): a union over every
        # race for each race of a start list was O(races^2).
        if before - points:
            self.lines = set().union(*self.race_points.values())
        else:
            self.lines |= points
        if race.world_cup:
            self.cup_races.add(race.id)
        else:
            self.cup_races.discard(race.id)
        self.team_names[race.id] = {
            tid: {"bib": tid, "name": sk.name, "short": sk.short, "nation": sk.nation}
            for tid in race.teams for sk in [race.skaters[race.row[tid]]]}
        # Which races each skater is in (``Competition._awaits_gun``).
        for bib in self.entered.get(race.id, ()):
            self.entries[bib].discard(race.id)
        self.entered[race.id] = tuple(race.row_of)
        for bib in race.row_of:
            self.entries.setdefault(bib, set()).add(race.id)

    def _transponders(self, skaters: dict[str, Skater]) -> dict[str, str]:
        """Transponder (as :func:`transponder_key` compares it) -> bib, known and
        ``skaters``' own; InputError for a transponder given to two bibs."""
        transponders = dict(self.by_transponder)
        for sk in skaters.values():
            for tr in sk.transponders:
                key = transponder_key(tr)
                owner = transponders.get(key)
                if owner is not None and owner != sk.bib:
                    raise InputError(f"transponder {tr} given to bibs {owner} and {sk.bib}")
                transponders[key] = sk.bib
        return transponders

    def _names(self) -> dict[str, dict[str, Any]]:
        """Every competitor's name: skaters, and the teams of relays and team events."""
        names: dict[str, dict[str, Any]] = {
            b: {"bib": b, "name": sk.name, "short": sk.short, "nation": sk.nation}
            for b, sk in self.skaters.items()}
        for teams in self.team_names.values():
            names.update(teams)
        return names

    def _with_rounds(self, input_id: str, startlist: bool,
                     out: dict[str, list[RaceEvent]]) -> dict[str, list[RaceEvent]]:
        """Rounds: when a round is official, create the next round's races; keep each
        event's ranking (a revision of ``event-<id>`` when it changes)."""
        for ev in self.events.values():
            if not startlist and not ev.race_ids() & set(out):
                continue
            for spec in ev.step(self.races):
                race = self._new_race(spec, self.skaters)
                self.races[race.id] = race
                self._note_race(race)
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

    def _with_standings(self, input_id: str, startlist: bool,
                        out: dict[str, list[RaceEvent]]) -> dict[str, list[RaceEvent]]:
        """World Cup standings move when a cup race's official result changes."""
        touched = any(self.races[r].world_cup and self.races[r].is_official
                      for r in out if r in self.races) or any(
            r.startswith("event-") and self.events[r[6:]].world_cup for r in out)
        if not touched and not startlist:
            return out
        # Only the cup races can score (standings.compute): the others stay sealed.
        scored: list[standings.Scored] = [
            *(self.races[r] for r in self.races if r in self.cup_races), *self.events.values()]
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
        if kind == MARATHON:
            return MarathonRace(spec, skaters, self.max_speed_mps)
        raise InputError(f"race {spec.get('id')}: unknown kind {kind!r}")

    def view(self, race_id: str) -> dict[str, Any]:
        if race_id == standings.STANDINGS_ID:
            return {**self.standings, "revision": self.standings_rev}
        if race_id.startswith("event-") and race_id[6:] in self.events:
            return {**self.event_views[race_id[6:]], "revision": self.event_revs[race_id[6:]]}
        return self.races[race_id].view()


def _digest(spec: dict[str, Any]) -> bytes:
    """A digest of a race's start-list entry (its keys in any order)."""
    return hashlib.blake2b(msgspec.msgpack.encode(spec, order="deterministic"),
                           digest_size=16).digest()


def _other_person(old: Skater, new: Skater) -> bool:
    """Whether ``new`` is another person than ``old`` on the same bib: another name
    (letter case and spacing aside) and no transponder in common. A name fixed (a chip
    in common) or chips changed (the same name) is the same skater, updated; so is a
    name changed where neither has a chip (a start list before the chips are given out:
    a typo fixed; without chips no read is routed by the bib either)."""
    if " ".join(old.name.casefold().split()) == " ".join(new.name.casefold().split()):
        return False
    if not old.transponders and not new.transponders:
        return False
    chips = {transponder_key(t) for t in old.transponders}
    return not any(transponder_key(t) in chips for t in new.transponders)


def _names_any(spec: Any, bibs: set[str]) -> bool:
    """Whether any value in a race's start-list entry, however deep, is one of ``bibs``
    (a pair's lane, a pack race's or a wave's skaters, a team's members): then the race
    shows a skater the start list changed. Any other value that reads as a bib only
    costs the race a needless recompute."""
    if not bibs:
        return False
    if isinstance(spec, dict):
        return any(_names_any(v, bibs) for v in spec.values())
    if isinstance(spec, list):
        return any(_names_any(v, bibs) for v in spec)
    return str(spec) in bibs


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector paused meanwhile. A start list of thousands of
    races makes millions of objects that live on (the races, their views): their
    allocations set off collections that walk every object made so far, half the time of
    a load of 3,000 races (bench/startlist.py). What is garbage is collected after."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
