"""One race a broadcast node reads: its position, its epoch, its subscribers, and
the live path that writes each new event to them.

Each new frame is encoded to bytes once and written to every live connection
synchronously, every frame of one read in one write per connection
(:meth:`RaceFeed.fan_out`: straight to the transport of a plain protocol-2 connection,
looked up once per client; :func:`services.broadcast.frames.write_frames` for any
other subscriber), so one slow client costs the others nothing and a reader that is
behind catches up with one system call per client (docs/delivery.md).

Protocol versions: events are stored in protocol 2's names and sent as they are to
protocol-2 clients. A protocol-1 client (docs/protocol.md, "Protocol versions") gets
them in the old names and, as protocol 1 had them, with the whole pack state and
classification: while protocol-1 clients follow a race, its feed keeps one fold of it
(``compat.Legacy``, started from the stored snapshot and the events after it) that
makes the protocol-1 frame once per event.
"""
from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable

import redis.asyncio as aioredis
from websockets.protocol import State

from icetime import bus, keys
from icetime.timefmt import now_us

from . import compat
from .frames import LATEST, ZERO, event_frame, event_json, stored_view, wire_frames, write_frames
from .subscription import Subscription

log = logging.getLogger(__name__)

#: Told of each event a node fans out: (event JSON, broadcast µs); the metrics use it.
Observer = Callable[[str, int], None]


class RaceCounters:
    """What ``/api/health`` counts per race; kept by the hub for every race this node
    has read (real races only, so a bounded set) after its reading ends."""

    __slots__ = ("frames", "frames_v1", "fell_behind", "observed")

    def __init__(self) -> None:
        #: The last event (stream id) whose latency this node recorded: each event
        #: counts once, whether it went out live or in a client's catch-up.
        self.observed = ZERO
        self.frames = 0
        #: Live frames translated for protocol-1 clients (one per event while any follows).
        self.frames_v1 = 0
        #: Times a live client left the live path (too much unsent).
        self.fell_behind = 0


class RaceFeed:
    """One race this node reads: its position, its epoch and its subscribers.

    Read by the :class:`Hub`'s reader; ``refs`` counts the subscriptions holding it
    (including ones still starting), and the hub forgets it when that reaches 0."""

    def __init__(self, r: aioredis.Redis, competition: str, race: str,
                 counters: RaceCounters | None = None,
                 observe: Observer | None = None) -> None:
        self.r = r
        self.competition = competition
        #: Called with each live event (its JSON) and the time it was framed (µs).
        self.observe = observe
        self.race = race
        self.stream = keys.events_stream(competition, race)
        #: The race's clients in the order they subscribed (a dict: ordered, unlike a
        #: set): each frame goes out first come, first served, and on one machine the
        #: writes to one client process come together (it is woken once, not per write).
        self.subs: dict[Subscription, None] = {}
        self.position = "0-0"
        self.epoch = ""
        self.refs = 0
        #: Set once ``position`` and ``epoch`` are loaded: the reader reads it from then on.
        self.ready = False
        self.loading: asyncio.Task[None] | None = None
        self.counters = counters or RaceCounters()
        #: The race folded for protocol-1 clients, at ``position``, while any follows.
        self.legacy: compat.Legacy | None = None
        self.warming: asyncio.Task[None] | None = None

    async def warm_legacy(self) -> compat.Legacy:
        """The race's fold for protocol-1 clients, at ``position``: made once from the
        stored snapshot and the events after it, then kept by :meth:`fan_out` (one fold
        per race, however many protocol-1 clients). Raises RedisError."""
        while self.legacy is None:
            if self.warming is None or self.warming.done():
                self.warming = asyncio.create_task(self._warm())
            await asyncio.shield(self.warming)
        return self.legacy

    async def _warm(self) -> None:
        epoch = self.epoch
        view, offset = await stored_view(self.r, self.competition, self.race)
        fold = compat.Legacy(view, offset)
        while fold.offset != bus.parse_id(self.position):
            if fold.offset > bus.parse_id(self.position):
                # The stored snapshot is ahead of this node's reader: it catches up.
                await asyncio.sleep(0.01)
                continue
            entries = bus.entries(await self.r.xrange(
                self.stream, f"({fold.offset[0]}-{fold.offset[1]}", self.position, count=500))
            if not entries:
                break
            for sid, fields in entries:
                fold.event(bus.parse_id(sid), json.loads(event_json(fields)))
        if epoch == self.epoch:
            self.legacy = fold

    async def load(self) -> None:
        """Start from the stream's end: what is already there reaches a client through
        its snapshot and catch-up, straight from Redis. Raises RedisError."""
        self.position = await self.last_id()
        self.epoch = bus.text(await self.r.get(keys.epoch_key(self.competition, self.race)))
        self.ready = True

    async def last_id(self) -> str:
        """The id of the stream's last event; "0-0" for an empty stream."""
        last = bus.entries(await self.r.xrevrange(self.stream, "+", "-", count=1))
        return last[0][0] if last else "0-0"

    async def set_epoch(self, epoch: str) -> None:
        """The race's epoch as stored now; a new one makes every client resync."""
        if not self.epoch:
            # The race's stream has just been created: its first epoch, not a new one.
            self.epoch = epoch
            return
        if epoch != self.epoch:
            log.info("race %s: epoch %r -> %r, clients resync", self.race, self.epoch, epoch)
            self.epoch = epoch
            self.legacy = None
            self.position = await self.last_id()
            for sub in list(self.subs):
                sub.last = ZERO
                sub.resync()

    def deliver(self, entries: list[tuple[str, bus.Fields | None]]) -> None:
        """Fan out stream entries read after ``position``, in order: all of them at
        once (:meth:`fan_out`), so a reader that is behind catches up in one write
        per client."""
        batch: list[tuple[tuple[int, int], str]] = []
        position = bus.parse_id(self.position)
        for sid, fields in entries:
            sid_t = bus.parse_id(sid)
            if sid_t <= position:
                continue
            text, at = event_json(fields), now_us()
            self.observed(sid_t, text, at)
            batch.append((sid_t, event_frame(self.race, self.epoch, sid, text, at)))
            self.position, position = sid, sid_t
        if batch:
            self.fan_out(batch)

    def observed(self, sid: tuple[int, int], text: str, at: int) -> None:
        """Record the latency of event ``sid`` (its JSON ``text``, framed at ``at`` µs)
        unless this node recorded it already: an event published while no client of
        this node followed the race counts when a client's catch-up sends it."""
        if self.observe is not None and sid > self.counters.observed:
            self.counters.observed = sid
            self.observe(text, at)

    def fan_out(self, batch: list[tuple[tuple[int, int], str]]) -> None:
        """Write frames ((stream id, protocol-2 frame), in order) to every live client
        at once; queue them for the others.

        Each protocol version's frames are encoded once, the protocol-1 ones only when a
        protocol-1 client is there to take them (from the race's one legacy fold). A live
        client gets the frames after its ``last`` (all of them, unless its catch-up already
        read some) in one write."""
        self.counters.frames += len(batch)
        frames: dict[int, list[str]] = {LATEST: [f for _, f in batch]}
        if self.legacy is not None:
            # Folded at every event while it is kept: it stays at this feed's position.
            frames[1] = [self.legacy.frame(sid_t, f) for sid_t, f in batch]
            self.counters.frames_v1 += len(batch)
        first, last = batch[0][0], batch[-1][0]
        wire, open_ = wire_frames([t.encode() for t in frames[LATEST]]), State.OPEN
        others = []
        for sub in self.subs:
            # The common case, kept to a few steps per client: live, protocol 2, a plain
            # connection, due every frame of the batch.
            if sub.live and sub.direct is not None and first > sub.last:
                write, unsent, protocol = sub.direct
                if unsent() > sub.buffer_max:
                    sub.fall_behind()
                    continue
                if protocol.state is open_:  # not once the closing handshake has begun
                    write(wire)
                sub.last = last
            else:
                others.append(sub)
        if others:
            self.fan_out_others(others, batch, frames)

    def fan_out_others(self, subs: list[Subscription], batch: list[tuple[tuple[int, int], str]],
                       frames: dict[int, list[str]]) -> None:
        """:meth:`fan_out` to the clients off its common case: queued for those not live,
        written through :func:`write_frames` to the others (grouped by protocol and
        first frame due), and a resync for a protocol-1 client while its frames cannot
        be made."""
        # (protocol, index of the first frame due) -> the live clients it fits
        live: dict[tuple[int, int], list[Subscription]] = {}
        first, last = batch[0][0], batch[-1][0]
        for sub in subs:
            texts = frames.get(sub.protocol)
            if texts is None:
                sub.resync()  # protocol 1 while the race's fold is made again (a new epoch)
                continue
            if not sub.live:
                for (sid_t, _), text in zip(batch, texts, strict=True):
                    sub.offer(sid_t, text)
            elif last > sub.last:
                if sub.buffered() > sub.buffer_max:
                    sub.fall_behind()
                    continue
                start = 0 if first > sub.last else next(
                    i for i, (sid_t, _) in enumerate(batch) if sid_t > sub.last)
                live.setdefault((sub.protocol, start), []).append(sub)
                sub.last = last
        for (protocol, start), live_subs in live.items():
            write_frames([s.ws for s in live_subs],
                         [t.encode() for t in frames[protocol][start:]])
