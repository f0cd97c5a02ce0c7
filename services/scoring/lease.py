"""The scoring lease: which worker scores a competition, through redis-py's ``Lock``.

Any number of scoring workers may run with one competition's configuration (on one
machine or several); exactly one of them scores it at a time: the one holding the
lease, a redis-py ``Lock`` on :func:`icetime.keys.scoring_lease` with a time to live
(:data:`TTL_S`) that its owner extends while it lives. The others stand by and try to
take it every :data:`POLL_S`; when the owner dies its lease runs out and one of them
takes over, rebuilding the engine from the checkpoint and the raw log as any restart
does. No consensus of icetime's own: Redis's ``SET NX PX`` and the lock's
compare-and-set scripts decide.

The lease is extended from a thread of its own, with its own connection: a worker
whose event loop is held up (a long batch of inputs, a rebuild, a checkpoint on a machine
short of CPU) is alive and keeps its competition; were the lease extended from the loop,
a hold-up longer than :data:`TTL_S` would lose it, and the rebuild that follows would be
held up in turn, for ever on a starved machine with one worker. A loop held up longer
than :data:`STALL_LIMIT_S` is taken for hung: its lease is no longer extended, and
another worker takes over.

The lease's token is the worker's name (:func:`worker_name`), so a worker restarted
under the same name (``icetime run`` restarting a scoring process that died) takes its
own lease back at once instead of waiting for it to run out. The publish script checks
the token (``icetime.bus.Bus.publish``): a worker that lost its lease without noticing
(paused, cut off) cannot publish beside the new owner.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.asyncio.lock import Lock
from redis.exceptions import LockError, LockNotOwnedError, RedisError

from icetime import keys
from icetime.redis_connect import connect

log = logging.getLogger(__name__)
#: How long a lease lasts without being extended (s): how long a competition may go
#: unscored after its owner died, before another worker takes over.
TTL_S = 3.0
#: How often an owner extends its lease (s): three times per TTL.
RENEW_S = TTL_S / 3
#: How often a standing-by worker tries to take the lease (s).
POLL_S = 0.5
#: How long this worker's event loop may go without a turn (s) before its lease is no
#: longer extended: longer than any batch, rebuild slice or checkpoint piece takes on a
#: starved machine, short enough that a hung worker's competition is taken over.
STALL_LIMIT_S = 30.0


def worker_name() -> str:
    """This worker's name: ``<host>/<ICETIME_WORKER>`` (``scoring`` when unset). Two
    workers of one competition on one machine need their own ``ICETIME_WORKER``."""
    return f"{socket.gethostname()}/{os.environ.get('ICETIME_WORKER') or 'scoring'}"


class Lease:
    """One worker's hold on one competition's scoring lease."""

    def __init__(self, r: aioredis.Redis, competition: str, owner: str,
                 url: str = "") -> None:
        """``url``: the Redis ``r`` talks to (``icetime.redis_connect.connect``'s forms);
        with it the lease is extended from a thread of its own (see the module's text),
        without it from the event loop."""
        self.owner = owner
        self.url = url
        self.lock = Lock(r, keys.scoring_lease(competition), timeout=TTL_S,
                         blocking=False, thread_local=False)

    async def take(self) -> bool:
        """Take the lease if it is free or already ours (an earlier life of this
        worker); False if another worker holds it. Raises RedisError."""
        if await self.lock.acquire(token=self.owner):
            return True
        self.lock.local.token = self.owner.encode()
        try:
            await self.lock.reacquire()  # ours: a full TTL from now
            return True
        except LockNotOwnedError:
            self.lock.local.token = None
            return False

    async def keep(self) -> None:
        """Extend the lease every :data:`RENEW_S` while it is ours; return once it is
        lost: another worker holds it, or Redis could not be reached for a whole TTL
        (by then it has run out, and another worker may hold it), or (with ``url``)
        this loop went :data:`STALL_LIMIT_S` without a turn."""
        if not self.url:
            await _extend(self.lock, lambda: True)
            return
        loop = asyncio.get_running_loop()
        lost = asyncio.Event()
        turn = [time.monotonic()]  # this loop's last turn, read by the thread
        stop = threading.Event()

        def report_lost() -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(lost.set)

        thread = threading.Thread(
            target=self._extend_elsewhere, args=(turn, stop, report_lost),
            name=f"lease {self.lock.name!r}", daemon=True)
        thread.start()
        try:
            while not lost.is_set():
                turn[0] = time.monotonic()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(lost.wait(), RENEW_S / 4)
        finally:
            stop.set()

    def _extend_elsewhere(self, turn: list[float], stop: threading.Event,
                          report_lost: Callable[[], None]) -> None:
        """The thread's work: its own event loop, client and lock on the same key and
        token; extends while ``turn`` is recent and ``stop`` is not set."""
        async def extend() -> None:
            r = connect(self.url)
            lock = Lock(r, self.lock.name, timeout=TTL_S, blocking=False,
                        thread_local=False)
            lock.local.token = self.owner.encode()
            try:
                await _extend(lock, lambda: not stop.is_set() and
                              time.monotonic() - turn[0] < STALL_LIMIT_S)
            finally:
                await r.aclose()

        asyncio.run(extend())
        if not stop.is_set():
            report_lost()

    async def give_up(self) -> None:
        """Release the lease (a worker that stops hands over at once); nothing if it
        is not ours any more, or Redis is away (it then runs out by itself)."""
        try:
            await self.lock.release()
        except (LockError, RedisError):
            pass


async def _extend(lock: Lock, alive: Callable[[], bool]) -> None:
    """Extend ``lock`` every :data:`RENEW_S` while ``alive()``; return when it is lost
    (another worker holds it, or Redis was away for a whole TTL) or not ``alive()``."""
    extended = time.monotonic()
    while True:
        await asyncio.sleep(RENEW_S)
        if not alive():
            return
        try:
            await lock.reacquire()
            extended = time.monotonic()
        except LockNotOwnedError:
            return
        except RedisError as exc:
            if time.monotonic() - extended >= TTL_S:
                log.debug("lease not extended for a whole TTL: %s", exc)
                return
