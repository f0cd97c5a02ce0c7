"""Cost of an official's correction against how many came before it, on a 20-skater
1000 m pair race (the race of bench/engine.py, fed whole first).

A correction in a long-track race retells the race's stories from the corrected log,
in one pass (two with official finish times in the log). The figure is the time of the
k-th correction for k = 1, 10, 50 and 100 (the fastest of five around k: a busy
machine only adds), with the path that replayed the log again at each earlier
correction (``RaceBase.replay_each_correction``) beside it: the k-th correction cost
that path about k replays. The log grows by one input per correction (70 reads and
guns, then the corrections), so one pass costs more at k = 100 than at k = 1: the
µs per input of the log is the figure that stays flat.
"""
from __future__ import annotations

import time
from typing import Any

from icetime.messages import FeedInput
from services.scoring.competition import Competition

from .engine import race_inputs, struct

SKATERS = 20
AT = (1, 10, 50, 100)
#: Corrections measured around each k (the fastest is printed).
WINDOW = 5


def corrections(n: int, startlist: dict[str, Any], inputs: list[dict[str, Any]]
                ) -> list[FeedInput]:
    """``n`` corrections of the kinds officials key in, in turn: a DQ, a photo-finish
    time for a skater who has a final, a manual time at 600 m, a reinstatement, a void
    of a read (a 200 m passage of one skater)."""
    bibs = [s["bib"] for s in startlist["skaters"]]
    reads = [str(i) for i, x in enumerate(inputs) if x["type"] == "passing"]
    out: list[dict[str, Any]] = []
    for i in range(n):
        bib = bibs[(7 * i) % len(bibs)]
        kind = i % 5
        if kind == 0:
            out.append({"type": "decision", "race": "r", "action": "dq", "bib": bib})
        elif kind == 1:
            out.append({"type": "finish_time", "race": "r", "bib": bib, "origin": "photo",
                        "time_us": 76_000_000 + 1_000 * i})
        elif kind == 2:
            out.append({"type": "decision", "race": "r", "action": "manual_time", "bib": bib,
                        "m": 600, "time_us": 46_000_000 + 1_000 * i})
        elif kind == 3:
            out.append({"type": "decision", "race": "r", "action": "reinstate",
                        "bib": bibs[(7 * (i - 3)) % len(bibs)]})
        else:
            out.append({"type": "decision", "race": "r", "action": "void",
                        "target": reads[(11 * i) % len(reads)]})
    return [struct(x) for x in out]


def session(replay_each: bool) -> tuple[dict[int, float], dict[int, int]]:
    """Feed the race, then the corrections: ms of each correction k in the windows
    measured, with the path ``replay_each`` chooses for the measured ones (the others
    take the one-pass path: the state is the same, only the time differs); and the
    length of the race's log after each."""
    startlist, inputs = race_inputs(SKATERS)
    comp = Competition()
    comp.feed("sl", struct(startlist))
    for i, inp in enumerate(inputs):
        comp.feed(str(i), struct(inp))
    race = comp.races["r"]
    measured = {k for at in AT for k in range(max(1, at - WINDOW // 2),
                                                 max(1, at - WINDOW // 2) + WINDOW)}
    ms: dict[int, float] = {}
    logged: dict[int, int] = {}
    for k, corr in enumerate(corrections(max(measured), startlist, inputs), start=1):
        race.replay_each_correction = replay_each and k in measured
        t0 = time.perf_counter()
        comp.feed(f"c{k}", corr)
        if k in measured:
            ms[k] = (time.perf_counter() - t0) * 1e3
            logged[k] = len(race.log)
    race.replay_each_correction = False
    return ms, logged


def around(ms: dict[int, float], at: int) -> float:
    lo = max(1, at - WINDOW // 2)
    return min(ms[k] for k in range(lo, lo + WINDOW))


def main() -> None:
    print(f"\n== corrections: ms of the k-th correction, {SKATERS}-skater 1000 m pair race ==")
    print(f"{'k':>5} {'log':>5} {'one pass ms':>12} {'µs/input':>9} {'replay each ms':>15} "
          f"{'ratio':>7}")
    (fast, logged), (slow, _) = session(False), session(True)
    for at in AT:
        f, s = around(fast, at), around(slow, at)
        print(f"{at:>5} {logged[at]:>5} {f:>12.2f} {f / logged[at] * 1e3:>9.1f} {s:>15.2f} "
              f"{s / f:>6.1f}x", flush=True)


if __name__ == "__main__":
    main()
