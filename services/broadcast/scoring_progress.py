"""Waiting for scoring to reach a point of the raw log: a race a start list has just
created exists for the broadcast node once scoring has handled it
(:meth:`services.broadcast.fanout.Hub.exists`, docs/protocol.md "Competitions")."""
from __future__ import annotations

import asyncio
import contextlib

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from icetime import bus, keys

#: How often the wait polls scoring's progress mark (one poll for all waiters), s.
SCORING_POLL_S = 0.02


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
