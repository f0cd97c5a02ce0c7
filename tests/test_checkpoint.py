"""Bounded restarts: scoring saves its state now and then, and a restart replays only
the raw inputs after the checkpoint, with results identical to a replay from the start.
A checkpoint made by other settings, damaged, or past the log is never used."""
from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

import pytest

from bench import restart as restart_bench
from icetime import bus, keys
from icetime.cli import replay
from icetime.keys import DEFAULT_COMPETITION as MAIN
from icetime.replay import script_inputs
from services.scoring import checkpoint
from services.scoring.competition import Competition
from services.scoring.runner import BATCH, ScoringRunner

from .conftest import feed, make_settings, race_view, start_stack, without_inputs
from .test_browser import short_race
from .test_pipeline import load_startlist
from .test_restart import RACE

EVERY = 8
#: Pairs 3, 9 and 10 of the Beijing 1000 m: 37 inputs, several checkpoints.
RACE_DOC = short_race()


def expected_view() -> dict:
    comp = Competition()
    feed(comp, "sl", {"type": "startlist", **RACE_DOC["startlist"]})
    for n, it in enumerate(script_inputs(RACE_DOC)):
        feed(comp, f"i{n}", {**it.inp, "source": it.source})
    return without_inputs(comp.view(RACE))


async def scored_up_to_the_last_input(r) -> str:
    """Wait until scoring has written the output of the last raw input; its id."""
    async with asyncio.timeout(30):
        while True:
            last = bus.entries(await r.xrevrange(keys.raw_stream(MAIN), count=1))[0][0]
            if bus.text(await r.get(keys.scoring_progress(MAIN))) == last:
                return last
            await asyncio.sleep(0.05)


async def rebuilt(settings, r) -> tuple[int, ScoringRunner]:
    runner = ScoringRunner(settings, r)
    return await restart_bench.rebuilt(runner), runner


async def test_a_restart_replays_only_the_inputs_after_the_checkpoint(redis_server,
                                                                      redis_client, caplog):
    settings = make_settings(redis_server.url, checkpoint_every=EVERY)
    st = await start_stack(settings, redis_server.url)
    try:
        await load_startlist(st, RACE_DOC)
        await replay(RACE_DOC, st.settings, speed=100.0, announce=False)
        await scored_up_to_the_last_input(redis_client)
        snapshot = await race_view(redis_client, RACE)
    finally:
        await st.close()
    total = await redis_client.xlen(keys.raw_stream(MAIN))
    assert total > 3 * EVERY  # the race is long enough to have made several checkpoints
    want = expected_view()
    assert without_inputs(snapshot) == want

    n, runner = await rebuilt(settings, redis_client)
    # A checkpoint is written after a batch of at least EVERY inputs.
    assert 0 <= n < EVERY + BATCH and n < total, (n, total)
    assert without_inputs(runner.engine.view(RACE)) == want

    # Each checkpoint that cannot be used is said why, and the whole log replayed with the
    # same results (the rebuild then saves a whole checkpoint of its own at once).
    caplog.set_level(logging.INFO, logger="services.scoring.recovery")
    race = await redis_client.hget(keys.scoring_checkpoint(MAIN), f"race:{RACE}")
    await redis_client.hset(keys.scoring_checkpoint(MAIN), f"race:{RACE}", race[: len(race) // 2])
    n, damaged = await rebuilt(settings, redis_client)
    assert n == total and without_inputs(damaged.engine.view(RACE)) == want
    assert "is damaged: replaying the whole log" in caplog.text
    n, _ = await rebuilt(settings, redis_client)
    assert n == 0  # the rebuild's own checkpoint, at the progress mark

    # One past the progress mark: Redis restored from an older copy than the checkpoint.
    await redis_client.hset(keys.scoring_checkpoint(MAIN), "progress", "99999999999999-0")
    n, ahead = await rebuilt(settings, redis_client)
    assert n == total and without_inputs(ahead.engine.view(RACE)) == want
    assert "past the progress mark" in caplog.text

    # Other engine settings: the state they would build may differ.
    n, other = await rebuilt(replace(settings, max_speed_mps=19.0), redis_client)
    assert n == total and without_inputs(other.engine.view(RACE)) == want
    assert "made by other code or settings" in caplog.text


async def test_scoring_restarted_mid_race_from_a_checkpoint_goes_on_identically(
        redis_server, redis_client, caplog):
    """The real service stopped after a checkpoint, inputs arriving while it is away,
    started again: it goes on from the checkpoint and the race ends as published."""
    caplog.set_level(logging.INFO, logger="services.scoring.recovery")
    settings = make_settings(redis_server.url, checkpoint_every=EVERY)
    st = await start_stack(settings, redis_server.url)
    try:
        await load_startlist(st, RACE_DOC)
        feeding = asyncio.create_task(replay(RACE_DOC, st.settings, speed=100.0,
                                             announce=False))
        async with asyncio.timeout(30):
            while not await redis_client.exists(keys.scoring_checkpoint(MAIN)):
                await asyncio.sleep(0.02)
        await st.stop("scoring")
        await feeding
        await st.start("scoring")
        await scored_up_to_the_last_input(redis_client)
        assert "rebuilt from the checkpoint at" in caplog.text
        snapshot = await race_view(redis_client, RACE)
    finally:
        await st.close()
    assert without_inputs(snapshot) == expected_view()


async def test_a_restart_unpickles_only_the_races_it_uses(redis_server, redis_client):
    """A day of three races, the checkpoint 30 inputs before the end (in the last race):
    the restart unpickles no race until the replay feeds one, and only the last race is
    fed; its next save writes that race alone; every race's view equals a rebuild from
    the start of the log, and the races it never used reach it through the store."""
    settings = make_settings(redis_server.url, checkpoint_every=EVERY)
    inputs = restart_bench.day_of_races(3)
    head, tail = inputs[:-30], inputs[-30:]
    at = await restart_bench.fill(redis_client, head)
    await redis_client.set(keys.scoring_progress(MAIN), at)
    first, _ = await rebuilt(settings, redis_client)  # a rebuild saves its checkpoint
    assert first == len(head)
    last = await restart_bench.fill(redis_client, tail)
    await redis_client.set(keys.scoring_progress(MAIN), last)

    n, quick = await rebuilt(settings, redis_client)
    assert n == len(tail)
    races = quick.engine.races
    assert isinstance(races, checkpoint.RaceStore)
    ids = list(races)
    assert len(ids) == 3
    assert [rid for rid, _ in races.loaded()] == [ids[-1]]
    saved = quick.saver.fields(quick.engine)
    assert sorted(saved) == sorted([checkpoint.COMPETITION, checkpoint.RACE + ids[-1]])

    full = ScoringRunner(settings, redis_client)
    full.fingerprint = "no checkpoint"  # as a worker without one would
    assert await restart_bench.rebuilt(full) == len(inputs)
    for rid in ids:
        assert quick.engine.view(rid) == full.engine.view(rid), rid


async def test_a_long_days_checkpoint_is_written_in_pieces_and_replaced_whole(
        redis_server, redis_client, monkeypatch):
    """A checkpoint too big for one command (hundreds of MB after a day of 1,000,000
    inputs outlasted the client's reply timeout: bench/restart.py failed there) is
    written in pieces into a staging hash that replaces the stored one whole, with no
    expiry left on it; a restart reads it back (scanned) with the same results. Here
    pieces of 2 KB stand in for the 4 MB ones."""
    monkeypatch.setattr(bus, "CHECKPOINT_PIECE_BYTES", 2000)
    settings = make_settings(redis_server.url, checkpoint_every=EVERY)
    inputs = restart_bench.day_of_races(6)
    await redis_client.set(keys.scoring_progress(MAIN),
                           await restart_bench.fill(redis_client, inputs))
    hsets = (await redis_client.info("commandstats")).get("cmdstat_hset", {}).get("calls", 0)
    n, full = await rebuilt(settings, redis_client)  # no checkpoint: it saves one whole
    assert n == len(inputs)
    stored = await redis_client.hgetall(keys.scoring_checkpoint(MAIN))
    pieces = (await redis_client.info("commandstats"))["cmdstat_hset"]["calls"] - hsets
    # Each race's field (tens of KB) is a piece of its own; the small ones share one.
    races = [k for k in stored if k.startswith(checkpoint.RACE.encode())]
    assert len(races) == 6 and pieces >= len(races)
    assert await redis_client.ttl(keys.scoring_checkpoint(MAIN)) == -1
    assert not await redis_client.keys(keys.scoring_checkpoint(MAIN) + ":new:*")
    n, quick = await rebuilt(settings, redis_client)
    assert n == 0
    for rid in full.engine.races:
        assert quick.engine.view(rid) == full.engine.view(rid), rid


async def test_a_worker_that_lost_its_lease_leaves_the_checkpoint_alone(
        redis_server, redis_client):
    """A worker whose lease another holds now (paused, cut off) saves nothing: its
    older state mixed into its successor's checkpoint would be applied twice."""
    settings = make_settings(redis_server.url, checkpoint_every=EVERY)
    inputs = restart_bench.day_of_races(1)
    await redis_client.set(keys.scoring_progress(MAIN),
                           await restart_bench.fill(redis_client, inputs))
    _, old = await rebuilt(settings, redis_client)
    before = await redis_client.hgetall(keys.scoring_checkpoint(MAIN))
    successor = ScoringRunner(settings, redis_client, owner="elsewhere/scoring")
    assert await successor.lease.take()
    try:
        for whole in (False, True):
            old.replace_checkpoint = whole
            with pytest.raises(bus.LeaseLost):
                await old.save_checkpoint(force=True)
            assert await redis_client.hgetall(keys.scoring_checkpoint(MAIN)) == before
    finally:
        await successor.lease.give_up()
