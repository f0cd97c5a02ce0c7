"""Scoring workers and their lease (services/scoring/lease.py, redis-py's Lock).

Two scoring worker processes for one competition: one scores, the other stands by.
The owner is killed with SIGKILL mid-race; once its lease runs out the other takes it,
rebuilds from the checkpoint and the raw log, and the race ends exactly as a fault-free
run, every event once. A worker that lost its lease cannot publish.
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from redis.asyncio.lock import Lock

from icetime import bus, keys
from icetime.cli import replay
from icetime.keys import DEFAULT_COMPETITION as MAIN
from services.scoring import lease
from services.scoring.lease import Lease

from .conftest import (
    ROOT,
    Stack,
    make_settings,
    race_view,
    stop_processes,
    write_venue_config,
)
from .test_cluster import follow, same_results
from .test_pipeline import load_startlist
from .test_restart import FIXTURE, RACE, expected_view

SPEED = 150.0
KILL_AT_PASSING = 30


def start_worker(config, url: str, name: str, log_path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "REDIS_URL": url, "ICETIME_WORKER": name, "ICETIME_LOG": "INFO"}
    env.pop("ICETIME_SUPERVISOR_PID", None)
    with open(log_path, "wb") as log:
        return subprocess.Popen([sys.executable, "-m", "services.scoring", "--config",
                                 str(config)], cwd=ROOT, env=env, stdout=log, stderr=log)


async def owner(r) -> str:
    return bus.text(await r.get(keys.scoring_lease(MAIN)))


async def test_two_workers_the_owner_killed_mid_race(redis_server, tmp_path):
    url = redis_server.url
    config = write_venue_config(tmp_path)
    st = Stack(make_settings(url), url)
    r = bus.connect(url)
    workers: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name in ("w1", "w2"):
            workers[name] = start_worker(config, url, name, tmp_path / f"{name}.log")
        async with asyncio.timeout(30):
            while not await owner(r):
                await asyncio.sleep(0.05)
        first = (await owner(r)).rsplit("/", 1)[1]
        await st.start("ingest")
        await st.start("broadcast")
        await load_startlist(st)
        log: list = []
        fan = asyncio.create_task(follow(st.ws_url, log=log))
        passings = 0

        async def kill_owner(item) -> None:
            nonlocal passings
            passings += item.inp["type"] == "passing"
            if item.inp["type"] == "passing" and passings == KILL_AT_PASSING:
                workers[first].send_signal(signal.SIGKILL)

        await asyncio.wait_for(replay(FIXTURE, st.settings, speed=SPEED, announce=False,
                                      hold=kill_owner), 90)
        view = await asyncio.wait_for(fan, 60)
        assert workers[first].wait(5) == -signal.SIGKILL
        second = (await owner(r)).rsplit("/", 1)[1]
        assert second != first
        expected = expected_view()
        same_results(view, expected)
        same_results(await race_view(r, RACE),
                     expected)
        stream = bus.entries(await r.xrange(keys.events_stream(MAIN, RACE)))
        kinds = [json.loads(f[b"e"])["type"] for _, f in stream if f]
        assert (kinds.count("revision"), kinds.count("pair_start"), kinds.count("passage"),
                kinds.count("finish")) == (1, 10, 40, 20)
        assert (await r.xpending(keys.raw_stream(MAIN), keys.SCORING_GROUP))["pending"] == 0
        took_over = (tmp_path / f"{second}.log").read_text()
        assert f"scoring {MAIN} as " in took_over, took_over
    finally:
        stop_processes(list(workers.values()))
        await st.close()
        await r.aclose()


async def test_a_worker_without_the_lease_publishes_nothing(redis_client):
    """The publish script checks the lease's token: a worker that lost its lease (it
    ran out while the worker was paused) cannot write beside the new owner."""
    await redis_client.xgroup_create(keys.raw_stream(MAIN), keys.SCORING_GROUP, mkstream=True)
    lease = Lock(redis_client, keys.scoring_lease(MAIN), timeout=10)
    assert await lease.acquire(token="host/new-owner")
    stale = bus.Bus(redis_client, MAIN, lease_token="host/old-owner")
    with pytest.raises(bus.LeaseLost):
        await stale.publish("1-0", [(RACE, "e1", "{}", ['{"type":"x"}'])])
    assert await redis_client.xlen(keys.events_stream(MAIN, RACE)) == 0
    assert await redis_client.get(keys.scoring_progress(MAIN)) is None
    owner_bus = bus.Bus(redis_client, MAIN, lease_token="host/new-owner")
    await owner_bus.publish("1-0", [(RACE, "e1", "{}", ['{"type":"x"}'])])
    assert await redis_client.xlen(keys.events_stream(MAIN, RACE)) == 1


async def test_a_busy_worker_keeps_its_lease_and_a_hung_one_lets_it_go(redis_server,
                                                                         monkeypatch):
    """A worker whose event loop is held up for twice the lease's TTL (a long batch on a
    machine short of CPU) still holds its lease afterwards: it is extended from a thread
    of its own, and no rebuild follows. One held up past ``STALL_LIMIT_S`` is taken for
    hung: its lease runs out (another worker may take it) and ``keep`` says it is lost."""
    r = bus.connect(redis_server.url)
    try:
        mine = Lease(r, MAIN, "host/busy", url=redis_server.url)
        assert await mine.take()
        keeping = asyncio.create_task(mine.keep())
        await asyncio.sleep(0.3)  # the thread is extending
        time.sleep(2 * lease.TTL_S)  # the loop gets no turn (what the test must not do)
        assert bus.text(await r.get(keys.scoring_lease(MAIN))) == "host/busy"
        await asyncio.sleep(0.3)
        assert not keeping.done()
        # Held up past the stall limit (shortened): the lease is let go, and runs out.
        monkeypatch.setattr(lease, "STALL_LIMIT_S", lease.RENEW_S)
        time.sleep(lease.RENEW_S + 2 * lease.TTL_S)
        assert await r.get(keys.scoring_lease(MAIN)) is None
        other = Lease(r, MAIN, "host/other", url=redis_server.url)
        assert await other.take()
        await asyncio.wait_for(keeping, 2 * lease.TTL_S)  # ``keep`` returned: lost
        assert not await mine.take()
    finally:
        await r.aclose()
