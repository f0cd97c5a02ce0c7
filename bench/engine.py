"""Engine cost per passing at 20, 1,000 and 10,000 skaters, next to a plain-Python recompute.

The baseline does the same ranking work the plain way: at each passing it
re-sorts every time at that passage to find the rank and the best, and at each
finish it re-sorts the whole classification, with shared ranks for equal
thousandths, into the same columnar lists the engine emits.
"""
from __future__ import annotations

import random
import time
from typing import Any, cast

from icetime.messages import INPUT_TYPES, FeedInput
from icetime.timefmt import to_thousandths
from services.scoring.competition import Competition

DISTANCE = 1000
SPLITS = (200, 600, 1000)


def race_inputs(n_skaters: int, seed: int = 7) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    rnd = random.Random(seed)
    skaters = [{"bib": str(b), "name": f"Skater {b}", "transponders": [f"T{b}"]}
               for b in range(1, n_skaters + 1)]
    pairs = [{"pair": p + 1, "inner": str(2 * p + 1), "outer": str(2 * p + 2)}
             for p in range(n_skaters // 2)]
    startlist = {"type": "startlist", "skaters": skaters,
                 "races": [{"id": "r", "distance": DISTANCE, "pairs": pairs}]}
    inputs = []
    clock = 0
    for p in pairs:
        inputs.append({"type": "gun", "race": "r", "pair": p["pair"], "t": clock})
        rows = []
        for bib in (p["inner"], p["outer"]):
            t200 = rnd.randint(17_500, 19_000) * 1000
            t600 = t200 + rnd.randint(27_000, 29_000) * 1000
            t1000 = t600 + rnd.randint(28_500, 31_500) * 1000
            rows += [(t, bib) for t in (t200, t600, t1000)]
        for t, bib in sorted(rows):
            inputs.append({"type": "passing", "transponder": f"T{bib}", "t": clock + t})
        clock += 100_000_000
    return startlist, inputs


class PlainRecompute:
    """The same rankings, recomputed from plain lists at every passing."""

    def __init__(self) -> None:
        self.at: list[list[tuple[int, str]]] = [[] for _ in SPLITS]
        self.count: dict[str, int] = {}
        self.gun: dict[str, int] = {}

    def gun_for(self, bibs: tuple[str, str], t: int) -> None:
        for b in bibs:
            self.gun[b] = t

    def passing(self, bib: str, t_abs: int) -> dict[str, Any]:
        k = self.count.get(bib, 0)
        self.count[bib] = k + 1
        t = to_thousandths(t_abs - self.gun[bib])
        self.at[k].append((t, bib))
        ranked = sorted(self.at[k])
        rank = 1 + sum(1 for x, _ in ranked if x < t)
        out: dict[str, Any] = {"rank": rank, "gap_best": t - ranked[0][0]}
        if k == len(SPLITS) - 1:
            bibs, ranks, times, behind = [], [], [], []
            for i, (x, b) in enumerate(ranked):
                bibs.append(b)
                ranks.append(ranks[-1] if i and x == times[-1] else i + 1)
                times.append(x)
                behind.append(x - ranked[0][0])
            out["classification"] = {"bib": bibs, "rank": ranks, "t": times, "behind": behind}
        return out


def struct(inp: dict[str, Any]) -> FeedInput:
    """The input's struct, built directly: the 10,000-skater field has more pairs than
    the feed accepts (range checks run when a feed input is decoded, not here)."""
    fields = {k: v for k, v in inp.items() if k != "type"}
    return cast(FeedInput, INPUT_TYPES[inp["type"]](**fields))


def bench_engine(n: int, reps: int) -> tuple[float, float, int]:
    """Mean µs per passing (engine, plain) over ``reps`` whole races of ``n`` skaters."""
    startlist, inputs = race_inputs(n)
    pair_bibs = {p["pair"]: (p["inner"], p["outer"]) for p in startlist["races"][0]["pairs"]}
    # Typed before timing: decoding is not the engine's cost.
    typed_startlist, typed = struct(startlist), [struct(x) for x in inputs]
    engine_s = plain_s = 0.0
    passings = 0
    for _ in range(reps):
        comp = Competition()
        comp.feed("sl", typed_startlist)
        for i, inp in enumerate(inputs):
            if inp["type"] == "passing":
                t0 = time.perf_counter()
                comp.feed(str(i), typed[i])
                engine_s += time.perf_counter() - t0
                passings += 1
            else:
                comp.feed(str(i), typed[i])
        assert len(comp.view("r")["classification"]["bib"]) == n, "engine lost a skater"
        plain = PlainRecompute()
        for inp in inputs:
            if inp["type"] == "gun":
                plain.gun_for(pair_bibs[inp["pair"]], inp["t"])
            else:
                t0 = time.perf_counter()
                plain.passing(inp["transponder"][1:], inp["t"])
                plain_s += time.perf_counter() - t0
    return engine_s / passings * 1e6, plain_s / passings * 1e6, passings // reps


def main() -> None:
    print("\n== engine: cost per passing (1000 m, 3 passages per skater) ==")
    print(f"{'skaters':>8} {'passings':>9} {'engine µs':>10} {'plain µs':>10} {'plain/engine':>13}")
    for n, reps in ((20, 300), (1_000, 3), (10_000, 1)):
        eng, plain, count = bench_engine(n, reps)
        print(f"{n:>8} {count:>9} {eng:>10.1f} {plain:>10.1f} {plain / eng:>12.1f}x", flush=True)


if __name__ == "__main__":
    main()
