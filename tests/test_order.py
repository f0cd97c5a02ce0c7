"""Arrival order never decides a result: reads fed out of order, the gun landing after
the first reads, statuses at every passage. Each test feeds what a timing crew's
equipment sends and checks what the referee writes down."""
from __future__ import annotations

import dataclasses
import functools
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from icetime.replay import load_fixture, script_inputs
from services.scoring.competition import Competition

from .conftest import feed, without_inputs

GUN_T = 1_000_000_000  # the common clock at the gun, µs


def skaters(*bibs: str) -> list[dict[str, Any]]:
    """Skaters named after their bib, each on one transponder: bib 1 wears 11, 2 wears 22."""
    return [{"bib": b, "name": f"Skater {b}", "short": f"S{b}", "transponders": [b * 2]}
            for b in bibs]


def start(comp: Competition, races: list[dict[str, Any]], *bibs: str) -> None:
    feed(comp, "sl", {"type": "startlist", "skaters": skaters(*bibs), "races": races})


def passing(comp: Competition, iid: str, transponder: str, after_gun_us: int
            ) -> dict[str, list[dict[str, Any]]]:
    return feed(comp, iid, {"type": "passing", "transponder": transponder,
                            "t": GUN_T + after_gun_us})


def without_revision(view: dict[str, Any]) -> dict[str, Any]:
    """A view less its ``revision`` counter: the count of revisions published, the one
    thing in a view that tells how the reads arrived."""
    return {k: v for k, v in view.items() if k != "revision"}


def wire(obj: Any) -> Any:
    return json.loads(json.dumps(obj))


def feed_all(comp: Competition, inputs: list[tuple[str, dict[str, Any]]]
             ) -> list[dict[str, Any]]:
    events = []
    for iid, inp in inputs:
        for evs in feed(comp, iid, inp).values():
            events += evs
    return events


# ---------------------------------------------------------------- long track

PAIR_500 = [{"id": "500", "distance": 500, "pairs": [{"pair": 1, "inner": "1", "outer": "2"}]}]


def run_500(order: list[str]) -> tuple[Competition, list[dict[str, Any]]]:
    """500 m, pair 1: bib 1 at 100 m in 10.200, bib 2 in 10.500; reads fed in ``order``."""
    comp = Competition()
    start(comp, PAIR_500, "1", "2")
    reads = {"11": 10_200_000, "22": 10_500_000}
    inputs = [("g", {"type": "gun", "race": "500", "pair": 1, "t": GUN_T})]
    inputs += [(f"p{tr}", {"type": "passing", "transponder": tr, "t": GUN_T + reads[tr]})
               for tr in order]
    return comp, feed_all(comp, inputs)


def test_the_later_read_arriving_first_gives_the_ranks_of_the_ice():
    comp, events = run_500(["22", "11"])
    view = comp.view("500")
    at100 = {b: view["results"][b]["passages"][0] for b in ("1", "2")}
    assert (at100["1"]["rank"], at100["2"]["rank"]) == (1, 2)
    # gap_partner is the gap to a partner who passed first (docs/protocol.md): bib 2's.
    assert at100["1"]["gap_partner"] is None and at100["2"]["gap_partner"] == 300_000
    assert at100["2"]["gap_best"] == 300_000 and at100["2"]["best_bib"] == "1"
    # Bib 2's read was applied at once (it was the latest then); bib 1's, earlier in race
    # time, costs one revision whose view is the one the reads in time order give.
    assert [e["type"] for e in events] == ["pair_start", "passage", "revision"]
    assert events[-1]["reason"] == "late read"
    in_order, in_order_events = run_500(["11", "22"])
    assert [e["type"] for e in in_order_events] == ["pair_start", "passage", "passage"]
    assert without_revision(events[-1]["view"]) == without_revision(in_order.view("500"))
    assert view["stories"] == ["S1 fastest at 100 m"]


def test_a_late_re_read_changes_nothing_and_publishes_nothing():
    comp, _ = run_500(["11", "22"])
    # The second ankle of bib 1, 20 ms after its read, arriving after bib 2's read.
    assert passing(comp, "again", "11", 10_220_000) == {}
    assert comp.view("500")["revision"] == 1


def test_a_dq_leaves_every_rank_best_and_gap_not_only_the_classification():
    races = [{"id": "500", "distance": 500, "pairs": [
        {"pair": 1, "inner": "1", "outer": "2"}, {"pair": 2, "inner": "3"}]}]
    comp = Competition()
    start(comp, races, "1", "2", "3")
    feed_all(comp, [
        ("g1", {"type": "gun", "race": "500", "pair": 1, "t": GUN_T}),
        ("a1", {"type": "passing", "transponder": "11", "t": GUN_T + 9_600_000}),
        ("b1", {"type": "passing", "transponder": "22", "t": GUN_T + 10_100_000}),
        ("a2", {"type": "passing", "transponder": "11", "t": GUN_T + 37_000_000}),
        ("b2", {"type": "passing", "transponder": "22", "t": GUN_T + 38_500_000})])
    out = feed(comp, "dq", {"type": "decision", "race": "500", "action": "dq", "bib": "1",
                            "reason": "lane"})
    view = out["500"][0]["view"]
    assert view["results"]["1"]["status"] == "DQ"
    assert view["results"]["1"]["passages"] == [None, None]  # no longer compared with
    assert view["results"]["2"]["passages"][0]["rank"] == 1
    assert view["results"]["2"]["passages"][0]["gap_partner"] is None
    assert view["classification"]["bib"] == ["2"]
    # Pair 2: bib 3 is faster than bib 2, slower than the disqualified bib 1.
    gun2 = GUN_T + 60_000_000
    events = feed_all(comp, [
        ("g2", {"type": "gun", "race": "500", "pair": 2, "t": gun2}),
        ("c1", {"type": "passing", "transponder": "33", "t": gun2 + 9_800_000}),
        ("c2", {"type": "passing", "transponder": "33", "t": gun2 + 38_000_000})])
    at100, finish = events[1], events[2]
    assert at100["row"]["rank"] == 1 and at100["row"]["best_bib"] == "3"
    assert at100["stories"] == ["S3 fastest at 100 m, 0.30 under S2",
                                "S3 0.30 ahead of leader S2 at 100 m"]
    assert finish["row"]["rank"] == 1 and finish["row"]["leader_bib"] == "2"
    assert finish["stories"] == ["New leader: S3 in 38.00, 0.50 ahead of S2"]
    # She goes in at the head of the classification; bib 2 goes down to second.
    assert finish["ranked"] == {"at": 0, "rank": 1, "t": 38_000_000, "behind": 0, "tied": 0}
    assert comp.view("500")["classification"]["bib"] == ["3", "2"]
    # Reinstated, bib 1 is back everywhere: her reads were kept in the log.
    out = feed(comp, "back", {"type": "decision", "race": "500", "action": "reinstate",
                              "bib": "1"})
    view = out["500"][0]["view"]
    assert view["classification"]["bib"] == ["1", "3", "2"]
    assert view["results"]["3"]["passages"][1]["rank"] == 2


# ---------------------------------------------------------------- pack races

MASS_START = [{"id": "ms", "kind": "mass_start", "skaters": ["1", "2", "3"], "season": "2023-24",
               "sprint_laps": [1, 4, 8, 12]}]


def test_sprint_points_follow_the_line_not_the_network():
    comp = Competition()
    start(comp, MASS_START, "1", "2", "3")
    feed_all(comp, [("g", {"type": "gun", "race": "ms", "t": GUN_T})])
    passing(comp, "b", "22", 30_100_000)  # B's read first
    out = passing(comp, "a", "11", 30_000_000)
    assert out["ms"][0]["type"] == "revision"
    passing(comp, "c", "33", 30_400_000)
    view = comp.view("ms")
    table = view["race"]["sprint_points_table"]["sprint"]
    assert view["pack"]["sprints"][0]["bibs"] == ["1", "2", "3"]
    assert view["pack"]["sprints"][0]["sprint_points"] == table[:3]
    assert [view["results"][b]["passages"][0]["position"] for b in "123"] == [1, 2, 3]
    assert view["pack"]["sprint_points"] == {"1": table[0], "2": table[1], "3": table[2]}
    assert view["stories"][-1] == f"Sprint 1 (lap 1): S1 {table[0]}, S2 {table[1]}, S3 {table[2]}"


def test_short_track_positions_follow_the_line():
    races = [{"id": "st", "kind": "short_track", "distance": 500, "skaters": ["1", "2"]}]
    views = []
    for order in (["11", "22"], ["22", "11"]):
        comp = Competition()
        start(comp, races, "1", "2")
        feed(comp, "g", {"type": "gun", "race": "st", "t": GUN_T})
        for tr in order:
            passing(comp, tr, tr, {"11": 10_000_000, "22": 10_100_000}[tr])
        views.append(comp.view("st"))
    for view in views:
        assert [view["results"][b]["passages"][0]["position"] for b in "12"] == [1, 2]
        assert view["pack"]["order"] == ["1", "2"]
    assert without_revision(views[0]) == without_revision(views[1])


def test_a_penalised_skater_leaves_the_positions_at_every_line():
    races = [{"id": "st", "kind": "short_track", "distance": 500, "skaters": ["1", "2", "3"]}]
    comp = Competition()
    start(comp, races, "1", "2", "3")
    feed(comp, "g", {"type": "gun", "race": "st", "t": GUN_T})
    for lap in range(3):
        for n, tr in enumerate(("11", "22", "33")):
            passing(comp, f"{tr}-{lap}", tr, 12_000_000 + lap * 9_000_000 + n * 200_000)
    out = feed(comp, "pen", {"type": "decision", "race": "st", "action": "pen", "bib": "1"})
    view = out["st"][0]["view"]
    for k in range(3):
        assert [view["results"][b]["passages"][k]["position"] for b in "23"] == [1, 2]
        assert view["results"]["2"]["passages"][k]["gap_leader"] == 0
    assert view["pack"]["order"][-1] == "1" and view["results"]["1"]["status"] == "PEN"


# ---------------------------------------------------------------- the gun lands late

def test_reads_before_their_gun_are_held_and_land_with_it():
    comp = Competition()
    start(comp, PAIR_500, "1", "2")
    # The pair's first reads reach scoring before the gun's input does.
    assert passing(comp, "a", "11", 10_200_000) == {}
    assert passing(comp, "b", "22", 10_500_000) == {}
    assert comp.stats["held_before_gun"] == 2
    out = feed(comp, "g", {"type": "gun", "race": "500", "pair": 1, "t": GUN_T})
    assert [e["type"] for e in out["500"]] == ["pair_start", "passage", "passage"]
    assert comp.stats["held_placed"] == 2
    in_order, _ = run_500(["11", "22"])
    assert without_inputs(comp.view("500")) == without_inputs(in_order.view("500"))


def test_a_read_before_the_gun_is_not_a_passage():
    comp = Competition()
    start(comp, PAIR_500, "1", "2")
    passing(comp, "warm-up", "11", -30_000_000)  # a warm-up lap over the loop
    out = feed(comp, "g", {"type": "gun", "race": "500", "pair": 1, "t": GUN_T})
    assert [e["type"] for e in out["500"]] == ["pair_start"]
    assert comp.stats["held_before_gun"] == 1 and comp.stats["held_placed"] == 0


def test_a_passing_goes_to_the_race_of_its_time_not_the_last_gun():
    races = [{"id": "500", "distance": 500, "pairs": [{"pair": 1, "inner": "1"}]},
             {"id": "1000", "distance": 1000, "pairs": [{"pair": 1, "inner": "1"}]}]
    comp = Competition()
    start(comp, races, "1")
    feed(comp, "g500", {"type": "gun", "race": "500", "pair": 1, "t": GUN_T})
    passing(comp, "p100", "11", 10_000_000)
    feed(comp, "g1000", {"type": "gun", "race": "1000", "pair": 1, "t": GUN_T + 600_000_000})
    # The 500 m finish read, held up in the network, lands after the 1000 m's gun.
    out = passing(comp, "p500", "11", 38_000_000)
    assert list(out) == ["500"] and out["500"][0]["type"] == "finish"
    assert comp.view("500")["classification"]["t"] == [38_000_000]
    assert comp.view("1000")["results"]["1"]["passages"] == [None] * 3


# ---------------------------------------------------------------- every fixture, jittered

FIXTURES = sorted((Path(__file__).parent.parent / "fixtures").glob("*.json"))
#: Arrival jitter of every read and gun, and how late a RESEND delivers a read (less
#: than the 3 s after the last read at which the fixtures' officials act: an official's
#: input is placed after the reads applied when it arrived, docs/time.md).
JITTER_US, RESEND_US = 200_000, (500_000, 2_500_000)


@dataclass(frozen=True)
class Scheduled:
    order: int  # its place in time order
    at_us: int  # when it is sent
    iid: str
    inp: dict[str, Any]


@functools.cache
def scheduled(name: str) -> tuple[dict[str, Any], tuple[Scheduled, ...]]:
    doc = load_fixture(next(p for p in FIXTURES if p.stem == name))
    return doc, tuple(Scheduled(n, it.at_us, f"in-{n}",
                                {**it.inp, "source": it.source, "rx_us": it.at_us})
                      for n, it in enumerate(script_inputs(doc)))


def run_fixture(doc: dict[str, Any], inputs: list[Scheduled]
                ) -> tuple[Competition, list[tuple[int, dict[str, Any]]]]:
    """Feed ``inputs`` in the order given; returns the engine and every revision
    published for a late read, with how many inputs had been fed then."""
    comp = Competition()
    feed(comp, "sl", {"type": "startlist", **doc["startlist"]})
    revisions = []
    for n, s in enumerate(inputs):
        for evs in feed(comp, s.iid, s.inp).values():
            # Through JSON, as clients get them: the engine's events refer to its state.
            revisions += [(n + 1, json.loads(json.dumps(e))) for e in evs
                          if e["type"] == "revision" and e["reason"] == "late read"]
    assert comp.stats["refused"] == 0, comp.last_error
    return comp, revisions


@functools.cache
def in_order(name: str) -> dict[str, dict[str, Any]]:
    doc, items = scheduled(name)
    comp, revisions = run_fixture(doc, list(items))
    assert revisions == []  # in order, nothing is ever revised for arrival
    return {rid: wire(without_revision(comp.view(rid))) for rid in comp.races}


@dataclass(frozen=True)
class Network:
    """How the network delivers: up to ``jitter_us`` late, a share ``resend`` of the
    reads RESEND-late by a second or two, a share ``twice`` delivered twice."""
    seed: int
    jitter_us: int
    resend: float
    twice: float


def arrivals(net: Network, items: tuple[Scheduled, ...]) -> list[Scheduled]:
    """``items`` as the network delivers them: each read and gun late by up to the
    jitter, some reads RESEND-late, some delivered twice (the same input again, or the
    same read under another id, as from a second decoder)."""
    rnd = random.Random(net.seed)
    out = []
    for s in items:
        timed = s.inp["type"] in ("passing", "gun")
        delay = rnd.randint(0, net.jitter_us) if timed else 0
        if s.inp["type"] == "passing" and rnd.random() < net.resend:
            delay += rnd.randint(*RESEND_US)
        out.append((s.at_us + delay, s))
        if s.inp["type"] == "passing" and rnd.random() < net.twice:
            again = s if rnd.random() < 0.5 else dataclasses.replace(s, iid=s.iid + "-2")
            out.append((s.at_us + delay + rnd.randint(0, 2 * net.jitter_us), again))
    out.sort(key=lambda x: x[0])
    return [s for _, s in out]


networks = st.builds(Network, seed=st.integers(0, 2**32 - 1),
                     jitter_us=st.sampled_from([50_000, JITTER_US]),
                     resend=st.sampled_from([0.0, 0.05, 0.2]),
                     twice=st.sampled_from([0.0, 0.05, 0.2]))


def in_order_view_of(doc: dict[str, Any], delivered: list[Scheduled], race: str
                     ) -> dict[str, Any]:
    """The view the inputs delivered so far give when fed in time order."""
    comp, _ = run_fixture(doc, sorted(delivered, key=lambda s: (s.order, s.iid)))
    return wire(without_revision(comp.view(race)))


@pytest.mark.parametrize("name", [p.stem for p in FIXTURES])
@settings(max_examples=6, deadline=None)
@given(net=networks)
def test_every_fixture_comes_out_the_same_whatever_the_arrival_order(name, net):
    doc, items = scheduled(name)
    delivered = arrivals(net, items)
    comp, revisions = run_fixture(doc, delivered)
    for rid, view in in_order(name).items():
        assert wire(without_revision(comp.view(rid))) == view, rid
    # Each revision ends at what the reads delivered by then give in time order (two
    # of them per example, checked whole: each check is a run of its own).
    race = doc["script"]["race"]
    for n, rev in random.Random(net.seed).sample(revisions, min(2, len(revisions))):
        assert without_revision(rev["view"]) == in_order_view_of(doc, delivered[:n], race)


def refusals(doc: dict[str, Any], t: int) -> list[dict[str, Any]]:
    """Inputs a race must refuse, timed ``t`` on the common clock: a gun for a pair (or
    a field) the race does not have, a decision and an official time for a bib it does
    not have, a manual time at a distance it has no passage for."""
    race = doc["script"]["race"]
    spec = next(r for r in doc["startlist"]["races"] if r["id"] == race)
    # A pair race refuses a gun for a pair it does not have; a pack race takes any gun
    # (a restart), so there the first input is a penalty for a bib it does not have.
    gun = ({"type": "gun", "race": race, "pair": 99, "t": t, "source": "gun"}
           if "pairs" in spec else
           {"type": "decision", "race": race, "action": "pen", "bib": "no-such-bib",
            "source": "officials"})
    return [gun,
            {"type": "decision", "race": race, "action": "dq", "bib": "no-such-bib",
             "source": "officials"},
            {"type": "finish_time", "race": race, "bib": "no-such-bib", "time_us": 60_000_000,
             "origin": "photo", "source": "photo"}]


@pytest.mark.parametrize("name", [p.stem for p in FIXTURES])
@settings(max_examples=4, deadline=None)
@given(at=st.floats(0.05, 0.95), when=st.floats(0.0, 1.0), which=st.integers(0, 2))
def test_a_refused_input_at_any_race_time_changes_nothing(name, at, when, which):
    """An input the race refuses, arriving at any moment and timed at any moment of the
    race (a gun for a pair that does not exist, timed at the first pair's gun, after two
    pairs had finished: a trial rolled the race back to its start that way), leaves the
    race exactly as it was, stories included, and later inputs apply as before."""
    doc, items = scheduled(name)
    cut = max(1, int(len(items) * at))
    timed = [s.inp["t"] for s in items if "t" in s.inp]
    bad = refusals(doc, timed[int((len(timed) - 1) * when)])[which]
    comp = Competition()
    feed(comp, "sl", {"type": "startlist", **doc["startlist"]})
    for s in items[:cut]:
        feed(comp, s.iid, s.inp)
    race = doc["script"]["race"]
    before = wire(without_revision(comp.view(race)))
    assert feed(comp, "bad", bad) == {}
    assert comp.stats["refused"] == 1, bad
    assert wire(without_revision(comp.view(race))) == before
    for s in items[cut:]:
        feed(comp, s.iid, s.inp)
    assert comp.stats["refused"] == 1, comp.last_error
    assert wire(without_revision(comp.view(race))) == in_order(name)[race]
