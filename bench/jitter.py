"""Reads out of order: what arrival jitter costs the engine, next to the in-order figures.

Two races: a 20-skater 1000 m (10 pairs, 3 passages each, one transponder) and a
24-skater mass start (16 laps, two ankle transponders). Every read arrives up to 0, 50
or 200 ms late (uniform), so reads of skaters close together arrive swapped; the gun
arrives on time. A read that lands earlier in race time than one already applied costs
the race a replay from its last checkpoint and one ``revision`` (docs/time.md).

Printed per race and jitter: revisions per race, the engine's mean cost per input, the
99th percentile and the worst single input (a revision's cost is the latency it adds
for that read), and how many runs came out different from the in-order run (must be 0).
"""
from __future__ import annotations

import random
import time
from typing import Any

from icetime.messages import FeedInput, convert_input
from services.scoring.competition import Competition

from .engine import race_inputs
from .pack import pack_inputs

JITTERS_MS = (0, 50, 200)


def arrive(inputs: list[dict[str, Any]], jitter_us: int, rnd: random.Random
           ) -> list[dict[str, Any]]:
    """``inputs`` in the order they arrive: each passing up to ``jitter_us`` late."""
    late = [(x["t"] + (rnd.randint(0, jitter_us) if x["type"] == "passing" else 0), n, x)
            for n, x in enumerate(inputs)]
    return [x for _, _, x in sorted(late, key=lambda a: (a[0], a[1]))]


def run(startlist: FeedInput, typed: list[tuple[str, FeedInput]]
        ) -> tuple[Competition, list[float], int]:
    """Feed one race; (engine, µs per input, revisions for late reads)."""
    comp = Competition()
    comp.feed("sl", startlist)
    costs, revisions = [], 0
    for iid, inp in typed:
        t0 = time.perf_counter()
        out = comp.feed(iid, inp)
        costs.append((time.perf_counter() - t0) * 1e6)
        revisions += sum(1 for evs in out.values() for e in evs
                         if e["type"] == "revision" and e["reason"] == "late read")
    return comp, costs, revisions


def without_revision(view: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in view.items() if k != "revision"}


def bench(startlist: dict[str, Any], inputs: list[dict[str, Any]], jitter_ms: int, reps: int
          ) -> tuple[float, float, float, float, int]:
    """(revisions per race, mean, p99 and worst µs per input, runs unlike in order)."""
    typed_sl = convert_input(startlist)
    ids = {id(x): f"in-{n}" for n, x in enumerate(inputs)}
    reference, _, _ = run(typed_sl, [(ids[id(x)], convert_input(x)) for x in inputs])
    want = without_revision(reference.view("r"))
    rnd = random.Random(jitter_ms)
    costs: list[float] = []
    revisions = wrong = 0
    for _ in range(reps):
        order = arrive(inputs, jitter_ms * 1000, rnd)
        comp, c, r = run(typed_sl, [(ids[id(x)], convert_input(x)) for x in order])
        costs += c
        revisions += r
        wrong += without_revision(comp.view("r")) != want
    costs.sort()
    return (revisions / reps, sum(costs) / len(costs), costs[int(0.99 * len(costs))],
            costs[-1], wrong)


def main() -> None:
    print("\n== arrival jitter: revisions and engine cost per input (docs/time.md) ==")
    print(f"{'race':>24} {'jitter':>7} {'inputs':>7} {'revisions':>10} {'mean µs':>8} "
          f"{'p99 µs':>8} {'worst µs':>9} {'wrong':>6}")
    sl_1000, in_1000 = race_inputs(20)
    sl_ms, in_ms = pack_inputs("mass_start", 24, 16, 31.0)
    for label, sl, inputs, reps in (("1000 m, 20 skaters", sl_1000, in_1000, 60),
                                    ("mass start, 24 skaters", sl_ms, in_ms, 6)):
        for jitter in JITTERS_MS:
            revs, mean, p99, worst, wrong = bench(sl, inputs, jitter, reps)
            print(f"{label:>24} {jitter:>4} ms {len(inputs):>7} {revs:>10.1f} {mean:>8.1f} "
                  f"{p99:>8.0f} {worst:>9.0f} {wrong:>6}", flush=True)


if __name__ == "__main__":
    main()
