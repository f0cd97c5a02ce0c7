"""Officials reassign a chip (chips swapped between skaters): every passing of the chip,
past and future, is the skater's, with one revision; impossible reassignments are
refused with a reason. Each test feeds what the timing crew and the referee send and
checks what the referee writes down."""
from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.scoring.competition import Competition

from .conftest import feed
from .test_order import GUN_T, passing, start, without_revision
from .test_passages import READS_1000, RELAY, race_1000
from .test_retell import PAIR_FIXTURES, case


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
        {"pair": 1, "inner": "1", "outer": "2"}, {"pair": 2, "inner": "3"}]},
        {"id": "1000", "distance": 1000, "pairs": [{"pair": 1, "inner": "3"}]}]
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


#: The 1000 m pair with bib 1 on a spare chip, 99, that no start list names.
SPARE = [(iid, "99" if tr == "11" else tr, t) for iid, tr, t in READS_1000]


def test_a_spare_chip_no_start_list_names_is_given_to_a_skater():
    """Bib 1 skated on spare chip 99: her reads are unknown, until the referee gives 99
    to her mid-race. Her earlier reads of it become her passages, the later ones are
    hers as they come; the undo makes them unknown again (and a second reassignment
    takes them again); giving it to her twice is refused."""
    comp = race_1000(SPARE[:4])  # both 200 m and 600 m reads
    assert comp.view("1000")["results"]["1"]["passages"] == [None, None, None]
    assert comp.stats["unknown_transponder"] == 2
    out = reassign(comp, "r1", "1000", "99", "1")["1000"]
    assert out[0]["type"] == "revision"
    assert comp.stats["refused"] == 0
    for iid, tr, t in SPARE[4:]:
        passing(comp, iid, tr, t)
    ice = race_1000(READS_1000).view("1000")
    assert results(without_revision(comp.view("1000"))) == results(without_revision(ice))
    assert comp._owner("099") == "1"

    assert reassign(comp, "again", "1000", "99", "1") == {}
    assert comp.last_reason == "transponder 99 is already bib 1's"

    feed(comp, "u1", {"type": "decision", "race": "1000", "action": "void", "target": "r1"})
    view = comp.view("1000")
    assert view["results"]["1"]["passages"] == [None, None, None]
    assert view["results"]["1"]["final"] is None
    assert comp._owner("99") is None
    assert [iid for iid, _ in comp.unknown["99"]] == ["a", "c", "e"]
    reassign(comp, "r2", "1000", "99", "1")
    assert results(without_revision(comp.view("1000"))) == results(without_revision(ice))
    assert "99" not in comp.unknown


def test_a_spare_chip_takes_only_the_reads_of_the_skaters_race():
    """A spare chip read in pair 1 of the 500 m (nobody wore it there), then in pair 2
    worn by bib 3, and again in the 1000 m (bib 3 on the ice there with her own chip):
    given to bib 3 in the 500 m, the reads after her gun there are her passages; the
    one before any gun of hers is held for her (as a reassignment hands over held reads:
    a passage only if her gun, arriving late, is earlier); the 1000 m's stays
    unknown."""
    races = [{"id": "500", "distance": 500, "pairs": [
        {"pair": 1, "inner": "1", "outer": "2"}, {"pair": 2, "inner": "3"}]},
        {"id": "1000", "distance": 1000, "pairs": [{"pair": 1, "inner": "3"}]}]
    comp = Competition()
    start(comp, races, "1", "2", "3")
    feed(comp, "g1", {"type": "gun", "race": "500", "pair": 1, "t": GUN_T})
    for iid, tr, t in [("a", "99", 10_000_000), ("b", "11", 10_200_000),
                       ("c", "22", 10_500_000), ("d", "11", 37_900_000),
                       ("e", "22", 38_400_000)]:
        passing(comp, iid, tr, t)
    feed(comp, "g2", {"type": "gun", "race": "500", "pair": 2, "t": GUN_T + 100_000_000})
    for iid, t in [("f", 110_300_000), ("g", 138_000_000)]:
        passing(comp, iid, "99", t)
    feed(comp, "g3", {"type": "gun", "race": "1000", "pair": 1, "t": GUN_T + 300_000_000})
    passing(comp, "h", "99", 317_000_000)
    reassign(comp, "r", "500", "99", "3")
    view = comp.view("500")
    assert view["results"]["3"]["final"]["t"] == 38_000_000
    assert [p and p["input"] for p in view["results"]["3"]["passages"]] == ["f", "g"]
    assert [iid for iid, _ in comp.held["3"]] == ["a"]
    assert [iid for iid, _ in comp.unknown["99"]] == ["h"]


def test_impossible_reassignments_are_refused_with_a_reason():
    comp = race_1000(READS_1000)
    before = comp.view("1000")
    for tr, bib, reason in [
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


LATER_PAIR = [{"id": "500", "distance": 500, "pairs": [
    {"pair": 1, "inner": "1", "outer": "2"}, {"pair": 2, "inner": "3"}]}]
#: Pair 1 with bib 1 wearing bib 3's chip 33 (her reads held: bib 3 has no gun), then
#: pair 2: bib 3 on her own chip again.
PAIR_1 = [("a", "33", 10_200_000), ("b", "22", 10_500_000), ("c", "33", 37_900_000),
          ("d", "22", 38_400_000)]
PAIR_2 = [("e", "33", 110_300_000), ("f", "33", 138_000_000)]


def later_pair(corrections: dict[str, list[tuple[str, dict[str, Any]]]]) -> Competition:
    """The 500 m of LATER_PAIR, ``corrections`` fed after the read named by their key."""
    comp = Competition()
    start(comp, LATER_PAIR, "1", "2", "3")
    feed(comp, "g1", {"type": "gun", "race": "500", "pair": 1, "t": GUN_T})
    for iid, tr, t in PAIR_1 + PAIR_2:
        if iid == "e":
            feed(comp, "g2", {"type": "gun", "race": "500", "pair": 2, "t": GUN_T + 100_000_000})
        passing(comp, iid, tr, t)
        for cid, inp in corrections.get(iid, []):
            feed(comp, cid, inp)
    assert comp.stats["refused"] == 0, comp.last_error
    return comp


REASSIGN = {"type": "decision", "race": "500", "action": "reassign", "transponder": "33",
            "bib": "1"}
UNDO = {"type": "decision", "race": "500", "action": "void", "target": "r"}


@pytest.mark.parametrize(("given_after", "undone_after"), [
    ("d", "d"), ("d", "e"), ("b", "c"), ("c", "f"), ("a", "f")])
def test_undoing_a_reassign_gives_back_the_reads_held_before_any_gun(given_after, undone_after):
    """The reads of chip 33 held before any gun of its skater, handed to bib 1 by the
    reassign, go back where they were when it is voided: the results are those of the
    race with neither, whenever each came (bib 3's own race included)."""
    plain = later_pair({})
    corrections: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    corrections.setdefault(given_after, []).append(("r", REASSIGN))
    corrections.setdefault(undone_after, []).append(("u", UNDO))
    corrected = later_pair(corrections)
    view, want = corrected.view("500"), plain.view("500")
    assert results(view) == results(want)
    assert want["results"]["3"]["final"]["t"] == 38_000_000
    assert corrected._owner("33") == "3" and held(corrected) == held(plain)


def held(comp: Competition) -> dict[str, list[tuple[str, Any]]]:
    """The reads held before any gun of their skater, per bib."""
    return {bib: reads for bib, reads in comp.held.items() if reads}


def pair_skaters(comp: Competition, race_id: str) -> dict[int, list[str]]:
    """Per pair, the bibs of its skaters (a team's members in a team event)."""
    race = comp.races[race_id]
    out: dict[int, list[str]] = {}
    for row, bib in enumerate(race.bibs):
        out.setdefault(race.pair_no[row], []).extend(race.teams.get(bib, [bib]))
    return out


def fed_all(doc: dict[str, Any], inputs: list[tuple[str, dict[str, Any]]]) -> Competition:
    comp = Competition()
    feed(comp, "sl", {"type": "startlist", **doc["startlist"]})
    for iid, inp in inputs:
        feed(comp, iid, inp)
    assert comp.stats["refused"] == 0, comp.last_error
    return comp


def with_strays(doc: dict[str, Any], items: tuple[Any, ...], picks: list[int]
                ) -> tuple[list[tuple[str, dict[str, Any]]], str, str]:
    """The fixture's inputs, and three reads of a chip of a skater of the last pair
    while earlier pairs skate (a chip left by the line, or worn by another skater):
    held, as no gun of its skater is that early. Returns them, the chip, its skater."""
    race = doc["script"]["race"]
    pairs = pair_skaters(fed_all(doc, []), race)
    guns = {s.inp["pair"]: s.inp["t"] for s in items if s.inp["type"] == "gun"}
    last = max(pairs)
    owner = sorted(pairs[last])[picks[0] % len(pairs[last])]
    chip = next(s["transponders"][0] for s in doc["startlist"]["skaters"] if s["bib"] == owner)
    t0, t1 = min(guns.values()), guns[last]
    # An input with no time (the referee's `official`) keeps its place at the end: an
    # official race takes no more reads.
    end = max(s.inp.get("t", t0) for s in items) + 1
    timed = [(s.inp.get("t", end), 0, s.iid, s.inp) for s in items]
    timed += [(t, 1, f"stray-{n}", {"type": "passing", "transponder": chip, "t": t})
              for n, t in enumerate(t0 + 1 + p % (t1 - t0 - 1) for p in picks[1:4])]
    return [(iid, inp) for _, _, iid, inp in sorted(timed, key=lambda x: x[:2])], chip, owner


def correction(doc: dict[str, Any], base: Competition, kind: str, chip: str, owner: str,
               picks: list[int]) -> tuple[dict[str, Any], int | None]:
    """A correction of ``kind`` drawn by ``picks``; and the pair it times (None: any)."""
    race = doc["script"]["race"]
    view = base.view(race)
    if kind == "reassign":
        others = sorted(b for ms in pair_skaters(base, race).values() for b in ms if b != owner)
        return ({"type": "decision", "race": race, "action": "reassign", "transponder": chip,
                 "bib": others[picks[4] % len(others)]}, None)
    finished = sorted(b for b, r in view["results"].items() if r["final"] is not None)
    bib = finished[picks[4] % len(finished)]
    t = view["results"][bib]["final"]["t"] + picks[5] % 1_000_001 - 500_000
    pair = base.races[race].pair_no[base.races[race].row[bib]]
    if kind == "photo":
        return {"type": "finish_time", "race": race, "bib": bib, "time_us": t,
                "origin": "photo"}, pair
    metres = {"m": view["race"]["distance"]} if picks[5] % 2 else {}
    return ({"type": "decision", "race": race, "action": "manual_time", "bib": bib,
             "time_us": t, **metres}, pair)


@pytest.mark.parametrize("name", [*PAIR_FIXTURES, "pechstein"])
@settings(max_examples=8, deadline=None)
@given(kind=st.sampled_from(["reassign", "reassign", "manual", "photo"]),
       picks=st.lists(st.integers(0, 2**31), min_size=6, max_size=6),
       at=st.tuples(st.floats(0.0, 1.0), st.floats(0.0, 1.0)))
def test_a_correction_and_its_undo_leave_the_results_of_the_race_without_them(
        name, kind, picks, at):
    """Over real pair races with a few reads of a later skater's chip held before her
    gun: a reassigned chip, a manual or a photo finish time, keyed in at any moment and
    voided at any later one, leave the results, the classification, who owns the chip
    and the reads held exactly as in the race without them."""
    doc, items = case(name)
    inputs, chip, owner = with_strays(doc, items, picks)
    base = fed_all(doc, inputs)
    fix, pair = correction(doc, base, kind, chip, owner, picks)
    gun = next((n for n, (_, inp) in enumerate(inputs)
                if inp["type"] == "gun" and inp.get("pair") == pair), -1)
    given_at = gun + 1 + round(at[0] * (len(inputs) - gun - 1))
    undone_at = given_at + round(at[1] * (len(inputs) - given_at))
    void = {"type": "decision", "race": doc["script"]["race"], "action": "void",
            "target": "fix"}
    corrected = fed_all(doc, [*inputs[:given_at], ("fix", fix), *inputs[given_at:undone_at],
                              ("undo", void), *inputs[undone_at:]])
    race = doc["script"]["race"]
    assert results(corrected.view(race)) == results(base.view(race))
    assert corrected._owner(chip) == owner and held(corrected) == held(base)
