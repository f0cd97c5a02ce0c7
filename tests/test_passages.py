"""Passages by time, not by count: a missed read leaves its passage empty and marked,
an implausible read is held for the officials, an official time makes a final with no
read at all, and a chip lying in the loop field is one passage. Each test feeds what a
timing crew's equipment sends and checks what the referee writes down."""
from __future__ import annotations

import functools
from typing import Any

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from icetime.replay import load_fixture
from services.scoring.competition import Competition

from .conftest import TOKENS, feed, without_inputs
from .test_order import (
    FIXTURES,
    GUN_T,
    Scheduled,
    in_order,
    passing,
    run_fixture,
    scheduled,
    start,
    wire,
    without_revision,
)
from .test_pipeline import Follower
from .test_team import feed_all as team_feed
from .test_team import team_doc

PAIR_1000 = [{"id": "1000", "distance": 1000, "pairs": [{"pair": 1, "inner": "1", "outer": "2"}]}]
PAIR_500 = [{"id": "500", "distance": 500, "pairs": [{"pair": 1, "inner": "1", "outer": "2"}]}]
#: 1000 m, pair 1 (µs after the gun): bib 1 (chip 11) and bib 2 (chip 22) at 200, 600, 1000 m.
READS_1000 = [("a", "11", 17_500_000), ("b", "22", 17_800_000), ("c", "11", 43_600_000),
              ("d", "22", 43_900_000), ("e", "11", 74_400_000), ("f", "22", 75_100_000)]


def race_1000(reads: list[tuple[str, str, int]]) -> Competition:
    comp = Competition()
    start(comp, PAIR_1000, "1", "2")
    feed(comp, "g", {"type": "gun", "race": "1000", "pair": 1, "t": GUN_T})
    for iid, tr, t in reads:
        passing(comp, iid, tr, t)
    return comp


def test_a_missed_600m_read_leaves_the_finish_read_her_finish():
    comp = race_1000([r for r in READS_1000 if r[0] != "c"])
    res = comp.view("1000")["results"]["1"]
    assert res["passages"][1] is None  # 600 m: empty
    fin = res["passages"][2]
    assert (fin["m"], fin["t"], fin["missing"]) == (1000, 74_400_000, [600])
    assert fin["lap_time"] == 74_400_000 - 17_500_000  # since her last recorded passage
    assert res["final"] == {"t": 74_400_000, "flags": [], "origin": "transponder"}
    assert comp.view("1000")["classification"]["bib"] == ["1", "2"]
    assert "missing" not in comp.view("1000")["results"]["2"]["passages"][2]


def test_a_missed_first_read_places_the_next_one_at_its_own_passage():
    comp = race_1000([r for r in READS_1000 if r[0] != "a"])
    res = comp.view("1000")["results"]["1"]
    assert res["passages"][0] is None
    assert (res["passages"][1]["m"], res["passages"][1]["missing"]) == (600, [200])
    assert res["final"]["t"] == 74_400_000


def test_the_missed_read_arriving_late_fills_its_passage_as_in_time_order():
    comp = race_1000([r for r in READS_1000 if r[0] != "c"])
    events = passing(comp, "c", "11", 43_600_000)["1000"]  # a RESEND, after her finish
    assert [e["type"] for e in events] == ["revision"]
    in_order = race_1000(READS_1000).view("1000")
    assert without_revision(comp.view("1000")) == without_revision(in_order)
    assert "missing" not in comp.view("1000")["results"]["1"]["passages"][2]


def test_a_manual_time_fills_a_missed_passage():
    comp = race_1000([r for r in READS_1000 if r[0] != "c"])
    feed(comp, "m", {"type": "decision", "race": "1000", "action": "manual_time", "bib": "1",
                     "m": 600, "time_us": 43_612_345})
    res = comp.view("1000")["results"]["1"]
    assert res["passages"][1]["t"] == 43_612_000
    assert "missing" not in res["passages"][2]
    assert res["passages"][2]["lap_time"] == 74_400_000 - 43_612_000
    assert res["final"]["t"] == 74_400_000


def test_a_passing_days_after_the_gun_is_held_for_the_officials_not_a_passage():
    comp = Competition()
    start(comp, PAIR_500, "1", "2")
    feed(comp, "g", {"type": "gun", "race": "500", "pair": 1, "t": GUN_T})
    days = 1_000_000 * 1_000_000  # gun + 11.6 days
    events = passing(comp, "x", "11", days)["500"]
    assert [(e["type"], e["reason"]) for e in events] == [("revision", "implausible read")]
    view = comp.view("500")
    assert view["results"]["1"]["passages"] == [None, None]
    [held] = view["held"]
    assert (held["bib"], held["input"], held["t"]) == ("1", "x", GUN_T + days)
    assert "500 m takes at most 200 s" in held["reason"]
    assert comp.stats["implausible_read"] == 1
    # Her real reads still count, and nothing is replayed because of the held one.
    assert [e["type"] for e in passing(comp, "a", "11", 10_200_000)["500"]] == ["passage"]
    assert [e["type"] for e in passing(comp, "b", "11", 37_500_000)["500"]] == ["finish"]
    assert comp.view("500")["classification"]["bib"] == ["1"]


def test_a_photo_finish_time_makes_the_final_without_a_finish_read():
    comp = Competition()
    start(comp, PAIR_500, "1", "2")
    feed(comp, "g", {"type": "gun", "race": "500", "pair": 1, "t": GUN_T})
    for iid, tr, t in [("a", "11", 10_200_000), ("b", "22", 10_500_000), ("d", "22", 38_100_000)]:
        passing(comp, iid, tr, t)  # bib 1's finish read is missed
    events = feed(comp, "pf", {"type": "finish_time", "race": "500", "bib": "1",
                               "time_us": 37_654_321, "origin": "photo"})["500"]
    # The photo time stands for an instant before bib 2's finish read: put in its place
    # (one revision), bib 2 finished second behind it.
    assert [(e["type"], e["reason"]) for e in events] == [("revision", "official time (photo)")]
    view = comp.view("500")
    assert view["results"]["1"]["final"] == {"t": 37_654_000, "flags": [], "origin": "photo"}
    assert view["classification"]["bib"] == ["1", "2"]
    assert [view["results"][b]["passages"][-1]["rank"] for b in "12"] == [1, 2]
    assert view["on_ice"] == {}  # the pair is done
    # The same inputs replayed (a decision revises the race) give the same result.
    feed(comp, "off", {"type": "decision", "race": "500", "action": "official"})
    assert comp.view("500")["results"]["1"]["final"]["t"] == 37_654_000


# ---------------------------------------------------------------- end to end

async def test_a_missed_read_through_the_json_feed(stack):
    """The headline case through the documented feed: 1000 m, bib 1's 600 m read is
    missed; a client sees her finish as her finish, the 600 m marked missing."""
    http = f"http://127.0.0.1:{stack.settings.ingest_http_port}"
    skaters = [{"bib": b, "name": f"Skater {b}", "transponders": [b * 2]} for b in ("1", "2")]
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{http}/api/startlist", json={"skaters": skaters, "races": PAIR_1000},
                          headers={"Authorization": f"Bearer {TOKENS['officials']}"}) as r:
            assert r.status == 200, await r.text()
        async with s.post(f"{http}/feed", json={"type": "gun", "race": "1000", "pair": 1,
                                                "t": GUN_T, "seq": 1},
                          headers={"Authorization": f"Bearer {TOKENS['gun']}"}) as r:
            assert (await r.json())["ok"]
        for n, (_, tr, t) in enumerate(r for r in READS_1000 if r[0] != "c"):
            async with s.post(f"{http}/feed", json={"type": "passing", "transponder": tr,
                                                    "t": GUN_T + t, "seq": n + 1},
                              headers={"Authorization": f"Bearer {TOKENS['finish-loop']}"}) as r:
                assert (await r.json())["ok"]
    f = Follower(stack.ws_url, race="1000")
    await f.run(lambda s: s.view is not None and len(s.view["classification"]["bib"]) == 2)
    res = f.view["results"]["1"]
    assert res["passages"][1] is None and res["passages"][2]["missing"] == [600]
    assert res["final"]["t"] == 74_400_000
    assert f.view["classification"]["bib"] == ["1", "2"]


# ---------------------------------------------------------------- loop dwell

ST_500 = [{"id": "st500", "kind": "short_track", "distance": 500, "skaters": ["1", "2"]}]
#: Short-track 500 m: 5 crossings (the start is half a lap before the line). Bib 2 (22)
#: laps in 9 s; bib 1 (11) keeps up to her 3rd crossing, and falls on the line there.
LAPS_2 = [4_500_000 + 9_000_000 * k for k in range(5)]


def short_track(reads: list[tuple[str, int]]) -> tuple[Competition, list[dict[str, Any]]]:
    comp = Competition()
    start(comp, ST_500, "1", "2")
    feed(comp, "g", {"type": "gun", "race": "st500", "t": GUN_T})
    events: list[dict[str, Any]] = []
    for n, (tr, t) in enumerate(sorted(reads, key=lambda r: r[1])):
        events += passing(comp, f"p{n}", tr, t).get("st500", [])
    return comp, events


def test_a_skater_lying_on_the_line_is_one_passage_not_laps():
    lying = [("11", 4_400_000), ("11", 13_400_000)]
    lying += [("11", 22_400_000 + 1_000_000 * s) for s in range(40)]  # read every second
    comp, events = short_track(lying + [("22", t) for t in LAPS_2])
    view = comp.view("st500")
    assert view["pack"]["crossings"] == {"1": 3, "2": 5}
    assert view["classification"]["bib"] == ["2"]  # she does not "win"
    assert view["results"]["1"]["final"] is None
    # While she lies there the view says so, in a revision the clients fold.
    assert [e["reason"] for e in events if e["type"] == "revision"] == ["loop dwell"]
    assert next(e for e in events if e["type"] == "revision")["view"]["pack"]["in_field"] == ["1"]


def test_a_real_crossing_after_a_dwell_counts():
    reads = [("11", 4_400_000), ("11", 13_400_000)]
    reads += [("11", 22_400_000 + 1_000_000 * s) for s in range(10)]  # down 9 s, then up
    reads += [("11", 40_400_000 + 12_000_000 * k) for k in range(2)]  # two slow laps
    comp, _ = short_track(reads + [("22", t) for t in LAPS_2])
    view = comp.view("st500")
    assert view["pack"]["crossings"] == {"1": 5, "2": 5}
    assert view["results"]["1"]["final"]["t"] == 52_400_000
    assert view["pack"]["in_field"] == []
    assert view["classification"]["bib"] == ["2", "1"]


RELAY = [{"id": "r2000", "kind": "short_track_relay", "distance": 2000,
          "teams": [{"id": "A", "name": "Team A", "skaters": ["3", "4"]},
                    {"id": "B", "name": "Team B", "skaters": ["5", "6"]}]}]


def relay(resting: bool) -> tuple[Competition, list[dict[str, Any]]]:
    """2000 m relay (18 crossings): bib 3 (chip 33) skates every lap for team A in 9 s,
    bib 5 (55) for team B in 9.2 s; with ``resting``, A's bib 4 (44) stands by the line
    from 32.5 s to 60 s, read every second."""
    comp = Competition()
    start(comp, RELAY, "3", "4", "5", "6")
    feed(comp, "g", {"type": "gun", "race": "r2000", "t": GUN_T})
    reads = [("33", 9_000_000 * (k + 1)) for k in range(18)]
    reads += [("55", 9_200_000 * (k + 1)) for k in range(18)]
    if resting:
        reads += [("44", 32_500_000 + 1_000_000 * s) for s in range(28)]
    events: list[dict[str, Any]] = []
    for n, (tr, t) in enumerate(sorted(reads, key=lambda r: r[1])):
        events += passing(comp, f"p{n}", tr, t).get("r2000", [])
    return comp, events


def test_a_relay_teammate_resting_by_the_line_earns_no_laps_or_exchanges():
    comp, events = relay(resting=True)
    view = comp.view("r2000")
    assert view["pack"]["crossings"] == {"A": 18, "B": 18}
    assert view["pack"]["exchanges"] == {"A": 0, "B": 0}
    assert {p["skater"] for p in view["results"]["A"]["passages"]} == {"3"}
    assert view["classification"]["bib"] == ["A", "B"]
    assert view["results"]["A"]["final"]["t"] == 162_000_000
    # He was shown lying in the field, and has left it since.
    assert any(e["type"] == "revision" and e["view"]["pack"]["in_field"] == ["4"]
               for e in events)
    assert view["pack"]["in_field"] == []
    clean = relay(resting=False)[0].view("r2000")
    assert without_inputs(view["results"]) == without_inputs(clean["results"])
    assert view["classification"] == clean["classification"]


def test_a_long_track_skater_down_on_the_line_makes_no_passages():
    """1000 m: bib 1 falls on the line at her 200 m passage and is read every second
    for 70 s; bib 2 skates on."""
    down = [(f"d{s}", "11", 17_500_000 + 1_000_000 * s) for s in range(70)]
    comp = race_1000(sorted([r for r in READS_1000 if r[1] == "22"] + down, key=lambda r: r[2]))
    view = comp.view("1000")
    assert [p and p["m"] for p in view["results"]["1"]["passages"]] == [200, None, None]
    assert view["results"]["1"]["final"] is None
    assert view["classification"]["bib"] == ["2"]
    assert view["in_field"] == ["1"]


# ---------------------------------------------------------------- pack races, team events

#: Races where a passage is a crossing of the line by the pack or by a team.
PACK_AND_TEAM = [p.stem for p in FIXTURES
                 if load_fixture(p)["startlist"]["races"][0].get("kind") not in
                 (None, "long_track_individual", "marathon")]  # marathon: test_marathon.py


@functools.cache
def crossings(name: str) -> tuple[dict[str, Any], tuple[Scheduled, ...],
                                  tuple[tuple[int, ...], ...]]:
    """A fixture's inputs, and each crossing one may miss: the indices of its reads
    (both ankles), for every crossing but a competitor's last, and in a mass start but
    the crossings that scored sprint points (a missed read there loses them until an
    official says otherwise)."""
    doc, items = scheduled(name)
    bib_of = {tr: s["bib"] for s in doc["startlist"]["skaters"] for tr in s["transponders"]}
    spec = doc["startlist"]["races"][0]
    team_of = {b: t["id"] for t in spec.get("teams", []) for b in t["skaters"]}
    view = in_order(name)[doc["script"]["race"]]
    scored = {(b, sp["lap_number"]) for sp in view.get("pack", {}).get("sprints", [])
              for b in sp["bibs"]}
    groups: dict[tuple[str, int], list[int]] = {}
    for n, s in enumerate(items):
        if s.inp["type"] == "passing":
            bib = bib_of[s.inp["transponder"]]
            groups.setdefault((bib, s.inp["t"] // 1_000_000), []).append(n)
    last: dict[str, tuple[str, int]] = {}
    for bib, sec in sorted(groups, key=lambda g: g[1]):
        # A team pursuit's finish needs its three skaters' last crossings.
        last[team_of.get(bib, bib)] = last[bib] = (bib, sec)
    out = []
    for (bib, sec), idx in sorted(groups.items()):
        if (bib, sec) in last.values():
            continue
        row = view["results"][team_of.get(bib, bib)]["passages"]
        lap = next((p["lap_number"] for p in row if p and p["t"] // 1_000_000
                    in (sec - doc_gun_s(doc, items), sec - doc_gun_s(doc, items) - 1)
                    and "lap_number" in p), None)
        if (bib, lap) in scored:
            continue
        out.append(tuple(idx))
    return doc, items, tuple(out)


def doc_gun_s(doc: dict[str, Any], items: tuple[Scheduled, ...]) -> int:
    """The first gun's common-clock time, in whole seconds."""
    return next(s.inp["t"] for s in items if s.inp["type"] == "gun") // 1_000_000


def recorded(view: dict[str, Any]) -> dict[str, list[tuple[int, int]]]:
    """Each competitor's recorded passages as (passage index, race time µs)."""
    return {b: [(p["k"], p["t"]) for p in r["passages"] if p]
            for b, r in view["results"].items()}


@pytest.mark.parametrize("name", PACK_AND_TEAM)
@settings(max_examples=12, deadline=None)
@given(pick=st.integers(0, 10_000))
def test_a_missed_read_in_a_pack_race_or_team_event_shifts_no_later_lap(name, pick):
    """Any one crossing's reads missed (not a competitor's last): every other passage
    keeps its lap number and time, the missed one is empty and named ``missing`` by the
    competitor's next passage, and the result is the one the full reads give."""
    doc, items, misses = crossings(name)
    drop = set(misses[pick % len(misses)])
    comp, _ = run_fixture(doc, [s for n, s in enumerate(items) if n not in drop])
    race = doc["script"]["race"]
    full, view = in_order(name)[race], wire(comp.view(race))
    before, after = recorded(full), recorded(view)
    [(who, lost)] = [(b, set(before[b]) - set(after[b])) for b in before
                     if before[b] != after[b]] or [("", set())]
    assert all(set(after[b]) <= set(before[b]) for b in before)
    if lost:  # the read made a passage (a start-line read, say, never does)
        [(k, _)] = lost
        nxt = next(p for p in view["results"][who]["passages"][k + 1:] if p)
        assert nxt["missing"][0] == view["race"]["passages"][k], nxt
    assert view["classification"] == full["classification"]
    assert {b: r["final"] for b, r in view["results"].items()} == \
        {b: r["final"] for b, r in full["results"].items()}


def test_a_missed_short_track_read_is_a_missing_lap_not_a_shifted_race():
    """Short-track 500 m (5 crossings, laps of 9 s): bib 1's third crossing is not read.
    Her next read, two laps after her last, is her fourth crossing, the third is empty
    and named, and she finishes where the line saw her."""
    reads = [("22", t) for t in LAPS_2]
    reads += [("11", t - 100_000) for n, t in enumerate(LAPS_2) if n != 2]
    comp, _ = short_track(reads)
    view = comp.view("st500")
    mine = view["results"]["1"]["passages"]
    assert [p and p["lap_number"] for p in mine] == [1, 2, None, 4, 5]
    assert mine[3]["missing"] == [view["race"]["passages"][2]]
    assert mine[3]["lap_time"] == 18_000_000  # since her last recorded crossing
    assert mine[3]["position"] == 1
    assert view["pack"]["crossings"] == {"1": 5, "2": 5}
    assert view["results"]["1"]["final"]["t"] == LAPS_2[-1] - 100_000
    assert view["classification"]["bib"] == ["1", "2"]


def test_a_pack_read_days_after_the_gun_is_held_not_a_lap():
    comp, _ = short_track([("11", 4_400_000), ("22", 4_500_000)])
    events = passing(comp, "x", "11", 10**12)["st500"]
    assert [(e["type"], e["reason"]) for e in events] == [("revision", "implausible read")]
    view = comp.view("st500")
    assert view["pack"]["crossings"] == {"1": 1, "2": 1}
    [held] = view["held"]
    assert (held["bib"], held["input"]) == ("1", "x")
    assert comp.stats["implausible_read"] == 1


def team_pursuit(drop: set[tuple[str, int]]) -> dict[str, Any]:
    """Women's team pursuit (6 laps), one pair: team AAA (chips T1-T3) laps in 30 s, its
    skaters 0.4 s apart, team BBB (T4-T6) in 31 s; the reads in ``drop`` (chip, lap
    index) are missed."""
    sl = team_doc("team_pursuit", 6, 3)
    reads = [(34.0 + 30 * k + 0.4 * n, f"T{n + 1}", "finish") for k in range(6) for n in range(3)
             if (f"T{n + 1}", k) not in drop]
    reads += [(35.0 + 31 * k + 0.4 * n, f"T{n + 4}", "finish") for k in range(6)
              for n in range(3)]
    return team_feed(sl, reads)[1]


def test_a_team_pursuit_skaters_missed_read_leaves_that_lap_empty():
    view = team_pursuit({("T3", 1)})  # the third skater's second crossing is not read
    laps = view["results"]["AAA"]["passages"]
    assert [p and p["m"] for p in laps] == [400, None, 1200, 1600, 2000, 2400]
    assert laps[2]["missing"] == [800]
    assert laps[2]["t"] == 34_800_000 + 60_000_000 and laps[2]["lap_time"] == 60_000_000
    assert view["results"]["AAA"]["final"]["t"] == 184_800_000
    assert view["classification"]["bib"] == ["AAA", "BBB"]
    # The lead skater's read missed instead: the same lap is empty, nothing moves.
    view = team_pursuit({("T1", 1)})
    assert [p and p["m"] for p in view["results"]["AAA"]["passages"]] == [
        400, None, 1200, 1600, 2000, 2400]
    assert view["results"]["AAA"]["final"]["t"] == 184_800_000


def test_a_team_event_read_days_after_the_gun_is_held_for_the_officials():
    sl = team_doc("team_sprint", 3, 3)
    comp, view = team_feed(sl, [(26.0, "T1", "finish"), (86_400.0, "T2", "finish")])
    assert [p and p["m"] for p in view["results"]["AAA"]["passages"]] == [400, None, None]
    [held] = view["held"]
    assert held["bib"] == "2" and "takes at most" in held["reason"]
    assert comp.stats["implausible_read"] == 1
