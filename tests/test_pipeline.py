"""The whole chain over real sockets: TCP feed -> ingest -> Redis -> scoring -> broadcast -> WS."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import websockets

from icetime import bus, keys
from icetime.cli import replay
from icetime.replay import load_fixture
from icetime.timefmt import format_time
from icetime.view import apply_event
from services.broadcast.fanout import Hub

from .conftest import TOKENS

FIXTURE = load_fixture(Path(__file__).parents[1] / "fixtures" / "beijing2023_w1000a.json")
RACE = "bj23-w1000a"
SPEED = 400.0


async def load_startlist(stack, doc=FIXTURE):
    url = f"http://127.0.0.1:{stack.settings.ingest_http_port}/api/startlist"
    async with aiohttp.ClientSession() as s:
        async with s.post(url, json=doc["startlist"],
                          headers={"Authorization": f"Bearer {TOKENS['officials']}"}) as resp:
            assert resp.status == 200, await resp.text()


class Follower:
    """A WebSocket client that keeps the view, as the page does."""

    def __init__(self, url, race=RACE):
        self.url, self.race = url, race
        self.view = None
        self.epoch = self.offset = None
        self.events: list[dict] = []
        self.frames: list[dict] = []

    async def run(self, until, resume=False, timeout=30.0):
        async with websockets.connect(self.url) as ws:
            sub = {"op": "subscribe", "race": self.race}
            if resume:
                sub.update(epoch=self.epoch, offset=self.offset)
            await ws.send(json.dumps(sub))
            async with asyncio.timeout(timeout):
                while not until(self):
                    msg = json.loads(await ws.recv())
                    self.frames.append(msg)
                    if msg["type"] == "snapshot":
                        self.view, self.epoch, self.offset = msg["view"], msg["epoch"], msg["offset"]
                    elif msg["type"] == "event":
                        self.events.append(msg)
                        self.view = apply_event(self.view, msg["event"])
                        self.offset = msg["offset"]

    def finished(self, n=20):
        return bool(self.view) and len(self.view["classification"]["bib"]) >= n


async def test_live_race_reaches_a_websocket_client(stack, redis_client):
    await load_startlist(stack)
    f = Follower(stack.ws_url)
    follower = asyncio.create_task(f.run(lambda s: s.finished()))
    await asyncio.sleep(0.2)
    await replay(FIXTURE, stack.settings, speed=SPEED, announce=False)
    await follower
    cls = f.view["classification"]
    names = [f.view["skaters"][b]["short"] for b in cls["bib"][:3]]
    assert names == ["Takagi", "Goetz", "Leerdam"]
    assert [format_time(t) for t in cls["t"][:3]] == ["1:14.44", "1:14.45", "1:14.88"]
    # Ordered, gapless offsets; every event stamped at every hop, in order.
    offsets = [bus.parse_id(e["offset"]) for e in f.events]
    assert offsets == sorted(set(offsets))
    stream = [bus.parse_id(i) for i, _ in await redis_client.xrange(keys.events_stream(RACE))]
    assert offsets == [o for o in stream if o > bus.parse_id(f.frames[0]["offset"])]
    for e in f.events:
        h = e["event"]["hops"]
        if e["event"]["type"] == "revision":
            continue
        assert h["source_us"] <= h["ingest_us"] <= h["scoring_us"] <= e["broadcast_us"]
    # The folded view equals the stored snapshot: what a late joiner would get.
    snap = json.loads((await redis_client.hget(keys.snapshot_key(RACE), "view")).decode())
    assert f.view == snap


async def test_resume_gets_exactly_the_missed_events(stack, redis_client):
    await load_startlist(stack)
    f = Follower(stack.ws_url)
    task = asyncio.create_task(replay(FIXTURE, stack.settings, speed=SPEED, announce=False))
    await f.run(lambda s: len(s.events) >= 15)  # then the phone loses the network
    seen_before = len(f.events)
    await task
    await f.run(lambda s: s.finished(), resume=True)
    kinds = [m["type"] for m in f.frames]
    assert kinds.count("snapshot") == 1 and "resumed" in kinds
    offsets = [e["offset"] for e in f.events]
    assert len(offsets) == len(set(offsets)), "a duplicate event"
    stream = [i.decode() for i, _ in await redis_client.xrange(keys.events_stream(RACE))]
    first = stream.index(f.events[0]["offset"])
    assert offsets == stream[first:], "a gap"
    assert len(f.events) > seen_before
    # A client from another epoch (the stream was recreated) gets a snapshot instead.
    g = Follower(stack.ws_url)
    g.epoch, g.offset = "old-epoch", offsets[3]
    await g.run(lambda s: s.view is not None, resume=True)
    assert g.frames[0]["type"] == "snapshot" and g.view == f.view


async def test_official_decision_reaches_clients_as_a_revision(stack):
    await load_startlist(stack)
    await replay(FIXTURE, stack.settings, speed=SPEED, announce=False)
    f = Follower(stack.ws_url)
    await f.run(lambda s: s.finished())
    url = f"http://127.0.0.1:{stack.settings.ingest_http_port}/feed"
    async with aiohttp.ClientSession() as s:
        async with s.post(url, json={"type": "decision", "race": RACE, "action": "dq",
                                     "bib": "20", "reason": "lane", "seq": 1},
                          headers={"Authorization": f"Bearer {TOKENS['officials']}"}) as resp:
            assert (await resp.json())["ok"]
    await f.run(lambda s: s.events and s.events[-1]["event"]["type"] == "revision", resume=True)
    rev = f.events[-1]["event"]
    assert rev["reason"] == "decision: dq"
    assert f.view["results"]["20"]["status"] == "DQ"
    assert f.view["classification"]["bib"][0] == "5"


class SlowSender:
    """A client that stops reading: its sends block until released."""

    def __init__(self):
        self.sent: list[dict] = []
        self.gate = asyncio.Event()

    async def send(self, message: str) -> None:
        self.sent.append(json.loads(message))
        if len(self.sent) > 1:
            await self.gate.wait()


async def test_a_slow_client_gets_latest_state_not_a_backlog(stack, redis_client):
    await load_startlist(stack)
    hub = Hub(redis_client, queue_max=4)
    fast, slow = SlowSender(), SlowSender()
    fast.gate.set()
    await hub.subscribe(fast, RACE)
    sub, _ = await hub.subscribe(slow, RACE)
    await replay(FIXTURE, stack.settings, speed=SPEED, announce=False)
    await asyncio.sleep(0.5)
    n_events = await redis_client.xlen(keys.events_stream(RACE))
    assert len([m for m in fast.sent if m["type"] == "event"]) == n_events - 1
    assert len(sub.queue) <= 4 and sub.needs_snapshot  # the backlog was dropped, not kept
    slow.gate.set()
    await asyncio.sleep(0.5)
    snaps = [m for m in slow.sent if m["type"] == "snapshot"]
    assert len(snaps) == 2 and len(snaps[-1]["view"]["classification"]["bib"]) == 20
    await hub.close()
