"""Mirror a venue's races to a cloud Redis with the same stream ids (docs/cloud.md).

What is mirrored, per race of the competition listed in :func:`icetime.keys.races_set` at the venue:

* its event stream, entry for entry, each XADDed at the cloud with its venue id, so an
  (epoch, offset) a fan got at the venue resumes on any cloud broadcast node;
* its epoch, before its first event;
* its snapshot hash, once the cloud stream holds every event up to the snapshot's
  ``offset`` (a snapshot is never ahead of the events beside it);
* its membership of the race registry, once its snapshot is there (a fan who can
  subscribe finds a snapshot).

Position: the cloud is the truth. At start, and after every failure on either side,
the relay reads where each race's cloud stream ends and goes on from there, so a
restart or an uplink outage neither loses nor repeats an entry; an XADD whose id the
cloud already holds is refused by Redis itself (ids only grow), never stored twice.

An epoch changed at the venue (the stream was recreated) empties the race at the cloud
and mirrors the new stream from its start; broadcast nodes then resync their clients.

Every cloud write touches one key (no MULTI, no multi-key script), so the cloud side may
be a Redis Cluster. Key names come from :func:`race_keys` only.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from icetime import bus, keys

log = logging.getLogger(__name__)
#: How long one venue XREAD blocks when nothing new comes (ms); races and epochs are
#: looked at again at least this often.
BLOCK_MS = 1000
#: Entries per race per XREAD (and per cloud pipeline).
READ_COUNT = 500
#: Seconds between two tries while a side is away.
RETRY_S = 0.5
ZERO = "0-0"
T = TypeVar("T")


def _raw(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


@dataclass(frozen=True)
class RaceKeys:
    """The keys of one race, the same names on both sides."""

    events: str
    snapshot: str
    epoch: str


def race_keys(competition: str, race: str) -> RaceKeys:
    """The keys the relay copies for ``race`` of ``competition`` (all from
    :mod:`icetime.keys`)."""
    return RaceKeys(keys.events_stream(competition, race), keys.snapshot_key(competition, race),
                    keys.epoch_key(competition, race))


@dataclass
class RaceMirror:
    """Where one race stands at the cloud, as the relay last read or wrote it."""

    race: str
    keys: RaceKeys
    #: The id of the last event the cloud stream holds ("0-0": none).
    position: str = ZERO
    #: The epoch the cloud holds ("": none yet).
    epoch: str = ""
    #: The ``offset`` field of the snapshot the cloud holds ("": none).
    snapshot_offset: str = ""
    #: A venue snapshot read ahead of the events mirrored so far: written once they are.
    pending: dict[bytes, bytes] | None = None
    #: Listed in the cloud's race registry.
    listed: bool = False
    #: The last XREAD returned a full batch: more is waiting at the venue.
    behind: bool = True


@dataclass
class Counters:
    """What ``/api/health`` shows of the relay's work since it started."""

    events: int = 0
    snapshots: int = 0
    resets: int = 0
    passes: int = 0
    #: XADDs the cloud refused because it held the id already (another relay wrote it).
    refused: int = 0
    #: time.time() of the end of the last pass in which both sides answered.
    synced_at: float = 0.0


class Side:
    """One Redis of the relay (``venue`` or ``cloud``), with its outage log."""

    def __init__(self, name: str, r: aioredis.Redis) -> None:
        self.name = name
        self.r = r
        self.outage = bus.Outage(log, f"relay ({name})")

    async def call(self, what: Callable[[], Awaitable[T]]) -> T:
        """``what()``; a RedisError or OSError is logged as this side's outage, then
        raised again as :class:`SideDown`."""
        try:
            result = await what()
        except (RedisError, OSError) as exc:
            self.outage.failed(exc)
            raise SideDown(self.name) from exc
        self.outage.ok()
        return result


class SideDown(Exception):
    """A call to one side failed; the relay reloads its positions and tries again."""


class Relay:
    """Copies every race of ``competition`` from ``venue`` to ``cloud`` until stopped
    (:meth:`run`), and lists the competition and its races in the cloud's registries
    (``keys.COMPETITIONS``, ``keys.race_competitions``) so cloud broadcast nodes find them."""

    def __init__(self, venue: aioredis.Redis, cloud: aioredis.Redis,
                 competition: str = keys.DEFAULT_COMPETITION) -> None:
        self.competition = competition
        self.venue = Side("venue", venue)
        self.cloud = Side("cloud", cloud)
        self.races: dict[str, RaceMirror] = {}
        self.counters = Counters()
        #: False until a pass has gone through with both sides answering, and again
        #: from a failure until the next such pass.
        self.synced = False

    # ------------------------------------------------------------ the loop
    async def run(self, stop: asyncio.Event) -> None:
        """Mirror until ``stop`` is set, through any outage of either side."""
        while not stop.is_set():
            try:
                await self.step()
            except SideDown as down:
                self.synced = False
                self.races.clear()  # positions are read again from the cloud
                log.debug("relay: %s is down; retrying", down)
                await asyncio.sleep(RETRY_S)

    async def step(self) -> None:
        """One pass: list the races, read what is new, write it to the cloud.
        Raises SideDown."""
        await self.add_races()
        await self.check_epochs()
        batches = await self.read_new(0 if self.any_behind() else BLOCK_MS)
        for race, entries in batches.items():
            await self.mirror_events(self.races[race], entries)
        for m in self.races.values():
            await self.mirror_snapshot(m, fetch=m.race in batches or m.pending is None
                                       and not m.listed)
        if not batches:
            await self.sweep_snapshots()
        self.counters.passes += 1
        self.counters.synced_at = time.time()
        self.synced = True

    def any_behind(self) -> bool:
        return any(m.behind for m in self.races.values())

    # ------------------------------------------------------------ races
    async def add_races(self) -> None:
        """Start mirroring the races the venue lists that are new to the relay, from
        where each stands at the cloud."""
        races = keys.races_set(self.competition)
        listed = await self.venue.call(lambda: self.venue.r.smembers(races))
        for race in sorted(bus.text(m) for m in listed):
            if race not in self.races:
                self.races[race] = await self.load(race)

    async def load(self, race: str) -> RaceMirror:
        """Where ``race`` stands at the cloud: its last event, epoch and snapshot."""
        m = RaceMirror(race, race_keys(self.competition, race))

        async def read() -> list[Any]:
            async with self.cloud.r.pipeline(transaction=False) as pipe:
                pipe.xrevrange(m.keys.events, "+", "-", count=1)
                pipe.get(m.keys.epoch)
                pipe.hget(m.keys.snapshot, "offset")
                pipe.sismember(keys.races_set(self.competition), race)
                return await pipe.execute()

        last, epoch, offset, listed = await self.cloud.call(read)
        entries = bus.entries(last)
        m.position = entries[0][0] if entries else ZERO
        m.epoch, m.snapshot_offset, m.listed = bus.text(epoch), bus.text(offset), bool(listed)
        return m

    async def check_epochs(self) -> None:
        """Give each race the venue's epoch at the cloud; a changed one resets it."""
        mirrors = list(self.races.values())
        if not mirrors:
            return

        async def read() -> list[Any]:
            async with self.venue.r.pipeline(transaction=False) as pipe:
                for m in mirrors:
                    pipe.get(m.keys.epoch)
                return await pipe.execute()

        for m, raw in zip(mirrors, await self.venue.call(read), strict=True):
            epoch = bus.text(raw)
            if epoch and epoch != m.epoch:
                await self.set_epoch(m, epoch)

    async def set_epoch(self, m: RaceMirror, epoch: str) -> None:
        """Store the venue's ``epoch`` at the cloud; a race that had another one is
        emptied first (the venue recreated its stream: its ids start again)."""
        reset = bool(m.epoch)

        async def write() -> None:
            async with self.cloud.r.pipeline(transaction=False) as pipe:
                if reset:
                    pipe.delete(m.keys.events)
                    pipe.delete(m.keys.snapshot)
                pipe.set(m.keys.epoch, epoch)
                await pipe.execute()

        await self.cloud.call(write)
        if reset:
            log.info("relay: race %s: epoch %r -> %r, mirrored again from its start",
                     m.race, m.epoch, epoch)
            self.counters.resets += 1
            m.position, m.snapshot_offset, m.pending = ZERO, "", None
        m.epoch = epoch

    # ------------------------------------------------------------ events
    async def read_new(self, block_ms: int) -> dict[str, list[tuple[str, bus.Fields | None]]]:
        """Events after each race's cloud position, from one venue XREAD (blocking
        ``block_ms`` when nothing is there; 0: not at all)."""
        mirrors = [m for m in self.races.values() if m.epoch]
        if not mirrors:
            await asyncio.sleep(BLOCK_MS / 1000)  # no race yet: look again in a while
            return {}
        streams = {m.keys.events: m.position for m in mirrors}
        by_stream = {m.keys.events: m for m in mirrors}
        reply = await self.venue.call(lambda: self.venue.r.xread(
            streams, count=READ_COUNT, block=block_ms or None))  # type: ignore[arg-type]
        if isinstance(reply, dict):
            raise TypeError("a RESP3 stream reply: the bus speaks RESP2")
        out: dict[str, list[tuple[str, bus.Fields | None]]] = {}
        for m in mirrors:
            m.behind = False
        for stream, chunk in cast(list[list[Any]], reply or []):
            m = by_stream[bus.text(stream)]
            out[m.race] = bus.entries(chunk)
            m.behind = len(out[m.race]) >= READ_COUNT
        return out

    async def mirror_events(self, m: RaceMirror,
                            entries: list[tuple[str, bus.Fields | None]]) -> None:
        """XADD ``entries`` at the cloud with their own ids, in order."""
        todo = [(sid, f) for sid, f in entries
                if f is not None and bus.parse_id(sid) > bus.parse_id(m.position)]
        if not todo:
            return

        async def write() -> list[Any]:
            async with self.cloud.r.pipeline(transaction=False) as pipe:
                for sid, fields in todo:
                    pipe.xadd(m.keys.events, cast(Any, fields), id=sid)
                return await pipe.execute(raise_on_error=False)

        results = await self.cloud.call(write)
        refused = [r for r in results if isinstance(r, ResponseError)]
        self.counters.events += len(results) - len(refused)
        if refused:
            # Another writer (a second relay) got there first: read where the cloud
            # stands now rather than guess.
            self.counters.refused += len(refused)
            log.warning("relay: race %s: the cloud already held %d of %d events; "
                        "reading its position again", m.race, len(refused), len(results))
            self.races[m.race] = await self.load(m.race)
            return
        m.position = todo[-1][0]

    # ------------------------------------------------------------ snapshots
    async def mirror_snapshot(self, m: RaceMirror, fetch: bool) -> None:
        """Write the race's venue snapshot (read now when ``fetch``, else the pending
        one) at the cloud once the events up to its offset are there; then list the race."""
        if fetch:
            snap = await self.venue.call(lambda: self.venue.r.hgetall(m.keys.snapshot))
            if snap:
                m.pending = {_raw(k): _raw(v) for k, v in snap.items()}
        snap_now = m.pending
        if snap_now is None:
            return
        offset = bus.text(snap_now.get(b"offset"))
        if offset == m.snapshot_offset or snap_now.get(b"epoch", b"").decode() not in (
                "", m.epoch):
            m.pending = None  # the cloud has it already, or it is of an older epoch
        elif bus.valid_id(offset) and bus.parse_id(offset) <= bus.parse_id(m.position):
            await self.cloud.call(lambda: self.cloud.r.hset(
                m.keys.snapshot, mapping=cast(Any, snap_now)))
            m.snapshot_offset, m.pending = offset, None
            self.counters.snapshots += 1
        if m.snapshot_offset and not m.listed:
            await self.list_race(m.race)
            m.listed = True

    async def list_race(self, race: str) -> None:
        """Name ``race`` in the cloud's registries: the competition's race set, the race
        id's competitions and the competitions; one key per write (a cluster may hold
        them on different slots)."""
        await self.cloud.call(lambda: self.cloud.r.sadd(keys.races_set(self.competition), race))
        await self.cloud.call(lambda: self.cloud.r.sadd(keys.race_competitions(race),
                                                        self.competition))
        await self.cloud.call(lambda: self.cloud.r.sadd(keys.COMPETITIONS, self.competition))

    async def sweep_snapshots(self) -> None:
        """A quiet moment: look for a snapshot the venue stored without new events
        (a snapshot at a cadence may follow its events later)."""
        mirrors = [m for m in self.races.values() if m.epoch]
        if not mirrors:
            return

        async def read() -> list[Any]:
            async with self.venue.r.pipeline(transaction=False) as pipe:
                for m in mirrors:
                    pipe.hget(m.keys.snapshot, "offset")
                return await pipe.execute()

        for m, offset in zip(mirrors, await self.venue.call(read), strict=True):
            if offset is not None and bus.text(offset) != m.snapshot_offset:
                await self.mirror_snapshot(m, fetch=True)

    # ------------------------------------------------------------ health
    def stats(self) -> dict[str, Any]:
        """What ``/api/health`` shows: counters, each side's state, each race."""
        c = self.counters
        return {
            "synced": self.synced, "synced_at": c.synced_at, "passes": c.passes,
            "events": c.events, "snapshots": c.snapshots, "resets": c.resets,
            "refused": c.refused,
            "venue": self.side_state(self.venue), "cloud": self.side_state(self.cloud),
            "races": {m.race: {"epoch": m.epoch, "position": m.position,
                               "snapshot": m.snapshot_offset, "listed": m.listed,
                               "behind": m.behind}
                      for m in sorted(self.races.values(), key=lambda m: m.race)},
        }

    @staticmethod
    def side_state(side: Side) -> dict[str, Any]:
        since = side.outage.since
        return {"up": since is None,
                "down_s": None if since is None else round(time.monotonic() - since, 1)}
