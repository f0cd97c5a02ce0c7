"""Restart after a long day: how long scoring takes to be live again after N inputs,
rebuilding from its checkpoint, next to a rebuild from the start of the raw log.

The day: copies of the Beijing 2023 1000 m (distinct races, bibs and transponders) until
the raw log holds N inputs, written straight into an embedded redis-server's raw stream
(as ingest stores them), the progress mark at the last one. Both rebuilds run the real
``ScoringRunner.rebuild`` against that Redis; the checkpoint is the one the worker would
have made ``checkpoint_every`` inputs before the end.

    python -m bench.restart [--inputs 1000000] [--every 10000]
"""
from __future__ import annotations

import argparse
import asyncio
import copy
import tempfile
import time
from pathlib import Path
from typing import Any

from icetime import bus, keys
from icetime.keys import DEFAULT_COMPETITION as MAIN
from icetime.redis_embed import EmbeddedRedis
from icetime.replay import load_fixture, script_inputs
from icetime.settings import Settings
from services.scoring import checkpoint
from services.scoring.runner import ScoringRunner

FIXTURE = Path(__file__).parents[1] / "fixtures" / "beijing2023_w1000a.json"
CHUNK = 10_000


def day(n_inputs: int) -> list[dict[str, Any]]:
    """A day of about ``n_inputs`` inputs (:func:`day_of_races`, as many races as fit)."""
    per_race = len(script_inputs(load_fixture(FIXTURE))) + 1
    return day_of_races(max(1, n_inputs // per_race))


def day_of_races(copies: int) -> list[dict[str, Any]]:
    """A day of ``copies`` races: each race's start list loaded just before it (as a
    venue loads each distance's), then its script; the same 20 skaters skate every race
    (each gun takes them to its race)."""
    doc = load_fixture(FIXTURE)
    race = doc["startlist"]["races"][0]
    first = script_inputs(doc)
    # Each race skated after the one before (a minute between), as on a day: with the
    # same clock readings every race's reads would be late reads of the others'.
    span = first[-1].at_us + 60_000_000
    inputs: list[dict[str, Any]] = []
    for c in range(copies):
        rid = f"{race['id']}-{c}"
        inputs.append({"type": "startlist", "source": "officials",
                       "skaters": doc["startlist"]["skaters"],
                       "races": [{**copy.deepcopy(race), "id": rid}]})
        inputs += [{**it.inp, "source": it.source, **({"race": rid} if it.inp["type"] == "gun"
                                                      else {})}
                   for it in script_inputs(doc, clock_base_us=c * span)]
    return inputs


async def fill(r: Any, inputs: list[dict[str, Any]]) -> str:
    """Append the inputs to the raw stream as ingest stores them; the last one's id."""
    last = b""
    for i in range(0, len(inputs), CHUNK):
        pipe = r.pipeline(transaction=False)
        for inp in inputs[i:i + CHUNK]:
            pipe.xadd(keys.raw_stream(MAIN), {"d": bus.pack_input(inp)})
        last = (await pipe.execute())[-1]
    return bus.text(last)


async def rebuilt(runner: ScoringRunner) -> int:
    """``runner.rebuild()`` as a worker runs it: holding the competition's scoring lease
    (kept while it works; a rebuild saves a checkpoint, which only the owner may), then
    handed back. Returns the inputs replayed. Raises RuntimeError if another worker
    holds the lease, and RedisError."""
    if not await runner.lease.take():
        raise RuntimeError("another worker holds the scoring lease")
    keeper = asyncio.create_task(runner.lease.keep())
    try:
        return await runner.rebuild()
    finally:
        keeper.cancel()
        await runner.lease.give_up()


async def run(n_inputs: int, every: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(tmp, appendfsync="no") as redis:
        r = bus.connect(redis.url)
        settings = Settings(redis_url=redis.url, checkpoint_every=every)
        inputs = day(n_inputs)
        t0 = time.perf_counter()
        head, tail = inputs[:-every], inputs[-every:]
        at_checkpoint = await fill(r, head)
        await r.set(keys.scoring_progress(MAIN), at_checkpoint)
        # The worker's state at the checkpoint: what it would have saved.
        worker = ScoringRunner(settings, r)
        await rebuilt(worker)
        worker.progress = bus.parse_id(at_checkpoint)
        worker.since_checkpoint = every
        await worker.lease.take()
        await worker.save_checkpoint()
        await worker.lease.give_up()
        last = await fill(r, tail)
        await r.set(keys.scoring_progress(MAIN), last)
        print(f"   a day of {len(inputs):,} inputs written in {time.perf_counter() - t0:.1f} s;"
              f" the checkpoint {every:,} inputs before the end")

        # From the checkpoint first: a rebuild without one saves a checkpoint of its own
        # when done (its first save), which would replace the one being measured.
        t = time.perf_counter()
        quick = ScoringRunner(settings, r)
        n_quick = await rebuilt(quick)
        quick_s = time.perf_counter() - t
        t = time.perf_counter()
        full = ScoringRunner(settings, r)
        full.fingerprint = "no checkpoint"  # as a worker without one would
        n_full = await rebuilt(full)
        full_s = time.perf_counter() - t
        same = all(quick.engine.view(rid) == full.engine.view(rid)
                   for rid in list(full.engine.races)[-3:])
        saver = checkpoint.Saver()
        t = time.perf_counter()
        whole = saver.fields(quick.engine)
        whole_s = time.perf_counter() - t
        saver.marks.pop(next(iter(saver.marks)))  # one race took inputs since
        t = time.perf_counter()
        saver.fields(quick.engine)
        one_s = time.perf_counter() - t
        print(f"{'rebuild':>22} {'inputs':>10} {'seconds':>8}")
        print(f"{'from the start':>22} {n_full:>10,} {full_s:>8.2f}")
        print(f"{'from the checkpoint':>22} {n_quick:>10,} {quick_s:>8.2f}"
              f"   ({full_s / quick_s:.0f}x faster; same results: {same})")
        print(f"   the checkpoint: {sum(map(len, whole.values())) / 1e6:.1f} MB in "
              f"{len(whole):,} fields; a save costs the live worker {one_s * 1e3:.1f} ms "
              f"(one race changed), {whole_s * 1e3:.0f} ms (the first, every race)")
        await r.aclose()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.restart", description=__doc__)
    ap.add_argument("--inputs", type=int, default=1_000_000)
    ap.add_argument("--every", type=int, default=10_000)
    args = ap.parse_args(argv)
    print(f"\n== scoring restart after {args.inputs:,} inputs ==")
    asyncio.run(run(args.inputs, args.every))


if __name__ == "__main__":
    main()
