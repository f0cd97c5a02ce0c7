"""Short-track rounds: semi-finals to Finals A and B, advancement by place and best
third, the referee's ADV, penalties, and the event's ranking."""
from __future__ import annotations

from services.scoring.competition import Competition

from .conftest import feed, race_view

US = 1_000_000


def startlist():
    skaters = [{"bib": str(b), "name": f"Skater {b}", "short": f"S{b}",
                "transponders": [f"T{b}"]} for b in range(1, 11)]
    races = [{"id": f"w500-sf{i}", "name": f"Women 500 m · Semi-final {i}", "kind": "short_track",
              "distance": 500, "season": "2022-23", "skaters": bibs}
             for i, bibs in ((1, ["1", "2", "3", "4", "5"]), (2, ["6", "7", "8", "9", "10"]))]
    event = {"id": "w500", "name": "Women 500 m", "distance": 500, "season": "2022-23",
             "world_cup": {"cup": "Women 500 m", "table": "short_track"},
             "rounds": [{"name": "Semi-finals", "races": ["w500-sf1", "w500-sf2"],
                         "advance": [{"to": "Final A", "places": [1, 2],
                                      "best": {"place": 3, "count": 1}},
                                     {"to": "Final B", "places": [3, 4]}]},
                        {"name": "Final A"}, {"name": "Final B"}]}
    return {"type": "startlist", "skaters": skaters, "races": races, "events": [event]}


class Feeder:
    def __init__(self):
        self.comp = Competition()
        self.n = 0
        self.out = {}
        self.feed(startlist())

    def feed(self, inp):
        self.n += 1
        for race, events in feed(self.comp, f"i{self.n}", {"source": "x", **inp}).items():
            self.out.setdefault(race, []).extend(events)

    def race(self, race_id, finish_order, spacing_s=0.2, stop=(), t0=0):
        """Everyone in ``finish_order`` crosses 5 lines in that order; ``stop`` skaters
        fall after the first line."""
        self.feed({"type": "gun", "race": race_id, "t": t0})
        for k in range(5):
            for i, bib in enumerate(finish_order):
                if bib in stop and k:
                    continue
                t = t0 + int((6 + 9 * k + spacing_s * i) * US)
                self.feed({"type": "passing", "transponder": f"T{bib}", "t": t})
        self.feed({"type": "decision", "race": race_id, "action": "official"})


def test_semis_send_places_and_the_best_third_on_and_the_event_is_ranked():
    f = Feeder()
    # Semi 1: 1, 2, 3 (third, slower), 4, 5; skater 5 fell, impeded: the referee advances her.
    f.race("w500-sf1", ["1", "2", "3", "4", "5"], spacing_s=0.3, stop=("5",), t0=0)
    f.feed({"type": "decision", "race": "w500-sf1", "action": "adv", "bib": "5"})
    assert "w500-fa" not in f.comp.races  # semi 2 is not official yet
    # Semi 2: 6, 7, 8 (a faster third), 9, 10.
    f.race("w500-sf2", ["6", "7", "8", "9", "10"], spacing_s=0.2, t0=100 * US)
    fa, fb = f.comp.races["w500-finala"], f.comp.races["w500-finalb"]
    # Final A: the first two of each semi, the faster third (8), and ADV 5.
    assert sorted(fa.bibs) == ["1", "2", "5", "6", "7", "8"]
    assert sorted(fb.bibs) == ["3", "4", "9"]
    assert f.out["w500-finala"][0]["type"] == "revision"  # clients get the new race
    # Final A: 1, 6, 2, 7, 8, 5 across the line; 6 and 2 penalised, 7 a yellow card.
    f.race("w500-finala", ["1", "6", "2", "7", "8", "5"], t0=300 * US)
    for bib, action in (("6", "pen"), ("2", "pen"), ("7", "yc")):
        f.feed({"type": "decision", "race": "w500-finala", "action": action, "bib": bib})
    f.race("w500-finalb", ["9", "3", "4"], t0=400 * US)
    view = f.comp.view("event-w500")
    ranking = dict(zip(view["ranking"]["bib"], view["ranking"]["how"], strict=True))
    # Final A's finishers, then Final B's winner takes the bronze medal...
    assert view["ranking"]["bib"][:4] == ["1", "8", "5", "9"]
    assert ranking["9"] == "Final B 1"
    # ...the penalised finalists fall back to their semi-final places, and the yellow
    # card forfeits every result of the event.
    assert "7" not in ranking
    assert ranking["6"] == "Semi-finals 1" and ranking["2"] == "Semi-finals 2"
    assert view["race"]["official"]
    cup = f.comp.view("wc-standings")["cups"][0]
    assert cup["cup"] == "Women 500 m" and cup["rows"][0]["bib"] == "1"
    assert [r["points"] for r in cup["rows"][:3]] == [1000, 800, 640]


def test_heats_are_seeded_serpentine():
    from services.scoring.rounds import Event

    ev = Event({"id": "e", "distance": 500, "rounds": [{"name": "Quarter-finals", "heats": 2}]})
    specs = ev._create(ev.rounds[0], ["a", "b", "c", "d", "e"])
    assert [s["skaters"] for s in specs] == [["a", "d", "e"], ["b", "c"]]
    assert [s["id"] for s in specs] == ["e-quarterfinals1", "e-quarterfinals2"]


async def test_rounds_and_carried_in_standings_work_through_the_feed(stack, redis_client):
    """The start list's `events` and `standings_before` reach scoring through ingest:
    semi-finals raced over the HTTP feed open Final A and B (rounds), and a World Cup
    race made official adds its points to the season so far. A misspelt field inside a
    round is refused at the door, naming it."""
    import asyncio
    import json

    import aiohttp

    from services.scoring.standings import STANDINGS_ID

    from .conftest import TOKENS

    sl = startlist()
    sl["races"][0]["world_cup"] = {"cup": "Women 500 m", "table": "short_track"}
    sl["standings_before"] = {"Women 500 m": {"1": 500, "9": 2000}}
    url = f"http://127.0.0.1:{stack.settings.ingest_http_port}"
    auth = {"Authorization": f"Bearer {TOKENS['officials']}"}
    bad = json.loads(json.dumps(sl))
    bad["events"][0]["rounds"][0]["advance"][0]["places"] = [1, 2]
    bad["events"][0]["rounds"][0]["advance"][0]["best"] = {"place": 3, "cuont": 1}
    async with aiohttp.ClientSession() as s:
        async with s.post(url + "/api/startlist", json=bad, headers=auth) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"] == (
                "start list: events[0].rounds[0].advance[0].best: unknown field 'cuont' "
                "(did you mean 'count'?)")
        async with s.post(url + "/api/startlist", json=sl, headers=auth) as resp:
            assert (await resp.json())["ok"]
        seq = 0
        for rid, order, t0, gap in (("w500-sf1", ["1", "2", "3", "4", "5"], 0, 0.3),
                                    ("w500-sf2", ["6", "7", "8", "9", "10"], 100, 0.2)):
            inputs = [{"type": "gun", "race": rid, "t": t0 * US}]
            inputs += [{"type": "passing", "transponder": f"T{b}",
                        "t": int((t0 + 6 + 9 * k + gap * i) * US)}
                       for k in range(5) for i, b in enumerate(order)]
            inputs.append({"type": "decision", "race": rid, "action": "official"})
            for inp in inputs:
                seq += 1
                async with s.post(url + "/feed", json={**inp, "seq": seq},
                                  headers=auth) as resp:
                    assert (await resp.json())["ok"]

    async def view(race):
        async with asyncio.timeout(20):
            while not (doc := await race_view(redis_client, race)):
                await asyncio.sleep(0.1)
        return doc

    final_a = await view("w500-finala")  # the rounds made it: <event>-<round name>
    assert set(final_a["skaters"]) == {"1", "2", "6", "7", "8"}  # 8: the faster third
    standings = await view(STANDINGS_ID)
    [cup] = standings["cups"]
    points = {r["bib"]: r["points"] for r in cup["rows"]}
    # Before: 1 had 500, 9 had 2000; semi 1 (official, short-track table) adds 1000 to
    # its winner, 800 to the second.
    assert points["1"] == 1500 and points["9"] == 2000 and points["2"] == 800
