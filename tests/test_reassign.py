"""Officials reassign a chip (chips swapped between skaters): every passing of the chip,
past and future, is the skater's, with one revision; impossible reassignments are
refused with a reason. Each test feeds what the timing crew and the referee send and
checks what the referee writes down."""
from __future__ import annotations

from typing import Any

import msgspec
import pytest

from services.scoring.competition import Competition

from .conftest import feed
from .test_order import GUN_T, passing, start, without_revision
from .test_passages import READS_1000, RELAY, race_1000


def reassign(comp: Competition, iid: str, race: str, transponder: str, bib: str
             ) -> dict[str, list[dict[str, Any]]]:
    return feed(comp, iid, {"type": "decision", "race": race, "action": "reassign",
                            "transponder": transponder, "bib": bib, "source": "officials"})


#: The 1000 m pair with the chips swapped: bib 1 skated wearing 22, bib 2 wearing 11.
SWAPPED = [(iid, {"11": "22", "22": "11"}[tr], t) for iid, tr, t in READS_1000]


def results(view: dict[str, Any]) -> tuple[Any, Any]:
    return view["results"], view["classification"]


def test_swapped_chips_reassigned_after_the_race_give_the_ice_result():
    comp = race_1000(SWAPPED)
    assert comp.view("1000")["classification"]["bib"] == ["2", "1"]  # as the chips said
    out = reassign(comp, "r1", "1000", "22", "1")["1000"]
    assert [(e["type"], e["reason"]) for e in out] == [("revision", "decision: reassign")]
    out = reassign(comp, "r2", "1000", "11", "2")["1000"]
    assert [(e["type"], e["reason"]) for e in out] == [("revision", "decision: reassign")]
    view = comp.view("1000")
    assert results(view) == results(race_1000(READS_1000).view("1000"))
    assert view["results"]["1"]["final"]["t"] == 74_400_000
    # The story is told again as the ice gave it, then what the officials changed.
    ice = race_1000(READS_1000).view("1000")["stories"]
    assert view["stories"] == [*ice, "Transponder 22 reassigned to S1",
                               "Corrected (decision: reassign): S2 out, S1 1st (was 2nd)",
                               "Transponder 11 reassigned to S2",
                               "Corrected (decision: reassign): S2 2nd"]
    assert comp.stats["refused"] == 0


def test_a_chip_reassigned_mid_race_takes_its_past_and_future_passings():
    comp = race_1000(SWAPPED[:2])  # both 200 m reads, on the swapped chips
    reassign(comp, "r1", "1000", "22", "1")
    reassign(comp, "r2", "1000", "11", "2")
    for iid, tr, t in SWAPPED[2:]:
        events = passing(comp, iid, tr, t)["1000"]
        assert [e["type"] for e in events] in (["passage"], ["finish"])  # no revision
    assert results(comp.view("1000")) == results(race_1000(READS_1000).view("1000"))


def test_a_reassignment_is_undone_by_reassigning_the_chip_back():
    comp = race_1000(READS_1000)
    before = without_revision(comp.view("1000"))
    reassign(comp, "r1", "1000", "11", "2")  # a mistake: bib 2 now has both chips
    assert comp.view("1000")["results"]["1"]["passages"] == [None, None, None]
    reassign(comp, "r2", "1000", "11", "1")
    assert results(without_revision(comp.view("1000"))) == results(before)
    # Or voided: the chip's passings, past and later, are bib 1's again.
    reassign(comp, "r3", "1000", "11", "2")
    feed(comp, "v", {"type": "decision", "race": "1000", "action": "void", "target": "r3"})
    assert results(without_revision(comp.view("1000"))) == results(before)
    assert comp._owner("11") == "1"


def test_a_chip_worn_by_a_skater_of_a_later_pair_is_placed_once_reassigned():
    """Bib 1 (pair 1) skated wearing bib 3's chip 33; bib 3 skates in pair 2. Her reads
    wait for bib 3's gun (none yet) until the referee gives the chip to bib 1."""
    races = [{"id": "500", "distance": 500, "pairs": [
        {"pair": 1, "inner": "1", "outer": "2"}, {"pair": 2, "inner": "3"}]}]
    comp = Competition()
    start(comp, races, "1", "2", "3")
    feed(comp, "g", {"type": "gun", "race": "500", "pair": 1, "t": GUN_T})
    for iid, tr, t in [("a", "33", 10_200_000), ("b", "22", 10_500_000),
                       ("c", "33", 37_900_000), ("d", "22", 38_400_000)]:
        passing(comp, iid, tr, t)
    assert comp.view("500")["classification"]["bib"] == ["2"]
    assert comp.stats["held_before_gun"] == 2
    out = reassign(comp, "r", "500", "33", "1")["500"]
    assert [e["type"] for e in out][0] == "revision"
    view = comp.view("500")
    assert view["classification"]["bib"] == ["1", "2"]
    assert view["results"]["1"]["final"]["t"] == 37_900_000
    assert view["results"]["1"]["passages"][0]["rank"] == 1


def test_a_mass_start_sprint_goes_to_the_skater_who_wore_the_chip():
    races = [{"id": "ms", "kind": "mass_start", "skaters": ["1", "2", "3"],
              "season": "2023-24", "sprint_laps": [1, 4, 8, 12]}]
    comp = Competition()
    start(comp, races, "1", "2", "3")
    feed(comp, "g", {"type": "gun", "race": "ms", "t": GUN_T})
    # Bib 1 crossed first wearing bib 3's chip, bib 3 last wearing bib 1's.
    for iid, tr, t in [("a", "33", 30_000_000), ("b", "22", 30_100_000),
                       ("c", "11", 30_400_000)]:
        passing(comp, iid, tr, t)
    assert comp.view("ms")["pack"]["sprints"][0]["bibs"] == ["3", "2", "1"]
    reassign(comp, "r1", "ms", "33", "1")
    reassign(comp, "r2", "ms", "11", "3")
    view = comp.view("ms")
    assert view["pack"]["sprints"][0]["bibs"] == ["1", "2", "3"]
    assert view["pack"]["crossings"] == {"1": 1, "2": 1, "3": 1}


def test_impossible_reassignments_are_refused_with_a_reason():
    comp = race_1000(READS_1000)
    before = comp.view("1000")
    for tr, bib, reason in [
        ("99", "1", "transponder 99 is not in the start list"),
        ("11", "1", "transponder 11 is already bib 1's"),
        ("011", "1", "transponder 011 is already bib 1's"),  # the same chip, zero-padded
        ("11", "7", "race 1000: no bib '7'"),
    ]:
        assert reassign(comp, f"bad-{tr}-{bib}", "1000", tr, bib) == {}
        assert comp.last_reason.startswith(reason)
    assert comp.view("1000") == before
    # A decision missing the chip is not a valid input: ingest refuses it.
    with pytest.raises(msgspec.ValidationError, match="a 'reassign' decision needs 'transponder'"):
        feed(comp, "no-chip", {"type": "decision", "race": "1000", "action": "reassign",
                               "bib": "1"})
    # In a relay the chip is a skater's, not the team's.
    relay = Competition()
    start(relay, RELAY, "3", "4", "5", "6")
    assert reassign(relay, "x", "r2000", "33", "A") == {}
    assert relay.last_reason == "race r2000: a chip is worn by a skater, not by team A"
    assert [e["type"] for e in reassign(relay, "y", "r2000", "33", "4")["r2000"]] == [
        "revision"]
