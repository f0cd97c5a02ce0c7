"""A long mass start with a spread field: a marathon on a 400 m track, skaters whose paces
differ by up to 15 %, the back of the field starting up to half a lap behind its head,
lapped skaters, every read up to 200 ms late, some read twice (the other ankle), some
crossings not read at all. Every skater's laps and the finish order must be those the
generated race had (docs/time.md, "Passages by time")."""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from services.scoring.competition import Competition

from .conftest import feed

#: The head of the field's lap (µs) on a 400 m track: a marathon pace.
LAP_US = 30_000_000
#: The slowest skater's pace over the fastest's.
SLOWEST = 1.15
#: The back of the field crosses the start line this much of a lap after the gun.
START_SPREAD = 0.4


@dataclass
class Field:
    """A generated race: per bib, the race time (µs, whole ms) of every crossing; the
    reads as sent, in arrival order (common clock = race time; the gun is at 0)."""

    laps: int
    truth: dict[str, list[int]]
    missed: dict[str, int]
    reads: list[tuple[int, str]]


def make_field(rnd: random.Random, n: int, laps: int, miss_rate: float, late: bool) -> Field:
    """``n`` skaters over ``laps`` laps, each with her own pace (1 to ``SLOWEST`` times
    the head's), start delay and a few per cent of noise per lap; a crossing of a skater
    is missed with ``miss_rate`` (at most one, never her last, nor the race's first
    crossing: with it missed the head's next read is told from a back-marker's first by
    the race clock alone, docs/time.md); ``late``: reads arrive up to 200 ms late (the
    engine revises to race-time order)."""
    truth: dict[str, list[int]] = {}
    missed: dict[str, int] = {}
    sent: list[tuple[int, int, str]] = []
    for b in range(1, n + 1):
        bib = str(b)
        pace = LAP_US * rnd.uniform(1.0, SLOWEST)
        t = rnd.uniform(0, START_SPREAD) * LAP_US
        times = []
        for _ in range(laps):
            t += pace * rnd.uniform(0.97, 1.03)
            times.append(int(t) // 1000 * 1000)
        truth[bib] = times
        if laps > 1 and rnd.random() < miss_rate:
            # Half of them her first crossing: her first read is then her second.
            missed[bib] = rnd.randrange(laps - 1) if rnd.random() < 0.5 else 0
    head = min(truth, key=lambda b: truth[b][0])
    if missed.get(head) == 0:
        del missed[head]
    for bib, times in truth.items():
        for k, tk in enumerate(times):
            if missed.get(bib) == k:
                continue
            copies = [tk] + ([tk + rnd.randrange(1, 60) * 1000] if rnd.random() < 0.2 else [])
            for c in copies:
                sent.append((c + (rnd.randrange(200_000) if late else 0), c, bib))
    sent.sort()
    return Field(laps, truth, missed, [(t, bib) for _, t, bib in sent])


def run_field(f: Field) -> dict[str, Any]:
    bibs = list(f.truth)
    comp = Competition()
    feed(comp, "sl", {"type": "startlist", "races": [
        {"id": "m", "name": "Marathon", "kind": "mass_start", "laps": f.laps, "skaters": bibs}],
        "skaters": [{"bib": b, "name": f"Skater {b}", "transponders": [f"T{b}"]}
                    for b in bibs]})
    feed(comp, "gun", {"type": "gun", "race": "m", "t": 0})
    for i, (t, b) in enumerate(f.reads):
        feed(comp, f"p{i}", {"type": "passing", "transponder": f"T{b}", "t": t,
                             "source": "finish-loop"})
    return comp.view("m")


def check(f: Field, view: dict[str, Any]) -> None:
    """Every skater made every crossing; each recorded one at its own lap, the missed
    one empty and named by her next; the finish order is the race's."""
    results = view["results"]
    assert view["pack"]["crossings"] == {b: f.laps for b in f.truth}
    for bib, times in f.truth.items():
        got = [None if p is None else p["t"] for p in results[bib]["passages"]]
        want: list[int | None] = list(times)
        if bib in f.missed:
            want[f.missed[bib]] = None
        assert got == want, bib
        assert results[bib]["final"]["t"] == times[-1]
    by_finish = sorted(f.truth, key=lambda b: (f.truth[b][-1], int(b)))
    assert view["pack"]["order"] == by_finish
    assert sorted(view["classification"]["bib"]) == sorted(f.truth)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 40), laps=st.integers(2, 30),
       miss_rate=st.sampled_from([0.0, 0.2, 0.5]), late=st.booleans())
# Found by this property: the head's second crossing missed, the other skater's second
# crossing taken for the head's lap (9.7 s long), her third read counted as her second.
@example(seed=39, n=2, laps=21, miss_rate=0.5, late=False)
def test_a_spread_field_counts_every_skaters_laps(seed, n, laps, miss_rate, late):
    f = make_field(random.Random(seed), n, laps, miss_rate, late)
    check(f, run_field(f))


def test_a_thousand_skaters_over_eight_laps_finish_after_eight_crossings():
    """1,000 skaters, 8 laps, a start up to 0.4 of a lap behind the head and up to 15 %
    slower: a skater whose first crossing was missed is never counted a lap ahead, nor
    is anyone's lap after hers measured from such a read."""
    f = make_field(random.Random(12), 1_000, 8, 0.1, late=False)
    check(f, run_field(f))
