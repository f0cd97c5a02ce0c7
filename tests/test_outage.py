"""Pull Redis's plug: SIGKILL redis-server mid-race, start it again on the same files.

Nothing acknowledged is lost (AOF), the services resume on their own within seconds
of Redis being back, a connected fan gets every event exactly once and in order, and
the logs say what happened in a warning and a "recovered" line, with no traceback.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time

import pytest
import websockets

from icetime import bus, keys
from icetime.cli import replay
from icetime.view import apply_event

from .test_pipeline import load_startlist
from .test_restart import FIXTURE, RACE, expected_view

SPEED = 150.0
#: Redis is killed at this passing of the script: mid-pair 3 (12 passings a pair).
KILL_AT_PASSING = 30
DOWN_S = 5.0
#: How soon after Redis is back the fan must get its next race event (s).
RESUME_WITHIN_S = 3.0
OURS = ("icetime", "services")


class Outage:
    """A replay ``hold`` that pulls Redis's plug at the script's ``at``-th passing and
    starts it again on the same files ``DOWN_S`` later, while the replay goes on (its
    inputs answered "retry" meanwhile). ``killed_at`` and ``back_at`` are loop times,
    ``back_wall`` the wall clock when Redis was back."""

    def __init__(self, redis_server, at: int = KILL_AT_PASSING) -> None:
        self.redis_server, self.at = redis_server, at
        self.passings = 0
        self.task: asyncio.Task[None] | None = None
        self.killed_at = self.back_at = self.back_wall = 0.0

    async def __call__(self, item) -> None:
        self.passings += item.inp["type"] == "passing"
        if item.inp["type"] == "passing" and self.passings == self.at:
            self.task = asyncio.create_task(self.pull_the_plug())

    async def pull_the_plug(self) -> None:
        loop = asyncio.get_running_loop()
        proc = self.redis_server.proc
        assert proc is not None
        os.kill(proc.pid, signal.SIGKILL)
        await asyncio.to_thread(proc.wait, 10)
        self.killed_at = loop.time()
        await asyncio.sleep(DOWN_S)
        await asyncio.to_thread(self.redis_server.restart)  # same files; we hold the lock
        self.back_at, self.back_wall = loop.time(), time.time()

    async def over(self) -> None:
        assert self.task is not None, f"the script has fewer than {self.at} passings"
        await asyncio.wait_for(self.task, 30)


async def fan(url, done, log):
    """A phone that stays connected, and resumes with (epoch, offset) if dropped.
    ``log`` gets ("snapshot", offset), ("resumed", offset), ("event", offset, t)."""
    loop = asyncio.get_running_loop()
    view = epoch = offset = None
    while True:
        try:
            async with websockets.connect(url, open_timeout=2) as ws:
                sub = {"op": "subscribe", "race": RACE, "protocol": 2}
                if epoch:
                    sub.update(epoch=epoch, offset=offset)
                await ws.send(json.dumps(sub))
                while True:
                    msg = json.loads(await ws.recv())
                    if msg["type"] == "snapshot":
                        view, epoch, offset = msg["view"], msg["epoch"], msg["offset"]
                        log.append(("snapshot", offset))
                    elif msg["type"] == "resumed":
                        log.append(("resumed", msg["offset"]))
                    elif msg["type"] == "event":
                        log.append(("event", msg["offset"], loop.time()))
                        view = apply_event(view, msg["event"])
                        offset = msg["offset"]
                        if view and len(view["classification"]["bib"]) == 20:
                            done.set()
                            return view
        except (OSError, websockets.ConnectionClosed, TimeoutError):
            log.append(("dropped",))
            await asyncio.sleep(0.2)


@pytest.mark.alone
async def test_redis_killed_mid_race_and_back(stack, redis_server, caplog):
    caplog.set_level(logging.INFO)
    await load_startlist(stack)
    done, log = asyncio.Event(), []
    follower = asyncio.create_task(fan(stack.ws_url, done, log))
    async with asyncio.timeout(10):
        while not log:  # subscribed: the snapshot is in
            await asyncio.sleep(0.02)
    outage = Outage(redis_server)
    feed = asyncio.create_task(replay(FIXTURE, stack.settings, speed=SPEED, announce=False,
                                      hold=outage))
    await asyncio.wait_for(feed, 60)
    await outage.over()
    view = await asyncio.wait_for(follower, 60)
    killed_at, back_at, back_wall = outage.killed_at, outage.back_at, outage.back_wall
    events_before = sum(1 for x in log if x[0] == "event" and x[2] < killed_at)

    next_event = min(x[2] for x in log if x[0] == "event" and x[2] > back_at)
    in_outage = [x for x in log if x[0] == "event" and killed_at < x[2] < back_at]
    print(f"\nevents before the kill {events_before}; during the outage {len(in_outage)}; "
          f"Redis down {back_at - killed_at:.2f} s; first race event "
          f"{next_event - back_at:.2f} s after Redis was back; "
          f"fan dropped {sum(1 for x in log if x[0] == 'dropped')} times")
    assert next_event - back_at < RESUME_WITHIN_S

    expected = expected_view()
    assert view["classification"] == expected["classification"]
    assert view["results"] == expected["results"]

    # Every event exactly once, in order, and no second snapshot (a resume at most).
    snapshots = [x for x in log if x[0] == "snapshot"]
    assert len(snapshots) == 1, log
    seen = [x[1] for x in log if x[0] == "event"]
    r = bus.connect(redis_server.url)
    try:
        stream = bus.entries(await r.xrange(keys.events_stream(RACE)))
        after = [sid for sid, _ in stream if bus.parse_id(sid) > bus.parse_id(snapshots[0][1])]
        assert seen == after
        kinds = [json.loads(f[b"e"])["type"] for _, f in stream if f]
        assert (kinds.count("revision"), kinds.count("pair_start"), kinds.count("passage"),
                kinds.count("finish")) == (1, 10, 40, 20)
        pending = await r.xpending(keys.RAW_STREAM, keys.SCORING_GROUP)
        assert pending["pending"] == 0
    finally:
        await r.aclose()

    ours = [rec for rec in caplog.records if rec.name.startswith(OURS)]
    for rec in ours:
        if rec.levelno >= logging.WARNING:
            print(f"{rec.levelname} {rec.name}: {rec.getMessage()}")
    tracebacks = [rec for rec in ours if rec.exc_info]
    assert not tracebacks, [f"{r.name}: {r.getMessage()}" for r in tracebacks]
    errors = [rec for rec in ours if rec.levelno >= logging.ERROR]
    assert not errors, [f"{r.name}: {r.getMessage()}" for r in errors]
    # Each service says once that Redis went, and once that it is back: within 2 s.
    for service in ("ingest", "scoring", "fan-out"):
        said = [rec for rec in ours if rec.getMessage().startswith(f"{service}: Redis")]
        assert [rec.levelno for rec in said] == [logging.WARNING, logging.INFO], (
            service, [rec.getMessage() for rec in said])
        assert "recovered" in said[1].getMessage()
        print(f"{service} resumed {said[1].created - back_wall:.2f} s after Redis was back")
        assert said[1].created - back_wall < 2.0


async def test_redis_killed_while_a_decoder_link_feeds_the_finish_loop(redis_server, tmp_path,
                                                                        caplog):
    """The loop's passings come over P3: those that failed to store are asked for again
    (RESEND) and stored, so every passage time, finish and the classification equal an
    undisturbed run.

    Known gap (no local spool yet): a re-requested passing is stored after later ones,
    so the fields computed at the moment of a passage (its rank then, the leader, the
    projection) can differ from an undisturbed run; they are not compared here."""
    from .test_decoder_link import decoder_stack, follow, post

    caplog.set_level(logging.INFO)
    async with decoder_stack(redis_server, tmp_path) as (st, sim):
        await post(st, "/api/startlist", FIXTURE["startlist"])
        outage = Outage(redis_server)
        feed = asyncio.create_task(replay(FIXTURE, st.settings, speed=SPEED, announce=False,
                                          decoder=sim, hold=outage))
        await asyncio.wait_for(feed, 60)
        await outage.over()
        expected = expected_view()
        view = await follow(st, lambda v: v["classification"] == expected["classification"])

    def timing(results):
        return {bib: ([(p["m"], p["t"], p["lap_time"]) for p in res["passages"]],
                      res["final"], res["status"])
                for bib, res in results.items()}

    assert timing(view["results"]) == timing(expected["results"])
    resends = [rec for rec in caplog.records if "missing; asking again" in rec.getMessage()]
    print(f"\n{len(resends)} RESEND requests for passings not stored during the outage")
    assert not [rec for rec in caplog.records
                if rec.name.startswith(OURS) and (rec.exc_info or rec.levelno >= logging.ERROR)]
