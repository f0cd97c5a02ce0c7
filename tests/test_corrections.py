"""Corrections as the tester fed them: a manual time for a missed read keyed in pairs
later, a photo time that beats the partner's read, swapped chips reassigned. Ranks and
gaps at a passage are those when it was skated; the stories a correction made wrong are
told again, with a line saying what changed; finish lines show thousandths where
hundredths tie. In the engine, and through the documented feed and WebSocket."""
from __future__ import annotations

from typing import Any

import aiohttp

from services.scoring.competition import Competition

from .conftest import TOKENS, feed
from .test_order import GUN_T, skaters
from .test_pipeline import Follower

#: 1000 m (passages 200, 600, 1000 m), three pairs, 200 s apart.
RACES = [{"id": "1000", "distance": 1000,
          "pairs": [{"pair": p, "inner": str(2 * p - 1), "outer": str(2 * p)}
                    for p in (1, 2, 3)]}]
BIBS = ("1", "2", "3", "4", "5", "6")
GUNS = {p: GUN_T + (p - 1) * 200_000_000 for p in (1, 2, 3)}
#: (pair, chip, µs after the gun). Bib 2's 600 m read is missed; in pair 2 bib 3
#: finishes 1:15.104 and bib 4 1:15.109 (a tie in hundredths).
READS = [
    (1, "11", 17_500_000), (1, "22", 17_800_000), (1, "11", 45_300_000),
    (1, "11", 76_000_000), (1, "22", 76_500_000),
    (2, "33", 17_600_000), (2, "44", 17_700_000), (2, "33", 45_500_000),
    (2, "44", 45_600_000), (2, "33", 75_104_000), (2, "44", 75_109_000),
    (3, "55", 17_400_000), (3, "66", 17_450_000), (3, "55", 45_400_000),
    (3, "66", 45_450_000), (3, "55", 77_000_000), (3, "66", 77_100_000),
]
MANUAL = {"type": "decision", "race": "1000", "action": "manual_time", "bib": "2", "m": 600,
          "time_us": 45_700_000}
#: Bib 5's finish keyed in 0.2 s after her read, after her partner's 1:17.100.
LATE_MANUAL = {"type": "decision", "race": "1000", "action": "manual_time", "bib": "5",
               "time_us": 77_200_000}
PHOTO = {"type": "finish_time", "race": "1000", "bib": "4", "time_us": 75_095_000,
         "origin": "photo"}


def inputs() -> list[dict[str, Any]]:
    """The guns and reads in time order, as the timing equipment sends them."""
    out: list[dict[str, Any]] = []
    for p in (1, 2, 3):
        out.append({"type": "gun", "race": "1000", "pair": p, "t": GUNS[p]})
        out += [{"type": "passing", "transponder": tr, "t": GUNS[p] + t}
                for q, tr, t in READS if q == p]
    return out


def race() -> Competition:
    comp = Competition()
    feed(comp, "sl", {"type": "startlist", "skaters": skaters(*BIBS), "races": RACES})
    for n, inp in enumerate(inputs()):
        feed(comp, f"i{n}", inp)
    return comp


def test_a_manual_time_ranks_when_it_was_skated():
    comp = race()
    events = feed(comp, "m", MANUAL)["1000"]
    assert [(e["type"], e["reason"]) for e in events] == [("revision", "decision: manual_time")]
    at600 = comp.view("1000")["results"]["2"]["passages"][1]
    # Only bib 1's 45.300 was faster when she skated it, not the four skaters after.
    assert (at600["t"], at600["rank"], at600["gap_best"], at600["best_bib"]) == \
        (45_700_000, 2, 400_000, "1")
    assert "missing" not in comp.view("1000")["results"]["2"]["passages"][2]


def test_a_photo_time_ranks_ahead_of_the_partner_it_beat():
    comp = race()
    view = comp.view("1000")
    assert "S4 2nd in 1:15.109, +0.005" in view["stories"]  # thousandths: a tie to 1:15.10
    assert "New leader: S3 in 1:15.10, 0.89 ahead of S1" in view["stories"]
    events = feed(comp, "pf", PHOTO)["1000"]
    assert [(e["type"], e["reason"]) for e in events] == [("revision", "official time (photo)")]
    view = comp.view("1000")
    fin = {b: view["results"][b]["passages"][2] for b in ("3", "4")}
    assert (fin["4"]["t"], fin["4"]["rank"], fin["3"]["rank"]) == (75_095_000, 1, 2)
    assert view["classification"]["bib"][:2] == ["4", "3"]
    # The lines the photo made wrong are told again; one says what changed.
    stories = view["stories"]
    assert "New leader: S3 in 1:15.10, 0.89 ahead of S1" not in stories
    assert not any(s.startswith("S4 2nd") for s in stories)
    assert "New leader: S4 in 1:15.09, 0.90 ahead of S1" in stories
    assert "S3 2nd in 1:15.10, +0.009" in stories
    assert "Corrected (official time (photo)): S4 1st (was 2nd), S3 2nd (was 1st)" in stories
    # A later decision retells the race: the correction line stays, once.
    feed(comp, "off", {"type": "decision", "race": "1000", "action": "official"})
    assert comp.view("1000")["stories"].count(stories[-1]) == 1


def test_reassigned_chips_retell_the_stories():
    """Pair 2 wore each other's chips: the reads said bib 3 led; the reassignment
    gives bib 4 the lead, and the commentator's lines follow."""
    comp = race()
    for n, (tr, bib) in enumerate((("33", "4"), ("44", "3"))):
        feed(comp, f"r{n}", {"type": "decision", "race": "1000", "action": "reassign",
                             "transponder": tr, "bib": bib})
    view = comp.view("1000")
    assert view["classification"]["bib"][:2] == ["4", "3"]
    stories = view["stories"]
    assert "New leader: S4 in 1:15.10, 0.89 ahead of S1" in stories
    assert "New leader: S3 in 1:15.10, 0.89 ahead of S1" not in stories
    assert "Transponder 33 reassigned to S4" in stories
    assert any(s.startswith("Corrected (decision: reassign): ") for s in stories)


async def test_corrections_through_the_feed(stack):
    """The same through the documented feed: the desk's manual time and photo time, a
    client following the race over the WebSocket."""
    http = f"http://127.0.0.1:{stack.settings.ingest_http_port}"

    async def send(s: aiohttp.ClientSession, source: str, body: dict[str, Any], seq: int
                   ) -> None:
        async with s.post(f"{http}/feed", json={**body, "seq": seq},
                          headers={"Authorization": f"Bearer {TOKENS[source]}"}) as r:
            assert (await r.json())["ok"], body

    async with aiohttp.ClientSession() as s:
        async with s.post(f"{http}/api/startlist",
                          json={"skaters": skaters(*BIBS), "races": RACES},
                          headers={"Authorization": f"Bearer {TOKENS['officials']}"}) as r:
            assert r.status == 200, await r.text()
        for n, inp in enumerate(inputs()):
            await send(s, "gun" if inp["type"] == "gun" else "finish-loop", inp, n + 1)
        await send(s, "officials", MANUAL, 1)
        await send(s, "officials", PHOTO, 2)
        await send(s, "officials", LATE_MANUAL, 3)
    f = Follower(stack.ws_url, race="1000")
    await f.run(lambda st: st.view is not None and st.view["results"]["4"]["final"] is not None
                and st.view["results"]["4"]["final"]["origin"] == "photo"
                and st.view["results"]["2"]["passages"][1] is not None
                and st.view["results"]["5"]["final"]["origin"] == "manual")
    res = f.view["results"]
    # The manual finish later than her read: ranked as skated, behind her partner.
    assert (res["5"]["passages"][2]["rank"], res["6"]["passages"][2]["rank"]) == (6, 5)
    assert (res["2"]["passages"][1]["rank"], res["2"]["passages"][1]["gap_best"]) == (2, 400_000)
    assert (res["4"]["passages"][2]["rank"], res["3"]["passages"][2]["rank"]) == (1, 2)
    assert "Corrected (official time (photo)): S4 1st (was 2nd), S3 2nd (was 1st)" \
        in f.view["stories"]


def finish_of(view: dict[str, Any], bib: str) -> dict[str, Any]:
    """A skater's finish row less what names where it came from (a read or a decision)."""
    return {k: v for k, v in view["results"][bib]["passages"][-1].items() if k != "input"}


def test_a_manual_finish_time_later_than_the_read_ranks_where_it_was_skated():
    """Bib 5's finish read says 1:17.000; the referee keys in 1:17.200 (no ``m``: the
    finish), later than her partner's 1:17.100. Her finish ranks, and her partner's,
    are those of a race where she crossed at 1:17.200; so are the classification and
    the finals; undone, the race is the one the reads give."""
    comp = race()
    events = feed(comp, "m", LATE_MANUAL)["1000"]
    assert [(e["type"], e["reason"]) for e in events] == [("revision", "decision: manual_time")]
    skated = Competition()
    feed(skated, "sl", {"type": "startlist", "skaters": skaters(*BIBS), "races": RACES})
    for n, inp in enumerate(inputs()):
        if inp["type"] == "passing" and inp["t"] == GUNS[3] + 77_000_000:
            inp = {**inp, "t": GUNS[3] + 77_200_000}
        feed(skated, f"i{n}", inp)
    view, want = comp.view("1000"), skated.view("1000")
    for bib in ("5", "6"):
        assert finish_of(view, bib) == finish_of(want, bib), bib
        assert view["results"][bib]["final"]["t"] == want["results"][bib]["final"]["t"]
    # Behind the four of pairs 1 and 2; her partner now ahead of her.
    assert (finish_of(view, "5")["rank"], finish_of(view, "6")["rank"]) == (6, 5)
    assert view["results"]["5"]["final"]["origin"] == "manual"
    assert view["classification"] == want["classification"]
    feed(comp, "undo", {"type": "decision", "race": "1000", "action": "void", "target": "m"})
    assert comp.view("1000")["results"] == race().view("1000")["results"]


def test_an_official_time_before_its_pairs_gun_is_refused_with_its_reason():
    """Pair 3 has not started: a photo or manual time for one of its skaters is a
    mistake (the wrong skater selected) and is refused with a reason the desk shows;
    after the gun the same time counts from it. So is one for a pair restarted whose
    new gun has not come."""
    comp = Competition()
    feed(comp, "sl", {"type": "startlist", "skaters": skaters(*BIBS), "races": RACES})
    early = [(n, inp) for n, inp in enumerate(inputs()) if inp["t"] < GUNS[3]]
    for n, inp in early:
        feed(comp, f"i{n}", inp)
    before = comp.view("1000")
    photo = {"type": "finish_time", "race": "1000", "bib": "5", "time_us": 77_000_000,
             "origin": "photo"}
    manual = {"type": "decision", "race": "1000", "action": "manual_time", "bib": "6",
              "m": 600, "time_us": 45_000_000}
    for iid, inp in (("p", photo), ("m", manual)):
        assert feed(comp, iid, inp) == {}
        pair_bib = inp["bib"]
        assert comp.last_reason == (f"race 1000: pair 3 of bib {pair_bib} has no gun yet: "
                                    "an official time counts from its pair's gun")
    assert comp.view("1000") == before and comp.stats["refused"] == 2
    feed(comp, "g3", {"type": "gun", "race": "1000", "pair": 3, "t": GUNS[3]})
    assert feed(comp, "p-again", photo)["1000"][0]["type"] == "finish"
    assert comp.view("1000")["results"]["5"]["final"]["t"] == 77_000_000
    # Pair 2 restarted: its new gun has not come, so its time is refused again.
    feed(comp, "x", {"type": "decision", "race": "1000", "action": "restart", "pair": 2})
    assert feed(comp, "p2", {**photo, "bib": "3"}) == {}
    assert comp.last_reason.startswith("race 1000: pair 2 of bib 3 has no gun yet")
