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

The parts: frames and writing them to many connections (:mod:`.frames`), one race's
feed and its live path (:mod:`.racefeed`), one client's snapshot, resume and queue
(:mod:`.subscription`), and the wait for scoring (:mod:`.scoring_progress`).
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import Counter
from typing import Any, cast

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from icetime import bus, keys
from services.scoring.standings import STANDINGS_ID

from .frames import LATEST, Sender
from .racefeed import Observer, RaceCounters, RaceFeed
from .scoring_progress import ScoringProgress
from .subscription import Subscription

log = logging.getLogger(__name__)
#: How long the reader's XREAD blocks (ms) when no event and no wake-up comes; epochs
#: are checked at least this often.
BLOCK_MS = 1000
#: Entries per stream per XREAD.
READ_COUNT = 500
#: How long a subscribe to a race not listed yet waits for scoring to reach the end of
#: the raw log as it stood (a start list ingest has just said "ok" to), in seconds.
SCORING_WAIT_S = 2.0


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
