"""Fan-out of race events to WebSocket clients, with exact resume.

One :class:`RaceFeed` per race this node's clients follow, and ONE reader task per
competition they follow (:class:`Reader`, kept by the :class:`Hub`): a single
multi-stream XREAD over every followed race of that competition, from the node's own
positions (every node reads every event). A competition's keys share one Redis
Cluster slot (icetime/keys.py), so one blocking XREAD may name them all on a cluster
too. It encodes each event once into a frame and offers it to every
:class:`Subscription`. A race is read while it has a subscriber and forgotten when its
last one leaves; a reader holds one Redis connection however many races and clients
there are. A race the node starts to read wakes its competition's blocking XREAD at
once through the node's own wake-up stream in that competition
(:func:`icetime.keys.broadcast_wake_stream`).

Only races that exist (in their competition's :func:`icetime.keys.races_set`, where
scoring lists every race it has published) can be followed: :meth:`Hub.exists`. A
race is named by its id, and by its competition when the id alone is not enough
(:meth:`Hub.locate`, docs/protocol.md "Competitions").

A client that is up to date is *live*: each new frame is encoded to bytes once
and written to every live connection synchronously, every frame of one read in one
write per connection (:meth:`RaceFeed.fan_out`: straight to the transport of a plain
protocol-2 connection, looked up once per client; :func:`write_frames` for any other
subscriber), so one slow client costs the others
nothing and a reader that is behind catches up with one system call per client. A
client that is catching up (a snapshot, a resume) gets frames through its own bounded
queue and sender task until it is live. A live client whose unsent bytes pile up past
a bound (a slow phone) leaves the live set; once its connection drains it gets a fresh
snapshot instead of the backlog: latest state wins.

Resume: a client that says (epoch, offset) gets exactly the events after
``offset`` when the epoch still matches and the stream still holds them;
otherwise a snapshot (docs/delivery.md).

Protocol versions: events are stored in protocol 2's names and sent as they are to
protocol-2 clients. A protocol-1 client (docs/protocol.md, "Protocol versions") gets
them in the old names and, as protocol 1 had them, with the whole pack state and
classification: while protocol-1 clients follow a race, its feed keeps one fold of it
(``compat.Legacy``, started from the stored snapshot and the events after it) that
makes the protocol-1 frame once per event; such a client gets its snapshot from that
fold, and a protocol-1 resume its missed events with the fold's state as it is then
(latest state wins).
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from typing import Any, Protocol, cast

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from websockets.asyncio.server import broadcast
from websockets.frames import Frame, Opcode
from websockets.protocol import State

from icetime import bus, keys
from icetime.timefmt import now_us
from services.scoring.standings import STANDINGS_ID

from . import compat

log = logging.getLogger(__name__)
ZERO = (0, 0)
#: The WebSocket protocol versions served: 2, and 1 (old names) until the next release.
PROTOCOLS = (1, 2)
LATEST = 2
#: How long the reader's XREAD blocks (ms) when no event and no wake-up comes; epochs
#: are checked at least this often.
BLOCK_MS = 1000
#: Entries per stream per XREAD.
READ_COUNT = 500
#: How long a subscribe to a race not listed yet waits for scoring to reach the end of
#: the raw log as it stood (a start list ingest has just said "ok" to), in seconds.
SCORING_WAIT_S = 2.0
#: How often that wait polls scoring's progress mark (one poll for all waiters), s.
SCORING_POLL_S = 0.02
#: How often a client's resync is tried again while Redis is away, s.
RESYNC_RETRY_S = 0.5


class Sender(Protocol):
    async def send(self, message: str) -> None: ...


#: Told of each event a node fans out: (event JSON, broadcast µs); the metrics use it.
Observer = Callable[[str, int], None]


def write_all(connections: list[Any], payload: bytes) -> None:
    """Send one text message to many connections, serialising the frame once
    (:func:`write_frames` with one payload)."""
    write_frames(connections, [payload])


def write_frames(connections: list[Any], payloads: list[bytes]) -> None:
    """Send text messages, in order, to many connections, serialising each frame once
    and writing them to each connection in ONE call.

    A server's text frame is unmasked, and with no extensions negotiated (the
    server runs with compression off) it is the same bytes for every client, so
    the frames are built once and written to each open connection's transport: one
    system call per client however many frames (the kernel's work per call, not the
    bytes, is most of a fan-out's cost). Anything else goes through
    ``websockets.broadcast``, which frames per connection; a subscriber inside the
    node (no ``protocol``, a ``take`` method, such as the RMonitor feed) gets the
    payloads themselves. The frames are written whole in one call, so they cannot
    interleave with the library's own frames (pings, close).
    """
    wire = wire_frames(payloads)
    others = []
    open_ = State.OPEN
    for ws in connections:
        protocol = getattr(ws, "protocol", None)
        if protocol is None or protocol.extensions or ws.send_in_progress is not None:
            others.append(ws)
        elif protocol.state is open_:
            ws.transport.write(wire)
    takers = [ws for ws in others if getattr(ws, "protocol", None) is None
              and hasattr(ws, "take")]  # subscribers inside this node (the RMonitor feed)
    rest = [ws for ws in others if ws not in takers]
    for payload in payloads:
        for ws in takers:
            ws.take(payload)
        if rest:
            broadcast(rest, payload, text=True)


def wire_frames(payloads: list[bytes]) -> bytes:
    """Text messages as a server sends them without extensions (unmasked frames, the
    same bytes for every such client), in order."""
    return b"".join(Frame(Opcode.TEXT, p).serialize(mask=False, extensions=[])
                    for p in payloads)


#: How the live path writes to a plain connection: its transport's ``write`` and
#: ``get_write_buffer_size`` (bound once) and its sans-I/O protocol (for its state).
Direct = tuple[Callable[[bytes], object], Callable[[], int], Any]


def direct_writer(ws: Sender) -> Direct | None:
    """How the live path may write frames from :func:`wire_frames` straight to ``ws``:
    a ``websockets`` connection with no extension negotiated (fixed at its handshake);
    else None. (This node never sends a fragmented message, so whole frames written
    here cannot land inside one of the library's.)"""
    protocol = getattr(ws, "protocol", None)
    transport = getattr(ws, "transport", None)
    if protocol is None or transport is None or protocol.extensions:
        return None
    return transport.write, transport.get_write_buffer_size, protocol


def event_frame(race: str, epoch: str, sid: str, event_json: str,
                broadcast_us: int | None = None) -> str:
    """Wrap an event as stored (already JSON) without decoding it again; stamped
    ``broadcast_us`` (default: now)."""
    at = now_us() if broadcast_us is None else broadcast_us
    return (f'{{"type":"event","race":{json.dumps(race)},"epoch":{json.dumps(epoch)},'
            f'"offset":"{sid}","broadcast_us":{at},"event":{event_json}}}')


def event_json(fields: bus.Fields | None) -> str:
    """The event an events-stream entry holds (JSON text, field ``e``). Raises
    KeyError for an entry without one: scoring writes none such."""
    return (fields or {})[b"e"].decode()


async def snapshot_frame(r: aioredis.Redis, competition: str, race: str
                         ) -> tuple[str, tuple[int, int], str]:
    """The race's stored snapshot as a frame; (frame, offset, epoch)."""
    snap = await r.hgetall(keys.snapshot_key(competition, race))
    if not snap:
        epoch = bus.text(await r.get(keys.epoch_key(competition, race)))
        frame = bus.dumps({"type": "snapshot", "race": race, "epoch": epoch, "offset": "0-0",
                           "view": None})
        return frame, ZERO, epoch
    offset = bus.text(snap[b"offset"])
    epoch = bus.text(snap[b"epoch"])
    frame = (f'{{"type":"snapshot","race":{json.dumps(race)},"epoch":{json.dumps(epoch)},'
             f'"offset":"{offset}","view":{bus.text(snap[b"view"])}}}')
    return frame, bus.parse_id(offset), epoch


async def stored_view(r: aioredis.Redis, competition: str, race: str
                      ) -> tuple[dict[str, Any] | None, tuple[int, int]]:
    """The race's stored snapshot: its view (None without one) and its offset."""
    snap = await r.hgetall(keys.snapshot_key(competition, race))
    if not snap:
        return None, ZERO
    view: dict[str, Any] | None = json.loads(snap[b"view"])
    return view, bus.parse_id(bus.text(snap[b"offset"]))


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
        self.feed.subs.add(self)  # nothing awaited since: the fold is at the feed's position
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
        if self.protocol != LATEST and all(s.protocol == LATEST for s in self.feed.subs):
            self.feed.legacy = None  # the last protocol-1 client: stop folding
        if self.task:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task


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
        self.subs: set[Subscription] = set()
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


class ScoringProgress:
    """Waits for scoring's progress mark in a competition
    (:func:`icetime.keys.scoring_progress`) to reach a raw-log id, with one poll for
    every waiter of the node."""

    def __init__(self, r: aioredis.Redis) -> None:
        self.r = r
        self.waiters: list[tuple[str, tuple[int, int], asyncio.Future[None]]] = []
        self.task: asyncio.Task[None] | None = None

    async def reached(self, competition: str, target: tuple[int, int],
                      timeout: float) -> bool:
        """True once scoring has handled raw input ``target`` of ``competition``; False
        after ``timeout`` s."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (competition, target, fut)
        self.waiters.append(entry)
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._poll())
        try:
            async with asyncio.timeout(timeout):
                await fut
            return True
        except TimeoutError:
            return False
        finally:
            self.waiters.remove(entry)

    async def _poll(self) -> None:
        while self.waiters:
            for competition in {c for c, _, _ in self.waiters}:
                try:
                    mark = await self.r.get(keys.scoring_progress(competition))
                except RedisError:
                    mark = None  # the waiters time out; their subscribe is refused
                if mark:
                    done = bus.parse_id(mark)
                    for c, target, fut in self.waiters:
                        if c == competition and target <= done and not fut.done():
                            fut.set_result(None)
            await asyncio.sleep(SCORING_POLL_S)

    async def close(self) -> None:
        if self.task:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


class AmbiguousRace(LookupError):
    """A race id that several competitions have, none of them the node's own: the
    client must name the competition. ``competitions``: those that have it, sorted."""

    def __init__(self, race: str, competitions: list[str]) -> None:
        super().__init__(f"race {race!r} is in several competitions "
                         f"({', '.join(competitions)}); name one as \"competition\"")
        self.competitions = competitions


#: A race as the hub keys it: (competition, race id).
RaceKey = tuple[str, str]


class Reader:
    """The reader of one competition's followed races: its task, its wake-up stream
    (in the competition's slot) and the last entry of it seen."""

    def __init__(self, competition: str, node: str) -> None:
        self.competition = competition
        self.wake_stream = keys.broadcast_wake_stream(competition, node)
        self.wake_position = "0-0"
        self.task: asyncio.Task[None] | None = None
        #: Set when a feed becomes ready while the reader waits with nothing to read.
        self.changed = asyncio.Event()
        #: True while the reader is (about to be) blocked in XREAD: a new feed must wake it.
        self.reading = False

    def running(self) -> bool:
        return self.task is not None and not self.task.done()


class Hub:
    """All race feeds of this node, and one reader task per competition that reads
    that competition's feeds."""

    def __init__(self, r: aioredis.Redis, queue_max: int = 512,
                 buffer_max: int = 256 * 1024, observe: Observer | None = None,
                 competition: str = keys.DEFAULT_COMPETITION) -> None:
        self.r = r
        self.observe = observe
        self.queue_max = queue_max
        self.buffer_max = buffer_max
        #: The node's own competition (``[competition] id``): where a race id is looked
        #: for first (:meth:`locate`).
        self.competition = competition
        self.feeds: dict[RaceKey, RaceFeed] = {}
        #: Per race this node has read: the counters ``/api/health`` shows.
        self.counters: dict[RaceKey, RaceCounters] = {}
        #: Names this node's wake-up streams.
        self.node = uuid.uuid4().hex[:12]
        self.readers: dict[str, Reader] = {}
        self.progress = ScoringProgress(r)
        #: Subscribes refused, by reason (see docs/protocol.md, "Limits").
        self.refused: Counter[str] = Counter()
        self.reads = 0
        self.wakes = 0
        self.outage = bus.Outage(log, "fan-out")

    # ------------------------------------------------------------ races
    async def locate(self, race: str, competition: str | None = None) -> str | None:
        """The competition whose race ``race`` a client means: ``competition`` when
        given; else the node's own when it has the race (or none has it yet); else the
        one competition that has it. None when that competition does not have the race
        (:meth:`exists`). Raises :class:`AmbiguousRace` when several other competitions
        have it, RedisError."""
        if competition is None:
            owners = sorted(bus.text(m) for m in
                            await self.r.smembers(keys.race_competitions(race)))
            if len(owners) > 1 and self.competition not in owners:
                raise AmbiguousRace(race, owners)
            competition = owners[0] if len(owners) == 1 else self.competition
        return competition if await self.exists(competition, race) else None

    async def exists(self, competition: str, race: str) -> bool:
        """Whether ``race`` has been published in ``competition`` (a start list, a
        round, the standings), or is the World Cup standings (:data:`STANDINGS_ID`),
        which exist from the start.

        A start list that ingest has just said "ok" to may not be scored yet: when
        scoring is behind the raw log's end as it stands now, wait (at most
        :data:`SCORING_WAIT_S`) for it to get there, then look again. Raises RedisError."""
        races = keys.races_set(competition)
        if race == STANDINGS_ID or await self.r.sismember(races, race):
            return True  # the standings are known before the first result is official
        last = bus.entries(await self.r.xrevrange(keys.raw_stream(competition), "+", "-",
                                                  count=1))
        mark = bus.text(await self.r.get(keys.scoring_progress(competition)))
        if not last or mark and bus.parse_id(mark) >= bus.parse_id(last[0][0]):
            return False  # scoring is up to date: the race was never published
        if not await self.progress.reached(competition, bus.parse_id(last[0][0]),
                                           SCORING_WAIT_S):
            return False
        return bool(await self.r.sismember(races, race))

    async def acquire(self, competition: str, race: str) -> RaceFeed:
        """The feed of ``race`` in ``competition``, loaded, with one more reference
        (:meth:`release` it). Raises RedisError (the reference is then released)."""
        key = (competition, race)
        feed = self.feeds.get(key)
        if feed is None:
            counters = self.counters.setdefault(key, RaceCounters())
            feed = self.feeds[key] = RaceFeed(self.r, competition, race, counters,
                                              self.observe)
            feed.loading = asyncio.create_task(self._load(feed))
        feed.refs += 1
        try:
            assert feed.loading is not None
            # Shielded: one subscriber giving up must not cancel the others' load.
            await asyncio.shield(feed.loading)
        except BaseException:
            self.release(feed)
            raise
        return feed

    async def _load(self, feed: RaceFeed) -> None:
        await feed.load()
        if self.feeds.get((feed.competition, feed.race)) is not feed:
            return  # every subscriber left while it loaded
        reader = self.readers.get(feed.competition)
        if reader is None:
            reader = self.readers[feed.competition] = Reader(feed.competition, self.node)
        if not reader.running():
            reader.task = asyncio.create_task(self.read_loop(reader),
                                              name=f"fanout-reader-{feed.competition}")
        reader.changed.set()
        if reader.reading:
            self.wakes += 1
            try:
                # An entry on our own stream ends the reader's blocking XREAD now; it
                # then reads this race too. Lost: the read's timeout does it anyway.
                await self.r.xadd(reader.wake_stream, {"race": feed.race}, maxlen=1)
                await self.r.expire(reader.wake_stream, 600)
            except RedisError as exc:
                log.debug("wake-up failed (the reader's timeout covers it): %s", exc)

    def release(self, feed: RaceFeed) -> None:
        """Drop a reference; with none left the race is no longer read by this node."""
        feed.refs -= 1
        key = (feed.competition, feed.race)
        if feed.refs <= 0 and self.feeds.get(key) is feed:
            del self.feeds[key]

    # ------------------------------------------------------------ the readers
    def ready_feeds(self, competition: str) -> list[RaceFeed]:
        return [f for f in self.feeds.values() if f.ready and f.competition == competition]

    async def read_loop(self, reader: Reader) -> None:
        """Read every ready feed of the reader's competition with one XREAD, forever
        (waiting while it has none)."""
        next_epochs = time.monotonic() + BLOCK_MS / 1000
        while True:
            feeds = {f.stream: f for f in self.ready_feeds(reader.competition)}
            if not feeds:
                reader.changed.clear()
                await reader.changed.wait()
                continue
            reader.reading = True
            try:
                if self.outage.since is not None:
                    # Say Redis is back as soon as it answers, not after a read that
                    # may block for BLOCK_MS; the missed events follow.
                    await self.r.ping()
                    self.outage.ok()
                await self.read_once(reader, feeds)
                if time.monotonic() >= next_epochs:
                    next_epochs = time.monotonic() + BLOCK_MS / 1000
                    await self.check_epochs(reader.competition)
                self.outage.ok()
            except RedisError as exc:
                self.outage.failed(exc, "reading races (retrying every 0.5 s)")
                await asyncio.sleep(0.5)
            finally:
                reader.reading = False

    async def read_once(self, reader: Reader, feeds: dict[str, RaceFeed]) -> None:
        """One blocking XREAD of ``feeds`` (by stream key, all of the reader's
        competition) and the reader's wake-up stream; fan out what it returns. Raises
        RedisError."""
        streams = {reader.wake_stream: reader.wake_position}
        streams.update((s, f.position) for s, f in feeds.items())
        resp = await self.r.xread(streams, count=READ_COUNT,  # type: ignore[arg-type]
                                  block=BLOCK_MS)
        self.reads += 1
        if isinstance(resp, dict):
            raise TypeError("a RESP3 stream reply: the bus speaks RESP2")
        for stream_b, chunk in cast(list[list[Any]], resp or []):
            stream, entries = bus.text(stream_b), bus.entries(chunk)
            if stream == reader.wake_stream:
                reader.wake_position = entries[-1][0]
                continue
            feed = feeds[stream]
            if self.feeds.get((feed.competition, feed.race)) is not feed:
                continue  # its last subscriber left during the read
            if not feed.epoch:
                await feed.set_epoch(bus.text(
                    await self.r.get(keys.epoch_key(feed.competition, feed.race))))
            feed.deliver(entries)

    async def check_epochs(self, competition: str) -> None:
        """One MGET (one slot) for the epoch of every feed of ``competition``; a changed
        one makes its clients resync."""
        feeds = self.ready_feeds(competition)
        if not feeds:
            return
        epochs = await self.r.mget([keys.epoch_key(competition, f.race) for f in feeds])
        for feed, epoch in zip(feeds, epochs, strict=True):
            await feed.set_epoch(bus.text(epoch))

    # ------------------------------------------------------------ clients
    async def subscribe(self, ws: Sender, race: str, epoch: str | None = None,
                        offset: str | None = None, protocol: int = LATEST,
                        competition: str | None = None) -> tuple[Subscription, str]:
        """Follow ``race`` of ``competition`` (default: the node's own) from a
        snapshot, or resume after (``epoch``, ``offset``); frames in ``protocol`` (1 or
        2). Returns the subscription and "snapshot" or "resumed". The race must exist
        (:meth:`exists`). Raises RedisError, and what sending to ``ws`` raises; nothing
        of the subscription is left behind then."""
        feed = await self.acquire(competition or self.competition, race)
        sub = Subscription(ws, feed, self.queue_max, self.buffer_max, protocol)
        try:
            how = await sub.start(epoch, offset)
        except BaseException:
            await self.unsubscribe(sub)
            raise
        return sub, how

    async def unsubscribe(self, sub: Subscription) -> None:
        """Stop ``sub``; its race is no longer read once nobody here follows it."""
        if sub.released:
            return
        sub.released = True
        await sub.stop()
        self.release(sub.feed)

    def clients(self) -> int:
        return sum(len(f.subs) for f in self.feeds.values())

    async def close(self) -> None:
        for f in list(self.feeds.values()):
            for s in list(f.subs):
                await self.unsubscribe(s)
        tasks = [r.task for r in self.readers.values()]
        for task in (*tasks, *(f.loading for f in self.feeds.values())):
            if task:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, RedisError):
                    await task
        await self.progress.close()
        for reader in self.readers.values():
            with contextlib.suppress(RedisError, OSError):
                await self.r.delete(reader.wake_stream)

    def stats(self) -> dict[str, Any]:
        """What ``/api/health`` shows under ``broadcast``: see docs/protocol.md."""
        return {"clients": self.clients(),
                "readers": sum(r.running() for r in self.readers.values()),
                "reads": self.reads, "wakes": self.wakes,
                "refused": {k: self.refused[k] for k in REFUSALS},
                "races": {self.race_name(k): self.race_stats(k)
                          for k in sorted(self.counters)}}

    def race_name(self, key: RaceKey) -> str:
        """A race as ``/api/health`` names it: its id in the node's own competition,
        ``<competition>/<race id>`` in another."""
        competition, race = key
        return race if competition == self.competition else f"{competition}/{race}"

    def race_stats(self, key: RaceKey) -> dict[str, Any]:
        c, feed = self.counters[key], self.feeds.get(key)
        return {"clients": len(feed.subs) if feed else 0, "read": feed is not None,
                "frames": c.frames, "frames_v1": c.frames_v1, "fell_behind": c.fell_behind,
                "epoch": feed.epoch if feed else None,
                "position": feed.position if feed else None}


#: Why a subscribe is refused; each is counted in ``/api/health``.
REFUSALS = ("unknown_race", "ambiguous_race", "too_many_subscriptions", "rate_limited")
