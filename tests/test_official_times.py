"""Official times in the engine: what counts when photo-finish and manual times meet
the mass start's sprint points, a restart, and each other.

* A mass start's final sprint points go to the first across the line by the finish
  times that count (photo, manual), like the finish ranking, and move with every
  correction; the classification (podium, then sprint points) follows.
* A restart voids the attempt and its official times: they stay in the log (the desk's
  audit) and count again if the restart is undone.
* Of two official times of equal precedence for one skater and passage, the one keyed
  last counts (the official's last word), not the later race time; undoing it brings the
  earlier back.

Each holds whatever order the network delivered the reads in (hypothesis): only the
order the officials keyed their inputs in counts.
"""
from __future__ import annotations

from typing import Any

import aiohttp
from hypothesis import given, settings
from hypothesis import strategies as st

from services.scoring.competition import Competition

from .conftest import TOKENS, feed, post_feed
from .test_order import GUN_T, skaters
from .test_pack import assert_fold
from .test_pipeline import Follower

# ---------------------------------------------------------------- mass start
MS = "ms"
MS_BIBS = ("1", "2", "3", "4", "5")
#: Four laps, the intermediate sprint at lap 2; the 2018/19 tables (3-2-1; 60-40-20-10-6-3).
MS_RACE = {"id": MS, "name": "Mass Start", "kind": "mass_start", "laps": 4,
           "sprint_laps": [2], "skaters": list(MS_BIBS)}
LAP_US = 30_000_000
#: The field in a line 0.3 s apart, bib 1 ahead, but at the finish bibs 1 to 3 cross
#: within 10 ms of each other: the transponders say 1, 2, 3; at the sprint (lap 2) the
#: order is 5, 4, 3 (they came round the outside).
def ms_reads(bibs: tuple[str, ...] = MS_BIBS, gun: int = GUN_T) -> list[dict[str, Any]]:
    out = []
    for lap in range(1, 5):
        for i, b in enumerate(bibs):
            gap = 300_000 * i
            if lap == 2:
                gap = 300_000 * (len(bibs) - 1 - i)
            if lap == 4 and i < 3:
                gap = 5_000 * i
            out.append({"type": "passing", "transponder": b * 2,
                        "t": gun + lap * LAP_US + gap})
    return out


def photo(bib: str, time_us: int, race: str = MS) -> dict[str, Any]:
    return {"type": "finish_time", "race": race, "bib": bib, "time_us": time_us,
            "origin": "photo"}


#: The photo finish reverses the transponders' first three: 3, 2, 1.
PHOTOS = [photo("3", 4 * LAP_US + 1_000), photo("2", 4 * LAP_US + 4_000),
          photo("1", 4 * LAP_US + 7_000)]


def mass_start(reads_order: list[int] | None = None,
               desk: list[dict[str, Any]] = ()) -> Competition:
    comp = Competition()
    feed(comp, "sl", {"type": "startlist", "skaters": skaters(*MS_BIBS), "races": [MS_RACE]})
    feed(comp, "g", {"type": "gun", "race": MS, "t": GUN_T})
    reads = ms_reads()
    for n in reads_order if reads_order is not None else range(len(reads)):
        feed(comp, f"r{n}", reads[n])
    for n, inp in enumerate(desk):
        feed(comp, f"d{n}", inp)
    return comp


def points(comp: Competition, race: str = MS) -> dict[str, int]:
    return comp.view(race)["pack"]["sprint_points"]


def test_the_final_sprint_points_follow_the_photo_finish():
    comp = mass_start()
    # The transponders' order first: 60-40-20 to 1, 2, 3 (plus the lap-2 sprint's 1 to 3).
    assert points(comp) == {"1": 60, "2": 40, "3": 21, "4": 12, "5": 9}
    for n, inp in enumerate(PHOTOS):
        feed(comp, f"p{n}", inp)
    view = comp.view(MS)
    assert points(comp) == {"1": 20, "2": 40, "3": 61, "4": 12, "5": 9}
    cls = view["classification"]
    assert cls["bib"] == ["3", "2", "1", "4", "5"]
    assert cls["sprint_points"] == [61, 40, 20, 12, 9]
    # Her photo undone, bib 3's transponder read is behind 2's and 1's photo times.
    feed(comp, "u", {"type": "decision", "race": MS, "action": "void", "target": "p0"})
    assert points(comp) == {"1": 40, "2": 60, "3": 21, "4": 12, "5": 9}
    assert comp.view(MS)["classification"]["bib"] == ["2", "1", "3", "4", "5"]
    # A new photo moves them again.
    feed(comp, "p3", photo("1", 4 * LAP_US))
    assert points(comp) == {"1": 60, "2": 40, "3": 21, "4": 12, "5": 9}
    assert comp.view(MS)["classification"]["bib"] == ["1", "2", "3", "4", "5"]


def test_the_final_sprint_points_follow_a_photo_that_came_before_the_reads():
    """The photo times keyed before the last reads reached scoring: each finish takes
    the points its photo time gives, from who crossed before; the events say so."""
    reads = ms_reads()
    last = [n for n, r in enumerate(reads) if r["t"] >= GUN_T + 4 * LAP_US]
    inputs = [("sl", {"type": "startlist", "skaters": skaters(*MS_BIBS), "races": [MS_RACE]}),
              ("g", {"type": "gun", "race": MS, "t": GUN_T})]
    inputs += [(f"r{n}", reads[n]) for n in range(len(reads)) if n not in last]
    inputs += [(f"d{n}", inp) for n, inp in enumerate(PHOTOS)]
    inputs += [(f"r{n}", reads[n]) for n in last]
    comp, events = Competition(), []
    for iid, inp in inputs:
        events += feed(comp, iid, inp).get(MS, [])
    assert points(comp) == {"1": 20, "2": 40, "3": 61, "4": 12, "5": 9}
    assert comp.view(MS)["classification"] == mass_start(desk=PHOTOS).view(MS)["classification"]
    # Bib 3's finish took the 60 from bib 2, who had taken them from bib 1: her event
    # says so, and the classification comes whole.
    third = next(e for e in events if e["type"] == "finish" and e["bib"] == "3")
    assert third["sprint_points_moved"] == {"1": 20, "2": 40}
    assert third["classification"]["bib"][:3] == ["3", "2", "1"]
    assert_fold(comp.view(MS), events)


def arrivals(reads: list[dict[str, Any]], desk: list[dict[str, Any]], order: list[int],
             at: list[int]) -> list[tuple[str, dict[str, Any]]]:
    """The reads in the network's ``order``, the officials' inputs in their keyed order,
    each ``desk[i]`` delivered after the first ``at[i]`` reads (``at`` ascending)."""
    out: list[tuple[str, dict[str, Any]]] = []
    d = 0
    for n, r in enumerate(order):
        while d < len(desk) and at[d] <= n:
            out.append((f"d{d}", desk[d]))
            d += 1
        out.append((f"r{r}", reads[r]))
    out += [(f"d{i}", desk[i]) for i in range(d, len(desk))]
    return out


def outcome(comp: Competition, race: str) -> tuple[Any, ...]:
    view = comp.view(race)
    return (view["classification"], view.get("pack", {}).get("sprint_points"),
            view.get("pack", {}).get("sprints"),
            {b: r["final"] for b, r in view["results"].items()})


@settings(max_examples=25, deadline=None)
@given(st.data())
def test_the_sprint_points_do_not_depend_on_the_arrival_order(data):
    """Reads in any order, the photo times among them anywhere (in their keyed order):
    the points, finals and classification are those of the reads in time order."""
    reads = ms_reads()
    order = data.draw(st.permutations(range(len(reads))))
    at = sorted(data.draw(st.lists(st.integers(0, len(reads)), min_size=len(PHOTOS),
                                   max_size=len(PHOTOS))))
    comp = Competition()
    feed(comp, "sl", {"type": "startlist", "skaters": skaters(*MS_BIBS), "races": [MS_RACE]})
    feed(comp, "g", {"type": "gun", "race": MS, "t": GUN_T})
    for iid, inp in arrivals(reads, PHOTOS, list(order), at):
        feed(comp, iid, inp)
    assert outcome(comp, MS) == outcome(mass_start(desk=PHOTOS), MS)


def test_a_manual_finish_time_moves_the_final_sprint_points():
    comp = mass_start(desk=[{"type": "decision", "race": MS, "action": "manual_time",
                             "bib": "2", "time_us": 4 * LAP_US - 1_000}])
    assert points(comp) == {"1": 40, "2": 60, "3": 21, "4": 12, "5": 9}
    assert comp.view(MS)["classification"]["bib"][:3] == ["2", "1", "3"]


def test_a_pack_race_refuses_a_manual_time_at_an_intermediate_line():
    """A pack race times its finish only: a manual time for a sprint lap's line is
    refused with its reason rather than taken for a finish time."""
    comp = mass_start()
    before = comp.view(MS)
    assert feed(comp, "m", {"type": "decision", "race": MS, "action": "manual_time",
                            "bib": "2", "m": 800, "time_us": 59_000_000}) == {}
    assert comp.last_reason == "race ms: a pack race times its finish only (m: 800; the " \
        "finish is 1600)"
    assert comp.view(MS) == before


# ---------------------------------------------------------------- restarts
def lt_race(desk: list[tuple[str, dict[str, Any]]] = ()) -> Competition:
    """test_corrections' 1000 m (three pairs, every read in), then ``desk``."""
    comp = lt_race_base()
    for iid, inp in desk:
        feed(comp, iid, inp)
    return comp


def lt_race_base() -> Competition:
    from .test_corrections import race
    return race()


def decision(action: str, race: str = "1000", **fields: Any) -> dict[str, Any]:
    return {"type": "decision", "race": race, "action": action, **fields}


def final(comp: Competition, bib: str, race: str = "1000") -> Any:
    got = comp.view(race)["results"][bib]["final"]
    return None if got is None else (got["t"], got["origin"])


#: Pair 2 again after its restart, 700 s after its first gun: bib 4 finishes 1:16.000
#: on her transponder, bib 3 1:16.500.
def pair2_again() -> list[tuple[str, dict[str, Any]]]:
    from .test_corrections import GUNS
    gun = GUNS[2] + 700_000_000
    reads = [("33", 17_600_000), ("44", 17_500_000), ("33", 45_600_000), ("44", 45_500_000),
             ("44", 76_000_000), ("33", 76_500_000)]
    return [("g2b", {"type": "gun", "race": "1000", "pair": 2, "t": gun})] + [
        (f"a2-{n}", {"type": "passing", "transponder": tr, "t": gun + t})
        for n, (tr, t) in enumerate(reads)]


def test_a_restart_voids_the_official_times_of_the_pair_it_restarts():
    from .test_corrections import PHOTO
    comp = lt_race([("pf", PHOTO), ("m3", decision("manual_time", bib="3", time_us=75_300_000)),
                    ("x", decision("restart", pair=2, reason="false start"))])
    assert final(comp, "4") is None and final(comp, "3") is None
    for iid, inp in pair2_again():
        feed(comp, iid, inp)
    # The photo and the manual time were for the voided attempt: the new one's
    # transponder finishes count.
    assert final(comp, "4") == (76_000_000, "transponder")
    assert final(comp, "3") == (76_500_000, "transponder")
    fresh = lt_race([("x", decision("restart", pair=2)), *pair2_again()])
    assert comp.view("1000")["classification"] == fresh.view("1000")["classification"]
    # A photo time for the new attempt counts as ever.
    feed(comp, "pf2", {**PHOTO, "time_us": 75_990_000})
    assert final(comp, "4") == (75_990_000, "photo")


def test_an_undone_restart_brings_its_official_times_back():
    from .test_corrections import PHOTO
    comp = lt_race([("pf", PHOTO), ("x", decision("restart", pair=2))])
    assert final(comp, "4") is None
    feed(comp, "u", decision("void", target="x"))
    assert final(comp, "4") == (75_095_000, "photo")
    assert comp.view("1000") == {**lt_race([("pf", PHOTO)]).view("1000"),
                                 "revision": comp.view("1000")["revision"],
                                 "stories": comp.view("1000")["stories"]}


def test_a_pack_restart_voids_the_official_times_of_the_attempt():
    restart = decision("restart", race=MS, reason="fall in the first corner")
    comp = mass_start(desk=[*PHOTOS, restart])
    assert comp.view(MS)["voided"][0]["attempt"] == 1
    # Undone before the new gun: the photo finish of the attempt counts again.
    feed(comp, "u", decision("void", race=MS, target=f"d{len(PHOTOS)}"))
    assert points(comp) == {"1": 20, "2": 40, "3": 61, "4": 12, "5": 9}
    feed(comp, "x2", restart)
    gun2 = GUN_T + 1_000_000_000
    feed(comp, "g2", {"type": "gun", "race": MS, "t": gun2})
    for n, r in enumerate(ms_reads()):
        feed(comp, f"b{n}", {**r, "t": r["t"] + gun2 - GUN_T})
    # The photo times were the first attempt's: the transponders order this finish.
    assert points(comp) == {"1": 60, "2": 40, "3": 21, "4": 12, "5": 9}
    assert {b: final(comp, b, MS) for b in ("1", "2", "3")} == {
        "1": (4 * LAP_US, "transponder"), "2": (4 * LAP_US + 5_000, "transponder"),
        "3": (4 * LAP_US + 10_000, "transponder")}


# ---------------------------------------------------------------- the last word
def test_the_manual_time_keyed_last_counts_not_the_later_one():
    """Two manual finish times for bib 5: the official's correction (keyed second, the
    earlier time) counts; undone, the first counts again. At 600 m alike."""
    first = decision("manual_time", bib="5", time_us=77_200_000)
    again = decision("manual_time", bib="5", time_us=76_900_000)
    comp = lt_race([("m1", first), ("m2", again)])
    assert final(comp, "5") == (76_900_000, "manual")
    assert comp.view("1000")["classification"] == lt_race([("m2", again)]).view(
        "1000")["classification"]
    feed(comp, "u", decision("void", target="m2"))
    assert final(comp, "5") == (77_200_000, "manual")
    # The other way round: the later race time keyed last counts.
    assert final(lt_race([("m2", again), ("m1", first)]), "5") == (77_200_000, "manual")
    at600 = [decision("manual_time", bib="2", m=600, time_us=t)
             for t in (45_600_000, 45_700_000, 45_650_000)]
    comp = lt_race([(f"s{n}", inp) for n, inp in enumerate(at600)])
    assert comp.view("1000")["results"]["2"]["passages"][1]["t"] == 45_650_000
    feed(comp, "u", decision("void", target="s2"))
    assert comp.view("1000")["results"]["2"]["passages"][1]["t"] == 45_700_000


def test_the_photo_time_keyed_last_counts_and_a_manual_time_still_outranks_it():
    from .test_corrections import PHOTO
    fix = {**PHOTO, "time_us": 75_099_000}
    comp = lt_race([("p1", {**PHOTO, "time_us": 75_120_000}), ("p2", fix)])
    assert final(comp, "4") == (75_099_000, "photo")
    feed(comp, "m", decision("manual_time", bib="4", time_us=75_200_000))
    assert final(comp, "4") == (75_200_000, "manual")
    feed(comp, "u", decision("void", target="p2"))
    assert final(comp, "4") == (75_200_000, "manual")
    feed(comp, "u2", decision("void", target="m"))
    assert final(comp, "4") == (75_120_000, "photo")


def test_a_pack_race_takes_the_manual_time_keyed_last():
    first = decision("manual_time", race=MS, bib="3", time_us=4 * LAP_US - 2_000)
    again = decision("manual_time", race=MS, bib="3", time_us=4 * LAP_US + 2_000)
    comp = mass_start(desk=[first, again])
    assert final(comp, "3", MS) == (4 * LAP_US + 2_000, "manual")
    assert points(comp)["3"] == 41
    feed(comp, "u", decision("void", race=MS, target="d1"))
    assert final(comp, "3", MS) == (4 * LAP_US - 2_000, "manual")
    assert points(comp)["3"] == 61


def fed_in_any_order(data: Any, desk: list[dict[str, Any]]) -> Competition:
    """The 1000 m: its guns, then its reads in a drawn order with the officials' inputs
    ``desk`` (in their keyed order, ids d0, d1...) at drawn places among them (each
    after its pair's gun: a time counts from its gun)."""
    from .test_corrections import BIBS, RACES, inputs
    guns = [inp for inp in inputs() if inp["type"] == "gun"]
    reads = [inp for inp in inputs() if inp["type"] == "passing"]
    order = data.draw(st.permutations(range(len(reads))))
    at = sorted(data.draw(st.lists(st.integers(0, len(reads)), min_size=len(desk),
                                   max_size=len(desk))))
    comp = Competition()
    feed(comp, "sl", {"type": "startlist", "skaters": skaters(*BIBS), "races": RACES})
    for n, gun in enumerate(guns):
        feed(comp, f"g{n}", gun)
    for iid, inp in arrivals(reads, desk, list(order), at):
        feed(comp, iid, inp)
    return comp


@settings(max_examples=25, deadline=None)
@given(st.data())
def test_official_times_do_not_depend_on_the_arrival_order_of_the_reads(data):
    """The 1000 m's reads in any order after the guns, and among them, in their keyed
    order, a photo time for pair 2, a restart of pair 2 and two manual times for bib 5:
    the result is the one of the reads in time order with the officials' inputs after."""
    from .test_corrections import PHOTO
    desk = [PHOTO, decision("manual_time", bib="5", time_us=77_200_000),
            decision("manual_time", bib="5", time_us=76_900_000),
            decision("restart", pair=2)]
    comp = fed_in_any_order(data, desk)
    want = lt_race([(f"d{n}", inp) for n, inp in enumerate(desk)])
    assert outcome(comp, "1000") == outcome(want, "1000")
    assert final(comp, "5") == (76_900_000, "manual") and final(comp, "4") is None


# ---------------------------------------------------------------- through the feed
async def test_official_times_through_the_feed(stack):
    """The desk's inputs through the documented feed, clients following over the
    WebSocket: a mass start's photo finish moves the final sprint points; in the
    1000 m a photo time of pair 2 goes with its restart, and bib 5's manual time keyed
    last counts."""
    from .test_corrections import BIBS, GUNS, PHOTO, RACES, inputs
    http = f"http://127.0.0.1:{stack.settings.ingest_http_port}"
    ms_bibs = ("21", "22", "23", "24", "25")
    ms_gun = GUNS[3] + 400_000_000
    race = {**MS_RACE, "skaters": list(ms_bibs)}
    seq = {"gun": 0, "finish-loop": 0, "officials": 0}

    async def send(s: aiohttp.ClientSession, source: str, body: dict[str, Any]) -> None:
        seq[source] += 1
        assert (await post_feed(s, stack, source, body, seq[source], wait=False))["ok"], body

    timing = [*inputs(), {"type": "gun", "race": MS, "t": ms_gun}, *ms_reads(ms_bibs, ms_gun)]
    desk = [PHOTO, decision("restart", pair=2),
            decision("manual_time", bib="5", time_us=77_200_000),
            decision("manual_time", bib="5", time_us=76_900_000),
            *[{**p, "bib": str(20 + int(p["bib"]))} for p in PHOTOS]]
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{http}/api/startlist",
                          json={"skaters": skaters(*BIBS, *ms_bibs), "races": [*RACES, race]},
                          headers={"Authorization": f"Bearer {TOKENS['officials']}"}) as r:
            assert r.status == 200, await r.text()
        for inp in timing:
            await send(s, "gun" if inp["type"] == "gun" else "finish-loop", inp)
        for inp in desk:
            await send(s, "officials", inp)
    ms = Follower(stack.ws_url, race=MS)
    await ms.run(lambda f: f.view is not None and f.view["pack"]["sprint_points"]["23"] == 61)
    assert ms.view["pack"]["sprint_points"] == {"21": 20, "22": 40, "23": 61, "24": 12,
                                                "25": 9}
    assert ms.view["classification"]["bib"] == ["23", "22", "21", "24", "25"]
    lt = Follower(stack.ws_url, race="1000")
    await lt.run(lambda f: f.view is not None and f.view["results"]["5"]["final"] is not None
                 and f.view["results"]["5"]["final"]["t"] == 76_900_000
                 and f.view["results"]["4"]["final"] is None)
    # The restart undone: pair 2's attempt and its photo time count again.
    async with aiohttp.ClientSession() as s:
        await send(s, "officials", decision("void", target=await restart_id(stack)))
    await lt.run(lambda f: f.view["results"]["4"]["final"] is not None
                 and f.view["results"]["4"]["final"]["origin"] == "photo")
    assert lt.view["results"]["4"]["final"]["t"] == 75_095_000


async def restart_id(stack: Any) -> str:
    """The raw stream id of the restart decision, as the desk's audit names it; the
    photo time it voided is on record there, applied."""
    http = f"http://127.0.0.1:{stack.settings.ingest_http_port}"
    async with aiohttp.ClientSession() as s, s.get(
            f"{http}/api/desk/audit", headers={"Authorization": f"Bearer {TOKENS['referee']}"}
    ) as r:
        entries = (await r.json())["entries"]
    [photo] = [e for e in entries if e.get("type") == "finish_time"
               and e["input_fields"]["race"] == "1000"]
    assert photo["verdict"] == "applied", photo
    return next(e["input"] for e in entries
                if (e.get("input_fields") or {}).get("action") == "restart")


# ---------------------------------------------------------------- intermediate times
#: What a passage's figures are made of (its input's id and its origin aside).
FIGURES = ("k", "m", "t", "lap_time", "rank", "gap_best", "best_bib", "gap_leader",
           "leader_bib", "gap_partner", "projected", "missing")


def figures(comp: Competition, race: str = "1000") -> tuple[Any, ...]:
    """Every figure of the race's results worked out from passage times: each passage's
    lap time, rank and gaps, the finals and the classification."""
    view = comp.view(race)
    results = {b: ([None if p is None else {f: p.get(f) for f in FIGURES}
                    for p in r["passages"]],
                   None if r["final"] is None else {**r["final"], "origin": None})
               for b, r in view["results"].items()}
    return results, view["classification"]


def reads_as(times: dict[tuple[str, int], int]) -> Competition:
    """test_corrections' 1000 m with the reads of ``times`` ((chip, µs after the gun
    read) -> µs after the gun) at other times: an official time fed as the read."""
    from .test_corrections import BIBS, GUNS, RACES, READS
    comp = Competition()
    feed(comp, "sl", {"type": "startlist", "skaters": skaters(*BIBS), "races": RACES})
    for p in (1, 2, 3):
        feed(comp, f"g{p}", {"type": "gun", "race": "1000", "pair": p, "t": GUNS[p]})
        for n, (_, tr, t) in enumerate(r for r in READS if r[0] == p):
            feed(comp, f"r{p}-{n}", {"type": "passing", "transponder": tr,
                                     "t": GUNS[p] + times.get((tr, t), t)})
    return comp


#: Bib 6's 600 m read 45.450, keyed in at 45.800 (later than the read: after her partner
#: and pair 2), her 200 m read 17.450 keyed in at 18.000 (last of all); bib 4's 600 m
#: read 45.600 keyed in at 45.300 (earlier than the read: first of all).
LATE_600 = decision("manual_time", bib="6", m=600, time_us=45_800_000)
LATE_200 = decision("manual_time", bib="6", m=200, time_us=18_000_000)
EARLY_600 = decision("manual_time", bib="4", m=600, time_us=45_300_000)
AS_READS = {("66", 45_450_000): 45_800_000, ("66", 17_450_000): 18_000_000,
            ("44", 45_600_000): 45_300_000}


def passage(comp: Competition, bib: str, k: int) -> tuple[Any, ...]:
    p = comp.view("1000")["results"][bib]["passages"][k]
    return (p["t"], p["lap_time"], p["rank"], p["gap_best"], p["gap_leader"],
            p["gap_partner"], p.get("origin"))


def test_a_manual_intermediate_time_later_than_the_read_makes_the_lap_times_and_gaps():
    """A manual 600 m time later than the read: the lap times before and after it, the
    rank and every gap at 600 m are the manual time's, as if it had been read; undone,
    the read's again. At 200 m alike, and for a time earlier than the read."""
    comp = lt_race([("m6", LATE_600)])
    # 45.800 - 17.450 = 28.350; 5th at 600 m, 0.500 behind bib 1's 45.300, 0.300 behind
    # the leader (bib 3, 45.500 at 600 m), 0.400 behind her partner (bib 5, 45.400); the
    # finish lap 77.100 - 45.800 = 31.300.
    assert passage(comp, "6", 1) == (45_800_000, 28_350_000, 5, 500_000, 300_000, 400_000,
                                     "manual")
    assert passage(comp, "6", 2)[:2] == (77_100_000, 31_300_000)
    feed(comp, "m2", LATE_200)
    # 6th at 200 m (18.000), 0.600 behind bib 5's 17.400; the 600 m lap 27.800.
    assert passage(comp, "6", 0) == (18_000_000, 18_000_000, 6, 600_000, 400_000, 600_000,
                                     "manual")
    assert passage(comp, "6", 1)[:2] == (45_800_000, 27_800_000)
    feed(comp, "m4", EARLY_600)
    # Level with bib 1, the leader then, at 45.300; ahead of her partner (45.500).
    assert passage(comp, "4", 1) == (45_300_000, 27_600_000, 1, 0, 0, None, "manual")
    assert passage(comp, "3", 1)[5] == 200_000
    assert passage(comp, "4", 2)[:2] == (75_109_000, 29_809_000)
    assert figures(comp) == figures(reads_as(AS_READS))
    # Undone one by one: the reads count again.
    feed(comp, "u1", decision("void", target="m6"))
    assert passage(comp, "6", 1)[:3] == (45_450_000, 27_450_000, 4)  # from 18.000
    feed(comp, "u2", decision("void", target="m2"))
    feed(comp, "u3", decision("void", target="m4"))
    assert figures(comp) == figures(lt_race())


@settings(max_examples=25, deadline=None)
@given(st.data())
def test_manual_intermediate_times_do_not_depend_on_the_arrival_order(data):
    """The 1000 m's reads in any order after the guns, the three manual times among them
    anywhere in their keyed order, and maybe the first one undone after them: every
    figure is the one of the manual times that count fed as the reads."""
    undo = data.draw(st.booleans())
    desk = [LATE_600, EARLY_600, LATE_200, *([decision("void", target="d0")] * undo)]
    comp = fed_in_any_order(data, desk)
    counted = {k: v for k, v in AS_READS.items() if not (undo and k == ("66", 45_450_000))}
    assert figures(comp) == figures(reads_as(counted))


# ---------------------------------------------------------------- what cannot apply
def test_undoing_a_restart_after_the_new_gun_is_refused_naming_the_gun():
    """Once a new gun has started the pair again, voiding its restart (or bringing the
    restart back) would change nothing: it is refused, naming the gun to void first;
    voided that gun, the restart's undo brings the first attempt back."""
    comp = lt_race([("x", decision("restart", pair=2, reason="false start")),
                    *pair2_again()])
    before = comp.view("1000")
    assert feed(comp, "u", decision("void", target="x")) == {}
    assert comp.last_reason == ("race 1000: pair 2 was started again after the restart "
                                "(gun g2b): void that gun first")
    assert comp.view("1000") == before
    assert feed(comp, "ug", decision("void", target="g2b"))
    assert final(comp, "4") is None  # the restart stands: no attempt counts
    assert feed(comp, "u2", decision("void", target="x"))
    assert final(comp, "4") == (75_109_000, "transponder")
    assert figures(comp) == figures(lt_race())
    # The void of a void alike: undone before the new gun, then the gun; bringing the
    # restart back now is refused.
    comp = lt_race([("x", decision("restart", pair=2)), ("u", decision("void", target="x")),
                    *pair2_again()])
    assert feed(comp, "uu", decision("void", target="u")) == {}
    assert comp.last_reason.endswith("(gun g2b): void that gun first")


def test_a_pack_race_refuses_an_official_time_between_a_restart_and_its_new_gun():
    """As a pair race does: after a restart and before the next gun, a photo or manual
    time is refused with the reason; so is undoing the restart once the new gun came."""
    comp = mass_start(desk=[decision("restart", race=MS)])
    before = comp.view(MS)
    for iid, inp in (("p", photo("2", 4 * LAP_US)),
                     ("m", decision("manual_time", race=MS, bib="2", time_us=4 * LAP_US))):
        assert feed(comp, iid, inp) == {}
        assert comp.last_reason == ("race ms: bib 2 has no gun yet: an official time counts "
                                    "from the race's gun")
    assert comp.view(MS) == before
    gun2 = GUN_T + 1_000_000_000
    feed(comp, "g2", {"type": "gun", "race": MS, "t": gun2})
    for n, r in enumerate(ms_reads()):
        feed(comp, f"b{n}", {**r, "t": r["t"] + gun2 - GUN_T})
    before = comp.view(MS)
    assert feed(comp, "u", decision("void", race=MS, target="d0")) == {}
    assert comp.last_reason == ("race ms: the race was started again after the restart "
                                "(gun g2): void that gun first")
    assert comp.view(MS) == before
    # A photo time for the new attempt counts as ever.
    feed(comp, "p2", photo("3", 4 * LAP_US + 1_000))
    assert final(comp, "3", MS) == (4 * LAP_US + 1_000, "photo")


def test_a_pack_race_refuses_a_gun_earlier_than_its_latest_gun():
    """A gun earlier than the race's latest gun would start an attempt that gun voids
    (it restarts what came before it): refused with the reason. Guns out of order (a
    false start and the real start, the real one arriving first): the result is the
    one of the guns in order, whichever came first, with the reads anywhere."""
    comp = mass_start()
    before = comp.view(MS)
    assert feed(comp, "g0", {"type": "gun", "race": MS, "t": GUN_T - 600_000_000}) == {}
    assert comp.last_reason == (
        "race ms: this gun is 600.000 s before the race's latest gun (g), which starts "
        "the race again after it: a gun restarts what came before it, so this one would "
        "start an attempt that gun voids; if this one is the real start, void that gun "
        "first")
    assert comp.view(MS) == before
    # The false start at GUN_T - 5 s, recalled; the real start at GUN_T.
    false_start = {"type": "gun", "race": MS, "t": GUN_T - 5_000_000}
    real = {"type": "gun", "race": MS, "t": GUN_T}
    reads = ms_reads()
    in_order, out_of_order = Competition(), Competition()
    for comp, guns in ((in_order, [false_start, real]), (out_of_order, [real, false_start])):
        feed(comp, "sl", {"type": "startlist", "skaters": skaters(*MS_BIBS),
                          "races": [MS_RACE]})
        feed(comp, "g1", guns[0])
        feed(comp, "r0", reads[0])
        feed(comp, "g2", guns[1])
        for n, r in enumerate(reads[1:], 1):
            feed(comp, f"r{n}", r)
    assert outcome(out_of_order, MS) == outcome(in_order, MS) == outcome(mass_start(), MS)
    # Voided the latest gun, the earlier one may start the race.
    comp = mass_start()
    feed(comp, "v", decision("void", race=MS, target="g"))
    assert feed(comp, "g0", {"type": "gun", "race": MS, "t": GUN_T - 600_000_000})


async def test_lap_times_and_refusals_through_the_feed(stack, redis_client):
    """Through the documented feed, as the desk sends (``?wait=1``): a manual 600 m time
    later than the read gives the lap times and gap of that time to every reader; undoing
    a restart once the new gun came, a photo time between a pack race's restart and its
    new gun, and a pack gun earlier than the latest are refused with their reasons."""
    from .conftest import caught_up, race_view
    from .test_corrections import BIBS, GUNS, RACES, inputs
    http = f"http://127.0.0.1:{stack.settings.ingest_http_port}"
    ms_bibs = ("21", "22", "23", "24", "25")
    ms_gun = GUNS[3] + 400_000_000
    seq = {"gun": 0, "finish-loop": 0, "officials": 0, "photo-finish": 0}

    async def send(s: aiohttp.ClientSession, source: str, body: dict[str, Any]
                   ) -> dict[str, Any]:
        seq[source] += 1
        return await post_feed(s, stack, source, body, seq[source])

    timing = [*inputs(), {"type": "gun", "race": MS, "t": ms_gun}, *ms_reads(ms_bibs, ms_gun)]
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{http}/api/startlist",
                          json={"skaters": skaters(*BIBS, *ms_bibs),
                                "races": [*RACES, {**MS_RACE, "skaters": list(ms_bibs)}]},
                          headers={"Authorization": f"Bearer {TOKENS['officials']}"}) as r:
            assert r.status == 200, await r.text()
        for inp in timing:
            assert (await send(s, "gun" if inp["type"] == "gun" else "finish-loop", inp))["ok"]
        late = await send(s, "officials", LATE_600)
        assert late["verdict"] == "applied", late
        await caught_up(redis_client, "1000")
        at600 = (await race_view(redis_client, "1000"))["results"]["6"]["passages"][1]
        assert (at600["t"], at600["lap_time"], at600["gap_leader"]) == (
            45_800_000, 28_350_000, 300_000)
        # Pair 2 restarted and started again: undoing the restart is refused.
        x = await send(s, "officials", decision("restart", pair=2))
        gun = await send(s, "gun", {"type": "gun", "race": "1000", "pair": 2,
                                    "t": GUNS[2] + 700_000_000})
        undo = await send(s, "officials", decision("void", target=x["id"]))
        assert (undo["ok"], undo["verdict"]) == (False, "refused")
        assert undo["error"] == (f"refused by scoring: race 1000: pair 2 was started again "
                                 f"after the restart (gun {gun['id']}): void that gun first")
        # The mass start: restarted, a photo time before its new gun; a gun 600 s early.
        assert (await send(s, "officials", decision("restart", race=MS)))["ok"]
        early = await send(s, "photo-finish", photo("23", 4 * LAP_US))
        assert early["error"] == ("refused by scoring: race ms: bib 23 has no gun yet: an "
                                  "official time counts from the race's gun")
        back = await send(s, "gun", {"type": "gun", "race": MS, "t": ms_gun - 600_000_000})
        assert back["error"].startswith("refused by scoring: race ms: this gun is 600.000 s "
                                        "before the race's latest gun (")
        # Pair 2: a gun before its latest (the one after its restart), a second restart.
        early_gun = await send(s, "gun", {"type": "gun", "race": "1000", "pair": 2,
                                          "t": GUNS[2]})
        assert (early_gun["ok"], early_gun["verdict"]) == (False, "refused"), early_gun
        assert early_gun["error"] == (
            f"refused by scoring: race 1000: this gun is 700.000 s before pair 2's latest "
            f"gun ({gun['id']}), which starts the pair again after it: a gun restarts what "
            "came before it, so this one would start an attempt that gun voids; if this one "
            "is the real start, void that gun first")
        assert (await send(s, "officials", decision("restart", pair=2)))["ok"]
        twice = await send(s, "officials", decision("restart", pair=2))
        assert twice["error"] == ("refused by scoring: race 1000: pair 2 was restarted "
                                  "already and has no new gun yet: this restart would "
                                  "change nothing")


def fixture_with_photo(at: int) -> Competition:
    """The Beijing 2023 mass start (the fixture), with a photo-finish time for Maltais
    (bib 3) equal to Blondin's (bib 2) transponder finish, 8:37.580, sent as the
    ``at``-th input after the start list."""
    from icetime.replay import load_fixture, script_inputs

    from .test_pack import FIXTURES
    doc = load_fixture(FIXTURES / "beijing2023_w_massstart.json")
    comp = Competition()
    feed(comp, "sl", {"type": "startlist", **doc["startlist"]})
    items = [{**item.inp, "source": item.source, "rx_us": item.at_us}
             for item in script_inputs(doc)]
    items.insert(at, photo("3", 517_580_000, race="bj23-wms"))
    for n, inp in enumerate(items):
        feed(comp, f"in-{n}", inp)
    return comp


@settings(max_examples=3, deadline=None)
@given(st.data())
def test_at_equal_thousandths_the_photo_finish_places_ahead_of_a_transponder(data):
    """DOMAIN.md §1.4: the photo finish is the official time, transponders the backup.
    Maltais' photo time equals Blondin's transponder finish to the thousandth: the photo
    finish places Maltais second (40 final sprint points, 2nd in the classification),
    Blondin third (20), not level and not by the transponders' order; whenever the
    photo time arrives after the gun."""
    gun = 1  # the fixture's first input is its gun
    at = data.draw(st.sampled_from([gun + 1, 205]) | st.integers(gun + 1, 205),
                   label="photo sent at")
    comp = fixture_with_photo(at)
    view = comp.view("bj23-wms")
    cls = view["classification"]
    assert (cls["bib"][:3], cls["rank"][:3], cls["t"][1:3]) == (
        ["1", "3", "2"], [1, 2, 3], [517_580_000, 517_580_000])
    assert (view["pack"]["sprint_points"]["3"], view["pack"]["sprint_points"]["2"]) == (44, 26)
    assert view["results"]["3"]["final"]["origin"] == "photo"
