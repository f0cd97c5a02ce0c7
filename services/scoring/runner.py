"""The async pump around the engine: raw stream in, race events out.

Delivery is at-least-once and the effect exactly-once:

1. On start, load the last checkpoint (``checkpoint``: the engine as it stood after
   some earlier input) when it was made by this code and these settings, and replay
   the raw log after it, up to the recorded progress (the last input whose output was
   written), publishing nothing. Without a usable checkpoint, replay from the start
   (:mod:`services.scoring.recovery`).
2. Read this consumer's pending entries, then new ones, through the group.
3. Per read (up to :data:`BATCH` entries): feed the engine each input in order, then
   publish all their events (per race, in input order), each input's verdict, the race
   snapshots that are due (at a cadence, :class:`icetime.snapshot.Cadence`: readers
   fold the events after it), the new progress (the batch's last input) and the XACKs
   in one atomic script. A judged input's output is published at once, with the
   inputs before it, and a batch waits at most :data:`FLUSH_S` (a waiting sender hears
   its verdict no later than if every input were published alone). An entry at or
   before the progress was already published by an earlier life: it is only
   acknowledged. With no input for a while, the snapshots that are behind are stored.
   Most snapshots are not in that script: a forked child builds them from the engine
   as it stood after the batch, off the passings' path, and they are stored when it
   hands them back (:mod:`services.scoring.snapshotter`).

If Redis fails mid-way, the engine may hold an input whose output was never
written; the runner throws that engine away and starts again from step 1.

Every input but passings and clock offsets gets a verdict (applied, or refused with
the reason) on the officials' stream and under its verdict key, written with its
output (:func:`verdict_record`); so does a passing that is no one's read (an unknown
transponder or timing point: refused); a refused input also gets a ``refused`` event on
the stream of the race it names, when scoring knows that race. A feed that waits for
the verdict reads the verdict key.

Each raw entry is decoded into its typed input (``icetime.messages.decode_stored``);
an entry that is not a valid input is refused like an input the engine cannot apply
(counted, its reason logged) and acknowledged, so it never stops the worker.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import Iterable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError
from redis.typing import EncodableT, FieldT

from icetime import bus, keys, snapshot
from icetime.bus import LeaseLost
from icetime.logs import about
from icetime.service import Ready
from icetime.settings import Settings
from icetime.timefmt import now_us

from . import checkpoint
from .lease import POLL_S, Lease, worker_name
from .outbox import UNJUDGED, Outbox, refused_event, verdict_record
from .recovery import Recovery
from .snapshotter import Job, Snapshotter

log = logging.getLogger(__name__)
BATCH = 200
#: The longest an input's output waits in a batch for the inputs read with it (s):
#: a sender waiting for a passing's verdict hears it at most this much later than if
#: each input were published alone (judged inputs are published at once anyway).
FLUSH_S = 0.005
#: A batch is published once its events reach this many bytes: a revision carries the
#: whole view (7.5 MB at 10,000 skaters), and a read of late reads must not become one
#: script call of a gigabyte.
FLUSH_BYTES = 4 * 1024 * 1024
#: How often the counters are written for /api/health (off the per-input path).
STATS_EVERY_S = 1.0
#: The longest wait between two attempts while Redis is away (s): scoring resumes at
#: most this long after it is back.
RETRY_MAX_S = 1.0


class ScoringRunner(Recovery):
    def __init__(self, settings: Settings, r: aioredis.Redis, consumer: str = "scoring-1",
                 owner: str | None = None) -> None:
        self.settings = settings
        self.r = r
        #: The competition this worker scores (its raw log, its races' streams).
        self.competition = settings.competition_id
        self.raw = keys.raw_stream(self.competition)
        #: This worker's hold on the competition (:mod:`services.scoring.lease`).
        self.lease = Lease(r, self.competition, owner or worker_name(), url=settings.redis_url)
        self.bus = bus.Bus(r, self.competition, lease_token=self.lease.owner)
        # One consumer name for every worker of the competition: the one that takes
        # over reads the entries its dead predecessor had been given and not acknowledged.
        self.consumer = consumer
        self.backoff = 0.1
        #: Whether this worker held the lease at its last try (None: not tried yet).
        self.owning: bool | None = None
        self.engine = self._new_engine()
        #: Races this life has written into the race index (:meth:`register`).
        self.registered: set[str] = set()
        self.progress: tuple[int, int] | None = None
        self.published = 0
        self.stats_at = 0.0
        self.stats_dirty = False
        self.outage = bus.Outage(log, "scoring")
        self.fingerprint = checkpoint.fingerprint(settings)
        self.saver = checkpoint.Saver()
        #: The next save replaces the whole hash (it holds no checkpoint of this run yet).
        self.replace_checkpoint = True
        #: Inputs handled since the last checkpoint; when it was written and how long it took.
        self.since_checkpoint = 0
        self.checkpoint_at = time.monotonic()
        self.checkpoint_s = 0.0
        self.cadence = snapshot.Cadence()
        #: Builds the snapshots due in a forked child, off the passings' path
        #: (:mod:`services.scoring.snapshotter`); without fork() they are built in line.
        self.snapshots = Snapshotter()
        self.fork = hasattr(os, "fork")
        #: The longest a batch is held (s): :data:`FLUSH_S`.
        self.flush_s = FLUSH_S

    async def ensure_group(self) -> None:
        try:
            await self.r.xgroup_create(self.raw, keys.SCORING_GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def handle(self, entries: list[tuple[str, bus.Fields | None]]) -> None:
        """Score the entries of one read in order and publish their output, in one
        script call for all of them (:meth:`flush`), except that the output is published
        right after a judged input (one a sender waits for by default: its verdict
        comes no later than it would alone), at least every :attr:`flush_s`, and once
        its events reach :data:`FLUSH_BYTES`."""
        box = Outbox()
        for sid, fields in entries:
            self.take(sid, fields, box)
            if box.judged or box.size >= FLUSH_BYTES \
                    or time.perf_counter() - box.started >= self.flush_s:
                await self.flush(box)
                box = Outbox()
        await self.flush(box)

    def take(self, sid: str, fields: bus.Fields | None, box: Outbox) -> None:
        """Feed one raw entry to the engine; its events, verdict and acknowledgement
        go into ``box``."""
        box.acks.append(sid)
        if fields is None or (self.progress and bus.parse_id(sid) <= self.progress):
            # Deleted entry, or output already written by an earlier life: just acknowledge.
            return
        box.last = sid  # the progress mark moves past it, whatever its verdict
        inp = self.decode(sid, fields)
        if inp is None:
            log.warning("input refused: %s", self.engine.last_error, extra=about(input_id=sid))
            unread = {"input": sid, "type": None, "verdict": "refused",
                      "reason": self.engine.last_reason, "scoring_us": now_us()}
            box.verdicts.append((sid, bus.dumps(unread)))  # no events
            return
        refused = self.engine.stats["refused"]
        out = self.engine.feed(sid, inp)
        hops: dict[str, Any] = {"source_us": inp.sent_us, "ingest_us": inp.rx_us,
                                "scoring_us": now_us()}
        verdict = ""
        if self.engine.stats["refused"] > refused:
            log.warning("input refused: %s", self.engine.last_error, extra=about(inp))
            out = refused_event(sid, inp, self.engine.races, self.engine.last_reason)
            verdict = bus.dumps(verdict_record(sid, inp, self.engine.last_reason, hops))
        elif type(inp) not in UNJUDGED:
            verdict = bus.dumps(verdict_record(sid, inp, None, hops))
        elif self.engine.unread:
            # A read of a transponder or at a point nobody knows: not counted as refused
            # (the input is fine), but never answered "applied" to a sender who waits.
            verdict = bus.dumps(verdict_record(sid, inp, self.engine.unread, hops))
        if verdict:
            box.verdicts.append((sid, verdict))
        box.judged = type(inp) not in UNJUDGED
        # Encoded now: an event may share state the engine changes with the next input.
        self.published += box.add(out, hops)

    async def flush(self, box: Outbox) -> None:
        """Publish what ``box`` holds in one script call (:meth:`icetime.bus.Bus.
        publish_batch`): every event, each verdict, the snapshots due (:meth:`batch`),
        the progress mark at its last input with output, and the XACKs. Raises
        :class:`LeaseLost` (nothing written) and RedisError."""
        if not box.acks:
            return
        batch, cost, later = self.batch(box)
        await self.register(race for race, *_ in batch)
        published = await self.bus.publish_batch(box.last, box.acks, box.verdicts, batch)
        jobs = []
        for (race, _, view, encoded), (epoch, last) in zip(batch, published, strict=True):
            if race in later:
                jobs.append(Job(race, epoch, last))
            self.cadence.published(race, len(encoded), bool(view) or race in later, epoch,
                                   last, cost if view else None)
        if box.last:
            self.progress = bus.parse_id(box.last)
        if jobs:
            # The engine stands exactly after the box's last input: each race's view as
            # of its last event published here.
            self.snapshot_later(jobs)

    def batch(self, box: Outbox
              ) -> tuple[list[tuple[str, str, str, list[str]]], float, set[str]]:
        """What :meth:`icetime.bus.Bus.publish_batch` takes for a box's events: per race
        with events (race, epoch candidate, view JSON when its snapshot is due now else
        "", [event JSON]); the seconds building those views took; and the races whose
        snapshot is due later, built by a child (:meth:`snapshot_later`). A view is the
        engine's as it stands now, after the box's last input: a race's view changes
        only with its own events, so that is its view as of its last event here.

        Built in line: a race's first snapshot of this worker's life (readers find the
        race by it) and a revision's (the view came whole anyway); the others in a child,
        one child at a time (a race due while one works waits for the next)."""
        batch, cost, later = [], 0.0, set()
        for race, encoded in box.events.items():
            view = ""
            revised = race in box.revised
            if self.cadence.due(race, len(encoded), revised):
                if revised or not self.cadence.stored(race) or not self.fork:
                    t0 = time.perf_counter()
                    view = bus.dumps(self.engine.view(race))
                    cost += time.perf_counter() - t0
                elif not self.snapshots.busy:
                    later.add(race)
            batch.append((race, uuid.uuid4().hex[:12], view, encoded))
        return batch, cost, later

    def snapshot_later(self, jobs: list[Job]) -> None:
        """Have a forked child build the snapshots of ``jobs`` as the engine stands now,
        and store them when it hands them back (the cadence already counts them stored;
        one that is not stored is due again)."""
        try:
            self.snapshots.start(self.engine.view, jobs, self._store_snapshot,
                                 self._snapshots_done)
        except OSError as exc:
            log.warning("cannot fork for snapshots (%s): building them in line", exc)
            self.fork = False
            self.cadence.failed([job.race for job in jobs])

    async def _store_snapshot(self, job: Job, view: bytes) -> bool:
        try:
            return await self.bus.store_snapshot(job.race, job.epoch, job.offset, view)
        except (RedisError, OSError) as exc:  # LeaseLost too: another worker stores it
            log.warning("snapshot of %s at %s not stored: %s", job.race, job.offset, exc)
            return False

    def _snapshots_done(self, jobs: list[Job], stored: list[str], seconds: float) -> None:
        self.cadence.child_done(seconds, [job.race for job in jobs if job.race not in stored])

    async def store_snapshots(self) -> None:
        """Store the snapshot of every race with events after it (the worker is idle):
        the view as of the race's last event, which is what the engine holds now; in a
        child (:meth:`snapshot_later`) unless fork() is not to be had."""
        behind = self.cadence.behind()
        if self.fork:
            if behind and not self.snapshots.busy:
                jobs = [Job(race, *self.cadence.last[race]) for race in behind]
                for job in jobs:
                    self.cadence.published(job.race, 0, True, job.epoch, job.offset, None)
                self.snapshot_later(jobs)
            return
        for race in behind:
            epoch, last = self.cadence.last[race]
            t0 = time.perf_counter()
            view = bus.dumps(self.engine.view(race))
            await self.r.hset(keys.snapshot_key(self.competition, race),
                              mapping={"offset": last, "view": view, "epoch": epoch})
            self.cadence.published(race, 0, True, epoch, last, time.perf_counter() - t0)

    async def register(self, races: Iterable[str]) -> None:
        """Add this competition to each race's entry in the race index
        (:func:`icetime.keys.race_competitions`), once per race and life of the worker.
        The index is in other slots than the competition, so it cannot be written by the
        publish script: it is written first, so a race a reader finds published is
        always in the index. Raises RedisError."""
        for race in races:
            if race not in self.registered:
                await self.r.sadd(keys.race_competitions(race), self.competition)
                self.registered.add(race)

    async def consume(self, start: str, block: int | None) -> int:
        resp = await self.r.xreadgroup(keys.SCORING_GROUP, self.consumer, {self.raw: start},
                                       count=BATCH, block=block)
        entries = [(sid, fields or None) for sid, fields in bus.read_entries(resp)]
        await self.handle(entries)
        n = len(entries)
        self.since_checkpoint += n
        if not n and block:
            await self.store_snapshots()
        # Between two inputs the engine is exactly the state the inputs up to the
        # progress mark built: the moment a checkpoint is consistent.
        await self.save_checkpoint()
        self.stats_dirty = self.stats_dirty or n > 0
        now = time.monotonic()
        if self.stats_dirty and now - self.stats_at > STATS_EVERY_S:
            self.stats_at, self.stats_dirty = now, False
            # Built key by key: redis-py's mapping type takes no dict[str, int] (invariant keys).
            stats: dict[FieldT, EncodableT] = {k: v for k, v in self.engine.stats.items()}
            stats["published_events"] = self.published
            await self.r.hset(keys.scoring_stats(self.competition), mapping=stats)
        return n

    async def run(self, stop: asyncio.Event, stand_by: bool = True) -> None:
        """Score the competition while this worker holds its lease, stand by while
        another does, until ``stop`` is set. Without ``stand_by`` (a worker of the
        pool, :mod:`services.scoring.pool`), return once another worker holds it."""
        while not stop.is_set():
            try:
                if not await self.lease.take():
                    if not stand_by:
                        return
                    self.outage.ok()
                    if self.owning is not False:
                        log.info("standing by: another worker scores %s", self.competition)
                    self.owning = False
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), POLL_S)
                    continue
                if not self.owning:
                    log.info("scoring %s as %s", self.competition, self.lease.owner)
                self.owning = True
                await self.own(stop)
            except LeaseLost:
                log.info("scoring %s: the lease went to another worker", self.competition)
                self.owning = None
            except (RedisError, OSError) as exc:
                # The engine may hold an input whose output was never written: it is
                # rebuilt from the raw log once Redis answers again.
                self.outage.failed(exc, "scoring")
                await asyncio.sleep(self.backoff)
                self.backoff = min(self.backoff * 2, RETRY_MAX_S)

    async def own(self, stop: asyncio.Event) -> None:
        """Score while the lease is kept (:meth:`Lease.keep`); return when ``stop`` is
        set or the lease is lost. Raises what scoring raised (RedisError...)."""
        keeper = asyncio.create_task(self.lease.keep())
        work = asyncio.create_task(self.score(stop))
        try:
            await asyncio.wait({keeper, work}, return_when=asyncio.FIRST_COMPLETED)
            if work.done():
                work.result()
            else:
                log.info("scoring %s: lease lost", self.competition)
                self.owning = None
        finally:
            for task in (keeper, work):
                task.cancel()
            await asyncio.gather(keeper, work, return_exceptions=True)
            await self.snapshots.close()

    async def score(self, stop: asyncio.Event) -> None:
        """Rebuild, then score inputs until ``stop`` is set. Raises RedisError."""
        await self.ensure_group()
        await self.r.sadd(keys.COMPETITIONS, self.competition)
        await self.rebuild()
        while await self.consume("0", None):  # our pending entries first
            pass
        self.outage.ok()
        self.backoff = 0.1
        while not stop.is_set():
            await self.consume(">", snapshot.IDLE_MS)


async def serve(settings: Settings, r: aioredis.Redis, stop: asyncio.Event,
                ready: Ready | None = None) -> None:
    """Score until ``stop`` is set; ``ready`` gets ``{}`` (no listeners). Raises what
    the runner raised if it died: a silently dead scorer would publish nothing."""
    runner = ScoringRunner(settings, r)
    log.info("scoring started")
    task = asyncio.create_task(runner.run(stop))
    stopped = asyncio.create_task(stop.wait())
    try:
        if ready:
            await ready({})
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task  # re-raises the runner's own exception, if it died of one
        # Handed over at once: a worker standing by need not wait for it to run out.
        await runner.lease.give_up()
