"""Venue and cloud: the relay mirrors a race across an uplink cut, fans resume on any node.

Real redis-servers on both sides, the relay talking to the cloud through
tests/netcut.py (a cable that can be pulled), broadcast nodes on each side.
"""
from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from icetime import bus, keys, settings
from icetime.cli import Supervisor, replay
from icetime.keys import DEFAULT_COMPETITION as MAIN
from icetime.redis_embed import EmbeddedRedis
from services.relay import server as relay_server
from services.relay.mirror import Relay

from .conftest import Stack, make_settings, start_stack, without_inputs, write_venue_config
from .netcut import Cable
from .test_pipeline import Follower, load_startlist
from .test_restart import FIXTURE, RACE, expected_view

SPEED = 100.0
#: The uplink is cut at this passing of the script (of 120): mid pair 3.
CUT_AT_PASSING = 30
#: How long the uplink stays cut (s): longer than a reply's timeout (bus.REPLY_TIMEOUT_S),
#: so the relay's write in flight fails and the relay sees the outage.
DOWN_S = 6.0


class Uplink:
    """A replay ``hold`` that cuts the cable at the ``at``-th passing and restores it
    DOWN_S later, while the race goes on at the venue."""

    def __init__(self, cable: Cable, at: int = CUT_AT_PASSING) -> None:
        self.cable, self.at = cable, at
        self.passings = 0
        self.task: asyncio.Task[None] | None = None

    async def __call__(self, item) -> None:
        self.passings += item.inp["type"] == "passing"
        if item.inp["type"] == "passing" and self.passings == self.at:
            self.cable.cut()
            self.task = asyncio.create_task(self.restore())

    async def restore(self) -> None:
        await asyncio.sleep(DOWN_S)
        self.cable.restore()


async def stream(r, race=RACE):
    return bus.entries(await r.xrange(keys.events_stream(MAIN, race)))


async def mirrored(venue, cloud, race=RACE, timeout=30.0):
    """Wait until the cloud holds the venue's stream, epoch and snapshot; returns the
    stream."""
    async with asyncio.timeout(timeout):
        while True:
            v, c = await stream(venue, race), await stream(cloud, race)
            snaps = [await r.hgetall(keys.snapshot_key(MAIN, race)) for r in (venue, cloud)]
            epochs = [await r.get(keys.epoch_key(MAIN, race)) for r in (venue, cloud)]
            if v and v == c and snaps[0] == snaps[1] and epochs[0] == epochs[1]:
                return v
            await asyncio.sleep(0.1)


async def watch_ready(url, seen, stop):
    """Poll the relay's readiness while the race runs, and once ``stop`` is set until
    it says ready (the relay sees the cloud caught up at its next check, a moment
    after the copy is whole): ``seen`` gets each status."""
    async with aiohttp.ClientSession() as s:
        while not (stop.is_set() and seen and seen[-1] == 200):
            async with s.get(url) as resp:
                seen.append(resp.status)
            await asyncio.sleep(0.1)


@pytest.fixture
def cloud_redis(tmp_path):
    with EmbeddedRedis(tmp_path / "cloud") as emb:
        yield emb


async def test_relay_across_an_uplink_cut(redis_server, cloud_redis):
    cable = Cable(target_unix=str(cloud_redis.socket_path))
    await cable.start()
    venue_url, cloud_url = redis_server.url, cloud_redis.url
    venue_st = await start_stack(make_settings(
        venue_url, relay_cloud_url=f"redis://127.0.0.1:{cable.port}/0", relay_http_port=0),
        venue_url)
    cloud_st = Stack(make_settings(cloud_url), cloud_url)
    venue, cloud = bus.connect(venue_url), bus.connect(cloud_url)
    tasks: list[asyncio.Task] = []
    try:
        await venue_st.start("relay", relay_server.serve)
        await cloud_st.start("broadcast")
        relay_http = f"http://127.0.0.1:{venue_st.settings.relay_http_port}"
        await load_startlist(venue_st)
        async with asyncio.timeout(10):  # the race is at the cloud, with its snapshot
            while not await cloud.sismember(keys.races_set(MAIN), RACE):
                await asyncio.sleep(0.05)

        at_venue, at_cloud = Follower(venue_st.ws_url), Follower(cloud_st.ws_url)
        leaver = Follower(venue_st.ws_url)  # leaves the venue mid-race, resumes in the cloud
        tasks += [asyncio.create_task(f.run(lambda s: s.finished(), timeout=60))
                  for f in (at_venue, at_cloud)]
        tasks.append(asyncio.create_task(leaver.run(lambda s: len(s.events) >= 12, timeout=60)))
        ready_seen, stop_watch = [], asyncio.Event()
        watcher = asyncio.create_task(watch_ready(f"{relay_http}/api/ready", ready_seen,
                                                  stop_watch))
        uplink = Uplink(cable)
        tally = await asyncio.wait_for(
            replay(FIXTURE, venue_st.settings, speed=SPEED, announce=False, hold=uplink), 60)
        assert tally.new == tally.sent
        assert uplink.task is not None
        await asyncio.wait_for(uplink.task, 30)
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
        entries = await mirrored(venue, cloud)
        stop_watch.set()
        await asyncio.wait_for(watcher, 15)
        last = entries[-1][0]

        # Both fans end on the last event with the same view: the race's own.
        for f in (at_venue, at_cloud):
            await f.run(lambda s: s.offset == last, resume=True)
        assert at_cloud.view == at_venue.view
        expected = expected_view()
        assert at_cloud.view["classification"] == expected["classification"]
        assert without_inputs(at_cloud.view["results"]) == without_inputs(expected["results"])
        # The cloud fan got every event once, in order: the stream after its snapshot.
        got = [e["offset"] for e in at_cloud.events]
        first = bus.parse_id(at_cloud.frames[0]["offset"])
        assert got == [sid for sid, _ in entries if bus.parse_id(sid) > first]

        # The fan who left the venue mid-race resumes on the cloud node with the
        # (epoch, offset) the venue gave it: the missed events, no second snapshot.
        left_at = leaver.offset
        leaver.url = cloud_st.ws_url
        await leaver.run(lambda s: s.offset == last, resume=True)
        kinds = [m["type"] for m in leaver.frames]
        assert kinds.count("snapshot") == 1 and "resumed" in kinds
        after = [e["offset"] for e in leaver.events][12:]
        assert after == [sid for sid, _ in entries
                         if bus.parse_id(sid) > bus.parse_id(left_at)][:len(after)]
        assert leaver.view == at_venue.view

        # The relay saw the cut (not ready while the cloud was away) and is ready again.
        print(f"\nrelay readiness while the race ran: {ready_seen.count(503)} of "
              f"{len(ready_seen)} polls said 503; cable swallowed {cable.swallowed} reads")
        assert 503 in ready_seen and ready_seen[-1] == 200
        async with aiohttp.ClientSession() as s, s.get(f"{relay_http}/api/health") as resp:
            health = await resp.json()
        assert health["cloud"]["up"] and health["venue"]["up"]
        assert health["races"][RACE]["position"] == last
        races = keys.races_set(MAIN)
        assert (await cloud.smembers(races)) == (await venue.smembers(races))
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await cloud_st.close()
        await venue_st.close()
        await cable.close()
        await venue.aclose()
        await cloud.aclose()


def race_events(race: str, n: int, start: int = 0) -> list[str]:
    return [json.dumps({"type": "passage", "race": race, "n": start + i}) for i in range(n)]


async def publish(b: bus.Bus, input_id: str, race: str, epoch: str, events: list[str],
                  view: str) -> None:
    await b.publish(input_id, [(race, epoch, view, events)])


async def run_relay(venue, cloud, until, timeout=10.0) -> Relay:
    """A relay over ``venue`` and ``cloud`` until ``until(relay)`` holds after a pass."""
    relay, stop = Relay(venue, cloud), asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        async with asyncio.timeout(timeout):
            while not (relay.synced and await until(relay)):
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
    return relay


async def test_relay_restart_repeats_nothing_and_follows_a_new_epoch(redis_server,
                                                                      cloud_redis):
    """A relay started again goes on from where the cloud stands (nothing written
    twice); a race whose stream the venue recreated (a new epoch) is mirrored anew."""
    venue, cloud = bus.connect(redis_server.url), bus.connect(cloud_redis.url)
    b = bus.Bus(venue, MAIN)
    try:
        for race in ("r1", "r2"):
            await publish(b, "1-0", race, "e1", race_events(race, 700), '{"v":1}')

        async def caught_up(_relay) -> bool:
            return all([await stream(venue, r) == await stream(cloud, r) for r in ("r1", "r2")])

        first = await run_relay(venue, cloud, caught_up)
        assert first.counters.events == 1400  # more than one read's worth per race
        assert await cloud.hgetall(keys.snapshot_key(MAIN, "r1")) == \
            await venue.hgetall(keys.snapshot_key(MAIN, "r1"))

        await publish(b, "2-0", "r1", "e1", race_events("r1", 5, 700), '{"v":2}')
        again = await run_relay(venue, cloud, caught_up)
        assert again.counters.events == 5  # only what was new; nothing repeated
        assert (await cloud.hget(keys.snapshot_key(MAIN, "r1"), "view")) == b'{"v":2}'

        # The venue recreates r2's stream under a new epoch: its ids start again.
        await venue.delete(keys.events_stream(MAIN, "r2"), keys.snapshot_key(MAIN, "r2"),
                           keys.epoch_key(MAIN, "r2"))
        await b.publish("3-0", [("r2", "e2", '{"v":3}', race_events("r2", 3))])

        async def new_epoch(_relay) -> bool:
            return (await cloud.get(keys.epoch_key(MAIN, "r2")) == b"e2"
                    and await caught_up(_relay))

        third = await run_relay(venue, cloud, new_epoch)
        assert third.counters.resets == 1
        assert len(await stream(cloud, "r2")) == 3
        assert (await cloud.hget(keys.snapshot_key(MAIN, "r2"), "view")) == b'{"v":3}'
    finally:
        await venue.aclose()
        await cloud.aclose()


async def test_two_broadcast_nodes_give_identical_streams_and_resume_across(stack,
                                                                           redis_server):
    """Broadcast nodes scale out on one Redis: fans on two nodes get the same events
    with the same offsets, and a fan dropped by one node resumes on the other (what a
    load balancer does when a node goes away)."""
    second = Stack(make_settings(redis_server.url), redis_server.url)
    try:
        await second.start("broadcast")
        assert second.settings.broadcast_ws_port != stack.settings.broadcast_ws_port
        await load_startlist(stack)
        one, two = Follower(stack.ws_url), Follower(second.ws_url)
        hopper = Follower(stack.ws_url)
        followers = [asyncio.create_task(f.run(lambda s: s.finished(), timeout=60))
                     for f in (one, two)]
        task = asyncio.create_task(replay(FIXTURE, stack.settings, speed=SPEED * 2,
                                          announce=False))
        await hopper.run(lambda s: len(s.events) >= 10, timeout=60)
        await asyncio.wait_for(asyncio.gather(task, *followers), 60)
        r = bus.connect(redis_server.url)
        try:
            entries = await stream(r)
        finally:
            await r.aclose()
        last = entries[-1][0]
        for f in (one, two):
            await f.run(lambda s: s.offset == last, resume=True)
        hopper.url = second.ws_url
        await hopper.run(lambda s: s.offset == last, resume=True)

        assert one.view == two.view == hopper.view
        assert one.view["classification"] == expected_view()["classification"]
        # The same frames' content on both nodes, from their first common offset on.
        common = max(bus.parse_id(f.frames[0]["offset"]) for f in (one, two))
        same = [[(e["offset"], e["event"]) for e in f.events
                 if bus.parse_id(e["offset"]) > common] for f in (one, two)]
        assert same[0] == same[1] and same[0]
        kinds = [m["type"] for m in hopper.frames]
        assert kinds.count("snapshot") == 1 and "resumed" in kinds
        offsets = [e["offset"] for e in hopper.events]
        assert offsets == sorted(set(offsets), key=bus.parse_id)
    finally:
        await second.close()


async def test_icetime_run_starts_the_relay_when_a_cloud_is_configured(tmp_path, cloud_redis):
    """``[relay] cloud_url`` in the venue's file: ``icetime run`` runs the relay as a
    fourth service, and a start list loaded at the venue reaches the cloud."""
    config = str(write_venue_config(
        tmp_path, f'[relay]\ncloud_url = "{cloud_redis.url}"\nhttp_port = 0'))
    sup = Supervisor(config, settings.load(config))
    await asyncio.to_thread(sup.start)
    cloud = bus.connect(cloud_redis.url)
    try:
        assert sup.services[-1] == "relay" and "relay" in sup.procs
        await asyncio.to_thread(sup.load_startlist, FIXTURE)
        async with asyncio.timeout(10):
            while not await cloud.sismember(keys.races_set(MAIN), RACE):
                await asyncio.sleep(0.05)
        # The relay's health says so too (it counts the race once its write returned,
        # which a busy machine may show a moment after the cloud has it).
        url = f"http://127.0.0.1:{sup.cfg.relay_http_port}/api/health"
        health: dict = {}
        async with aiohttp.ClientSession() as s, asyncio.timeout(10):
            while not health.get("races", {}).get(RACE, {}).get("listed"):
                await asyncio.sleep(0.05)
                async with s.get(url) as resp:
                    health = await resp.json()
    finally:
        await cloud.aclose()
        await asyncio.to_thread(sup.stop)
