"""Scoring any competition: workers that share the registry's competitions.

A worker started with ``scoring.competitions = "*"`` (or ``--any-competition``) scores
any competition in the registry (:data:`icetime.keys.COMPETITIONS`, where ingest adds
its competition before the competition's first raw input). Every :data:`POLL_S` it

1. announces itself in :data:`icetime.keys.SCORING_WORKERS` (a sorted set: its name,
   scored by the time its announcement runs out, :data:`ANNOUNCE_TTL_S` from now on
   Redis's clock), drops the announcements that ran out, and counts the live workers N;
2. reads the registry: C competitions (with those it scores); its fair share is
   ceil(C / N);
3. below its share, tries the lease of each competition it does not score, in id
   order, and scores each lease it takes in a :class:`~services.scoring.runner.ScoringRunner`
   of its own (one per competition, all in this process), until it reaches its share;
4. above its share :data:`SHED_AFTER` polls in a row (a worker joined), hands over the
   competition it took last: it stops that runner and releases the lease, and a worker
   below its share takes it on its next poll.

Who scores a competition is decided by its lease alone (:class:`~.lease.Lease`, the
redis-py ``Lock`` a worker of one competition uses too; the publish script checks its
token): the count of workers only caps how many leases a worker tries to hold, so a
count that is briefly wrong costs a handover, never two owners. N workers each at most
ceil(C / N) can hold all C, so a lease that is free is taken within a poll by a worker
below its share. When a worker dies, its leases run out after the lease's TTL and its
announcement after :data:`ANNOUNCE_TTL_S`; the others take its competitions, each
rebuilding from the checkpoint and the raw log as any restart does, so the results are
those of a run without the fault.

Every competition is scored with this worker's scoring settings (sources' clock
offsets, ``scoring.loops``, the rules file); ``competition.id`` is not used.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, replace

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from icetime import bus, keys
from icetime.service import Ready
from icetime.settings import Settings

from .lease import POLL_S, Lease, worker_name
from .runner import ScoringRunner

log = logging.getLogger(__name__)
#: How long a worker's announcement lasts without being renewed (s): how long a dead
#: worker still counts in the others' fair share.
ANNOUNCE_TTL_S = 3.0
#: Polls in a row above its share before a worker hands a competition over: a worker
#: that announced itself once and died costs no handover.
SHED_AFTER = 4


@dataclass
class Scored:
    """One competition this worker scores: its runner, the runner's stop and task."""

    runner: ScoringRunner
    stop: asyncio.Event
    task: asyncio.Task[None]


class Pool:
    """One worker's share of the registry's competitions (see the module)."""

    def __init__(self, settings: Settings, r: aioredis.Redis, name: str | None = None) -> None:
        self.settings = settings
        self.r = r
        #: The worker's name: its announcement, and the token of every lease it holds.
        self.name = name or worker_name()
        #: Competition id -> its runner, in the order they were taken.
        self.scored: dict[str, Scored] = {}
        #: Polls in a row this worker held more than its share.
        self.over_share = 0
        self.outage = bus.Outage(log, "scoring pool")

    async def announce(self) -> int:
        """Renew this worker's announcement, drop the ones that ran out; the number of
        live workers (this one included). Raises RedisError."""
        seconds, micros = await self.r.time()
        now_ms = int(seconds) * 1000 + int(micros) // 1000
        pipe = self.r.pipeline(transaction=False)
        pipe.zremrangebyscore(keys.SCORING_WORKERS, "-inf", now_ms)
        pipe.zadd(keys.SCORING_WORKERS, {self.name: now_ms + int(ANNOUNCE_TTL_S * 1000)})
        pipe.zcard(keys.SCORING_WORKERS)
        *_, live = await pipe.execute()
        return max(1, int(live))

    async def registered(self) -> list[str]:
        """The registry's competition ids, sorted (a member that is not an id is
        skipped: it names no keys). Raises RedisError."""
        members = {bus.text(m) for m in await self.r.smembers(keys.COMPETITIONS)}
        return sorted(c for c in members if keys.COMPETITION_ID.fullmatch(c))

    async def poll(self) -> None:
        """One round: announce, count, then take up to the share or hand one over.
        Raises RedisError, and what a runner died of (a bug: the worker stops, as a
        worker of one competition does)."""
        self.reap()
        live = await self.announce()
        competitions = set(await self.registered()) | set(self.scored)
        share = -(-len(competitions) // live)
        if len(self.scored) > share:
            self.over_share += 1
            if self.over_share >= SHED_AFTER:
                self.over_share = 0
                last = next(reversed(self.scored))
                log.info("%d workers share %d competitions: handing %s over",
                         live, len(competitions), last)
                await self.hand_over(last)
            return
        self.over_share = 0
        for competition in sorted(competitions - set(self.scored)):
            if len(self.scored) >= share:
                break
            await self.try_take(competition)

    def reap(self) -> None:
        """Forget the runners that ended: their lease is another worker's. Raises what
        a runner died of."""
        for competition, scored in list(self.scored.items()):
            if scored.task.done():
                del self.scored[competition]
                scored.task.result()
                log.info("%s: the lease went to another worker", competition)

    async def try_take(self, competition: str) -> None:
        """Score ``competition`` if its lease is free (or already this worker's).
        Raises RedisError."""
        lease = Lease(self.r, competition, self.name, url=self.settings.redis_url)
        if not await lease.take():
            return
        runner = ScoringRunner(replace(self.settings, competition_id=competition), self.r,
                               owner=self.name)
        runner.lease = lease
        stop = asyncio.Event()
        task = asyncio.create_task(runner.run(stop, stand_by=False),
                                   name=f"scoring {competition}")
        self.scored[competition] = Scored(runner, stop, task)

    async def hand_over(self, competition: str) -> None:
        """Stop scoring ``competition`` and release its lease at once."""
        scored = self.scored.pop(competition)
        await self._stop([scored])

    async def _stop(self, runners: list[Scored]) -> None:
        for scored in runners:
            scored.stop.set()
            scored.task.cancel()  # it may be waiting on Redis: no need to wait for it
        await asyncio.gather(*(s.task for s in runners), return_exceptions=True)
        for scored in runners:
            await scored.runner.lease.give_up()

    async def run(self, stop: asyncio.Event) -> None:
        """Poll until ``stop`` is set. Raises what a runner died of."""
        while not stop.is_set():
            try:
                await self.poll()
                self.outage.ok()
            except (RedisError, OSError) as exc:
                self.outage.failed(exc, "watching the competitions")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), POLL_S)

    async def close(self) -> None:
        """Stop every runner, release their leases and withdraw the announcement, so
        the other workers take the competitions at once."""
        runners, self.scored = list(self.scored.values()), {}
        await self._stop(runners)
        with contextlib.suppress(RedisError, OSError):
            await self.r.zrem(keys.SCORING_WORKERS, self.name)


async def serve(settings: Settings, r: aioredis.Redis, stop: asyncio.Event,
                ready: Ready | None = None) -> None:
    """Score any competition with the other workers until ``stop`` is set; ``ready``
    gets ``{}`` (no listeners). Raises what a runner died of."""
    pool = Pool(settings, r)
    log.info("scoring any competition as %s", pool.name)
    try:
        if ready:
            await ready({})
        await pool.run(stop)
    finally:
        await pool.close()
