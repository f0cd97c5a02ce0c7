"""Who wears each chip: the officials' ``reassign`` decisions and their voids.

A base of ``competition.Competition``: a reassignment gives a chip to a skater of a
race (chips swapped between skaters, or a spare chip no start list names), for every
passing of it, past and future, and hands her the reads of it held before any gun (a
spare chip's: its unknown reads of her race); its void routes every read it routed
again, as if it had never been (docs/desk.md, key ``h``).
"""
from __future__ import annotations

from collections import Counter
from collections.abc import MutableMapping

from icetime.messages import Decision, Passing
from icetime.startlist import transponder_key

from .model import InputError, RaceEvent, RoutedPassing
from .officials import voided_ids
from .startlists import Race

#: Reads kept per chip no skater wears (:meth:`Reassignments._keep_unknown`): a spare
#: chip's race, 25 laps of a 10,000 m and the other ankle's, fits.
UNKNOWN_READS_MAX = 64
#: Chips no skater wears whose reads are kept: the latest read's chips first.
UNKNOWN_CHIPS_MAX = 256


class Reassignments:
    """The chips the officials reassigned, and the reads those reassignments routed."""

    #: Transponder (as ``transponder_key`` compares it) -> bib, from the start lists.
    by_transponder: dict[str, str]
    #: Chips the officials reassigned (``reassign`` decisions): key -> bib, ahead of
    #: the start list's transponders.
    reassigned: dict[str, str]
    #: The reassign decisions behind it, by input id, in order (a void undoes one).
    reassigns: dict[str, tuple[str, str]]
    #: Chip key -> the id of the reassign decision that gives it (as ``reassigned``).
    reassign_ids: dict[str, str]
    #: The reads a reassignment routed (held reads it handed over, later reads of its
    #: chip): reassign id -> read ids; each read as routed; the race it went to (none:
    #: held). A void of the reassignment routes them again as if it had never been.
    routed_by: dict[str, list[str]]
    rerouted: dict[str, RoutedPassing]
    placed: dict[str, str]
    races: MutableMapping[str, Race]
    held: dict[str, list[tuple[str, RoutedPassing]]]
    #: Reads of chips no skater wears (an unknown transponder), kept for a reassignment
    #: of the chip: chip key -> (read id, the read routed to nobody: bib ""), oldest
    #: first; bounded (:meth:`_keep_unknown`).
    unknown: dict[str, list[tuple[str, RoutedPassing]]]
    stats: Counter[str]

    def _place_again(self, input_id: str, routed: RoutedPassing, by: str | None,
                     out: dict[str, list[RaceEvent]], was_held: bool) -> None:
        raise NotImplementedError  # the competition's routing (competition.py)

    def _void(self, input_id: str, race: Race, inp: Decision) -> dict[str, list[RaceEvent]]:
        """A void: refused when its target is no input of the race; a reassignment's
        void routes its reads again (:meth:`_unassign`)."""
        race.check_void(inp, {iid for held in self.held.values() for iid, _ in held})
        if str(inp.target) in self.reassigns:
            return self._unassign(input_id, race, inp)
        out = {race.id: race.feed(input_id, inp)}
        if self._is_void(race, str(inp.target)):
            self._void_reassigns(race)  # an undo undone: a reassignment may be back
        return out

    @staticmethod
    def _is_void(race: Race, input_id: str) -> bool:
        """Whether ``input_id`` is a void decision in ``race``'s log."""
        return any(iid == input_id and type(inp) is Decision and inp.action == "void"
                   for _, iid, inp in race.log)

    def _void_reassigns(self, race: Race) -> None:
        """After an undo is undone in ``race``: a reassignment whose void is voided is
        back for the chip's later reads (the reads routed before stay where the undo put
        them)."""
        voided = voided_ids(race.log)
        mine = sorted((key[4], iid, inp) for key, iid, inp in race.log
                      if type(inp) is Decision and inp.action == "reassign")
        for _, iid, _ in mine:
            self.reassigns.pop(iid, None)
        for _, iid, inp in mine:
            if iid not in voided:
                self.reassigns[iid] = (transponder_key(str(inp.transponder)), str(inp.bib))
        self._reassigned()

    def _wearer(self, passing: Passing) -> tuple[str | None, str | None]:
        """Whose a read is (its transponder's, else its alias's owner: :meth:`_owner`),
        and the id of the reassign decision that says so (None: the start list does)."""
        chip: str | int = passing.transponder
        bib = self._owner(chip)
        if bib is None and passing.transponder_alias is not None:
            chip = passing.transponder_alias
            bib = self._owner(chip)
        if bib is None or not self.reassigned:
            return bib, None
        return bib, self.reassign_ids.get(transponder_key(chip))

    def _owner(self, transponder: str | int) -> str | None:
        """The bib a chip belongs to: as the officials reassigned it, else the start list's."""
        key = transponder_key(transponder)
        if self.reassigned:
            bib = self.reassigned.get(key)
            if bib is not None:
                return bib
        return self.by_transponder.get(key)

    def _reassign(self, input_id: str, race: Race, inp: Decision) -> dict[str, list[RaceEvent]]:
        """An official gives a chip to a skater of ``race``: a chip swapped between
        skaters (the race re-attributes the chip's passings in its log, one revision),
        or a spare chip no skater wears (its unknown reads that fall in her run of
        ``race``, or before any gun of hers, are placed as hers, a late read each).
        Later reads of the chip are the skater's, and reads of it held before any gun
        are placed as hers. InputError for a chip already the skater's, or a team named
        as the wearer."""
        key = transponder_key(str(inp.transponder))
        bib = str(inp.bib)
        race.check_reassign(inp)
        owner = self._owner(key)
        if owner == bib:
            raise InputError(f"transponder {inp.transponder} is already bib {bib}'s")
        out = {race.id: race.feed(input_id, inp)}
        self.reassigns[input_id] = (key, bib)
        self._reassigned()
        moved = [(iid, h, True) for iid, h in self._take_held(key)]
        if owner is None:
            moved += [(iid, r, False) for iid, r in self._take_unknown(key, bib, race.id)]
        for iid, read, was_held in sorted(moved, key=lambda m: m[1].t):
            self._place_again(iid, RoutedPassing(read.passing, bib, read.t), input_id, out,
                              was_held)
        return out

    def _keep_unknown(self, input_id: str, read: RoutedPassing) -> None:
        """Keep a read of a chip no skater wears, for a reassignment of the chip: the
        latest ``UNKNOWN_READS_MAX`` per chip, of the latest ``UNKNOWN_CHIPS_MAX`` chips
        (a stray chip in the loop all day costs no more)."""
        key = transponder_key(read.passing.transponder)
        reads = self.unknown.pop(key, [])  # re-inserted: the dict's order is recency
        reads.append((input_id, read))
        if len(reads) > UNKNOWN_READS_MAX:
            del reads[0]
        self.unknown[key] = reads
        if len(self.unknown) > UNKNOWN_CHIPS_MAX:
            del self.unknown[next(iter(self.unknown))]

    def _take_unknown(self, key: str, bib: str, race_id: str
                      ) -> list[tuple[str, RoutedPassing]]:
        """Take out the kept unknown reads of chip ``key`` (its number or its alias)
        that would be ``bib``'s in race ``race_id``: after her latest gun there at or
        before the read, or before any gun of hers (then held for her). Reads of her
        other races stay unknown."""
        out = []
        for chip, reads in list(self.unknown.items()):
            mine = [(iid, r) for iid, r in reads if key in (
                transponder_key(r.passing.transponder),
                transponder_key(r.passing.transponder_alias or ""))
                and self._race_at(bib, r.t) in (race_id, None)]
            if mine:
                left = [x for x in reads if x not in mine]
                if left:
                    self.unknown[chip] = left
                else:
                    del self.unknown[chip]
                out += mine
        return out

    def _race_at(self, bib: str, t: int) -> str | None:
        raise NotImplementedError  # the competition's routing (competition.py)

    def _unassign(self, input_id: str, race: Race, void: Decision
                  ) -> dict[str, list[RaceEvent]]:
        """A reassignment voided: ``race`` replays without it, and the reads it routed
        (the held reads it handed over, later reads of its chip) leave the races they
        went to (each replays once) and are routed again as if it had never been: held
        for the chip's skater, or to the race of her gun. Later reads of the chip go
        where they did before it."""
        target = str(void.target)
        ids = self.routed_by.get(target, [])
        where = sorted({self.placed[i] for i in ids if i in self.placed})
        taken = {rid: self.races[rid].withdraw(set(ids)) for rid in where}
        try:
            out = {race.id: race.feed(input_id, void)}
        except (InputError, KeyError, ValueError, TypeError):
            for rid, entries in taken.items():
                self.races[rid].put_back(entries)
            raise
        del self.reassigns[target]
        self._reassigned()
        for rid in where:
            if rid != race.id:
                out[rid] = self.races[rid].recompute(input_id, "decision: void")
        self.routed_by.pop(target, None)
        reads = [(i, self.rerouted.pop(i), self.placed.pop(i, None) is None) for i in ids]
        gone = set(ids)
        for bib, held in self.held.items():
            self.held[bib] = [h for h in held if h[0] not in gone]
        for iid, routed, was_held in sorted(reads, key=lambda r: r[1].t):
            wearer, by = self._wearer(routed.passing)
            if wearer is not None:
                self._place_again(iid, RoutedPassing(routed.passing, wearer, routed.t), by,
                                  out, was_held)
            else:  # a spare chip's (or one that left the start lists): unknown again
                self._keep_unknown(iid, RoutedPassing(routed.passing, "", routed.t))
        return out

    def _reassigned(self) -> None:
        """Who wears each reassigned chip, from :attr:`reassigns` (the latest decides)."""
        self.reassigned = {key: bib for key, bib in self.reassigns.values()}
        self.reassign_ids = {key: iid for iid, (key, _) in self.reassigns.items()}

    def _take_held(self, key: str) -> list[tuple[str, RoutedPassing]]:
        """Take the held reads of chip ``key`` out, whoever they were held for."""
        out = []
        for bib, held in self.held.items():
            mine = [h for h in held if transponder_key(h[1].passing.transponder) == key or (
                h[1].passing.transponder_alias is not None
                and transponder_key(h[1].passing.transponder_alias) == key)]
            if mine:
                self.held[bib] = [h for h in held if h not in mine]
                out += mine
        out.sort(key=lambda h: h[1].t)
        return out
