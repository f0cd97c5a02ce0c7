"""The whole chain over real sockets: TCP feed -> ingest -> Redis -> scoring -> broadcast -> WS."""
from __future__ import annotations

import asyncio
import copy
import json
import re
import socket
from pathlib import Path

import aiohttp
import websockets

from icetime import bus, keys, restarts
from icetime.cli import replay
from icetime.feedclient import FeedClient
from icetime.keys import DEFAULT_COMPETITION as MAIN
from icetime.replay import load_fixture, script_inputs
from icetime.timefmt import format_time
from icetime.view import apply_event
from services.scoring.competition import Competition

from .conftest import TOKENS, caught_up, race_view, without_inputs

FIXTURE = load_fixture(Path(__file__).parents[1] / "fixtures" / "beijing2023_w1000a.json")
RACE = "bj23-w1000a"
SPEED = 400.0
#: The corrections the slow client's test sends: each one's revision carries the whole
#: race (13 reach a client on a 4 KB socket buffer before it falls behind); each one
#: retells the race in one pass over its log, whatever the number before it.
CORRECTIONS = 40


async def load_startlist(stack, doc=FIXTURE, wait: bool = True):
    """POST the start list; with ``wait`` (the default) the answer is scoring's verdict,
    without it "stored" (docs/protocol.md: people's inputs wait for their verdict)."""
    url = f"http://127.0.0.1:{stack.settings.ingest_http_port}/api/startlist"
    if not wait:
        url += "?wait=0"
    async with aiohttp.ClientSession() as s:
        async with s.post(url, json=doc["startlist"],
                          headers={"Authorization": f"Bearer {TOKENS['officials']}"}) as resp:
            assert resp.status == 200, await resp.text()


class Follower:
    """A WebSocket client that keeps the view, as the page does; ``protocol`` None
    subscribes as a client written before protocol 2 (no "protocol")."""

    def __init__(self, url, race=RACE, protocol=2, fold=apply_event):
        self.url, self.race, self.protocol, self.fold = url, race, protocol, fold
        self.view = None
        self.epoch = self.offset = None
        self.events: list[dict] = []
        self.frames: list[dict] = []

    async def run(self, until, resume=False, timeout=30.0):
        async with websockets.connect(self.url) as ws:
            sub = {"op": "subscribe", "race": self.race}
            if self.protocol is not None:
                sub["protocol"] = self.protocol
            if resume:
                sub.update(epoch=self.epoch, offset=self.offset)
            await ws.send(json.dumps(sub))
            async with asyncio.timeout(timeout):
                while not until(self):
                    msg = json.loads(await ws.recv())
                    self.frames.append(msg)
                    if msg["type"] == "snapshot":
                        self.view, self.epoch = msg["view"], msg["epoch"]
                        self.offset = msg["offset"]
                    elif msg["type"] == "event":
                        self.events.append(msg)
                        self.view = self.fold(self.view, msg["event"])
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
    stream = [bus.parse_id(i) for i, _ in await redis_client.xrange(keys.events_stream(MAIN, RACE))]
    assert offsets == [o for o in stream if o > bus.parse_id(f.frames[0]["offset"])]
    for e in f.events:
        h = e["event"]["hops"]
        if e["event"]["type"] == "revision":
            continue
        assert h["source_us"] <= h["ingest_us"] <= h["scoring_us"] <= e["broadcast_us"]
    # The folded view equals the stored snapshot: what a late joiner would get.
    assert f.view == await race_view(redis_client, RACE)


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
    stream = [i.decode() for i, _ in await redis_client.xrange(keys.events_stream(MAIN, RACE))]
    first = stream.index(f.events[0]["offset"])
    assert offsets == stream[first:], "a gap"
    assert len(f.events) > seen_before
    # A client from another epoch (the stream was recreated) gets a snapshot instead.
    g = Follower(stack.ws_url)
    g.epoch, g.offset = "old-epoch", offsets[3]
    # The stored snapshot may stand a few events back (it is stored at a cadence): the
    # events after it follow at once.
    await g.run(lambda s: s.view is not None and s.offset == f.offset, resume=True)
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


async def send_revisions_one_read_each(st, fast: Follower, n: int) -> None:
    """``n`` corrections (each a revision of the whole race), the next sent once ``fast``
    (resumed) got the last one's event: so the node reads and writes them one by one,
    as officials send them, and a client that stopped reading falls behind after as
    many as its buffers hold, however busy the machine (sent at once, one read could
    take them all and write them to it in one go). Answered once stored (wait=0): each
    correction is a replay of the race, longer than a feed waits for a verdict on a busy
    machine."""
    url = f"http://127.0.0.1:{st.settings.ingest_http_port}/feed?wait=0"
    headers = {"Authorization": f"Bearer {TOKENS['officials']}"}
    async with aiohttp.ClientSession() as s, websockets.connect(st.ws_url) as ws:
        await ws.send(json.dumps({"op": "subscribe", "race": RACE, "protocol": 2,
                                  "epoch": fast.epoch, "offset": fast.offset}))
        for seq in range(1, n + 1):
            decision = {"type": "decision", "race": RACE, "action": "reinstate", "bib": "1",
                        "seq": seq}
            async with s.post(url, json=decision, headers=headers) as resp:
                assert (await resp.json())["ok"]
            async with asyncio.timeout(30):
                while True:
                    msg = json.loads(await ws.recv())
                    if msg["type"] == "snapshot":
                        fast.view = msg["view"]
                    elif msg["type"] == "event":
                        fast.events.append(msg)
                        fast.view = fast.fold(fast.view, msg["event"])
                        if msg["event"]["type"] == "revision":
                            break


async def test_a_slow_client_gets_latest_state_not_a_backlog(redis_server, redis_client):
    """A real client on a tiny socket buffer stops reading while revisions pour out."""
    from .conftest import make_settings, start_stack

    st = await start_stack(make_settings(redis_server.url, client_buffer_max=128 * 1024),
                           redis_server.url)
    try:
        await load_startlist(st)
        await replay(FIXTURE, st.settings, speed=SPEED, announce=False)
        # The slow client's snapshot is the finished race: only the revisions come after.
        await caught_up(redis_client, RACE)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", st.settings.broadcast_ws_port))
        slow = await websockets.connect(st.ws_url, sock=sock, max_queue=1)
        await slow.send(json.dumps({"op": "subscribe", "race": RACE, "protocol": 2}))
        fast = Follower(st.ws_url)
        await fast.run(lambda f: f.finished())
        await send_revisions_one_read_each(st, fast, CORRECTIONS)
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{st.http}/api/health") as resp:
                health = await resp.json()
        assert health["broadcast"]["races"][RACE]["fell_behind"] == 1
        # The node's end-to-end latency of the events it sent (the decisions came over
        # HTTP with no source stamp: from ingest's receipt), which the monitor shows
        # before it has events of its own.
        latency = health["latency"]
        assert latency["events"] >= CORRECTIONS, latency
        assert 0 <= latency["median_ms"] < 10_000 and latency["last_ms"] is not None, latency
        # The slow phone reads again: it is brought to the latest state by a fresh snapshot.
        kinds, view = [], None
        async with asyncio.timeout(20):
            while view != fast.view:
                msg = json.loads(await slow.recv())
                kinds.append(msg["event"]["type"] if msg["type"] == "event" else msg["type"])
                if msg["type"] == "snapshot":
                    view = msg["view"]
                elif msg["type"] == "event":
                    view = apply_event(view, msg["event"])
        assert kinds.count("snapshot") == 2
        assert kinds.count("revision") < CORRECTIONS, \
            "the backlog should have been dropped, not delivered"
        await slow.close()
    finally:
        await st.close()


async def test_a_burst_reaches_a_live_client_whole_and_in_stream_order(stack, redis_client):
    """Events that land in the race's stream at once (one transaction, as a busy node
    finds them) are read together and written to a live client in one go: each arrives
    once, in the stream's order, after the client's snapshot."""
    await load_startlist(stack)
    await replay(FIXTURE, stack.settings, speed=SPEED, announce=False)
    stream = keys.events_stream(MAIN, RACE)
    async with websockets.connect(stack.ws_url) as ws:
        await ws.send(json.dumps({"op": "subscribe", "race": RACE, "protocol": 2}))
        snapshot = json.loads(await ws.recv())
        assert snapshot["type"] == "snapshot"
        await asyncio.sleep(0.3)  # on the live path by now (if not, queued: the same frames)
        (last_id, last), = await redis_client.xrevrange(stream, "+", "-", count=1)
        # The snapshot may stand before the stream's end (stored at a cadence): the events
        # after it come first.
        offset = snapshot["offset"]
        async with asyncio.timeout(20):
            while offset != bus.text(last_id):
                offset = json.loads(await ws.recv())["offset"]
        async with redis_client.pipeline(transaction=True) as tx:
            for _ in range(5):
                tx.xadd(stream, last)  # a copy of the last event, scoring's shape
            added = [bus.text(sid) for sid in await tx.execute()]
        async with asyncio.timeout(20):
            got = [json.loads(await ws.recv()) for _ in added]
    assert [(m["type"], m["offset"]) for m in got] == [("event", sid) for sid in added]
    assert [m["event"] for m in got] == [json.loads(last[b"e"])] * 5


async def test_photo_finish_time_arrives_after_the_transponder_as_a_revision(stack):
    """The transponder finish shows first; the photo finish, seconds later, revises it."""
    doc = copy.deepcopy(FIXTURE)
    doc["script"]["pairs"] = [p for p in doc["script"]["pairs"] if p["pair"] == 3]
    await load_startlist(stack, doc)
    f = Follower(stack.ws_url)
    follower = asyncio.create_task(f.run(lambda s: any(
        e["event"]["type"] == "revision" and e["event"]["reason"].startswith("official")
        for e in s.events)))
    await asyncio.sleep(0.2)
    await replay(doc, stack.settings, speed=SPEED, announce=False)
    photo = FeedClient("127.0.0.1", stack.settings.ingest_tcp_port, TOKENS["photo-finish"])
    # Lynx reads Goetz's blade at 1:14.449, three thousandths before the transponder.
    assert (await photo.send({"type": "finish_time", "seq": 1, "race": RACE, "bib": "5",
                              "time_us": 74_449_000, "origin": "photo"}))["ok"]
    await photo.close()
    await follower
    finish = next(e["event"] for e in f.events
                  if e["event"]["type"] == "finish" and e["event"]["bib"] == "5")
    assert finish["final"] == {"t": 74_452_000, "flags": [], "origin": "transponder"}
    rev = f.events[-1]["event"]
    assert rev["reason"] == "official time (photo)"
    final = f.view["results"]["5"]["final"]
    assert final["t"] == 74_449_000 and final["origin"] == "photo"
    assert f.view["classification"]["t"][f.view["classification"]["bib"].index("5")] == 74_449_000
    assert f.events.index(next(e for e in f.events if e["event"] is finish)) < len(f.events) - 1


async def test_scoring_types_the_raw_entries_ingest_stored_and_refuses_the_rest(
        redis_server, redis_client, caplog):
    """Raw entries as ingest stores them (msgpack maps, absent fields left out) are typed by
    scoring on the way in. An entry that is no input is refused, counted with its reason
    and acknowledged, and the worker goes on: live, and again when it rebuilds."""
    from services.scoring import runner

    from .conftest import Stack, feed, make_settings

    doc = copy.deepcopy(FIXTURE)
    doc["script"]["pairs"] = [p for p in doc["script"]["pairs"] if p["pair"] in (1, 2)]
    inputs = [{"type": "startlist", **doc["startlist"], "source": "officials", "rx_us": 1}]
    inputs += [{**it.inp, "source": it.source, "rx_us": 10 + n}
               for n, it in enumerate(script_inputs(doc))]
    assert inputs[1]["type"] == "gun" and "race" in inputs[1] and "seq" in inputs[1]
    bad = {4: {"d": b"\xc1"},  # not msgpack
           7: {"d": bus.pack_input({"type": "passing", "transponder": "4100051", "t": 5,
                                    "colour": "red", "source": "finish-loop"})},
           9: {"d": bus.pack_input({"type": "gun", "race": RACE, "pair": 1, "t": -5})},
           11: {"x": b"no input here"}}
    writer = bus.Bus(redis_client, MAIN)
    for n, inp in enumerate(inputs):
        if n in bad:
            await redis_client.xadd(keys.raw_stream(MAIN), bad[n])
        await writer.append_input(inp)  # what ingest stores (icetime.messages.stored)
    expected = Competition()
    for n, inp in enumerate(inputs):
        feed(expected, str(n), inp)
    assert expected.stats["refused"] == 0

    async def scored(applied):
        """Wait until scoring has written its counters for ``applied`` inputs."""
        async with asyncio.timeout(20):
            while True:
                stats = await restarts.scoring_health(redis_client, MAIN)
                if stats.get("applied") == applied:
                    return stats
                await asyncio.sleep(0.05)

    st = Stack(make_settings(redis_server.url), redis_server.url)
    try:
        await st.start("scoring")
        stats = await scored(len(inputs))
        assert stats["refused"] == len(bad)
        reasons = [r.getMessage() for r in caplog.records if r.name == runner.log.name
                   and r.getMessage().startswith("input refused")]
        assert len(reasons) == len(bad), reasons
        assert sum("not a valid input" in r for r in reasons) == 3, reasons
        assert any("Object contains unknown field `colour`" in r for r in reasons), reasons
        assert any("without its input" in r for r in reasons), reasons
        snap = await race_view(redis_client, RACE)
        assert without_inputs(snap) == without_inputs(json.loads(bus.dumps(expected.view(RACE))))
        assert len(snap["classification"]["bib"]) == 4
        pending = await redis_client.xpending(keys.raw_stream(MAIN), keys.SCORING_GROUP)
        assert pending["pending"] == 0
        # A new life rebuilds from the raw log, refusing the same entries again on the way.
        await st.stop("scoring")
        await st.start("scoring")
        await writer.append_input({"type": "decision", "race": RACE, "action": "official",
                                   "source": "officials", "seq": 1, "rx_us": 999})
        stats = await scored(len(inputs) + 1)
        assert stats["refused"] == len(bad)
        # That life rebuilt from the whole log (no checkpoint yet: the first life saw
        # too few inputs), said so for /api/health and the desk.
        assert stats["rebuilds"] == 1, stats
        assert stats["last_rebuild"]["source"] == "start"
        assert stats["last_rebuild"]["inputs"] == len(inputs) + len(bad)
        snap = await race_view(redis_client, RACE)
        assert snap["race"]["official"] is True
    finally:
        await st.close()


async def test_health_latency_counts_events_a_client_got_in_its_catch_up(stack):
    """Events published while no client of the node follows the race are delivered in
    the next client's catch-up: the node's latency counts them then, each once (a second
    client catching up the same events adds nothing)."""
    await load_startlist(stack)
    first = Follower(stack.ws_url)
    await first.run(lambda f: f.view is not None)  # then it leaves: nobody follows
    await replay(FIXTURE, stack.settings, speed=SPEED, announce=False)

    async def health() -> tuple[dict, float]:
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{stack.http}/api/health") as resp:
                latency = (await resp.json())["latency"]
            async with s.get(f"{stack.http}/metrics") as resp:
                text = await resp.text()
        count = re.search(r'^icetime_hop_latency_seconds_count\{hop="source_broadcast"\} (\S+)$',
                          text, re.M)
        return latency, float(count[1]) if count else 0.0

    assert (await health())[0]["events"] == 0
    view, offset, epoch = copy.deepcopy(first.view), first.offset, first.epoch
    await first.run(lambda f: f.finished(), resume=True)
    assert first.frames[-len(first.events) - 1]["type"] == "resumed"
    latency, counted = await health()
    assert latency["events"] == min(50, len(first.events)) and latency["median_ms"] is not None
    assert counted == len(first.events) > 50
    second = Follower(stack.ws_url)
    second.view, second.offset, second.epoch = view, offset, epoch
    await second.run(lambda f: f.finished(), resume=True, timeout=10)
    assert len(second.events) == len(first.events)
    assert (await health())[1] == counted


async def test_a_start_list_giving_a_bib_to_another_skater_is_refused_over_http(
        stack, redis_client):
    """In one competition a bib is one skater (docs/startlist.md): a second start list
    (the small marathon, bibs 1-40) that gives the 1000 m's bibs to other skaters is
    answered ``400`` with scoring's reason, counted, on the officials' stream, and
    changes nothing; with bibs of their own its skaters load."""
    marathon = load_fixture(Path(__file__).parents[1] / "fixtures" /
                            "marathon_ae200_small.json")["startlist"]
    await load_startlist(stack)
    url = f"http://127.0.0.1:{stack.settings.ingest_http_port}/api/startlist"
    auth = {"Authorization": f"Bearer {TOKENS['officials']}"}
    first = FIXTURE["startlist"]["skaters"][0]
    reason = (f"skaters[0]: bib 1 is {first['name']} in this competition (race {RACE}), "
              f"not {marathon['skaters'][0]['name']}: a bib is one skater in a "
              f"competition. Give {marathon['skaters'][0]['name']} another bib, or load "
              "this start list into a competition of its own (an icetime configured with "
              "another competition.id; the file's own competition id does not choose it); "
              "nothing of it was applied")
    async with aiohttp.ClientSession() as s:
        async with s.post(url, json=marathon, headers=auth) as resp:
            assert resp.status == 400
            answer = await resp.json()
        assert answer["verdict"] == "refused"
        assert answer["error"] == f"refused by scoring: {reason}"
        async with asyncio.timeout(10):  # the counters are published after the verdict
            while (await restarts.scoring_health(redis_client, MAIN)).get("refused") != 1:
                await asyncio.sleep(0.02)
        [*_, last] = [json.loads(f[b"v"]) for _, f in
                      await redis_client.xrange(keys.officials_stream(MAIN))]
        assert (last["type"], last["verdict"], last["reason"]) == (
            "startlist", "refused", reason)
        assert await redis_client.exists(keys.events_stream(MAIN, "ae200")) == 0
        # The same skaters on bibs of their own ("m1"...): loaded beside the 1000 m.
        own = copy.deepcopy(marathon)
        for sk in own["skaters"]:
            sk["bib"] = f"m{sk['bib']}"
        for wave in own["races"][0]["waves"]:
            wave["skaters"] = [f"m{b}" for b in wave["skaters"]]
        async with s.post(url, json=own, headers=auth) as resp:
            assert resp.status == 200 and (await resp.json())["verdict"] == "applied"
    view = await race_view(redis_client, RACE)
    assert view is not None
    assert view["skaters"]["1"]["name"] == first["name"]
