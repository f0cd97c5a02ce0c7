"""What is saved and restored of a scoring worker's engine: on start, the engine is
rebuilt from the last checkpoint (``checkpoint``) when this code and these settings
made it, then the raw log after it is replayed up to the progress mark, publishing
nothing; without a usable checkpoint, from the start. While scoring, a checkpoint is
saved now and then, at most ~1/20 of the worker's time (:data:`CHECKPOINT_SPACING`).

:class:`Recovery` is the base of ``runner.ScoringRunner``, which sets the state it
declares.
"""
from __future__ import annotations

import asyncio
import gc
import logging
import time

import msgspec
import redis.asyncio as aioredis

from icetime import bus, keys, restarts, snapshot
from icetime.messages import FeedInput, decode_stored
from icetime.rules import load as load_rules
from icetime.settings import Settings
from icetime.timefmt import now_us

from . import checkpoint
from .competition import Competition
from .lease import Lease

log = logging.getLogger(__name__)
REPLAY_CHUNK = 2000
#: Longest stretch (s) a replay or a checkpoint's pickling holds the event loop: the
#: lease's keeper (services/scoring/lease.py) must get to extend the lease, or a long
#: rebuild loses it and starts again, for ever.
SLICE_S = 0.05
#: Checkpoint fields asked for per HSCAN reply on restore (a race's field is ~10-30 KB).
RESTORE_SCAN = 200
#: A checkpoint blocks the worker while it is written: the next one waits at least this
#: many times as long as the last took, so checkpoints cost at most ~1/20 of its time.
CHECKPOINT_SPACING = 20


class Recovery:
    """Rebuilding the engine from the checkpoint and the raw log; saving checkpoints."""

    settings: Settings
    r: aioredis.Redis
    bus: bus.Bus
    #: This worker's hold on the competition; its owner names the worker.
    lease: Lease
    #: The competition scored, and its raw log's stream key.
    competition: str
    raw: str
    engine: Competition
    cadence: snapshot.Cadence
    #: The last raw input whose output was written (None: none yet).
    progress: tuple[int, int] | None
    #: Of this code and these settings: a checkpoint made by others is not used.
    fingerprint: str
    saver: checkpoint.Saver
    #: The next save replaces the whole hash (it holds no checkpoint of this run yet).
    replace_checkpoint: bool
    #: Inputs handled since the last checkpoint; when it was written and how long it took.
    since_checkpoint: int
    checkpoint_at: float
    checkpoint_s: float

    def _new_engine(self) -> Competition:
        return Competition(self.settings.source_offsets(), self.settings.max_speed_mps,
                           self.settings.loops, load_rules(self.settings.rules_file or None))

    async def rebuild(self) -> int:
        """Rebuild the engine up to the progress mark: from the last checkpoint when it
        is usable, else from a fresh engine; returns how many raw inputs were replayed.
        The start and the rebuild are recorded for ``/api/health`` and the desk
        (:mod:`icetime.restarts`). Raises RedisError."""
        began_us, began = now_us(), time.monotonic()
        await restarts.scoring_started(self.r, self.competition, began_us)
        self.engine = self._new_engine()
        self.cadence = snapshot.Cadence()
        mark = await self.r.get(keys.scoring_progress(self.competition))
        self.progress = bus.parse_id(mark) if mark else None
        self.since_checkpoint = 0
        if mark is None:
            return 0  # nothing scored yet: a first start, not a rebuild
        saved = await self.restore(bus.parse_id(mark))
        n = await self.replay("(" + saved if saved is not None else "-", mark)
        log.info("rebuilt from %s and %d inputs up to %s",
                 f"the checkpoint at {saved}" if saved else "the start", n, bus.text(mark))
        if saved is None:
            # The first save writes every race: do it now, before the worker is live,
            # rather than stall live inputs later.
            await self.save_checkpoint(force=True)
        await restarts.scoring_rebuilt(self.r, self.competition, restarts.Rebuild(
            at_us=began_us, source="start" if saved is None else "checkpoint",
            checkpoint=saved, inputs=n, seconds=round(time.monotonic() - began, 3),
            worker=self.lease.owner))
        return n

    async def replay(self, start: str, mark: bytes | str) -> int:
        """Feed the engine the raw log from ``start`` (an XRANGE bound) up to ``mark``,
        publishing nothing; returns how many entries were replayed. Raises RedisError."""
        n = 0
        paused = time.monotonic()
        while True:
            entries = bus.entries(
                await self.r.xrange(self.raw, start, mark, count=REPLAY_CHUNK))
            for sid, fields in entries:
                inp = None if fields is None else self.decode(sid, fields)
                if inp is not None:
                    self.engine.feed(sid, inp)
                n += 1
                if time.monotonic() - paused > SLICE_S:
                    await asyncio.sleep(0)  # the lease's keeper: see SLICE_S
                    paused = time.monotonic()
            # The engine's state is long-lived: frozen out of the collector's full passes,
            # which after a long day's replay would each hold the loop for seconds
            # (1.8 s at 200,000 inputs, 20 % of the replay) and let the lease run out.
            gc.freeze()
            if len(entries) < REPLAY_CHUNK:
                return n
            start = "(" + entries[-1][0]

    async def restore(self, mark: tuple[int, int]) -> str | None:
        """Load the checkpoint into :attr:`engine` when it was made by this code and
        these settings, at or before ``mark``; returns the raw input id it stands at,
        or None (the engine stays fresh) when there is none to use, saying why."""
        self.saver.forget()
        self.replace_checkpoint = True
        # Scanned, not HGETALL: a long day's checkpoint is hundreds of MB, more than one
        # reply may take (the client's reply timeout). Only the lease's owner (this
        # worker) writes it meanwhile (Bus.save_checkpoint).
        fields = {bus.text(k): v if isinstance(v, bytes) else v.encode()
                  async for k, v in self.r.hscan_iter(keys.scoring_checkpoint(self.competition),
                                                      count=RESTORE_SCAN)}
        progress = bus.text(fields.get("progress"))
        if not progress:
            return None
        if bus.text(fields.get("fingerprint")) != self.fingerprint:
            log.info("checkpoint made by other code or settings: replaying the whole log")
            return None
        if bus.parse_id(progress) > mark:
            # The log is older than the checkpoint (Redis restored from an older copy).
            log.warning("checkpoint at %s is past the progress mark: replaying the whole log",
                        progress)
            return None
        engine = checkpoint.load(fields)
        if engine is None:
            log.warning("checkpoint at %s is damaged: replaying the whole log", progress)
            return None
        self.engine = engine
        self.saver.holds()  # later saves add what changes
        self.replace_checkpoint = False
        return progress

    async def save_checkpoint(self, force: bool = False) -> None:
        """Save the engine as it stands after :attr:`progress`, when enough inputs and
        time have passed since the last save (see :data:`CHECKPOINT_SPACING`), or now
        with ``force``."""
        now = time.monotonic()
        if self.progress is None:
            return
        if not force and (self.since_checkpoint < self.settings.checkpoint_every
                          or now - self.checkpoint_at < CHECKPOINT_SPACING * self.checkpoint_s):
            return
        progress = "{}-{}".format(*self.progress)
        fields = {"fingerprint": self.fingerprint.encode(), "progress": progress.encode()}
        # Pickled with breaks: seconds of it in one go (every race, after a long day's
        # replay) would keep the lease's keeper from extending the lease, and a lease
        # run out refuses the save; the engine takes no input meanwhile.
        paused = time.monotonic()
        for k, v in self.saver.items(self.engine):
            fields[k] = v
            if time.monotonic() - paused > SLICE_S:
                await asyncio.sleep(0)
                paused = time.monotonic()
        # Whole when none of ours is stored yet: it replaces whatever another run left.
        await self.bus.save_checkpoint(fields, whole=self.replace_checkpoint)
        self.replace_checkpoint = False
        self.checkpoint_at = time.monotonic()
        self.checkpoint_s = self.checkpoint_at - now
        self.since_checkpoint = 0
        gc.freeze()  # what the inputs since the last one built: as in rebuild()
        log.debug("checkpoint at %s: %d fields, %d bytes in %.3f s", progress,
                  len(fields), sum(len(v) for v in fields.values()), self.checkpoint_s)

    def decode(self, sid: str, fields: dict[bytes, bytes]) -> FeedInput | None:
        """A raw entry's typed input; None, counted as refused, when it is not one."""
        data = fields.get(b"d")
        if data is None:
            self.engine.refuse(sid, "a raw entry without its input ('d')")
            return None
        try:
            return decode_stored(data)
        except msgspec.DecodeError as exc:  # also its subclass ValidationError
            self.engine.refuse(sid, f"not a valid input: {exc}")
            return None
