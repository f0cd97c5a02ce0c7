"""Snapshots built by a forked child (services/scoring/snapshotter.py): the view the
child stores is the engine's as it stood at the fork, whatever the worker scored
meanwhile, and a snapshot never replaces a newer one."""
from __future__ import annotations

import asyncio
import json
import socket
import time

import pytest

from icetime import bus, keys, snapshot
from icetime.bus import LeaseLost
from icetime.keys import DEFAULT_COMPETITION as MAIN
from icetime.messages import decode_stored
from services.scoring.competition import Competition
from services.scoring.runner import ScoringRunner
from services.scoring.snapshotter import Job, Snapshotter

from .conftest import feed, make_settings
from .test_snapshots import RACE, big_race


async def stored_snapshot(r) -> tuple[str, dict[str, object]]:
    """(offset, view) of the stored snapshot of RACE."""
    got = await r.hgetall(keys.snapshot_key(MAIN, RACE))
    return bus.text(got[b"offset"]), json.loads(got[b"view"])


async def test_the_child_stores_the_view_at_the_fork_while_the_engine_goes_on(redis_client):
    startlist, passings = big_race(120, 2, seed=7)
    comp = Competition()
    feed(comp, "sl", {"type": "startlist", **startlist})
    feed(comp, "gun", {"type": "gun", "race": RACE, "t": 0})
    half = len(passings) // 2
    for i, p in enumerate(passings[:half]):
        feed(comp, str(i), p)
    at_fork = json.loads(bus.dumps(comp.view(RACE)))
    await redis_client.set(keys.epoch_key(MAIN, RACE), "e1")
    writer = bus.Bus(redis_client, MAIN)
    ends: list[tuple[list[Job], list[str]]] = []

    async def store(job: Job, view: bytes) -> bool:
        return await writer.store_snapshot(job.race, job.epoch, job.offset, view)

    snaps = Snapshotter()
    snaps.start(comp.view, [Job(RACE, "e1", "5-0")], store,
                lambda jobs, stored, _s: ends.append((jobs, stored)))
    assert snaps.busy
    with pytest.raises(RuntimeError):
        snaps.start(comp.view, [], store, lambda *_: None)
    # The worker goes on while the child builds: a disqualification and more passings.
    feed(comp, "dq", {"type": "decision", "race": RACE, "action": "dq", "bib": "3"})
    for i, p in enumerate(passings[half:]):
        feed(comp, str(half + i), p)
    assert snaps.task is not None
    await snaps.task
    assert not snaps.busy and snaps.pid is None
    assert ends == [([Job(RACE, "e1", "5-0")], [RACE])]
    offset, view = await stored_snapshot(redis_client)
    assert offset == "5-0" and view == at_fork
    assert view != json.loads(bus.dumps(comp.view(RACE)))


async def test_a_snapshot_never_replaces_a_newer_one_nor_one_of_another_epoch(redis_client):
    writer = bus.Bus(redis_client, MAIN, lease_token="me")
    await redis_client.set(keys.scoring_lease(MAIN), "me")
    await redis_client.set(keys.epoch_key(MAIN, RACE), "e1")
    assert await writer.store_snapshot(RACE, "e1", "10-3", '{"n":1}')
    assert not await writer.store_snapshot(RACE, "e1", "10-3", '{"n":2}')  # as new
    assert not await writer.store_snapshot(RACE, "e1", "9-7", '{"n":3}')  # older
    assert not await writer.store_snapshot(RACE, "e0", "11-0", '{"n":4}')  # other epoch
    assert await writer.store_snapshot(RACE, "e1", "10-4", '{"n":5}')
    assert await stored_snapshot(redis_client) == ("10-4", {"n": 5})
    await redis_client.set(keys.scoring_lease(MAIN), "someone else")
    with pytest.raises(LeaseLost):
        await writer.store_snapshot(RACE, "e1", "12-0", '{"n":6}')
    assert await stored_snapshot(redis_client) == ("10-4", {"n": 5})


async def test_every_snapshot_the_runner_stores_is_the_view_at_its_offset(
        redis_server, redis_client, monkeypatch):
    """Scoring with a snapshot due after every 16 events and no spacing: children build
    most of them (a revision's in line); each stored one is the view of a fresh engine
    fed the raw log up to the input of the event it stands at."""
    monkeypatch.setattr(snapshot, "EVERY_EVENTS", 16)
    monkeypatch.setattr(snapshot, "EVERY_S", 3600.0)
    monkeypatch.setattr(snapshot, "CHILD_SPACING", 0)
    monkeypatch.setattr(snapshot, "SPACING", 0)
    startlist, passings = big_race(60, 2, seed=11)
    writer = bus.Bus(redis_client, MAIN)
    inputs = [{"type": "startlist", **startlist, "source": "officials", "rx_us": 1},
              {"type": "gun", "race": RACE, "t": 0, "source": "gun", "seq": 1, "rx_us": 1}]
    inputs += [{**p, "source": "finish-loop", "seq": i + 1, "rx_us": 1}
               for i, p in enumerate(passings)]
    # A correction mid-race: its revision carries the whole view.
    inputs.insert(len(inputs) // 2, {"type": "decision", "race": RACE, "action": "dq",
                                     "bib": "4", "source": "officials", "seq": 1, "rx_us": 1})
    runner = ScoringRunner(make_settings(redis_server.url), redis_client)
    assert await runner.lease.take()
    keeper = asyncio.create_task(runner.lease.keep())
    await runner.ensure_group()
    await runner.rebuild()
    checked: list[str] = []
    try:
        for inp in inputs:
            await writer.append_input(inp)
            await runner.consume(">", None)
            if runner.snapshots.busy:
                assert runner.snapshots.task is not None
                # Waited for, so that the count of children does not hang on the
                # machine's speed (the worker itself goes on: the first test).
                await runner.snapshots.task
                checked.append(await check_stored(redis_client))
        await runner.store_snapshots()  # idle: the rest
        if runner.snapshots.task is not None:
            await runner.snapshots.task
        checked.append(await check_stored(redis_client))
    finally:
        keeper.cancel()
    # 90-odd events (passages, finishes, the revision): a child after every 16 events
    # but the first snapshot and the revision's (in line), and the idle one.
    assert runner.snapshots.started >= 4 and runner.snapshots.failed == 0
    last = bus.entries(await redis_client.xrevrange(keys.events_stream(MAIN, RACE), count=1))
    assert checked[-1] == last[0][0]  # the idle store stands at the end
    assert len(set(checked)) >= 4


async def check_stored(r) -> str:
    """Check the stored snapshot of RACE against a fresh engine; its offset."""
    offset, view = await stored_snapshot(r)
    event = bus.entries(await r.xrange(keys.events_stream(MAIN, RACE), offset, offset))
    assert event and event[0][1] is not None
    upto = json.loads(event[0][1][b"e"])["input"]
    comp = Competition()
    for sid, fields in bus.entries(await r.xrange(keys.raw_stream(MAIN), "-", upto)):
        assert fields is not None
        comp.feed(sid, decode_stored(fields[b"d"]))
    assert view == json.loads(bus.dumps(comp.view(RACE))), f"the snapshot at {offset}"
    return offset


async def test_a_child_that_fails_stores_nothing_and_says_so(redis_client):
    def broken(race: str) -> dict[str, object]:
        raise KeyError(race)

    async def store(job: Job, view: bytes) -> bool:
        raise AssertionError("nothing to store")

    ends: list[list[str]] = []
    snaps = Snapshotter()
    snaps.start(broken, [Job(RACE, "e1", "5-0")], store,
                lambda _jobs, stored, _s: ends.append(stored))
    assert snaps.task is not None
    await snaps.task
    assert ends == [[]] and snaps.failed == 1 and snaps.pid is None
    assert not await redis_client.exists(keys.snapshot_key(MAIN, RACE))


async def test_a_child_at_work_holds_none_of_the_parents_sockets(redis_client):
    """A listener the parent closes while a child builds views is gone at once: the
    child does not keep it accepting (nor any connection of the parent's open)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]

    def slow(race: str) -> dict[str, object]:
        time.sleep(3)  # in the child: still at work while the parent checks
        return {"race": race}

    async def store(job: Job, view: bytes) -> bool:
        return True

    snaps = Snapshotter()
    snaps.start(slow, [Job(RACE, "e1", "5-0")], store, lambda *_: None)
    try:
        await asyncio.sleep(0.5)  # the child has forked and closed what it inherited
        assert snaps.busy
        listener.close()
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", port)
    finally:
        assert snaps.task is not None
        await snaps.task
    assert snaps.failed == 0
