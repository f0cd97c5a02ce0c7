"""Marathons: the engine against the truth its reads were made from (waves, timing points,
untidy reads), the same result whatever the arrival order, officials' decisions, and
events whose size does not grow with the field. The whole chain and the screens at
10,000 skaters are in tests/test_marathon_live.py."""
from __future__ import annotations

import functools
import json
import random
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.marathon import COURSE, RACE, Truth, build
from icetime.messages import RaceEvent, decode_view
from icetime.replay import Timed, script_inputs
from icetime.startlist import StartListError, validate_startlist
from services.scoring.competition import Competition

from .conftest import feed

EVENT = msgspec.json.Decoder(RaceEvent)
FINISH = len(COURSE) - 1


@functools.cache
def fixture(n: int) -> tuple[dict[str, Any], Truth, tuple[Timed, ...]]:
    doc, truth = build(n)
    return doc, truth, tuple(script_inputs(doc))


def run(doc: dict[str, Any], items: list[Timed] | tuple[Timed, ...],
        ids: list[str] | None = None) -> tuple[Competition, list[dict[str, Any]]]:
    """Feed a start list and ``items`` in the order given (input ids ``ids``, else by
    position); the engine and the race's events, through JSON."""
    comp = Competition()
    events = list(feed(comp, "sl", {"type": "startlist", **doc["startlist"]})[RACE])
    for n, it in enumerate(items):
        iid = ids[n] if ids else f"in-{n}"
        out = feed(comp, iid, {**it.inp, "source": it.source, "rx_us": it.at_us})
        events += out.get(RACE, [])
    assert comp.stats["refused"] == 0, comp.last_error
    return comp, json.loads(json.dumps(events))


def times(view: dict[str, Any], bib: str) -> list[int | None]:
    res = view["results"].get(bib)
    return res["t"] if res else [None] * len(COURSE)


def without_revision(view: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in json.loads(json.dumps(view)).items() if k != "revision"}


# ---------------------------------------------------------------- the engine
def test_every_passage_is_the_first_read_after_the_wave_gun():
    """300 skaters in three waves, with missed reads, re-reads, a spare decoder, a link
    outage, a chip resting on the km100 mat and one on the start mat before its gun:
    each skater's time at each point is her first read there, from her wave's gun."""
    doc, truth, items = fixture(300)
    comp, events = run(doc, items)
    view = comp.view(RACE)
    decode_view(view)
    for bib, expected in truth.passages.items():
        assert times(view, bib) == expected, bib
    # The resting chip: 149 reads after her passage, one passage.
    rest_k = next(k for k, (p, _) in enumerate(COURSE) if p == "km100")
    reads = [it for it in items if it.inp["type"] == "passing"
             and it.inp["transponder"] == str(500_000 + int(truth.resting))
             and it.inp["point"] == "km100"]
    assert len(reads) >= 140
    assert times(view, truth.resting)[rest_k] == truth.passages[truth.resting][rest_k]
    # Gaps are gaps: a skater missed at a point still ranks at the later ones.
    gapped = [b for b, ts in truth.passages.items()
              if None in ts[:FINISH] and ts[FINISH] is not None]
    assert gapped, "the fixture has a missed read before a finish"
    for k in range(len(COURSE)):
        ranked = [(times(view, b)[k], b) for b in view["order"][k]]
        assert ranked == sorted(ranked)
        assert len(ranked) == sum(1 for ts in truth.passages.values() if ts[k] is not None)
    counts = view["counts"]
    assert counts["finished"] == len(view["order"][FINISH])
    assert counts["started"] == sum(1 for ts in truth.passages.values() if any(ts))
    assert counts["waves"] == 3 and counts["status"] == 0
    # Stopped skaters never reach the finish.
    assert not truth.stopped & set(view["order"][FINISH])


def test_each_event_carries_the_passage_and_its_rank_then():
    """A course_passage tells where the bib goes in its point's order and the rank
    there: folding the events gives each point's order, and the rank counts the skaters
    strictly faster at that moment."""
    doc, _, items = fixture(60)
    comp, events = run(doc, items)
    orders: list[list[tuple[int, str]]] = [[] for _ in COURSE]
    for ev in events:
        EVENT.decode(json.dumps(ev))
        if ev["type"] != "course_passage":
            continue
        k, bib, t = ev["row"]["k"], ev["bib"], ev["row"]["t"]
        order = [e for e in orders[k] if e[1] != bib]
        assert ev["at"] == sum(1 for e in order if e < (t, bib))
        assert ev["rank"] == sum(1 for e in order if e[0] < t) + 1
        order.insert(ev["at"], (t, bib))
        orders[k] = order
        assert set(ev) == {"type", "race", "input", "bib", "row", "rank", "at", "counts"}
    assert [[b for _, b in o] for o in orders] == comp.view(RACE)["order"]


def test_the_classification_is_finishers_by_time_then_the_furthest_point():
    doc, truth, items = fixture(300)
    comp, _ = run(doc, items)
    cls = comp.races[RACE].classification()
    view = comp.view(RACE)
    furthest = {b: max(k for k, t in enumerate(ts) if t is not None)
                for b, ts in truth.passages.items() if any(t is not None for t in ts)}
    key = [(-furthest[b], truth.passages[b][furthest[b]], b) for b in cls["bib"]]
    assert key == sorted(key) and len(cls["bib"]) == len(furthest)
    n_fin = len(view["order"][FINISH])
    assert cls["bib"][:n_fin] == view["order"][FINISH]
    assert cls["point"][:n_fin] == ["finish"] * n_fin and cls["point"][n_fin] != "finish"
    assert cls["rank"][0] == 1 and cls["behind"][0] == 0


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), again=st.sampled_from([0.0, 0.1, 0.3]))
def test_the_same_result_whatever_the_arrival_order(seed, again):
    """The fixture's reads in any order, some delivered twice (as from a second decoder:
    another input id), and each gun anywhere in the first quarter of the inputs, give
    the view they give in the script's order. (A gun later than that could find more
    than ``competition.HELD_MAX`` reads of the resting chip held before it: the oldest
    go, by design, and her passage with them.)"""
    doc, _, items = fixture(40)
    in_order, _ = run(doc, items)
    rnd = random.Random(seed)
    reads = [i for i, it in enumerate(items) if it.inp["type"] != "gun"]
    rnd.shuffle(reads)
    for i in (i for i, it in enumerate(items) if it.inp["type"] == "gun"):
        reads.insert(rnd.randint(0, len(reads) // 4), i)
    twice = [i for i in reads if items[i].inp["type"] == "passing" and rnd.random() < again]
    picked = reads + twice
    ids = [f"in-{i}" for i in reads] + [f"in-{i}-again" for i in twice]
    shuffled, _ = run(doc, [items[i] for i in picked], ids)
    assert shuffled.stats["held_dropped"] == 0
    assert without_clock(shuffled.view(RACE)) == without_clock(in_order.view(RACE))


def without_clock(view: dict[str, Any]) -> dict[str, Any]:
    """:func:`without_revision`, and each wave's running clock origin left out: the
    gun's instant on the wall clock as known when the gun came (docs/time.md, from the
    reads before it), which a display's clock starts from, no race time."""
    out = without_revision(view)
    for wave in out["waves"].values():
        if wave.get("run"):
            wave["run"].pop("clock_origin_us")
    return out


def test_events_do_not_grow_with_the_field():
    """The largest course_passage at 2,000 skaters is as large as at 40 but for the
    digits of its numbers: it carries the passage and its rank, not the field."""
    sizes = {}
    for n in (40, 2000):
        doc, _, items = fixture(n)
        comp, events = run(doc, items[:3000])
        passages = [e for e in events if e["type"] == "course_passage"]
        assert passages
        sizes[n] = max(len(json.dumps(e)) for e in passages)
    assert sizes[2000] <= sizes[40] + 40, sizes


# ---------------------------------------------------------------- decisions
def decide(comp: Competition, iid: str, **decision: Any) -> list[dict[str, Any]]:
    out = feed(comp, iid, {"type": "decision", "race": RACE, "source": "officials",
                           **decision})
    return json.loads(json.dumps(out.get(RACE, [])))


def test_dnf_and_dq_take_a_skater_out_of_every_ranking_and_reinstate_puts_her_back():
    doc, _, items = fixture(60)
    comp, _ = run(doc, items)
    before = comp.view(RACE)
    bib = before["order"][FINISH][0]
    [rev] = decide(comp, "d1", action="dq", bib=bib, reason="short cut")
    assert rev["type"] == "revision" and rev["reason"] == "decision: dq"
    view = comp.view(RACE)
    assert all(bib not in o for o in view["order"])
    assert view["results"][bib]["status"] == "DQ" and view["results"][bib]["t"] == \
        before["results"][bib]["t"]
    assert view["counts"]["status"] == 1
    assert comp.races[RACE].classification()["bib"][0] != bib
    decide(comp, "d2", action="reinstate", bib=bib)
    assert without_revision(comp.view(RACE)) == without_revision(before)


def test_a_manual_time_keys_in_a_passage_at_its_point():
    doc, truth, items = fixture(60)
    comp, _ = run(doc, items)
    bib, k = next((b, k) for b, ts in truth.passages.items() for k, t in enumerate(ts)
                  if t is None and 0 < k < FINISH and ts[FINISH] is not None)
    m = COURSE[k][1]
    t = (truth.passages[bib][k - 1] + truth.passages[bib][k + 1]) // 2 // 1000 * 1000
    decide(comp, "m1", action="manual_time", bib=bib, time_us=t, m=m)
    view = comp.view(RACE)
    assert view["results"][bib]["t"][k] == t and view["results"][bib]["manual"] == [k]
    assert bib in view["order"][k]
    # A point the course does not have is refused, naming the course's points.
    assert decide(comp, "m2", action="manual_time", bib=bib, time_us=t, m=123) == []
    assert "no timing point at 123 m" in comp.last_error
    # Keyed in again, earlier: the official's last word counts, not the later time;
    # undone, the first counts again.
    decide(comp, "m3", action="manual_time", bib=bib, time_us=t - 1_000, m=m)
    assert comp.view(RACE)["results"][bib]["t"][k] == t - 1_000
    decide(comp, "u", action="void", target="m3")
    assert comp.view(RACE)["results"][bib]["t"][k] == t


@pytest.mark.parametrize("inp, reason", [
    ({"type": "gun", "race": RACE, "t": 5}, "names one of its waves"),
    ({"type": "gun", "race": RACE, "wave": 9, "t": 5}, "names one of its waves"),
    ({"type": "finish_time", "race": RACE, "bib": "1", "time_us": 9_000_000_000},
     "timed at its timing points"),
    ({"type": "decision", "race": RACE, "action": "restart"}, "new gun"),
    ({"type": "decision", "race": RACE, "action": "pen", "bib": "1"}, "unknown decision"),
])
def test_what_a_marathon_refuses(inp, reason):
    doc, _, items = fixture(40)
    comp, _ = run(doc, items[:200])
    before = without_revision(comp.view(RACE))
    assert feed(comp, "bad", {**inp, "source": "officials"}) == {}
    assert reason in comp.last_error
    assert without_revision(comp.view(RACE)) == before


def test_a_wave_started_again_runs_from_its_new_gun():
    doc, _, items = fixture(40)
    guns = [it for it in items if it.inp["type"] == "gun"]
    wave1 = guns[0].inp
    comp, _ = run(doc, items[:120])
    view = comp.view(RACE)
    bibs = [b for b, s in view["skaters"].items() if s["wave"] == 1]
    assert any(times(view, b)[0] is not None for b in bibs)
    regun = {**wave1, "t": wave1["t"] + 30_000_000}
    out = feed(comp, "regun", {**regun, "source": "gun"})[RACE]
    assert out[0]["type"] == "revision" and out[0]["reason"] == "wave 1 started again"
    again = comp.view(RACE)
    # Every passage of the wave now counts from the new gun; reads before it are none.
    for b in bibs:
        for old, new in zip(times(view, b), times(again, b), strict=True):
            assert new is None or (old is not None and new == old - 30_000_000)


# ---------------------------------------------------------------- the start list
def startlist(**race: Any) -> dict[str, Any]:
    spec = {"id": "m", "kind": "marathon",
            "course": [{"point": "start", "m": 0}, {"point": "finish", "m": 1000}],
            "waves": [{"wave": 1, "skaters": ["1", "2"]}], **race}
    return {"skaters": [{"bib": "1", "name": "A B"}, {"bib": "2", "name": "C D"}],
            "races": [spec]}


@pytest.mark.parametrize("race, error", [
    ({"course": [{"point": "start", "m": 0}, {"point": "km5", "m": 0}]}, "metres must increase"),
    ({"course": [{"point": "a", "m": 0}, {"point": "a", "m": 10}]}, "named twice"),
    ({"course": [{"point": "a", "m": 0}]}, "length >= 2"),
    ({"waves": [{"wave": 1, "skaters": ["1"]}, {"wave": 2, "skaters": ["1", "2"]}]},
     "bib 1 is in two waves"),
    ({"waves": [{"wave": 1, "skaters": ["9"]}]}, "bib 9 is not in 'skaters'"),
    ({"waves": [{"wave": 1, "skaters": ["1"], "gun": 3}]}, "unknown field `gun`"),
    ({"waves": [{"wave": 1, "skaters": ["1"]}, {"wave": 1, "skaters": ["2"]}]},
     "wave number is used twice"),
])
def test_a_bad_marathon_start_list_is_refused_naming_the_field(race, error):
    validate_startlist(startlist())
    with pytest.raises(StartListError, match="races\\[0\\]") as exc:
        validate_startlist(startlist(**race))
    assert error in str(exc.value)
