"""Fan-out of race events to WebSocket clients, with exact resume.

One :class:`RaceFeed` per race read by this node: a task doing plain XREAD from
the node's own position (every node reads every event), which encodes each
event once into a frame and offers it to every :class:`Subscription`.

A client that is up to date is *live*: each new frame is encoded to bytes once
and written to every live connection synchronously (``websockets.broadcast``),
so one slow client costs the others nothing. A client that is catching up (a
snapshot, a resume) gets frames through its own bounded queue and sender task
until it is live. A live client whose unsent bytes pile up past a bound (a slow
phone) leaves the live set; once its connection drains it gets a fresh snapshot
instead of the backlog: latest state wins.

Resume: a client that says (epoch, offset) gets exactly the events after
``offset`` when the epoch still matches and the stream still holds them;
otherwise a snapshot (docs/delivery.md).

Protocol versions: events are stored in protocol 2's names and sent as they are to
protocol-2 clients. A protocol-1 client (docs/protocol.md, "Protocol versions") gets
them through ``compat.to_v1``; on the live path the protocol-1 frame is made once per
event, and only when a protocol-1 client follows the race.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from websockets.asyncio.server import broadcast
from websockets.frames import Frame, Opcode
from websockets.protocol import State

from icetime import bus, keys
from icetime.timefmt import now_us

from . import compat

log = logging.getLogger(__name__)
ZERO = (0, 0)
#: The WebSocket protocol versions served: 2, and 1 (old names) until the next release.
PROTOCOLS = (1, 2)
LATEST = 2


class Sender(Protocol):
    async def send(self, message: str) -> None: ...


def write_all(connections: list[Any], payload: bytes) -> None:
    """Send one text message to many connections, serialising the frame once.

    A server's text frame is unmasked, and with no extensions negotiated (the
    server runs with compression off) it is the same bytes for every client, so
    the frame is built once and written to each open connection's transport.
    Anything else goes through ``websockets.broadcast``, which frames per
    connection. A frame is written whole in one call, so it cannot interleave
    with the library's own frames (pings, close).
    """
    wire = Frame(Opcode.TEXT, payload).serialize(mask=False, extensions=[])
    others = []
    for ws in connections:
        protocol = getattr(ws, "protocol", None)
        if protocol is None or protocol.extensions or ws.send_in_progress is not None:
            others.append(ws)
        elif protocol.state is State.OPEN:
            ws.transport.write(wire)
    if others:
        broadcast(others, payload, text=True)


def event_frame(race: str, epoch: str, sid: str, event_json: str) -> str:
    """Wrap an event as stored (already JSON) without decoding it again."""
    return (f'{{"type":"event","race":{json.dumps(race)},"epoch":{json.dumps(epoch)},'
            f'"offset":"{sid}","broadcast_us":{now_us()},"event":{event_json}}}')


def event_json(fields: bus.Fields | None) -> str:
    """The event an events-stream entry holds (JSON text, field ``e``). Raises
    KeyError for an entry without one: scoring writes none such."""
    return (fields or {})[b"e"].decode()


async def snapshot_frame(r: aioredis.Redis, race: str) -> tuple[str, tuple[int, int], str]:
    """The race's stored snapshot as a frame; (frame, offset, epoch)."""
    snap = await r.hgetall(keys.snapshot_key(race))
    if not snap:
        epoch = bus.text(await r.get(keys.epoch_key(race)))
        frame = bus.dumps({"type": "snapshot", "race": race, "epoch": epoch, "offset": "0-0",
                           "view": None})
        return frame, ZERO, epoch
    offset = bus.text(snap[b"offset"])
    epoch = bus.text(snap[b"epoch"])
    frame = (f'{{"type":"snapshot","race":{json.dumps(race)},"epoch":{json.dumps(epoch)},'
             f'"offset":"{offset}","view":{bus.text(snap[b"view"])}}}')
    return frame, bus.parse_id(offset), epoch


class Subscription:
    """One client following one race."""

    def __init__(self, ws: Sender, feed: RaceFeed, queue_max: int, buffer_max: int,
                 protocol: int = LATEST) -> None:
        self.ws = ws
        self.feed = feed
        #: The protocol version this client speaks (1: the old field names).
        self.protocol = protocol
        self.queue: deque[tuple[tuple[int, int], str]] = deque()
        self.queue_max = queue_max
        self.buffer_max = buffer_max
        self.last = ZERO
        self.wake = asyncio.Event()
        self.needs_snapshot = False
        self.live = False
        self.task: asyncio.Task[None] | None = None
        self.fell_behind = 0

    def buffered(self) -> int:
        """Bytes written to this client that the network has not taken yet."""
        transport = getattr(self.ws, "transport", None)
        return transport.get_write_buffer_size() if transport is not None else 0

    def fall_behind(self) -> None:
        """Too much unsent: stop writing live frames; resync from a snapshot later."""
        self.live = False
        self.fell_behind += 1
        self.resync()

    def offer(self, sid: tuple[int, int], frame: str) -> None:
        if sid <= self.last:
            return
        if len(self.queue) >= self.queue_max:
            self.queue.clear()
            self.needs_snapshot = True
        else:
            self.queue.append((sid, frame))
        self.wake.set()

    def resync(self) -> None:
        self.live = False
        self.queue.clear()
        self.needs_snapshot = True
        self.wake.set()

    def encode(self, frame: str) -> str:
        """A protocol-2 frame in this client's protocol."""
        return frame if self.protocol == LATEST else compat.text_v1(frame)

    async def send_snapshot(self) -> None:
        frame, offset, _ = await snapshot_frame(self.feed.r, self.feed.race)
        await self.ws.send(self.encode(frame))
        self.last = offset
        self.needs_snapshot = False

    async def catch_up(self) -> None:
        """Send what the stream holds after ``last``, straight from Redis."""
        start = f"({self.last[0]}-{self.last[1]}"
        while True:
            entries = bus.entries(
                await self.feed.r.xrange(self.feed.stream, start, "+", count=500))
            for sid, fields in entries:
                await self.ws.send(self.encode(event_frame(self.feed.race, self.feed.epoch,
                                                           sid, event_json(fields))))
                self.last = bus.parse_id(sid)
            if len(entries) < 500:
                return
            start = "(" + entries[-1][0]

    async def run(self) -> None:
        """Catch up whenever needed, then hand the client to the live path."""
        while True:
            if self.needs_snapshot:
                # Wait until the client reads again: a snapshot sent into a full
                # buffer would only go stale there too. A dead client is closed by
                # the keepalive pings, which ends this task.
                while self.buffered() > self.buffer_max // 4:
                    await asyncio.sleep(0.05)
                self.queue.clear()
                await self.send_snapshot()
                await self.catch_up()
            while self.queue:
                sid, frame = self.queue.popleft()
                if sid > self.last:
                    await self.ws.send(frame)
                    self.last = sid
            if not self.needs_snapshot:
                # Nothing is awaited between the last queued frame and this line,
                # so no frame can slip between the queue and the live path.
                self.live = True
            await self.wake.wait()
            self.wake.clear()

    async def start(self, epoch: str | None, offset: str | None) -> str:
        """Bring the client up to date, then follow live. Returns "resumed" or "snapshot"."""
        self.feed.subs.add(self)  # first, so nothing published from now on is missed
        how = "snapshot"
        if epoch and offset and epoch == self.feed.epoch and bus.valid_id(offset):
            first = bus.entries(await self.feed.r.xrange(self.feed.stream, "-", "+", count=1))
            wanted = bus.parse_id(offset)
            if first and bus.parse_id(first[0][0]) <= wanted or not first and wanted == ZERO:
                self.last = wanted
                how = "resumed"
        if how == "snapshot":
            await self.send_snapshot()
        else:  # announce the resume point; the missed events follow
            await self.ws.send(bus.dumps({"type": "resumed", "race": self.feed.race,
                                          "epoch": self.feed.epoch,
                                          "offset": f"{self.last[0]}-{self.last[1]}"}))
        await self.catch_up()
        self.task = asyncio.create_task(self.run())
        return how

    async def stop(self) -> None:
        self.live = False
        self.feed.subs.discard(self)
        if self.task:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task


class RaceFeed:
    """This node's reader of one race's event stream."""

    def __init__(self, r: aioredis.Redis, race: str) -> None:
        self.r = r
        self.race = race
        self.stream = keys.events_stream(race)
        self.subs: set[Subscription] = set()
        self.position = "0-0"
        self.epoch = ""
        self.task: asyncio.Task[None] | None = None
        self.frames = 0
        #: Live frames translated for protocol-1 clients (one per event while any follows).
        self.frames_v1 = 0

    async def last_id(self) -> str:
        """The id of the stream's last event; "0-0" for an empty stream."""
        last = bus.entries(await self.r.xrevrange(self.stream, "+", "-", count=1))
        return last[0][0] if last else "0-0"

    async def start(self) -> None:
        self.position = await self.last_id()
        self.epoch = bus.text(await self.r.get(keys.epoch_key(self.race)))
        self.task = asyncio.create_task(self.read_loop())

    async def check_epoch(self) -> None:
        epoch = bus.text(await self.r.get(keys.epoch_key(self.race)))
        if not self.epoch:
            # The race's stream has just been created: its first epoch, not a new one.
            self.epoch = epoch
            return
        if epoch != self.epoch:
            log.info("race %s: epoch %r -> %r, clients resync", self.race, self.epoch, epoch)
            self.epoch = epoch
            self.position = await self.last_id()
            for sub in list(self.subs):
                sub.last = ZERO
                sub.resync()

    async def read_loop(self) -> None:
        while True:
            try:
                resp = await self.r.xread({self.stream: self.position}, count=500, block=1000)
                if not resp:
                    await self.check_epoch()
                    continue
                if not self.epoch:
                    await self.check_epoch()
                for sid, fields in bus.read_entries(resp):
                    self.fan_out(sid, event_frame(self.race, self.epoch, sid, event_json(fields)))
                    self.position = sid
            except RedisError as exc:
                log.error("race %s: redis error, retrying: %s", self.race, exc)
                await asyncio.sleep(0.5)

    def fan_out(self, sid: str, frame: str) -> None:
        """Write a frame to every live client at once; queue it for the others.

        Each protocol version's frame is encoded once, the protocol-1 one only when a
        protocol-1 client is there to take it."""
        self.frames += 1
        sid_t = bus.parse_id(sid)
        frames = {LATEST: frame}
        live: dict[int, list[Subscription]] = {}
        for sub in self.subs:
            text = frames.get(sub.protocol)
            if text is None:
                text = frames[sub.protocol] = compat.text_v1(frame)
                self.frames_v1 += 1
            if not sub.live:
                sub.offer(sid_t, text)
            elif sid_t > sub.last:
                if sub.buffered() > sub.buffer_max:
                    sub.fall_behind()
                else:
                    live.setdefault(sub.protocol, []).append(sub)
                    sub.last = sid_t
        for protocol, subs in live.items():
            write_all([s.ws for s in subs], frames[protocol].encode())

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


class Hub:
    """All race feeds of this node."""

    def __init__(self, r: aioredis.Redis, queue_max: int = 512,
                 buffer_max: int = 256 * 1024) -> None:
        self.r = r
        self.queue_max = queue_max
        self.buffer_max = buffer_max
        self.feeds: dict[str, RaceFeed] = {}
        self._lock = asyncio.Lock()

    async def feed(self, race: str) -> RaceFeed:
        async with self._lock:
            feed = self.feeds.get(race)
            if feed is None:
                feed = self.feeds[race] = RaceFeed(self.r, race)
                await feed.start()
            return feed

    async def subscribe(self, ws: Sender, race: str, epoch: str | None = None,
                        offset: str | None = None, protocol: int = LATEST
                        ) -> tuple[Subscription, str]:
        """Follow ``race`` from a snapshot, or resume after (``epoch``, ``offset``);
        frames in ``protocol`` (1 or 2). Returns the subscription and "snapshot" or
        "resumed"."""
        sub = Subscription(ws, await self.feed(race), self.queue_max, self.buffer_max,
                           protocol)
        how = await sub.start(epoch, offset)
        return sub, how

    def clients(self) -> int:
        return sum(len(f.subs) for f in self.feeds.values())

    async def close(self) -> None:
        for f in self.feeds.values():
            for s in list(f.subs):
                await s.stop()
            await f.stop()

    def stats(self) -> dict[str, Any]:
        return {"clients": self.clients(),
                "races": {r: {"clients": len(f.subs), "frames": f.frames,
                              "frames_v1": f.frames_v1, "epoch": f.epoch,
                              "position": f.position,
                              "fell_behind": sum(s.fell_behind for s in f.subs)}
                          for r, f in self.feeds.items()}}
