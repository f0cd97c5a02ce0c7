"""A start list of thousands of races (a venue's season, a long day), loaded as one
input: what it costs the scoring engine, which holds every passing of every race while
it works.

The races: copies of the Beijing 2023 1000 m (distinct race ids, the same 20 skaters),
as bench/restart.py's day. Three loads, each one input to ``Competition.feed``:

* the start list of N races, into an engine that has none (every race new);
* the same start list sent again (an update that changes nothing);
* the start list with one race changed (its first pair's lanes swapped).

    python -m bench.startlist [--races 1000 5000]
"""
from __future__ import annotations

import argparse
import copy
import os
import time
from pathlib import Path
from typing import Any

from icetime.feed_inputs import convert_input
from icetime.replay import load_fixture
from services.scoring.competition import Competition

FIXTURE = Path(__file__).parents[1] / "fixtures" / "beijing2023_w1000a.json"


def startlist(n_races: int, changed: int | None = None) -> dict[str, Any]:
    """A start list of ``n_races`` copies of the fixture's race; in race ``changed`` (an
    index) the first pair's inner and outer lanes are swapped."""
    doc = load_fixture(FIXTURE)
    race = doc["startlist"]["races"][0]
    races = [{**copy.deepcopy(race), "id": f"{race['id']}-{c}"} for c in range(n_races)]
    if changed is not None:
        first = races[changed]["pairs"][0]
        first["inner"], first["outer"] = first.get("outer"), first.get("inner")
    return {"type": "startlist", "source": "officials", "skaters": doc["startlist"]["skaters"],
            "races": races}


def timed(engine: Competition, input_id: str, inp: Any) -> tuple[float, float, int]:
    """Seconds ``engine.feed`` took for ``inp`` (wall, and this process's CPU: the
    figure a shared machine disturbs less), and the races it sent events for."""
    t, cpu = time.perf_counter(), time.process_time()
    out = engine.feed(input_id, inp)
    seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
    if engine.last_error.startswith(input_id):
        raise RuntimeError(engine.last_error)
    return seconds, cpu, len(out)


def run(n_races: int) -> list[tuple[str, float, float, int]]:
    """(what, seconds, CPU seconds, races with events) of the three loads of
    ``n_races`` races."""
    # Typed before timing: decoding is ingest's cost, not the engine's.
    whole = convert_input(startlist(n_races))
    changed = convert_input(startlist(n_races, changed=n_races // 2))
    engine = Competition()
    rows = [("load", *timed(engine, "1-0", whole))]
    rows.append(("same again", *timed(engine, "2-0", whole)))
    rows.append(("one race changed", *timed(engine, "3-0", changed)))
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.startlist", description=__doc__)
    ap.add_argument("--races", type=int, nargs="+", default=[1_000, 5_000])
    args = ap.parse_args(argv)
    print("\n== a start list of N races as one input (engine; 1000 m, 20 skaters each) ==")
    print(f"   load average {os.getloadavg()[0]:.1f}")
    print(f"{'races':>7} {'start list':>17} {'seconds':>8} {'ms/race':>8} {'CPU s':>7}"
          f" {'CPU ms/race':>12} {'races sent':>11}")
    for n in args.races:
        for what, seconds, cpu, sent in run(n):
            print(f"{n:>7,} {what:>17} {seconds:>8.2f} {seconds / n * 1e3:>8.3f} {cpu:>7.2f}"
                  f" {cpu / n * 1e3:>12.3f} {sent:>11,}", flush=True)


if __name__ == "__main__":
    main()
