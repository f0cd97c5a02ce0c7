"""icetime on a real Redis Cluster (tests/cluster.py: three masters, one replica each).

Two competitions whose keys live on different masters are scored side by side, and
a broadcast node serves both (the race id is the same in each). Then the master that
serves a competition's slot is killed (SIGKILL) mid-race: its replica takes over, the
services carry on through redis-py's cluster client, and the race ends exactly as a
fault-free run, for a fan connected throughout and in Redis. Two scoring workers that
score any competition (services/scoring/pool.py) share two competitions, one each.
"""
from __future__ import annotations

import asyncio
import gc
import json
import socket
import warnings
from dataclasses import replace

import aiohttp
import pytest

from icetime import bus, keys
from icetime.cli import replay

from .cluster import Cluster, competitions_on_different_masters
from .conftest import (
    Stack,
    make_settings,
    race_view,
    start_stack,
    without_inputs,
)
from .fans import follow_race
from .test_pipeline import load_startlist
from .test_restart import FIXTURE, RACE, all_finished, expected_view
from .test_workers import (
    EVENT_COUNTS,
    Worker,
    close_all,
    equals,
    event_counts,
    finished,
    live_workers,
    owners,
    start_ingest,
    wait_for,
)

SPEED = 150.0
#: The master is killed at this passing of the script: mid-pair 3 (12 passings a pair).
KILL_AT_PASSING = 30
SKATERS = 20
#: The workers' case replays faster: no failover to wait for.
FAST = 400.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        c.start()
        yield c
    finally:
        c.close()


@pytest.fixture(autouse=True)
def nothing_left_open():
    """After each test, its clients closed, none of their connections is left open: not
    even those to a master that left the layout (redis-py forgets such a node without
    closing its connections in use), which a later test's garbage collection would
    otherwise meet (a ResourceWarning there fails that test, not this one)."""
    yield
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        gc.collect()
    assert [str(w.message) for w in seen] == []


async def follow(url: str, competition: str | None = None, log: list | None = None):
    """A fan: follows RACE (of ``competition``, if named) until every skater is
    classified, resuming with (epoch, offset) after a drop; returns the view (or the
    error frame that refused the subscribe)."""
    return await follow_race(url, RACE, asyncio.Event(), [] if log is None else log,
                             all_finished, competition)


def same_results(view, expected) -> None:
    assert view["classification"] == expected["classification"]
    assert without_inputs(view["results"]) == without_inputs(expected["results"])


async def stored_view(r, competition: str):
    """The race's view as readers take it (the snapshot and the events after it)."""
    return await race_view(r, RACE, competition)


async def test_two_competitions_on_different_masters(cluster):
    a, b = competitions_on_different_masters(cluster)
    assert cluster.master_of(keys.raw_stream(a)) != cluster.master_of(keys.raw_stream(b))
    url = cluster.url
    # A venue of its own per competition (ingest, scoring); the first one's broadcast
    # node shows both.
    first = await start_stack(make_settings(url, competition_id=a), url)
    second = Stack(make_settings(url, competition_id=b), url)
    elsewhere = Stack(make_settings(url, competition_id="nowhere"), url)
    try:
        await second.start("ingest")
        await second.start("scoring")
        await elsewhere.start("broadcast")
        await load_startlist(first)
        await load_startlist(second)
        fans = [asyncio.create_task(follow(first.ws_url)),
                asyncio.create_task(follow(first.ws_url, b))]
        await asyncio.gather(replay(FIXTURE, first.settings, speed=SPEED, announce=False),
                             replay(FIXTURE, second.settings, speed=SPEED, announce=False))
        own, other = await asyncio.wait_for(asyncio.gather(*fans), 60)
        # A node whose own competition has no such race cannot guess which is meant.
        ambiguous = await asyncio.wait_for(follow(elsewhere.ws_url), 10)
        named = await asyncio.wait_for(follow(elsewhere.ws_url, a), 10)
        expected = expected_view()
        for view in (own, other, named):
            same_results(view, expected)
        assert ambiguous["code"] == "ambiguous_race", ambiguous
        assert sorted(ambiguous["error"].split("(")[1].split(")")[0].split(", ")) == \
            sorted([a, b])
        r = bus.connect(url)
        try:
            for competition in (a, b):
                same_results(await stored_view(r, competition), expected)
            assert sorted(bus.text(m) for m in await r.smembers(
                keys.race_competitions(RACE))) == sorted([a, b])
        finally:
            await r.aclose()
        http = f"http://127.0.0.1:{first.settings.broadcast_http_port}/api/results/races/{RACE}"
        async with aiohttp.ClientSession() as s:
            docs = []
            for query in ("", f"?competition={b}"):
                async with s.get(http + query) as resp:
                    assert resp.status == 200, await resp.text()
                    docs.append(await resp.json())
        assert docs[0]["results"] == docs[1]["results"] and len(docs[0]["results"]) == SKATERS
    finally:
        for stack in (elsewhere, second, first):
            await stack.close()


class KillMaster:
    """A replay ``hold`` that SIGKILLs, at the script's ``at``-th passing, the master
    serving ``key``'s slot, and waits (off the loop, the replay going on) until its
    replica has taken over."""

    def __init__(self, cluster: Cluster, key: str, at: int = KILL_AT_PASSING) -> None:
        self.cluster, self.key, self.at = cluster, key, at
        self.passings = 0
        self.killed: int | None = None
        self.task: asyncio.Task[None] | None = None

    async def __call__(self, item) -> None:
        self.passings += item.inp["type"] == "passing"
        if item.inp["type"] == "passing" and self.passings == self.at:
            self.task = asyncio.create_task(self.failover())

    async def failover(self) -> None:
        self.killed = self.cluster.master_of(self.key)
        self.cluster.kill(self.killed)
        await asyncio.to_thread(self.cluster.settle)

    async def over(self) -> None:
        assert self.task is not None, f"the script has fewer than {self.at} passings"
        await asyncio.wait_for(self.task, 60)


async def test_master_killed_mid_race_replica_takes_over(cluster):
    url = cluster.url
    st = await start_stack(replace(make_settings(url), competition_id="rink1"), url)
    kill = KillMaster(cluster, keys.raw_stream("rink1"))
    try:
        await load_startlist(st)
        log: list = []
        fan = asyncio.create_task(follow(st.ws_url, log=log))
        async with asyncio.timeout(10):
            while not log:  # subscribed: the snapshot is in
                await asyncio.sleep(0.02)
        await asyncio.wait_for(replay(FIXTURE, st.settings, speed=SPEED, announce=False,
                                      hold=kill), 90)
        await kill.over()
        view = await asyncio.wait_for(fan, 60)
        assert kill.killed is not None
        assert cluster.master_of(keys.raw_stream("rink1")) != kill.killed
        expected = expected_view()
        same_results(view, expected)
        # Every event once, in order. (A client started now needs a live node to start.)
        r = bus.connect(cluster.url)
        try:
            same_results(await stored_view(r, "rink1"), expected)
            stream = bus.entries(await r.xrange(keys.events_stream("rink1", RACE)))
            kinds = [json.loads(f[b"e"])["type"] for _, f in stream if f]
            assert (kinds.count("revision"), kinds.count("pair_start"),
                    kinds.count("passage"), kinds.count("finish")) == (1, 10, 40, 20)
            seen = [x[1] for x in log if x[0] == "event"]
            assert len(seen) == len(set(seen))
            assert seen == sorted(seen, key=bus.parse_id)
            pending = await r.xpending(keys.raw_stream("rink1"), keys.SCORING_GROUP)
            assert pending["pending"] == 0
        finally:
            await r.aclose()
        print(f"\nmaster on port {kill.killed} killed at passing {KILL_AT_PASSING}; "
              f"fan dropped {sum(1 for x in log if x[0] == 'dropped')} times")
    finally:
        await st.close()
        if kill.killed is not None:
            cluster.restart(kill.killed)  # back as a replica, for whatever runs next
            await asyncio.to_thread(cluster.settle)


async def test_two_workers_any_competition_one_each(cluster):
    """Two workers that score any competition (the pool, in this process), two
    competitions on different masters: the fair share is one each; both races end as a
    fault-free run, every event once."""
    comps = competitions_on_different_masters(cluster, prefix="any")
    url = cluster.url
    r = bus.connect(url)
    workers: list[Worker] = []
    stacks: list[Stack] = []
    try:
        # The earlier tests' competitions are done: only these two are to be scored.
        await r.delete(keys.COMPETITIONS)
        workers += [Worker(url, "w1"), Worker(url, "w2")]
        await wait_for(lambda: equals(live_workers(r), 2), "both workers announced")
        for c in comps:
            stacks.append(await start_ingest(url, c))
            await load_startlist(stacks[-1])
        await asyncio.wait_for(asyncio.gather(*(
            replay(FIXTURE, st.settings, speed=FAST, announce=False) for st in stacks)), 90)
        for c in comps:
            await wait_for(lambda c=c: finished(r, c), f"{c} finished", 60)
            same_results(await stored_view(r, c), expected_view())
            assert await event_counts(r, c) == EVENT_COUNTS, c
        assert sorted((await owners(r, comps)).values()) == ["w1", "w2"]
    finally:
        await close_all(workers, stacks, r)


async def test_an_unreachable_cluster_is_a_redis_error_for_commands_and_pipelines():
    """The services' retry loops catch RedisError: a cluster client that reaches no node
    must raise one (ClusterUnavailable) from a command and from a pipeline alike, not
    redis-py's RedisClusterException, which would end the service."""
    from redis.exceptions import RedisError

    with socket.socket() as held:  # bound, not listening: every connect is refused
        held.bind(("127.0.0.1", 0))
        r = bus.connect(f"redis+cluster://127.0.0.1:{held.getsockname()[1]}")
        try:
            with pytest.raises(bus.ClusterUnavailable):
                await r.get("icetime:x")
            pipe = r.pipeline(transaction=False)
            pipe.zcard("icetime:x")
            with pytest.raises(RedisError) as caught:
                await pipe.execute()
            assert isinstance(caught.value, bus.ClusterUnavailable), repr(caught.value)
        finally:
            await r.aclose()
