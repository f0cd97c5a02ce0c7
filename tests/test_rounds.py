"""Short-track rounds: semi-finals to Finals A and B, advancement by place and best
third, the referee's ADV, penalties, and the event's ranking."""
from __future__ import annotations

import functools

from hypothesis import given, settings
from hypothesis import strategies as st

from services.scoring.competition import Competition

from .conftest import feed, race_view, without_inputs

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


# ---------------------------------------------------------------- a later round's reads
# Two heats of four, two chips a skater (the other ankle reads 40 ms later); the first two
# of each heat go to Final A, the others to Final B.
ANKLE_US = 40_000


def heats_startlist():
    skaters = [{"bib": str(b), "name": f"Skater {b}", "short": f"S{b}",
                "transponders": [f"T{b}a", f"T{b}b"]} for b in range(1, 9)]
    races = [{"id": f"w500-h{i}", "name": f"Women 500 m · Heat {i}", "kind": "short_track",
              "distance": 500, "round": f"Heat {i}", "skaters": bibs}
             for i, bibs in ((1, ["1", "2", "3", "4"]), (2, ["5", "6", "7", "8"]))]
    event = {"id": "w500", "name": "Women 500 m", "distance": 500,
             "rounds": [{"name": "Heats", "races": ["w500-h1", "w500-h2"],
                         "advance": [{"to": "Final A", "places": [1, 2]},
                                     {"to": "Final B", "places": [3, 4]}]},
                        {"name": "Final A"}, {"name": "Final B"}]}
    return {"type": "startlist", "skaters": skaters, "races": races, "events": [event]}


def race_inputs(race_id, order, gun_t, tag):
    """(input id, input) of a race's gun and every read of both chips of ``order``'s
    skaters (5 crossings each, in that order), the gun first, the reads in time order."""
    out = [(f"{tag}-gun", {"type": "gun", "race": race_id, "t": gun_t})]
    for k in range(5):
        for i, bib in enumerate(order):
            t = gun_t + int((6.3 + 9 * k + 0.25 * i) * US)
            for chip, dt in (("a", 0), ("b", ANKLE_US)):
                out.append((f"{tag}-{bib}{chip}{k}",
                            {"type": "passing", "transponder": f"T{bib}{chip}", "t": t + dt}))
    return out


def after_heats(heat_2=None):
    """An engine with both heats raced (Heat 2 60 s after Heat 1) and official: the
    finals exist, with no gun yet. ``heat_2``: the order Heat 2's inputs arrive in (their
    indices; default: in time order, the gun first)."""
    comp = Competition()
    feed(comp, "sl", {"source": "x", **heats_startlist()})
    for race_id, order, t0 in (("w500-h1", ["1", "2", "3", "4"], 0),
                               ("w500-h2", ["5", "6", "7", "8"], 60 * US)):
        inputs = race_inputs(race_id, order, t0, race_id)
        if race_id == "w500-h2" and heat_2 is not None:
            inputs = [inputs[i] for i in heat_2]
        for iid, inp in inputs:
            feed(comp, iid, {"source": "x", **inp})
        feed(comp, f"{race_id}-off", {"source": "x", "type": "decision", "race": race_id,
                                      "action": "official"})
    return comp


def results_of(comp, race_id):
    view = comp.view(race_id)
    return without_inputs({k: view[k] for k in ("results", "classification", "held")})


@functools.cache
def in_order(gun_after_s):
    """The heats' and Final A's results with Final A's gun ``gun_after_s`` after Heat 1's
    and every input in time order (the gun first); Final A's inputs."""
    ref = after_heats()
    heats = {h: results_of(ref, h) for h in ("w500-h1", "w500-h2")}
    assert sorted(ref.races["w500-finala"].bibs) == ["1", "2", "5", "6"]
    final = race_inputs("w500-finala", ["5", "1", "6", "2"], gun_after_s * US, "fa")
    for iid, inp in final:
        feed(ref, iid, {"source": "x", **inp})
    want = results_of(ref, "w500-finala")
    assert want["classification"]["bib"] == ["5", "1", "6", "2"]
    assert want["classification"]["t"] == [42_300_000, 42_550_000, 42_800_000, 43_050_000]
    return heats, want, final


@settings(max_examples=25, deadline=None)
@given(st.sampled_from([17, 240]), st.permutations(range(41)), st.permutations(range(41)))
def test_a_final_s_reads_land_with_its_gun_whatever_the_order(gun_after_s, heat_2, order):
    """A final's reads that arrive before its gun (routed by time to the skaters' heat,
    which is official and finished for them) are held and land when the gun does: the
    final's results are those of its inputs in order, and the official heats never
    change, whatever order the gun and the reads of Heat 2 and of the final arrive in;
    also with the final's gun only 17 s after Heat 1's, where its reads fall inside the
    heat's time."""
    heats, want, final = in_order(gun_after_s)
    comp = after_heats(heat_2)
    for i in order:
        iid, inp = final[i]
        feed(comp, iid, {"source": "x", **inp})
    assert results_of(comp, "w500-finala") == want
    for h, before in heats.items():
        assert results_of(comp, h) == before


def test_an_official_race_keeps_its_results_when_a_read_comes_late():
    """A read that comes for a race once it is official (a decoder's resend after the
    referee declared it, with the skater's next race already started) never changes its
    results: the race holds it for the officials, with the reason, in one revision; a
    read after her finish there changes nothing at all."""
    comp = after_heats()
    before = results_of(comp, "w500-h1")
    for iid, inp in race_inputs("w500-finala", ["5", "1", "6", "2"], 240 * US, "fa"):
        feed(comp, iid, {"source": "x", **inp})
    # Skater 1's chip read half a second before her finish read in Heat 1 (42.300).
    out = feed(comp, "late", {"source": "x", "type": "passing", "transponder": "T1a",
                              "t": 41_800_000})
    [revision] = out["w500-h1"]
    assert revision["reason"] == "read after official"
    after = results_of(comp, "w500-h1")
    assert after["results"] == before["results"]
    assert after["classification"] == before["classification"]
    [held] = after["held"]
    assert (held["bib"], held["t"]) == ("1", 41_800_000)
    assert held["reason"] == ("race w500-h1 was already official: a read no longer changes "
                              "its results (a decision can)")
    assert comp.stats["official_read"] == 1
    # Her cool-down lap after the heat's finish, before the final's gun: nothing.
    assert feed(comp, "cool", {"source": "x", "type": "passing", "transponder": "T1a",
                               "t": 60_000_000}) == {}
    assert results_of(comp, "w500-h1") == after


async def test_a_final_s_reads_before_its_gun_land_through_the_feed(stack, redis_client):
    """The trial's case over HTTP: the heats raced and declared official, the final's
    gun box sends its gun after half the final's reads (shuffled): every finalist gets
    her time, the heat stays as declared, and a read resent for the official heat is held
    for the officials with the reason, its results unchanged."""
    import asyncio
    import random

    import aiohttp

    from .conftest import post_feed

    seqs = {"gun": 0, "finish-loop": 0, "officials": 0}

    async def send(s, source, inp):
        seqs[source] += 1
        reply = await post_feed(s, stack, source, inp, seq=seqs[source])
        assert reply["ok"], reply
        return reply

    async def view_until(race, ready):
        async with asyncio.timeout(20):
            while not ((doc := await race_view(redis_client, race)) and ready(doc)):
                await asyncio.sleep(0.05)
        return doc

    async with aiohttp.ClientSession() as s:
        await send(s, "officials", heats_startlist())
        for race_id, order, t0 in (("w500-h1", ["1", "2", "3", "4"], 0),
                                   ("w500-h2", ["5", "6", "7", "8"], 60 * US)):
            for _, inp in race_inputs(race_id, order, t0, race_id):
                await send(s, "gun" if inp["type"] == "gun" else "finish-loop", inp)
            await send(s, "officials", {"type": "decision", "race": race_id,
                                        "action": "official"})
        heat = await view_until("w500-h1", lambda v: v["race"]["official"])
        [(_, gun), *reads] = race_inputs("w500-finala", ["5", "1", "6", "2"], 240 * US, "fa")
        random.Random(7).shuffle(reads)
        for _, inp in reads[:20]:
            await send(s, "finish-loop", inp)
        await send(s, "gun", gun)
        for _, inp in reads[20:]:
            await send(s, "finish-loop", inp)
        final = await view_until("w500-finala",
                                 lambda v: len([t for t in v["classification"]["t"] if t]) == 4)
        assert final["classification"]["bib"] == ["5", "1", "6", "2"]
        assert final["classification"]["t"] == [42_300_000, 42_550_000, 42_800_000, 43_050_000]
        await send(s, "finish-loop", {"type": "passing", "transponder": "T1b", "t": 41_800_000})
        held = await view_until("w500-h1", lambda v: v["held"])
    assert [h["bib"] for h in held["held"]] == ["1"]
    assert held["held"][0]["reason"].startswith("race w500-h1 was already official")
    assert held["classification"] == heat["classification"]
    assert held["results"] == heat["results"]
