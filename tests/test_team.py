"""Team events in the engine: team pursuit (timed on the third skater), team sprint,
mixed relay; pairs of teams, a gap between them at every lap."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from icetime.replay import load_fixture, script_inputs
from icetime.startlist import StartListError, validate_startlist
from icetime.timefmt import format_time, parse_time
from icetime.view import apply_event
from services.scoring.competition import Competition

from .conftest import feed

FIXTURES = Path(__file__).parent.parent / "fixtures"


def run(doc, drop=lambda inp: False):
    comp = Competition()
    events = list(feed(comp, "sl", {"type": "startlist", **doc["startlist"]}).values())[0]
    for n, item in enumerate(script_inputs(doc)):
        inp = {**item.inp, "source": item.source, "rx_us": item.at_us}
        if drop(inp):
            continue
        for evs in feed(comp, f"in-{n}", inp).values():
            events += evs
    return comp, comp.view(doc["script"]["race"]), events


@pytest.fixture(scope="module")
def tp():
    return load_fixture(FIXTURES / "demo_w_team_pursuit.json")


def test_team_pursuit_is_timed_on_the_third_skater_with_the_gap_at_every_lap(tp):
    _, view, events = run(tp)
    cls = view["classification"]
    assert [view["skaters"][b]["name"] for b in cls["bib"]] == [
        "Japan", "Netherlands", "Canada", "United States"]
    assert format_time(cls["t"][0]) == "2:53.00"
    ned = view["results"]["NED"]["passages"]
    # Each lap keeps every skater's time; the team's is the third one's.
    assert all(p["t"] == max(p["skaters"].values()) and len(p["skaters"]) == 3 for p in ned)
    # The gap between the two teams of the pair at every lap (Japan crossed first),
    # worked out here from the script: each team's third skater at each lap.
    pair2 = next(p for p in tp["script"]["pairs"] if p["pair"] == 2)["times"]
    teams = {t["id"]: t["skaters"] for t in tp["startlist"]["races"][0]["teams"]}

    def third(tid, k):
        return max(parse_time(pair2[b][k]) for b in teams[tid])
    assert [p["gap_partner"] for p in ned] == [third("NED", k) - third("JPN", k)
                                               for k in range(6)]
    assert all(p["gap_partner"] > 0 for p in ned)
    assert "New leader: Japan in 2:53.00, 3.40 ahead of Canada" in view["stories"]
    fold = None
    for ev in json.loads(json.dumps(events)):
        fold = apply_event(fold, ev)
    assert fold == json.loads(json.dumps(view))


def test_before_any_team_finished_the_leader_at_each_lap_is_the_pairs_first_across(tp):
    """The first pair has no finished team to compare with: at every lap the team behind
    gets its gap to the team ahead (gap_leader, leader_bib), the team ahead leads there
    (itself, no gap). The next pair is compared with the provisional leader."""
    _, view, _ = run(tp)
    pair1 = next(p for p in tp["script"]["pairs"] if p["pair"] == 1)["times"]
    teams = {t["id"]: t["skaters"] for t in tp["startlist"]["races"][0]["teams"]}

    def third(tid, k):
        return max(parse_time(pair1[b][k]) for b in teams[tid])
    res = view["results"]
    for k in range(5):  # every lap before the finish (no team has finished there)
        can, usa = res["CAN"]["passages"][k], res["USA"]["passages"][k]
        gap = third("USA", k) - third("CAN", k)
        ahead, behind = (can, usa) if gap > 0 else (usa, can)
        assert behind["gap_leader"] == abs(gap) == behind["gap_partner"], k
        assert ahead["gap_leader"] is None
        assert ahead["leader_bib"] == ("CAN" if ahead is can else "USA")
        assert behind["leader_bib"] == ahead["leader_bib"]
    # At the finish Canada crossed first: the leader by then, USA behind it.
    assert res["USA"]["passages"][5]["gap_leader"] == third("USA", 5) - third("CAN", 5)
    assert "United States 0.20 behind Canada at 400 m" in view["stories"]
    # The second pair: the gap to Canada's time at each lap, as in an individual race
    # (at the finish to Japan's, across the line first).
    ned, can = res["NED"]["passages"], res["CAN"]["passages"]
    assert [p["leader_bib"] for p in ned] == ["CAN"] * 5 + ["JPN"]
    assert [p["gap_leader"] for p in ned[:5]] == [
        p["t"] - c["t"] for p, c in zip(ned[:5], can[:5], strict=True)]


def test_a_team_with_two_skaters_at_the_finish_gets_no_time(tp):
    third = tp["startlist"]["races"][0]["teams"][0]["skaters"][2]  # Netherlands' third
    transponders = {s["bib"]: s["transponders"] for s in tp["startlist"]["skaters"]}[third]
    last_lap = {"n": 0}

    def drop(inp):  # her last crossing never comes: she let go in the last lap
        if inp["type"] == "passing" and inp["transponder"] in transponders:
            last_lap["n"] += 1
            return last_lap["n"] > 10  # 6 laps x 2 ankles: keep the first 5 laps
        return False
    _, view, _ = run(tp, drop)
    assert view["results"]["NED"]["final"] is None
    assert "NED" not in view["classification"]["bib"]
    assert len([p for p in view["results"]["NED"]["passages"] if p]) == 5


def team_doc(kind, laps, sizes, lines=None):
    skaters, teams, bib = [], [], 0
    for tid in ("AAA", "BBB"):
        members = []
        for _ in range(sizes):
            bib += 1
            members.append(str(bib))
            skaters.append({"bib": str(bib), "name": f"{tid} {bib}",
                            "transponders": [f"T{bib}"]})
        teams.append({"id": tid, "name": tid, "skaters": members})
    race = {"id": "r", "kind": kind, "laps": laps, "teams": teams,
            "pairs": [{"pair": 1, "inner": "AAA", "outer": "BBB"}]}
    if lines:
        race["lines"] = lines
    return {"skaters": skaters, "races": [race]}


def feed_all(startlist, crossings):
    """crossings: (seconds, transponder, point)."""
    comp = Competition()
    feed(comp, "sl", {"type": "startlist", **startlist})
    feed(comp, "gun", {"type": "gun", "race": "r", "pair": 1, "t": 0, "source": "gun"})
    for n, (s, tr, point) in enumerate(sorted(crossings)):
        feed(comp, f"p{n}", {"type": "passing", "transponder": tr, "t": int(s * 1e6),
                            "point": point, "source": "loop"})
    return comp, comp.view("r")


def test_team_sprint_the_lead_skater_leaves_after_each_lap():
    sl = team_doc("team_sprint", 3, 3)
    a1, a2, a3 = "T1", "T2", "T3"
    crossings = [(26.0, a1, "finish"), (26.4, a2, "finish"), (26.8, a3, "finish"),  # lap 1
                 (51.5, a2, "finish"), (51.9, a3, "finish"),                       # 1 left
                 (77.2, a3, "finish")]                                              # alone
    _, view = feed_all(sl, crossings)
    laps = view["results"]["AAA"]["passages"]
    assert [list(p["skaters"]) for p in laps] == [["1"], ["2"], ["3"]]
    assert view["results"]["AAA"]["final"]["t"] == 77_200_000


def test_mixed_relay_exchange_order_at_each_teams_own_line():
    sl = team_doc("mixed_relay", 6, 2, lines={"inner": "finish", "outer": "finish-b"})
    w, m = "T1", "T2"        # team AAA, inner, timed at "finish"
    w2, m2 = "T3", "T4"      # team BBB, outer, timed at "finish-b" (the other straight)
    order = [w, m, m, w, w, m]
    crossings = [(30.0 + 29 * k, tr, "finish") for k, tr in enumerate(order)]
    crossings += [(30.5 + 29 * k, tr, "finish-b")
                  for k, tr in enumerate([w2, m2, m2, w2, w2, m2])]
    # Each team also crosses the other team's line half a lap round: not its passages.
    crossings += [(15.0 + 29 * k, tr, "finish-b") for k, tr in enumerate(order)]
    comp, view = feed_all(sl, crossings)
    aaa = [list(p["skaters"])[0] for p in view["results"]["AAA"]["passages"]]
    assert aaa == ["1", "2", "2", "1", "1", "2"]  # W, M, M, W, W, M
    assert view["results"]["BBB"]["final"]["t"] == int((30.5 + 29 * 5) * 1e6)
    assert view["results"]["AAA"]["passages"][0]["gap_partner"] is None
    assert view["results"]["BBB"]["passages"][0]["gap_partner"] == 500_000
    assert comp.stats["unknown_point"] == 0


def test_team_event_start_lists_are_checked(tp):
    sl = tp["startlist"]
    validate_startlist(sl)
    for change, message in [
        ({"laps": 7}, "a team_pursuit has 6 or 8 'laps'"),
        ({"pairs": [{"pair": 1, "inner": "XXX"}]}, "team XXX is not in 'teams'"),
        ({"pairs": [{"pair": 1, "inner": "NED"}, {"pair": 2, "inner": "NED"}]},
         "team NED races twice"),
    ]:
        bad = copy.deepcopy(sl)
        bad["races"][0].update(change)
        with pytest.raises(StartListError, match=message):
            validate_startlist(bad)
