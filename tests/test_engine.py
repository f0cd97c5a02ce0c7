"""The sans-I/O engine, fed inputs directly: no Redis, no sockets."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from icetime.replay import load_fixture, script_inputs
from icetime.timefmt import format_time, to_thousandths
from icetime.view import apply_event
from services.scoring.competition import Competition

from .conftest import feed

FIXTURE = Path(__file__).parent.parent / "fixtures" / "beijing2023_w1000a.json"
RACE = "bj23-w1000a"


def run_race(doc, *, extra=(), stop_after=None):
    """Feed a fixture through a fresh engine; return (engine, events in order)."""
    comp = Competition()
    events = []
    for race_events in feed(comp, "sl-1", {"type": "startlist", **doc["startlist"]}).values():
        events += race_events
    for n, item in enumerate(script_inputs(doc)):
        if stop_after is not None and n >= stop_after:
            break
        inp = {**item.inp, "source": item.source, "rx_us": item.at_us}
        for race_events in feed(comp, f"in-{n}", inp).values():
            events += race_events
    for n, inp in enumerate(extra):
        for race_events in feed(comp, f"x-{n}", inp).values():
            events += race_events
    return comp, events


@pytest.fixture(scope="module")
def doc():
    return load_fixture(FIXTURE)


def by_short(view):
    return {s["short"]: b for b, s in view["skaters"].items()}


def test_published_order_and_times(doc):
    comp, _ = run_race(doc)
    view = comp.view(RACE)
    bibs = by_short(view)
    cls = view["classification"]
    top3 = [view["skaters"][b]["short"] for b in cls["bib"][:3]]
    assert top3 == ["Takagi", "Goetz", "Leerdam"]
    assert [format_time(t) for t in cls["t"][:3]] == ["1:14.44", "1:14.45", "1:14.88"]
    assert cls["rank"][:3] == [1, 2, 3]
    assert format_time(cls["behind"][2]) == "0.43"
    assert len(cls["bib"]) == 20
    # Leerdam has the fastest 600 m passage of the whole distance.
    at600 = {b: r["passages"][1]["t"] for b, r in view["results"].items()}
    assert min(at600, key=at600.get) == bibs["Leerdam"]


def test_takagi_trails_goetz_by_014_at_600(doc):
    _, events = run_race(doc)
    takagi600 = next(e for e in events if e["type"] == "passage" and e["row"]["m"] == 600
                     and e["bib"] == "20")
    row = takagi600["row"]
    assert row["leader_bib"] == "5"  # Goetz leads the classification then
    assert format_time(row["gap_leader"]) == "0.14"
    assert row["best_bib"] == "17"  # Leerdam's 600 m is the best passage
    assert "Takagi 0.14 behind Goetz at 600 m" in takagi600["stories"]
    finish = next(e for e in events if e["type"] == "finish" and e["bib"] == "20")
    assert finish["final"]["t"] == 74_446_000
    assert finish["stories"][0] == "New leader: Takagi in 1:14.44, 0.006 ahead of Goetz"


def test_rank_lap_gaps_and_projection_at_a_passage(doc):
    _, events = run_race(doc)
    leerdam600 = next(e for e in events if e["type"] == "passage" and e["bib"] == "17"
                      and e["row"]["m"] == 600)["row"]
    assert leerdam600["rank"] == 1 and leerdam600["gap_best"] == 0
    assert leerdam600["lap_time"] == 44_963_000 - 18_010_000
    # Bowe (partner) passed 600 m after Leerdam, so Leerdam's row has no partner gap yet.
    assert leerdam600["gap_partner"] is None
    bowe600 = next(e for e in events if e["type"] == "passage" and e["bib"] == "18"
                   and e["row"]["m"] == 600)["row"]
    assert bowe600["gap_partner"] == 45_372_000 - 44_963_000
    # Projection: leader final x split / leader split, against Goetz (leader then).
    assert leerdam600["projected"] == 74_452_000 * 44_963_000 // 45_221_000 // 1000 * 1000
    assert "Leerdam fastest at 600 m, 0.25 under Goetz" in next(
        e for e in events if e["type"] == "passage" and e["bib"] == "17"
        and e["row"]["m"] == 600)["stories"]


def test_each_skater_counted_once_despite_two_transponders(doc):
    comp, events = run_race(doc)
    passages = [e for e in events if e["type"] in ("passage", "finish")]
    assert len(passages) == 20 * 3
    assert comp.stats["passing_ignored"] == 20 * 3  # the second ankle, debounced


def test_fold_of_events_equals_engine_view(doc):
    comp, events = run_race(doc)
    view = None
    for ev in json.loads(json.dumps(events)):  # through JSON, as clients get them
        view = apply_event(view, ev)
    assert view == json.loads(json.dumps(comp.view(RACE)))


def test_replay_is_deterministic_and_idempotent(doc):
    _, a = run_race(doc)
    comp, b = run_race(doc)
    assert a == b
    assert feed(comp, "in-5", {"type": "gun", "race": RACE, "pair": 1, "t": 0}) == {}
    assert comp.stats["duplicate_input"] == 1


def test_debounce_never_moves_the_anchor():
    comp = Competition()
    feed(comp, "s", {"type": "startlist", "skaters": [
        {"bib": "1", "name": "A One", "transponders": ["11"]},
        {"bib": "2", "name": "B Two", "transponders": ["22"]}],
        "races": [{"id": "r", "distance": 1000,
                   "pairs": [{"pair": 1, "inner": "1", "outer": "2"}]}]})
    feed(comp, "g", {"type": "gun", "race": "r", "pair": 1, "t": 1_000_000})
    # 200 m needs at least 10 s at 20 m/s: a read at 4 s is a re-read (skater near the loop).
    assert feed(comp, "p1", {"type": "passing", "transponder": "11", "t": 5_000_000}) == {}
    out = feed(comp, "p2", {"type": "passing", "transponder": "11", "t": 19_000_000})
    assert out["r"][0]["row"]["t"] == 18_000_000
    # Repeated re-reads 5 s apart each: measured from the accepted passage, not the last read.
    assert feed(comp, "p3", {"type": "passing", "transponder": "11", "t": 24_000_000}) == {}
    assert feed(comp, "p4", {"type": "passing", "transponder": "11", "t": 29_000_000}) == {}
    out = feed(comp, "p5", {"type": "passing", "transponder": "11", "t": 39_000_000})
    assert out["r"][0]["row"]["t"] == 38_000_000 and out["r"][0]["row"]["lap_time"] == 20_000_000


def test_equal_thousandths_share_a_rank():
    comp = Competition()
    feed(comp, "s", {"type": "startlist", "skaters": [
        {"bib": str(b), "name": f"S {b}", "transponders": [str(b)]} for b in range(1, 5)],
        "races": [{"id": "r", "distance": 500, "pairs": [
            {"pair": 1, "inner": "1", "outer": "2"}, {"pair": 2, "inner": "3", "outer": "4"}]}]})
    finals = {"1": 38_123_400, "2": 38_123_900, "3": 38_000_000, "4": 38_124_000}
    for pair, bibs in ((1, ("1", "2")), (2, ("3", "4"))):
        feed(comp, f"g{pair}", {"type": "gun", "race": "r", "pair": pair, "t": 0})
        for b in bibs:
            feed(comp, f"a{b}", {"type": "passing", "transponder": b, "t": 10_000_000})
            feed(comp, f"f{b}", {"type": "passing", "transponder": b, "t": finals[b]})
    cls = comp.view("r")["classification"]
    assert cls["bib"] == ["3", "1", "2", "4"]
    assert cls["rank"] == [1, 2, 2, 4]  # 38.123 twice: shared 2nd, no 3rd


def test_official_and_manual_times_are_truncated_to_thousandths_like_passings(doc):
    assert to_thousandths(74_440_999) == 74_440_000
    assert to_thousandths(-1) == -1_000  # it floors, like a passing before its gun
    _, events = run_race(doc, extra=[
        {"type": "finish_time", "race": RACE, "bib": "5", "time_us": 74_440_999,
         "origin": "photo"}])
    assert events[-1]["view"]["results"]["5"]["final"]["t"] == 74_440_000
    _, events = run_race(doc, extra=[
        {"type": "decision", "race": RACE, "action": "manual_time", "bib": "5",
         "time_us": 74_500_999}])
    assert events[-1]["view"]["results"]["5"]["final"]["t"] == 74_500_000


def test_decisions_are_revisions(doc):
    n_inputs = len(script_inputs(doc))
    comp, events = run_race(doc, extra=[
        {"type": "decision", "race": RACE, "action": "dq", "bib": "20", "reason": "lane"}])
    rev = events[-1]
    assert rev["type"] == "revision" and rev["reason"] == "decision: dq"
    cls = rev["view"]["classification"]
    assert cls["bib"][:2] == ["5", "17"]
    assert rev["view"]["results"]["20"]["status"] == "DQ"
    assert rev["view"] == comp.view(RACE)
    # Void Goetz's finish read: the second ankle's read, 23 ms later, becomes her finish.
    first = run_race(doc)[1]
    goetz_finish_input = next(e["input"] for e in first
                              if e["type"] == "finish" and e["bib"] == "5")
    void = {"type": "decision", "race": RACE, "action": "void", "target": goetz_finish_input}
    _, ev2 = run_race(doc, extra=[void])
    view = ev2[-1]["view"]
    assert view["results"]["5"]["final"]["t"] == 74_452_000 + 23_000
    # Void that one too: no finish left, so Goetz drops out of the classification.
    n = int(goetz_finish_input.split("-")[1])
    second = f"in-{n + 1}"
    _, ev3 = run_race(doc, extra=[void, {**void, "target": second}])
    view = ev3[-1]["view"]
    assert view["results"]["5"]["final"] is None
    assert "5" not in view["classification"]["bib"]
    assert view["classification"]["bib"][0] == "20"
    assert n_inputs > 100


def test_manual_time_and_photo_finish_revise_the_result(doc):
    comp, events = run_race(doc, extra=[
        {"type": "finish_time", "race": RACE, "bib": "5", "time_us": 74_440_000,
         "origin": "photo"}])
    rev = events[-1]
    assert rev["type"] == "revision"
    cls = rev["view"]["classification"]
    assert cls["bib"][:2] == ["5", "20"]
    assert rev["view"]["results"]["5"]["final"]["origin"] == "photo"
    # A manual time (official decision) outranks the photo finish.
    comp, events = run_race(doc, extra=[
        {"type": "finish_time", "race": RACE, "bib": "5", "time_us": 74_440_000},
        {"type": "decision", "race": RACE, "action": "manual_time", "bib": "5",
         "time_us": 74_500_000}])
    assert events[-1]["view"]["results"]["5"]["final"]["t"] == 74_500_000


def test_restart_after_false_start(doc):
    # Stop partway into pair 1, then the referee calls a restart and the pair skates again.
    doc2 = copy.deepcopy(doc)
    doc2["script"]["pairs"] = doc2["script"]["pairs"][:1]
    items = script_inputs(doc2)
    comp = Competition()
    feed(comp, "sl", {"type": "startlist", **doc["startlist"]})
    for n, it in enumerate(items[:3]):  # gun + both ankles of the first 200 m read
        feed(comp, f"a{n}", {**it.inp, "source": it.source})
    assert comp.view(RACE)["results"]["1"]["passages"][0] is not None or \
        comp.view(RACE)["results"]["2"]["passages"][0] is not None
    out = feed(comp, "restart", {"type": "decision", "race": RACE, "action": "restart", "pair": 1})
    view = out[RACE][0]["view"]
    assert view["results"]["1"]["passages"] == [None, None, None]
    assert view["on_ice"] == {}
    later = 120_000_000  # the pair skates again two minutes on, on a new gun
    for n, it in enumerate(items):
        feed(comp, f"b{n}", {**it.inp, "t": it.inp["t"] + later, "source": it.source})
    view = comp.view(RACE)
    assert view["results"]["1"]["final"]["t"] == 76_412_000
    assert view["on_ice"] == {}


def test_unknown_inputs_are_counted_not_raised(doc):
    comp, _ = run_race(doc, stop_after=0)
    assert feed(comp, "u1", {"type": "passing", "transponder": "999", "t": 1}) == {}
    assert feed(comp, "u2", {"type": "gun", "race": "nope", "pair": 1, "t": 1}) == {}
    assert feed(comp, "u3", {"type": "decision", "race": RACE, "action": "dq", "bib": "77"}) == {}
    assert comp.stats["unknown_transponder"] == 1 and comp.stats["refused"] == 2


def test_quartet_start_two_pairs_on_the_ice_and_record_flags():
    """3000 m quartet start: pair 2 goes half a lap after pair 1, both on the ice at once."""
    comp = Competition()
    feed(comp, "s", {"type": "startlist", "skaters": [
        {"bib": "1", "name": "A One", "transponders": ["1"], "pb": {"3000": "4:00.00"},
         "sb": {"3000": "3:58.00"}},
        {"bib": "2", "name": "B Two", "transponders": ["2"], "pb": {"3000": "3:50.00"}},
        {"bib": "3", "name": "C Three", "transponders": ["3"]},
        {"bib": "4", "name": "D Four", "transponders": ["4"]}],
        "races": [{"id": "r", "distance": 3000, "records": {"TR": "3:56.00", "WR": "3:52.00"},
                   "pairs": [{"pair": 1, "inner": "1", "outer": "2"},
                             {"pair": 2, "inner": "3", "outer": "4"}]}]})
    feed(comp, "g1", {"type": "gun", "race": "r", "pair": 1, "t": 0})
    feed(comp, "g2", {"type": "gun", "race": "r", "pair": 2, "t": 15_000_000})
    assert set(comp.view("r")["on_ice"]) == {"1", "2"}
    finals = {"1": 235_500_000, "2": 251_000_000, "3": 240_000_000, "4": 245_000_000}
    gun = {"1": 0, "2": 0, "3": 15_000_000, "4": 15_000_000}
    n = 0
    for m in range(200, 3001, 400):
        for bib in ("1", "2", "3", "4"):
            n += 1
            t = finals[bib] * m // 3000
            feed(comp, f"p{n}", {"type": "passing", "transponder": bib, "t": gun[bib] + t})
    view = comp.view("r")
    assert view["on_ice"] == {}
    assert [view["results"][b]["final"]["t"] for b in "1234"] == [
        235_500_000, 251_000_000, 240_000_000, 245_000_000]
    # Under the PB, the SB and the track record, but not the world record.
    assert view["results"]["1"]["final"]["flags"] == ["TR", "PB", "SB"]
    assert view["results"]["2"]["final"]["flags"] == []
    assert view["classification"]["bib"] == ["1", "3", "4", "2"]
    # Ranks at a passage count every skater of the distance, from both pairs.
    assert view["results"]["3"]["passages"][0]["rank"] == 2


def test_the_earliest_read_of_a_passage_wins_even_when_it_arrives_late(doc):
    """Two ankles on two decoders: the later-arriving read is 12 ms earlier."""
    comp = Competition()
    feed(comp, "sl", {"type": "startlist", **doc["startlist"]})
    feed(comp, "g", {"type": "gun", "race": RACE, "pair": 3, "t": 0})
    a = feed(comp, "a", {"type": "passing", "transponder": "4100051", "t": 17_992_000})
    assert a[RACE][0]["row"]["t"] == 17_992_000
    b = feed(comp, "b", {"type": "passing", "transponder": "4100052", "t": 17_980_000})
    rev = b[RACE][0]
    assert rev["type"] == "revision" and rev["reason"] == "late read"
    assert rev["view"]["results"]["5"]["passages"][0]["t"] == 17_980_000
    # A later read is still just a re-read: nothing changes, no event.
    assert feed(comp, "c", {"type": "passing", "transponder": "4100052", "t": 17_999_000}) == {}
    out = feed(comp, "d", {"type": "passing", "transponder": "4100051", "t": 45_221_000})
    assert out[RACE][0]["row"]["lap_time"] == 45_221_000 - 17_980_000
    feed(comp, "e", {"type": "passing", "transponder": "4100051", "t": 74_452_000})
    late = feed(comp, "f", {"type": "passing", "transponder": "4100052", "t": 74_450_000})
    view = late[RACE][0]["view"]
    assert view["results"]["5"]["final"]["t"] == 74_450_000
    assert view["classification"]["t"] == [74_450_000]
    assert view == comp.view(RACE)
    # The same log replayed from scratch gives the same state (the rule is deterministic).
    assert comp.races[RACE].recompute("z", "check")[0]["view"]["results"] == view["results"]


def test_a_gun_without_a_pair_starts_the_pair_called_to_the_start(doc):
    comp = Competition()
    feed(comp, "sl", {"type": "startlist", **doc["startlist"]})
    assert feed(comp, "g0", {"type": "gun", "t": 0}) == {}  # nobody called: refused, counted
    assert comp.stats["refused"] == 1
    assert feed(comp, "c", {"type": "call", "race": RACE, "pair": 3}) == {}
    out = feed(comp, "g1", {"type": "gun", "t": 1_000_000})
    assert out[RACE][0]["type"] == "pair_start" and out[RACE][0]["pair"] == 3
    # The call is used up: the next beacon (a re-trigger) starts nothing.
    assert feed(comp, "g2", {"type": "gun", "t": 2_000_000}) == {}
    out = feed(comp, "p", {"type": "passing", "transponder": "4100051", "t": 18_980_000})
    assert out[RACE][0]["row"]["t"] == 17_980_000


def test_extra_loops_give_unofficial_splits_and_speeds_even_out_of_order():
    """Thialf-style loops in the ice: 100 m and 300 m past the finish line."""
    comp = Competition(loops={"p100": 100, "p300": 300})
    all_events = feed(comp, "s", {"type": "startlist", "skaters": [
        {"bib": "1", "name": "A One", "transponders": ["11"]}],
        "races": [{"id": "r", "distance": 1000, "pairs": [{"pair": 1, "inner": "1"}]}]})["r"]
    all_events += feed(comp, "g", {"type": "gun", "race": "r", "pair": 1, "t": 0})["r"]
    crossings = [("p300", 10_000_000), ("finish", 17_980_000), ("p100", 26_500_000),
                 ("p300", 33_400_000), ("finish", 45_221_000), ("finish", 74_452_000),
                 ("p100", 55_000_000)]  # the last split arrives after the finish: out of order
    events = []
    for n, (point, t) in enumerate(crossings):
        out = feed(comp, f"p{n}", {"type": "passing", "transponder": "11", "point": point, "t": t})
        events += out.get("r", [])
    # The last split is earlier than the finish already applied: it comes in a revision.
    assert events[-1]["type"] == "revision" and events[-1]["reason"] == "late read"
    splits = [e["split"] for e in events if e["type"] == "split"]
    splits.append(events[-1]["view"]["results"]["1"]["splits"][-1])
    # The 1000 m starts 200 m before the finish: the 300 m loop is crossed at 100 and
    # 500 m of the race, the 100 m loop at 300 and 700 m.
    assert [(s["point"], s["m"], s["t"]) for s in splits] == [
        ("p300", 100, 10_000_000), ("p100", 300, 26_500_000), ("p300", 500, 33_400_000),
        ("p100", 700, 55_000_000)]
    assert splits[0]["speed_kmh"] == 36.0  # 100 m in 10 s
    assert splits[1]["speed_kmh"] == round(100 / 8.52 * 3.6, 2)  # from the 200 m passage
    assert splits[3]["speed_kmh"] == round(100 / (55.0 - 45.221) * 3.6, 2)
    view = comp.view("r")
    assert [s["m"] for s in view["results"]["1"]["splits"]] == [100, 300, 500, 700]
    assert view["results"]["1"]["final"]["t"] == 74_452_000  # splits never touch results
    # A re-read of a split changes nothing; an unknown loop is counted, not applied.
    assert feed(comp, "x", {"type": "passing", "transponder": "11", "point": "p100",
                           "t": 55_010_000}) == {}
    assert feed(comp, "y", {"type": "passing", "transponder": "11", "point": "p250",
                           "t": 60_000_000}) == {}
    assert comp.stats["unknown_point"] == 1
    # The client fold of every live event reproduces the view, splits included.
    folded = None
    for ev in json.loads(json.dumps(all_events + events)):
        folded = apply_event(folded, ev)
    assert folded == json.loads(json.dumps(comp.view("r")))
    with pytest.raises(ValueError, match="between 0 and 400"):
        Competition(loops={"line": 0})


def test_record_pace_lines_and_the_story_so_far_in_the_view(doc):
    fast = copy.deepcopy(doc)
    # A track record Leerdam's 600 m projects under: 74.452 x 44.963 / 45.221 = 1:14.02.
    fast["startlist"]["races"][0]["records"] = {"WR": "1:11.61", "TR": "1:14.10"}
    comp, events = run_race(fast)
    leerdam600 = next(e for e in events if e["type"] == "passage" and e["bib"] == "17"
                      and e["row"]["m"] == 600)
    assert "Leerdam on track record pace at 600 m (projected 1:14.02)" in leerdam600["stories"]
    assert not any("record pace" in line for e in run_race(doc)[1] if "stories" in e
                   for line in e["stories"])
    # The view carries the last lines told, so a screen opened late has the story so far.
    told = [line for e in events if "stories" in e for line in e["stories"]]
    view = comp.view(RACE)
    assert view["stories"] == told[-len(view["stories"]):] and len(view["stories"]) == 50
    assert view["stories"][-2].startswith("New leader: Takagi")
    # A revision tells the story again as the corrected race gives it, and what changed.
    _, ev2 = run_race(fast, extra=[
        {"type": "decision", "race": RACE, "action": "dq", "bib": "20", "reason": "lane"}])
    assert ev2[-1]["type"] == "revision"
    retold = ev2[-1]["view"]["stories"]
    assert not any("Takagi" in line for line in retold[:-1])
    assert retold[-1] == ("Corrected (decision: dq): Takagi out, Goetz 1st (was 2nd), "
                          "Leerdam 2nd (was 3rd), Bowe 3rd (was 4th) and 16 more")


def test_stavanger_2022_published_order_and_kim_in_the_seventh_pair():
    doc = load_fixture(Path(__file__).parent.parent / "fixtures" / "stavanger2022_w1000a.json")
    comp, _ = run_race(doc)
    view = comp.view("stv22-w1000a")
    cls = view["classification"]
    assert [view["skaters"][b]["short"] for b in cls["bib"][:3]] == ["Leerdam", "Kim", "Takagi"]
    assert [format_time(t) for t in cls["t"][:3]] == ["1:15.60", "1:15.82", "1:16.40"]
    kim = by_short(view)["Kim"]
    assert next(p["pair"] for p in view["pairs"] if kim in (p["inner"], p["outer"])) == 7
    # Leerdam and Takagi skated together in the penultimate pair, Leerdam from the inner
    # lane: in a 1000 m she is in the outer lane before the last crossing, and came from
    # it ahead of Takagi. Leerdam led at 200 m and over the first lap.
    skaters = by_short(view)
    pair = next(p for p in view["pairs"] if p["inner"] == skaters["Leerdam"])
    assert (pair["pair"], pair["outer"]) == (len(view["pairs"]) - 1, skaters["Takagi"])
    leerdam, takagi = (view["results"][skaters[n]]["passages"] for n in ("Leerdam", "Takagi"))
    assert leerdam[0]["t"] < takagi[0]["t"]
    assert leerdam[1]["t"] - leerdam[0]["t"] < takagi[1]["t"] - takagi[0]["t"]
    assert cls["t"][2] - cls["t"][0] == 800_000
    # The rest of the published order: Li fourth, 0.52 behind Takagi; Rijpma-de Jong
    # fifth (1:16.94) in a pair with Fledderus, seventh (1:17.17), before Kim's pair;
    # Michelle de Jong eighth (1:17.31); Han fifteenth, Jin seventeenth.
    ranked = [view["skaters"][b]["short"] for b in cls["bib"]]
    assert {n: ranked.index(n) + 1 for n in ("Li", "Rijpma-de Jong", "Fledderus", "de Jong",
                                             "Han", "Jin")} == {
        "Li": 4, "Rijpma-de Jong": 5, "Fledderus": 7, "de Jong": 8, "Han": 15, "Jin": 17}
    assert [format_time(cls["t"][i]) for i in (3, 4, 6, 7)] == [
        "1:16.92", "1:16.94", "1:17.17", "1:17.31"]
    rdj = next(p for p in view["pairs"] if skaters["Rijpma-de Jong"] in (p["inner"], p["outer"]))
    assert skaters["Fledderus"] in (rdj["inner"], rdj["outer"]) and rdj["pair"] < 7
    assert "Kodaira" not in skaters  # she had retired (October 2022)


def test_beijing_2023_published_facts():
    """Leerdam, in the penultimate pair with Bowe, was slower at 200 m than Goetz and
    than Bowe, fastest at 600 m, third; Rijpma-de Jong fifth in 1:15.67 in the second
    pair; Kok and Fledderus withdrew; Takagi beat Goetz by 0.01 from the last pair."""
    view = run_race(load_fixture(FIXTURE))[0].view(RACE)
    skaters, cls = by_short(view), view["classification"]
    at = {n: view["results"][b]["passages"] for n, b in skaters.items()}
    assert at["Leerdam"][0]["t"] > at["Goetz"][0]["t"]
    assert at["Leerdam"][0]["t"] > at["Bowe"][0]["t"]
    assert min(skaters, key=lambda n: at[n][1]["t"]) == "Leerdam"
    pair9 = next(p for p in view["pairs"] if p["pair"] == 9)
    assert {pair9["inner"], pair9["outer"]} == {skaters["Leerdam"], skaters["Bowe"]}
    assert [view["skaters"][b]["short"] for b in cls["bib"][:5]] == [
        "Takagi", "Goetz", "Leerdam", "Bowe", "Rijpma-de Jong"]
    assert format_time(cls["t"][4]) == "1:15.67"
    assert next(p["pair"] for p in view["pairs"] if skaters["Rijpma-de Jong"] in
                (p["inner"], p["outer"])) == 2
    assert not {"Kok", "Fledderus"} & set(skaters)
    last = next(p for p in view["pairs"] if p["pair"] == 10)
    assert (last["outer"], last["inner"]) == (skaters["Takagi"], skaters["Li"])
    assert at["Takagi"][0]["t"] < at["Li"][0]["t"]  # faster in the opener


def test_transponder_ids_are_compared_as_chips_not_as_text():
    """A Protime decoder sends 001003 for the chip the start list gives as 1003; a
    start list may give an id as an integer; a ProChip read carries its code string and,
    as transponder_alias, its number, which is what the start list names."""
    from icetime.startlist import StartListError, validate_startlist

    sl = {"skaters": [{"bib": "1", "name": "A One", "transponders": ["1003"]},
                      {"bib": "2", "name": "B Two", "transponders": [4100201]},
                      {"bib": "3", "name": "C Three", "transponders": ["5000123"]}],
          "races": [{"id": "r500", "distance": 500, "pairs": [
              {"pair": 1, "inner": "1", "outer": "2"}, {"pair": 2, "inner": "3"}]}]}
    comp = Competition()
    feed(comp, "sl", {"type": "startlist", **sl})
    s = 1_000_000
    for n, inp in enumerate([
            {"type": "gun", "race": "r500", "pair": 1, "t": 100 * s},
            {"type": "passing", "transponder": "001003", "t": 110 * s + 200_000},
            {"type": "passing", "transponder": "04100201", "t": 110 * s + 500_000},
            {"type": "passing", "transponder": 1003, "t": 138 * s + 900_000},
            {"type": "passing", "transponder": " 4100201", "t": 139 * s + 100_000},
            {"type": "gun", "race": "r500", "pair": 2, "t": 200 * s},
            {"type": "passing", "transponder": "FL-94890", "transponder_alias": 5000123,
             "t": 210 * s + 300_000},
            {"type": "passing", "transponder": "fl-94890", "transponder_alias": "05000123",
             "t": 239 * s}]):
        feed(comp, f"in-{n}", {**inp, "seq": n, "source": "finish-loop"})
    assert comp.stats["unknown_transponder"] == 0
    view = comp.view("r500")
    assert {b: format_time(view["results"][b]["final"]["t"]) for b in "123"} == {
        "1": "38.90", "2": "39.10", "3": "39.00"}
    dup = {**sl, "skaters": [*sl["skaters"][:2], {**sl["skaters"][2], "transponders": ["01003"]}]}
    with pytest.raises(StartListError, match="transponder 01003 also belongs to bib 1"):
        validate_startlist(dup)


def test_a_prochip_read_with_a_code_and_a_number_carries_both():
    from services.ingest.decoders.p3 import TOR, classify, encode, parse_record, u

    rec = parse_record(encode(TOR["PASSING"], [
        (0x01, u(7, 4)), (0x03, u(5000123, 4)), (0x0A, b"FL-94890"),
        (0x04, u(1_700_000_000_000_000, 8)), (0x81, u(0x000C00D0, 4))]))
    p = classify(rec)
    assert (p.transponder, p.alias) == ("FL-94890", "5000123")
    only = classify(parse_record(encode(TOR["PASSING"], [
        (0x01, u(8, 4)), (0x03, u(5000123, 4)), (0x04, u(1_700_000_000_000_000, 8))])))
    assert (only.transponder, only.alias) == ("5000123", None)
