"""Pack races through the whole chain (TCP feed, ingest, scoring, broadcast) to a
WebSocket client that folds the events as the pages do."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

from icetime.cli import replay
from icetime.replay import load_fixture
from icetime.view import apply_event

from .test_pipeline import Follower, load_startlist

FIXTURES = Path(__file__).parents[1] / "fixtures"


def race_done(f):
    return bool(f.view) and f.view.get("pack") and f.view["pack"]["laps_to_go"] == 0 \
        and f.view["pack"]["run"] is None


async def test_a_mass_start_live_laps_to_go_and_points_after_every_sprint(stack):
    speed = 300.0
    doc = load_fixture(FIXTURES / "beijing2023_w_massstart.json")
    await load_startlist(stack, doc)
    f = Follower(stack.ws_url, race="bj23-wms")
    follower = asyncio.create_task(f.run(race_done, timeout=60))
    await asyncio.sleep(0.2)
    await replay(doc, stack.settings, speed=speed, announce=False)
    await follower
    names = {b: s["short"] for b, s in f.view["skaters"].items()}
    cls = f.view["classification"]
    assert [names[b] for b in cls["bib"][:3]] == ["Groenewoud", "Blondin", "Maltais"]
    assert cls["sprint_points"][:3] == [63, 46, 24]
    # As it happened: laps to go counted down at each leader's crossing, and the points
    # table grew sprint by sprint, each sprint's points there before the next lap.
    events = [m["event"] for m in f.events]
    leaders = [e for e in events if e["type"] == "passage" and e["row"]["position"] == 1]
    assert [e["pack"]["laps_to_go"] for e in leaders] == list(range(15, 0, -1))
    # The points table as the client's fold had it right after each leader's crossing
    # (an event carries the crossing skater's points, the fold keeps the table).
    totals, table = [], None
    for m in json.loads(json.dumps(f.frames)):
        if m["type"] == "snapshot":
            table = m["view"]
        elif m["type"] == "event":
            e = m["event"]
            table = apply_event(table, e)
            if e["type"] == "passage" and e["row"]["position"] == 1:
                totals.append(sum(table["pack"]["sprint_points"].values()))
    # The leader's crossings of laps 5, 9 and 13: each sprint behind, all its points in.
    assert (totals[3], totals[4], totals[8], totals[12]) == (3, 6, 12, 18)
    assert any(e["pack"]["breakaway"] and e["pack"]["breakaway"]["bibs"] == ["1"]
               for e in events if "pack" in e)
    # The client's fold is the engine's view.
    fold = None
    for m in f.frames:
        if m["type"] == "snapshot":
            fold = m["view"]
        elif m["type"] == "event":
            fold = apply_event(fold, m["event"])
    assert json.dumps(fold, sort_keys=True) == json.dumps(f.view, sort_keys=True)


async def test_a_short_track_final_photo_finish_revision_reaches_the_client(stack):
    doc = load_fixture(FIXTURES / "almaty2022_w1500_2_final.json")
    await load_startlist(stack, doc)
    f = Follower(stack.ws_url, race="alm22-w1500-2-fa")

    def photo_in(s):
        return bool(s.view) and len(s.view["classification"]["bib"]) == 5 and all(
            s.view["results"][b]["final"]["origin"] == "photo"
            for b in s.view["classification"]["bib"])
    follower = asyncio.create_task(f.run(photo_in, timeout=60))
    await asyncio.sleep(0.2)
    await replay(doc, stack.settings, speed=100.0, announce=False)
    await follower
    events = [m["event"] for m in f.events]
    first_finish = next(e for e in events if e["type"] == "finish")
    assert first_finish["bib"] == "2"  # Sarault's transponder crossed first...
    names = {b: s["short"] for b, s in f.view["skaters"].items()}
    assert [names[b] for b in f.view["classification"]["bib"]] == [
        "Desmet", "Sarault", "Seidel", "Kim", "Shim"]  # ...the photo says Desmet
    assert any(e["type"] == "revision" and e["reason"] == "official time (photo)"
               for e in events)
    assert "Photo finish: Desmet 1st, Sarault 2nd" in f.view["stories"]


async def test_penalties_and_the_standings_reach_connected_clients(stack):
    """The Shanghai mixed relay: two teams penalised after the finish, then the result
    declared official: one client follows the race, another the World Cup standings."""
    doc = load_fixture(FIXTURES / "shanghai2019_mixed_relay_final.json")
    await load_startlist(stack, doc)
    race = Follower(stack.ws_url, race="sha19-x2000r-fa")
    cups = Follower(stack.ws_url, race="wc-standings")

    def classified(s):
        return bool(s.view) and s.view["race"].get("official")

    def counted(s):
        return bool(s.view) and bool(s.view.get("cups"))
    tasks = [asyncio.create_task(race.run(classified, timeout=60)),
             asyncio.create_task(cups.run(counted, timeout=60))]
    await asyncio.sleep(0.3)
    await replay(doc, stack.settings, speed=60.0, announce=False)
    await asyncio.gather(*tasks)
    names = {b: s["name"] for b, s in race.view["skaters"].items()}
    assert [names[b] for b in race.view["classification"]["bib"]] == ["Netherlands", "Russia"]
    reasons = [m["event"]["reason"] for m in race.events if m["event"]["type"] == "revision"]
    assert reasons[-3:] == ["decision: pen", "decision: pen", "decision: official"]
    assert race.view["results"]["CAN"]["status"] == "PEN"
    cup = cups.view["cups"][0]
    assert cup["cup"] == "Mixed 2000 m relay"
    assert [(r["bib"], r["points"]) for r in cup["rows"]] == [("NED", 1000), ("RUS", 800)]
