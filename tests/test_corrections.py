"""Corrections as the tester fed them: a manual time for a missed read keyed in pairs
later, a photo time that beats the partner's read, swapped chips reassigned. Ranks and
gaps at a passage are those when it was skated; the stories a correction made wrong are
told again, with a line saying what changed; finish lines show thousandths where
hundredths tie. A void undone by a void of it, and what cannot be applied refused with a
reason naming the field. In the engine, and through the documented feed and WebSocket."""
from __future__ import annotations

from typing import Any

import aiohttp

from services.scoring.competition import Competition

from .conftest import caught_up, feed, post_feed, race_view, without_inputs
from .test_order import GUN_T, skaters
from .test_pipeline import Follower, load_startlist

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
    async def send(s: aiohttp.ClientSession, source: str, body: dict[str, Any], seq: int
                   ) -> None:
        assert (await post_feed(s, stack, source, body, seq, wait=False))["ok"], body

    async with aiohttp.ClientSession() as s:
        await load_startlist(stack, {"startlist": {"skaters": skaters(*BIBS), "races": RACES}})
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


def void(iid: str, target: str) -> tuple[str, dict[str, Any]]:
    return iid, {"type": "decision", "race": "1000", "action": "void", "target": target}


def results(comp: Competition) -> tuple[Any, Any]:
    view = comp.view("1000")
    return view["results"], view["classification"]


def test_a_void_voided_counts_no_more():
    """Voiding a void undoes it, and voiding that void does it again (docs/protocol.md
    ``void``): a read and a DQ, each voided, brought back and voided again, give the
    results of the race fed without them, then with them voided."""
    finish3 = f"i{[i.get('t') for i in inputs()].index(GUNS[2] + 75_104_000)}"  # bib 3's
    clean = results(race())
    comp = race()
    dq = {"type": "decision", "race": "1000", "action": "dq", "bib": "1"}
    for iid, inp in (("dq", dq), void("v1", finish3), void("v2", "dq")):
        feed(comp, iid, inp)
    voided = results(comp)
    assert voided[0]["3"]["final"] is None and voided[0]["1"]["status"] is None
    for iid, inp in (void("u1", "v1"), void("u2", "dq"), void("u3", "v2")):
        assert feed(comp, iid, inp)["1000"][0]["type"] == "revision", comp.last_error
    # The read counts again; the DQ was voided (by v2, undone by u3, and by u2).
    assert results(comp) == clean
    for iid, inp in (void("r1", "u1"), void("r2", "u3")):
        feed(comp, iid, inp)
    assert results(comp) == voided


def test_a_reassignment_whose_undo_is_undone_holds_again():
    """Pair 2's swapped chips reassigned, the first reassignment undone, and that undo
    undone: the race is the race with both reassignments, and a later read of the chip
    is still the skater's it was given to."""
    swaps = [(f"r{n}", {"type": "decision", "race": "1000", "action": "reassign",
                        "transponder": tr, "bib": bib})
             for n, (tr, bib) in enumerate((("33", "4"), ("44", "3")))]
    both = race()
    for iid, inp in swaps:
        feed(both, iid, inp)
    comp = race()
    for iid, inp in (*swaps, void("v", "r0"), void("u", "v")):
        feed(comp, iid, inp)
    assert results(comp) == results(both)
    assert comp._owner("33") == both._owner("33") == "4"


def test_what_is_not_an_input_of_the_race_is_not_voided():
    """A void of an id that names no input of the race, a manual time at a passage the
    race does not have and an official finish time under a thousandth of a second are
    refused with a reason naming the field; the race is as it was, and goes on."""
    comp = race()
    before = comp.view("1000")
    assert feed(comp, *void("bad", "9999-0")) == {}
    assert comp.last_reason == ("target: 9999-0 is no input of race 1000 (a read, a gun or "
                                "an official's input it took)")
    assert feed(comp, "m700", {**MANUAL, "m": 700}) == {}
    assert comp.last_reason == "m: 700 is not a passage of race 1000 (200, 600, 1000)"
    # A finish under a thousandth of a second: no race time (truncated, it is 0.000).
    for iid, inp in (("f999", {**PHOTO, "bib": "6", "time_us": 999}),
                     ("m999", {**MANUAL, "bib": "6", "time_us": 999, "m": None})):
        assert feed(comp, iid, {k: v for k, v in inp.items() if v is not None}) == {}
        assert comp.last_reason == ("time_us: 999 is no race time: a race time is at least "
                                    "a thousandth of a second (1000)")
    assert comp.stats["refused"] == 4 and comp.view("1000") == before
    assert feed(comp, "dq", {"type": "decision", "race": "1000", "action": "dq", "bib": "6"})


async def test_a_voided_read_is_brought_back_through_the_feed(stack, redis_client):
    """The desk's `v` then `u`, as it sends them (POST /feed?wait=1): the read voided,
    then its void voided, leaves the race as if it had never been voided; a typo in the
    target and a passage the race does not have are refused with the reason."""
    async def send(s: aiohttp.ClientSession, source: str, body: dict[str, Any],
                   seq: int | None = None) -> dict[str, Any]:
        return await post_feed(s, stack, source, body, seq)

    async with aiohttp.ClientSession() as s:
        await load_startlist(stack, {"startlist": {"skaters": skaters(*BIBS), "races": RACES}})
        ids = []
        for n, inp in enumerate(inputs()):
            reply = await send(s, "gun" if inp["type"] == "gun" else "finish-loop", inp, n + 1)
            assert reply["ok"], reply
            ids.append(reply["id"])
        finish3 = ids[[i.get("t") for i in inputs()].index(GUNS[2] + 75_104_000)]
        voided = await send(s, "referee", void("", finish3)[1])
        assert voided == {"ok": True, "id": voided["id"], "seq": None, "verdict": "applied"}
        await caught_up(redis_client, "1000")
        assert (await race_view(redis_client, "1000"))["results"]["3"]["final"] is None
        undo = await send(s, "referee", void("", voided["id"])[1])
        assert undo["verdict"] == "applied", undo
        typo = await send(s, "referee", void("", "9999-0")[1])
        assert (typo["ok"], typo["verdict"]) == (False, "refused")
        assert typo["error"] == ("refused by scoring: target: 9999-0 is no input of race "
                                 "1000 (a read, a gun or an official's input it took)")
        m700 = await send(s, "referee", {**MANUAL, "m": 700})
        assert m700["error"] == ("refused by scoring: m: 700 is not a passage of race 1000 "
                                 "(200, 600, 1000)")
    await caught_up(redis_client, "1000")
    view = await race_view(redis_client, "1000")
    clean = race().view("1000")
    assert without_inputs(view["results"]) == without_inputs(clean["results"])
    assert view["classification"] == clean["classification"]


async def test_a_spare_chip_is_given_to_a_skater_through_the_feed(stack, redis_client):
    """Bib 1 skated pair 1 on a spare chip no start list names: her reads are unknown
    transponders. The desk's `h` as it sends it (POST /feed?wait=1, a referee's
    `reassign`): applied, and her reads become her passages; the same again is refused
    with the reason; `u` (a void of it) makes them unknown again."""
    async def send(s: aiohttp.ClientSession, source: str, body: dict[str, Any],
                   seq: int | None = None) -> dict[str, Any]:
        return await post_feed(s, stack, source, body, seq)

    spare = {"type": "decision", "race": "1000", "action": "reassign", "bib": "1",
             "transponder": "4242"}
    async with aiohttp.ClientSession() as s:
        await load_startlist(stack, {"startlist": {"skaters": skaters(*BIBS), "races": RACES}})
        for n, inp in enumerate(inputs()):
            if inp.get("transponder") == "11":
                inp = {**inp, "transponder": "4242"}
            await send(s, "gun" if inp["type"] == "gun" else "finish-loop", inp, n + 1)
        await caught_up(redis_client, "1000")
        assert (await race_view(redis_client, "1000"))["results"]["1"]["final"] is None
        given = await send(s, "referee", spare)
        assert given["verdict"] == "applied", given
        await caught_up(redis_client, "1000")
        view = await race_view(redis_client, "1000")
        clean = race().view("1000")
        assert without_inputs(view["results"]["1"]) == without_inputs(clean["results"]["1"])
        assert view["classification"] == clean["classification"]
        again = await send(s, "referee", {**spare, "reason": "pressed twice"})
        assert again.get("error") == ("refused by scoring: transponder 4242 is already "
                                      "bib 1's"), again
        undo = await send(s, "referee", void("", given["id"])[1])
        assert undo["verdict"] == "applied", undo
    await caught_up(redis_client, "1000")
    view = await race_view(redis_client, "1000")
    assert view["results"]["1"]["passages"] == [None, None, None]
    assert view["results"]["1"]["final"] is None


def test_a_pair_gun_or_restart_that_would_change_nothing_is_refused():
    """A gun earlier than its pair's latest gun would start an attempt that gun voids; a
    restart of a pair with no gun, or restarted with no new gun yet, voids nothing: each
    is refused with its reason, counted, and the race is as it was. A gun for another
    pair earlier than that gun still starts its own pair. Guns of one pair out of order
    (a recalled false start arriving after the real start) give the guns' result in time
    order whichever came first: the false start is refused when it comes second."""
    comp = race()
    before = comp.view("1000")
    gun3 = next(f"i{n}" for n, inp in enumerate(inputs())
                if inp["type"] == "gun" and inp["pair"] == 3)
    refusals = [
        ({"type": "gun", "race": "1000", "pair": 3, "t": GUNS[3] - 600_000_000},
         f"race 1000: this gun is 600.000 s before pair 3's latest gun ({gun3}), which "
         "starts the pair again after it: a gun restarts what came before it, so this one "
         "would start an attempt that gun voids; if this one is the real start, void that "
         "gun first"),
        ({"type": "gun", "race": "1000", "pair": 9, "t": GUNS[3]}, "race 1000: no pair 9"),
    ]
    for n, (inp, reason) in enumerate(refusals):
        assert feed(comp, f"x{n}", inp) == {}
        assert comp.last_reason == reason
    assert comp.view("1000") == before and comp.stats["refused"] == 2
    restart = {"type": "decision", "race": "1000", "action": "restart", "pair": 2}
    fresh = Competition()
    feed(fresh, "sl", {"type": "startlist", "skaters": skaters(*BIBS), "races": RACES})
    assert feed(fresh, "x", restart) == {}
    assert fresh.last_reason == "race 1000: pair 2 has no gun yet: there is no attempt to restart"
    assert feed(comp, "x2", restart)["1000"][0]["type"] == "revision"
    restarted = comp.view("1000")
    assert feed(comp, "x3", restart) == {}
    assert comp.last_reason == ("race 1000: pair 2 was restarted already and has no new gun "
                                "yet: this restart would change nothing")
    assert comp.view("1000") == restarted and comp.stats["refused"] == 3
    # The false start of pair 1 at its gun - 5 s, recalled; the real start at its gun.
    false_start = {"type": "gun", "race": "1000", "pair": 1, "t": GUNS[1] - 5_000_000}
    timing = inputs()
    outcomes = []
    for late in (False, True):
        c = Competition()
        feed(c, "sl", {"type": "startlist", "skaters": skaters(*BIBS), "races": RACES})
        if not late:
            feed(c, "f", false_start)
        for n, inp in enumerate(timing):
            feed(c, f"i{n}", inp)
        if late:
            assert feed(c, "f", false_start) == {} and c.stats["refused"] == 1
        outcomes.append((c.view("1000")["classification"],
                         {b: r["passages"] for b, r in c.view("1000")["results"].items()}))
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][0] == before["classification"]
