"""Engine cost per passing in pack races: a 24-skater mass start and a 6-skater short
track 1500 m final, each skater on two ankle transponders (the second read is a re-read).

The baseline, in the same run, is only the plain way of getting the live order: at
every crossing re-sort every skater by (crossings made, time of the last one) and rank
the crossing against everyone's times at that line. The engine does that and builds the
whole event besides (gap at the line, laps to go, bell, sprint points, stopped skaters,
breakaway, the race state every client folds), so the ratio is what the rest costs.
"""
from __future__ import annotations

import random
import time
from typing import Any

from icetime.messages import convert_input
from services.scoring.competition import Competition

SECOND_ANKLE_US = 23_000


def pack_inputs(kind: str, n: int, crossings: int, lap_s: float,
                seed: int = 11) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    rnd = random.Random(seed)
    skaters = [{"bib": str(b), "name": f"Skater {b}", "transponders": [f"A{b}", f"B{b}"]}
               for b in range(1, n + 1)]
    race: dict[str, Any] = {"id": "r", "kind": kind, "skaters": [s["bib"] for s in skaters]}
    if kind == "short_track":
        race["distance"] = 1500
    startlist = {"type": "startlist", "skaters": skaters, "races": [race]}
    events = []
    head = 0.0
    for k in range(crossings):
        head += lap_s * (0.5 if kind == "short_track" and k == 0 else 1.0) * rnd.uniform(0.95, 1.05)
        for s in skaters:
            t = int((head + rnd.uniform(0, 2.5)) * 1e6)
            events.append((t, f"A{s['bib']}"))
            events.append((t + SECOND_ANKLE_US, f"B{s['bib']}"))
    inputs = [{"type": "gun", "race": "r", "t": 0}]
    inputs += [{"type": "passing", "transponder": tr, "t": t} for t, tr in sorted(events)]
    return startlist, inputs


class PlainOrder:
    """The live order and the rank at the line, recomputed from plain lists."""

    def __init__(self, crossings: int) -> None:
        self.done: dict[str, int] = {}
        self.last: dict[str, int] = {}
        self.at: list[list[int]] = [[] for _ in range(crossings)]

    def passing(self, bib: str, t: int) -> tuple[int, list[str]]:
        if t - self.last.get(bib, -10**12) < 5_000_000:
            return 0, []  # a re-read
        k = self.done.get(bib, 0)
        self.done[bib] = k + 1
        self.last[bib] = t
        self.at[k].append(t)
        position = 1 + sum(1 for x in self.at[k] if x < t)
        order = sorted(self.done, key=lambda b: (-self.done[b], self.last[b]))
        return position, order


def bench(kind: str, n: int, crossings: int, lap_s: float, reps: int) -> tuple[float, float, int]:
    startlist, inputs = pack_inputs(kind, n, crossings, lap_s)
    # Typed as scoring gets them from the raw stream; decoding is not the engine's cost.
    typed = [convert_input(x) for x in inputs]
    engine_s = plain_s = 0.0
    count = 0
    for _ in range(reps):
        comp = Competition()
        comp.feed("sl", convert_input(startlist))
        comp.feed("gun", typed[0])
        for i, inp in enumerate(typed[1:]):
            t0 = time.perf_counter()
            comp.feed(str(i), inp)
            engine_s += time.perf_counter() - t0
            count += 1
        view = comp.view("r")
        assert len(view["classification"]["bib"]) == n, "engine lost a skater"
        plain = PlainOrder(crossings)
        for inp in inputs[1:]:
            t0 = time.perf_counter()
            plain.passing(inp["transponder"][1:], inp["t"])
            plain_s += time.perf_counter() - t0
    return engine_s / count * 1e6, plain_s / count * 1e6, count // reps


def main() -> None:
    print("\n== pack races: engine cost per passing (two ankles: every other read is a re-read) ==")
    print(f"{'race':>28} {'passings':>9} {'engine µs':>10} {'plain µs':>9} {'engine/plain':>13}")
    for label, kind, n, crossings, lap_s, reps in (
            ("mass start, 24 skaters", "mass_start", 24, 16, 31.0, 40),
            ("short track 1500 m, 6", "short_track", 6, 14, 9.5, 200)):
        eng, plain, count = bench(kind, n, crossings, lap_s, reps)
        print(f"{label:>28} {count:>9} {eng:>10.1f} {plain:>9.1f} {eng / plain:>12.1f}x",
              flush=True)


if __name__ == "__main__":
    main()
