"""One client following one race: its snapshot, its resume, its own queue until live.

A client that is catching up (a snapshot, a resume) gets frames through its own
bounded queue and sender task (:class:`Subscription`) until it is *live*; from then on
its race's feed writes to it directly (:meth:`services.broadcast.racefeed.RaceFeed.fan_out`).
A live client whose unsent bytes pile up past a bound (a slow phone) leaves the live
set; once its connection drains it gets a fresh snapshot instead of the backlog: latest
state wins.

Resume: a client that says (epoch, offset) gets exactly the events after
``offset`` when the epoch still matches and the stream still holds them;
otherwise a snapshot (docs/delivery.md).

A protocol-1 client (docs/protocol.md, "Protocol versions") gets its snapshot from its
race's protocol-1 fold (``compat.Legacy``), and a protocol-1 resume its missed events
with the fold's state as it is then (latest state wins).
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from icetime import bus
from icetime.timefmt import now_us

from . import compat
from .frames import LATEST, ZERO, Sender, direct_writer, event_frame, event_json, snapshot_frame

if TYPE_CHECKING:
    from .racefeed import RaceFeed

log = logging.getLogger(__name__)
#: How often a client's resync is tried again while Redis is away, s.
RESYNC_RETRY_S = 0.5


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
        #: Set once the hub has let go of it (:meth:`Hub.unsubscribe`).
        self.released = False
        #: How the live path writes to this client without per-frame checks of the
        #: connection's kind (:func:`direct_writer`); None: through :func:`write_frames`.
        self.direct = direct_writer(ws) if protocol == LATEST else None

    def buffered(self) -> int:
        """Bytes written to this client that the network has not taken yet."""
        transport = getattr(self.ws, "transport", None)
        return transport.get_write_buffer_size() if transport is not None else 0

    def fall_behind(self) -> None:
        """Too much unsent: stop writing live frames; resync from a snapshot later."""
        self.live = False
        self.fell_behind += 1
        self.feed.counters.fell_behind += 1
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
        if self.protocol != LATEST:
            # The race's protocol-1 fold, as it stands: what follows it comes live.
            legacy = await self.feed.warm_legacy()
            self.last = legacy.offset
            await self.ws.send(legacy.snapshot(self.feed.race, self.feed.epoch))
            self.needs_snapshot = False
            return
        frame, offset, _ = await snapshot_frame(self.feed.r, self.feed.competition,
                                                self.feed.race)
        await self.ws.send(self.encode(frame))
        self.last = offset
        self.needs_snapshot = False

    async def catch_up(self) -> None:
        """Send what the stream holds after ``last``, straight from Redis (protocol 1:
        nothing, its snapshot comes from the race's fold and the rest live)."""
        if self.protocol != LATEST:
            return
        start = f"({self.last[0]}-{self.last[1]}"
        while True:
            entries = bus.entries(
                await self.feed.r.xrange(self.feed.stream, start, "+", count=500))
            for sid, fields in entries:
                text, at = event_json(fields), now_us()
                self.feed.observed(bus.parse_id(sid), text, at)
                await self.ws.send(self.encode(event_frame(self.feed.race, self.feed.epoch,
                                                           sid, text, at)))
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
                try:
                    await self.send_snapshot()
                    await self.catch_up()
                except RedisError as exc:
                    # Redis is away (the hub's reader logs it): try again, from a
                    # snapshot, until it is back.
                    log.debug("race %s: resync failed, retrying: %s", self.feed.race, exc)
                    self.needs_snapshot = True
                    await asyncio.sleep(RESYNC_RETRY_S)
                    continue
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

    async def resume_v1(self, target: tuple[int, int]) -> None:
        """Protocol 1: send the events after ``last`` up to ``target`` (where the race's
        fold stood when this client joined; the rest comes live), each with the pack
        state and classification as the race's fold has them now: latest state wins,
        and after the last of them the client holds the race as it is. Raises
        RedisError."""
        legacy = await self.feed.warm_legacy()
        while self.last < target:
            entries = bus.entries(await self.feed.r.xrange(
                self.feed.stream, f"({self.last[0]}-{self.last[1]}",
                f"{target[0]}-{target[1]}", count=500))
            if not entries:
                return
            for sid, fields in entries:
                msg = json.loads(event_frame(self.feed.race, self.feed.epoch, sid,
                                             event_json(fields)))
                await self.ws.send(bus.dumps({**msg, "event": legacy.whole(msg["event"])}))
                self.last = bus.parse_id(sid)

    async def start_v1(self, epoch: str | None, offset: str | None) -> str:
        """:meth:`start` for a protocol-1 client: the race's fold first."""
        legacy = await self.feed.warm_legacy()
        self.feed.subs[self] = None  # nothing awaited since: the fold is at the feed's position
        target = legacy.offset
        how = "snapshot"
        if epoch and offset and epoch == self.feed.epoch and bus.valid_id(offset) \
                and bus.parse_id(offset) <= target:
            first = bus.entries(await self.feed.r.xrange(self.feed.stream, "-", "+", count=1))
            if first and bus.parse_id(first[0][0]) <= bus.parse_id(offset):
                self.last = bus.parse_id(offset)
                how = "resumed"
        if how == "snapshot":
            await self.send_snapshot()
        else:
            await self.ws.send(bus.dumps({"type": "resumed", "race": self.feed.race,
                                          "epoch": self.feed.epoch, "offset": offset}))
            await self.resume_v1(target)
        self.task = asyncio.create_task(self.run())
        return how

    async def start(self, epoch: str | None, offset: str | None) -> str:
        """Bring the client up to date, then follow live. Returns "resumed" or "snapshot"."""
        if self.protocol != LATEST:
            return await self.start_v1(epoch, offset)
        self.feed.subs[self] = None  # first, so nothing published from now on is missed
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
        self.feed.subs.pop(self, None)
        if self.protocol != LATEST and all(s.protocol == LATEST for s in self.feed.subs):
            self.feed.legacy = None  # the last protocol-1 client: stop folding
        if self.task:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
