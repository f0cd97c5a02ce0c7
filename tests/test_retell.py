"""A correction in a long-track race retells the race in one pass over its log, and says
exactly what a replay of the log at every earlier correction says (the path before,
kept as ``RaceBase.replay_each_correction``: the oracle here).

Real races (the pair-race fixtures, and Claudia Pechstein's seven Olympic 3000 m races
from ../shared/data when it is there) are fed with random corrections (DQ, DNS, DNF,
reinstatement, a void of any input, a reassigned chip, an official finish time, a manual
time, a restart, the race declared official) arriving at random moments among reads
delivered late, twice and out of order. Every event of every input, every refusal and
every view must be the same on both paths.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from icetime.replay import load_fixture
from services.scoring.competition import Competition
from services.scoring.longtrack import LongTrackRace

from .conftest import feed
from .test_order import FIXTURES, GUN_T, Network, Scheduled, arrivals, networks, scheduled

PAIR_FIXTURES = [p.stem for p in FIXTURES if "format" not in load_fixture(p)["script"]]
PECHSTEIN = (Path(__file__).parent.parent.parent / "shared" / "data" / "long_track"
             / "pechstein_olympic_3000m_passages_1994-2022.json")
KINDS = ("dq", "dns", "dnf", "reinstate", "void", "void", "void", "reassign", "photo",
         "manual", "restart", "regun", "official")
#: (kind, a number that picks what it names, where among the arrivals it lands, 0-1).
drawn = st.lists(st.tuples(st.sampled_from(KINDS), st.integers(0, 2**31),
                           st.floats(0.0, 1.0)), min_size=1, max_size=10)


def race_time(text: str) -> int:
    """``"m:ss.fff"`` or ``"ss.fff"`` as µs."""
    minutes, _, seconds = text.rpartition(":")
    return round((60 * int(minutes or 0) + float(seconds)) * 1_000_000)


@functools.cache
def pechstein() -> tuple[dict[str, Any], tuple[Scheduled, ...]]:
    """Her seven Olympic 3000 m races skated as one race of seven, in pairs (the
    passages are the real ones), each pair 30 s after the last finished."""
    doc = json.loads(PECHSTEIN.read_text())
    results = doc["results"]
    bibs = [str(n + 1) for n in range(len(results))]
    skaters = [{"bib": b, "name": f"Pechstein {r['year']}", "short": f"CP{r['year']}",
                "transponders": [f"90{b}"]} for b, r in zip(bibs, results, strict=True)]
    pairs = [{"pair": p + 1, "inner": bibs[2 * p], **({"outer": bibs[2 * p + 1]}
                                                     if 2 * p + 1 < len(bibs) else {})}
             for p in range((len(bibs) + 1) // 2)]
    race = "cp3000"
    startlist = {"skaters": skaters, "races": [{"id": race, "distance": 3000,
                                                "pairs": pairs}]}
    timed: list[tuple[int, dict[str, Any]]] = []
    gun = GUN_T
    for p in pairs:
        timed.append((gun, {"type": "gun", "race": race, "pair": p["pair"], "t": gun}))
        last = 0
        for b in (p["inner"], p.get("outer")):
            if b is None:
                continue
            for text in results[int(b) - 1]["times"]:
                timed.append((gun + race_time(text), {"type": "passing",
                                                      "transponder": f"90{b}",
                                                      "t": gun + race_time(text)}))
                last = max(last, race_time(text))
        gun += last + 30_000_000
    timed.sort(key=lambda x: x[0])
    script = {"race": race, "pairs": [
        {"pair": p["pair"], "times": {b: results[int(b) - 1]["times"]
                                      for b in (p["inner"], p.get("outer")) if b}}
        for p in pairs]}
    items = tuple(Scheduled(n, at - GUN_T, f"in-{n}", inp)
                  for n, (at, inp) in enumerate(timed))
    return {"startlist": startlist, "script": script}, items


def case(name: str) -> tuple[dict[str, Any], tuple[Scheduled, ...]]:
    if name == "pechstein":
        if not PECHSTEIN.exists():
            pytest.skip("../shared/data is not there (a user's clone)")
        return pechstein()
    return scheduled(name)


def corrections(doc: dict[str, Any], items: tuple[Scheduled, ...], metres: list[int],
                draws: list[tuple[str, int, float]]) -> list[tuple[float, str, dict[str, Any]]]:
    """The drawn corrections as officials key them: (where they land, id, input);
    ``metres``: the race's passages."""
    script = doc["script"]
    race = script["race"]
    times = {b: ts for p in script["pairs"] for b, ts in p["times"].items()}
    bibs = sorted(times)
    chips = {s["bib"]: s["transponders"] for s in doc["startlist"]["skaters"]}
    guns = {s.inp["pair"]: s.inp["t"] for s in items if s.inp["type"] == "gun"}
    reads = [s.iid for s in items if s.inp["type"] == "passing"]
    ids = [s.iid for s in items] + [f"c{n}" for n in range(len(draws))]
    out = []
    for n, (kind, pick, at) in enumerate(draws):
        bib = bibs[pick % len(bibs)]
        finish = race_time(times[bib][-1])
        inp: dict[str, Any] = {"type": "decision", "race": race, "action": kind, "bib": bib}
        if kind == "void":
            # Mostly a read; else any input, a correction too (or one not fed yet).
            named = reads if pick % 4 else ids
            inp = {"type": "decision", "race": race, "action": "void",
                   "target": named[(pick // 4) % len(named)]}
        elif kind == "reassign":
            other = bibs[(pick // 7) % len(bibs)]
            inp = {**inp, "transponder": chips[other][0]}
        elif kind == "photo":
            inp = {"type": "finish_time", "race": race, "bib": bib,
                   "origin": ("photo", "manual", "beam")[pick % 3],
                   "time_us": finish + (pick % 400_001) - 200_000}
        elif kind == "manual":
            k = pick % len(times[bib])
            # At the finish, the passage is left out as often as it is named.
            m = {"m": metres[k]} if k < len(metres) - 1 or pick % 2 else {}
            inp = {**inp, "action": "manual_time",
                   "time_us": race_time(times[bib][k]) + (pick % 100_001) - 50_000, **m}
        elif kind == "restart":
            inp = {"type": "decision", "race": race, "action": "restart",
                   "pair": 1 + pick % len(guns)}
        elif kind == "regun":
            pair = 1 + pick % len(guns)
            inp = {"type": "gun", "race": race, "pair": pair,
                   "t": guns[pair] + (pick % 3) * 60_000_000}
        elif kind == "official":
            inp = {"type": "decision", "race": race, "action": "official"}
        out.append((at, f"c{n}", inp))
    return out


def arriving(net: Network, items: tuple[Scheduled, ...],
             extra: list[tuple[float, str, dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
    """The fixture's inputs as the network delivers them, the corrections among them."""
    out = [(s.iid, s.inp) for s in arrivals(net, items)]
    for at, iid, inp in sorted(extra, key=lambda x: x[0]):
        out.insert(round(at * len(out)), (iid, inp))
    return out


def wire(obj: Any) -> Any:
    return json.loads(json.dumps(obj))


def started(doc: dict[str, Any], oracle: bool) -> Competition:
    comp = Competition()
    feed(comp, "sl", {"type": "startlist", **doc["startlist"]})
    for race in comp.races.values():
        race.replay_each_correction = oracle
    return comp


@pytest.mark.parametrize("name", [*PAIR_FIXTURES, "pechstein"])
@settings(max_examples=12, deadline=None)
@given(net=networks, draws=drawn)
def test_one_pass_retelling_says_what_a_replay_per_correction_said(name, net, draws):
    doc, items = case(name)
    fast, oracle = started(doc, False), started(doc, True)
    metres = fast.view(doc["script"]["race"])["race"]["passages"]
    for iid, inp in arriving(net, items, corrections(doc, items, metres, draws)):
        got = wire(feed(fast, iid, inp))
        assert got == wire(feed(oracle, iid, inp)), (iid, inp)
        assert (fast.stats, fast.last_error) == (oracle.stats, oracle.last_error), (iid, inp)
    for rid in oracle.races:
        assert wire(fast.view(rid)) == wire(oracle.view(rid)), rid


def test_a_read_voided_after_a_later_correction_is_told_as_never_read():
    """Pair 2's winner's finish reads (both ankles) are voided only after a DQ keyed
    while pair 3 skated. Voids hold for the whole race wherever they land
    (docs/time.md): the retelling's replay at the DQ does not apply those reads again,
    so pair 3's new leader is told as ahead of the leader without them (a replay of
    the log as far as the DQ once counted the reads, and told "1.21 ahead of
    Rijpma-de Jong" after the voids)."""
    doc, items = scheduled("beijing2023_w1000a")
    race = doc["script"]["race"]
    fast, oracle = started(doc, False), started(doc, True)
    gun3 = next(n for n, s in enumerate(items) if s.inp.get("pair") == 3)
    # Bib 3 (1:15.670, the leader when pair 3 starts): her chips' last reads before it.
    finish = [next(s.iid for s in reversed(items[:gun3]) if s.inp.get("transponder") == chip)
              for chip in ("4100031", "4100032")]
    dq = {"type": "decision", "race": race, "action": "dq", "bib": "10"}
    fed = [(s.iid, s.inp) for s in items[:gun3 + 3]] + [("dq", dq)]
    fed += [(s.iid, s.inp) for s in items[gun3 + 3:]]
    fed += [(f"void-{t}", {"type": "decision", "race": race, "action": "void", "target": t})
            for t in finish]
    for iid, inp in fed:
        assert wire(feed(fast, iid, inp)) == wire(feed(oracle, iid, inp)), iid
    assert fast.stats["refused"] == 0, fast.last_error
    assert wire(fast.view(race)) == wire(oracle.view(race))
    stories = fast.view(race)["stories"]
    assert "New leader: Goetz in 1:14.45, 1.75 ahead of Han" in stories
    assert not [line for line in stories if "ahead of Rijpma-de Jong" in line]


def test_the_fortieth_correction_is_one_pass_over_the_log(monkeypatch):
    """Counted, not timed: the 40th correction of a race (DQs and reinstatements, each
    earlier one met again in the log) applies every read of the log once, as the first
    did; the replay per correction applied them about 40 times."""
    doc, items = scheduled("beijing2023_w1000a")
    comp = started(doc, False)
    for s in items:
        feed(comp, s.iid, s.inp)
    applied = 0
    on_passing = LongTrackRace._on_passing

    def counted(self: LongTrackRace, *args: Any, **kwargs: Any) -> Any:
        nonlocal applied
        applied += 1
        return on_passing(self, *args, **kwargs)

    monkeypatch.setattr(LongTrackRace, "_on_passing", counted)
    race = doc["script"]["race"]
    reads = sum(s.inp["type"] == "passing" for s in items)
    bibs = sorted(b for p in doc["script"]["pairs"] for b in p["times"])
    for n in range(1, 41):
        applied = 0
        feed(comp, f"c{n}", {"type": "decision", "race": race,
                             "action": "dq" if n % 2 else "reinstate",
                             "bib": bibs[(n - 1) // 2 % len(bibs)]})
        assert applied == reads, n
    comp.races[race].replay_each_correction = True
    applied = 0
    feed(comp, "c41", {"type": "decision", "race": race, "action": "official"})
    assert applied > 35 * reads  # the oracle's path: a replay per earlier correction
    assert comp.stats["refused"] == 0, comp.last_error
