"""What every decoder link does: connect, capture, publish health, handle records.

A protocol's link (:mod:`services.ingest.decoders.link`) subclasses
:class:`DecoderLink`; storing its passings is :mod:`.spool`'s part. Every link does these:

* append every byte received to a capture log (``<data_dir>/captures``), framed
  as ``u64 receive µs, u32 length, bytes``, so a session can be replayed through
  the same codec;
* reopen a dropped link with backoff (doubling up to ``MAX_BACKOFF_S``): a decoder
  that is down is warned about once, retried quietly (DEBUG) and announced when it
  is back; report, count and keep damaged records in the rejects stream and carry on;
* turn a passing of a ``gun_transponders`` id into a gun for the pair called to
  the start;
* classify every record: a passing, a status (or another known record) or a
  damaged record counted with its reason. An exception while handling one record
  is logged with its traceback and counted (``internal_errors``), the record is kept
  in the rejects stream, and the link carries on; a link task that fails anyway is
  restarted by ingest (``services.ingest.server.supervise``);
* publish health (link up or down, the decoder's status fields, the last passing,
  the counters, the clock offset): the latest per decoder in a Redis hash, every
  change as an event in a capped stream (see docs/decoders.md, "Health").
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from icetime import keys
from icetime.settings import Decoder
from icetime.timefmt import now_us

from . import Damaged, spool
from .capture import CaptureLog
from .sessions import Sessions
from .spool import PassingStore, Pending

if TYPE_CHECKING:
    from ..server import Ingest

log = logging.getLogger(__name__)
#: A link that stayed up this long was a good one: reconnect at once after it drops.
STABLE_LINK_S = 2.0
#: Reconnect attempts start this far apart and double up to MAX_BACKOFF_S: a decoder
#: switched on (or plugged in) after icetime is timing within 5 s, not the minute a
#: fresh user waited; an attempt at a decoder that is off costs one refused connect.
FIRST_BACKOFF_S = 0.1
MAX_BACKOFF_S = 5.0
#: With sync_clock, measure the decoder's clock this often (and on every connect).
CLOCK_CHECK_S = 30.0
#: A measured offset this far from the one in use is a real clock change, not jitter:
#: only then is it applied (re-applying jitter would move times within one race).
CLOCK_STEP_US = 2_000
#: Damaged records are counted by reason (numbers taken out) in health; at most this
#: many reasons are kept apart, the rest count as "other".
MAX_REASONS = 20
#: The last few anomalies (jumps in the passing numbers) shown in health.
MAX_ANOMALIES = 10
#: An exception handling a record is logged with its traceback the first times, then
#: once per this many, so that a bug hit by every record cannot flood the log.
TRACEBACK_EVERY = 1000
_NUMBERS = re.compile(r"0x[0-9a-fA-F]+|\d+")


class DecoderLink(PassingStore):
    """What every link does: connect with backoff, capture, health, store passings.

    A protocol fills in :meth:`received` (bytes in) and may use :meth:`on_connect`.
    """

    #: The capture log's file name ending.
    CAPTURE_SUFFIX = ".log"
    #: The protocol's name in reject reasons.
    PROTOCOL = "?"
    #: The decoder numbers its passings, so a number that comes back with another
    #: passing means it restarted: a new session (docs/decoders.md, "Sessions").
    NUMBERED = True

    def __init__(self, cfg: Decoder, ingest: Ingest, capture_dir: Path) -> None:
        self.cfg = cfg
        self.ingest = ingest
        self.capture_path = capture_dir / f"{cfg.id}{self.CAPTURE_SUFFIX}"
        self.capture: CaptureLog | None = None
        #: records = passing_records + status_records + other_records + damaged, and
        #: passing_records = passings + duplicates + refused + not_stored + spooled
        #: (those waiting in the spool now) + held (P3: waiting for a boot check).
        self.stats: dict[str, int] = {
            "connects": 0, "passings": 0, "duplicates": 0, "refused": 0, "not_stored": 0,
            "records": 0, "passing_records": 0, "status_records": 0, "other_records": 0,
            "damaged": 0, "resend_requests": 0, "internal_errors": 0, "failures": 0}
        self.damaged_reasons: dict[str, int] = {}
        self.anomalies: deque[dict[str, Any]] = deque(maxlen=MAX_ANOMALIES)
        self.last_failure: str | None = None
        self.health: dict[str, Any] = {}
        self.connected = False
        self.last_passing_us: int | None = None
        self.offset_us = cfg.offset_us  # decoder clock + offset_us = host clock
        self.clock_rtt_us: int | None = None
        self.published_us = 0
        self.writer: asyncio.StreamWriter | None = None
        #: Loop time the link went down (warned about once); None while it is up.
        self.down_since: float | None = None
        #: One session per boot of the decoder; loaded from Redis before the first store.
        self.sessions = Sessions()
        self.sessions_loaded = False
        #: Passings not stored yet (storage unavailable), oldest first; the task that
        #: stores them; whether some were left out (the spool full); when it filled.
        self.spool: deque[Pending] = deque()
        self.drainer: asyncio.Task[None] | None = None
        self.spool_overflowed = False
        self.spool_since = 0.0

    def state(self) -> dict[str, Any]:
        """What the monitor and /api/health show for this decoder."""
        return {"id": self.cfg.id, "protocol": self.cfg.protocol, "point": self.cfg.point,
                "connected": self.connected, "status": self.health,
                "last_passing_us": self.last_passing_us,
                "clock_offset_us": self.offset_us, "clock_rtt_us": self.clock_rtt_us,
                **self.stats, "spooled": len(self.spool), "spool_max": spool.SPOOL_MAX,
                "damaged_reasons": dict(self.damaged_reasons),
                "anomalies": list(self.anomalies), "last_failure": self.last_failure,
                **self.sessions.state()}

    async def publish_health(self, event: str) -> None:
        """The latest state in the hash, and the change as an event in the stream."""
        self.published_us = now_us()
        doc = json.dumps({"event": event, "at_us": self.published_us, **self.state()})
        r = self.ingest.r
        try:
            async with r.pipeline(transaction=False) as pipe:
                pipe.hset(keys.decoders_hash(self.ingest.competition), self.cfg.id, doc)
                pipe.xadd(keys.decoder_health_stream(self.ingest.competition), {"d": doc},
                          maxlen=keys.DECODER_HEALTH_MAXLEN, approximate=True)
                await pipe.execute()
        except RedisError as exc:  # counted as ingest's outage, logged once there
            self.ingest.outage.failed(exc, f"publishing decoder {self.cfg.id}'s health")
        except Exception as exc:  # health is best effort: never stop the passings for it
            log.warning("decoder %s: health not published: %s", self.cfg.id, exc)

    async def run(self, stop: asyncio.Event) -> None:
        """Keep the link up until ``stop``. Raises only on what the link cannot handle
        itself (the capture log cannot be opened, a bug): the caller logs and restarts
        it (services.ingest.server.supervise), and this object carries on from its state."""
        self.capture = CaptureLog(self.capture_path)
        try:
            await self._run(stop)
        finally:
            self.connected = False
            self.capture.close()
            if stop.is_set():
                await self.stop_spool()
                await self.on_stop()
            if self.writer is not None:
                self.writer.close()
                self.writer = None

    def failed(self, exc: BaseException) -> None:
        """The link task ended with ``exc``: shown in health as down, with the reason."""
        self.connected = False
        self.stats["failures"] += 1
        self.last_failure = f"{type(exc).__name__}: {exc}"[:200]

    async def _connect(self, where: str, backoff: float
                       ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """Open the link; None when the decoder is unreachable, said once as a warning
        per outage, then at debug level (the retry in ``backoff`` s)."""
        try:
            return await asyncio.open_connection(self.cfg.host, self.cfg.port)
        except OSError as exc:
            if self.down_since is None:
                self.down_since = asyncio.get_running_loop().time()
                log.warning("decoder %s at %s unreachable (%s); retrying quietly, at "
                            "least every %.0f s", self.cfg.id, where, exc, MAX_BACKOFF_S)
            else:
                log.debug("decoder %s at %s still unreachable (%s); retry in %.1f s",
                          self.cfg.id, where, exc, backoff)
            return None

    async def _run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        backoff = FIRST_BACKOFF_S
        where = f"{self.cfg.host}:{self.cfg.port}"
        back: asyncio.TimerHandle | None = None
        while not stop.is_set():
            link = await self._connect(where, backoff)
            if link is None:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                continue
            reader, self.writer = link
            connected_at = loop.time()
            self.stats["connects"] += 1
            self.connected = True
            if self.down_since is None:
                log.info("decoder %s at %s connected", self.cfg.id, where)
            else:
                # Announced once it has stayed up: a decoder that accepts and drops at
                # once is still down, and must not log a line per attempt.
                log.debug("decoder %s at %s connected", self.cfg.id, where)
                back = loop.call_later(STABLE_LINK_S, self._back, where)
            await self.publish_health("connected")
            await self.on_connect()
            clock = asyncio.create_task(self.clock_loop()) if self.cfg.sync_clock else None
            try:
                await self.pump(reader, stop)
            except (OSError, ConnectionError) as exc:
                if self.down_since is None:
                    self.down_since = loop.time()
                    log.warning("decoder %s at %s: link lost (%s); reconnecting", self.cfg.id,
                                where, exc)
                else:
                    log.debug("decoder %s at %s: link lost again (%s)", self.cfg.id, where, exc)
            finally:
                if back is not None:
                    back.cancel()
                    back = None
                if clock is not None:
                    clock.cancel()
                self.writer.close()
                self.writer = None
                self.connected = False
            if stop.is_set():
                break
            await self.publish_health("disconnected")
            if loop.time() - connected_at < STABLE_LINK_S:
                # A decoder that accepts and drops at once must not be hammered.
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
            else:
                backoff = FIRST_BACKOFF_S

    def _back(self, where: str) -> None:
        """The link has stayed up STABLE_LINK_S after an outage: say so, once."""
        if self.down_since is not None:
            down_s = asyncio.get_running_loop().time() - self.down_since - STABLE_LINK_S
            log.info("decoder %s at %s is back after %.1f s down", self.cfg.id, where, down_s)
            self.down_since = None

    async def pump(self, reader: asyncio.StreamReader, stop: asyncio.Event) -> None:
        while not stop.is_set():
            data = await reader.read(65536)
            if not data:
                raise ConnectionResetError("decoder closed the connection")
            if self.capture is not None:
                self.capture.write(data)
            await self.received(data)

    async def on_connect(self) -> None:
        """Called after each (re)connect, before reading."""

    async def on_stop(self) -> None:
        """Called once the link stops for good (ingest stops): end its own tasks."""

    async def clock_loop(self) -> None:
        """Measure the decoder's clock (protocols that can)."""

    async def received(self, data: bytes) -> None:
        raise NotImplementedError

    async def take(self, item: Any) -> None:
        """Handle one record (or Damaged) from the codec with :meth:`handle`. An
        exception other than the connection's own is a bug: logged with its traceback,
        counted, the record kept in the rejects stream, and the link goes on."""
        self.stats["records"] += 1
        try:
            await self.handle(item)
        except OSError:
            raise  # the connection itself (a RESEND or ack that cannot be written)
        except Exception as exc:
            n = self.stats["internal_errors"] = self.stats["internal_errors"] + 1
            if n <= 10 or n % TRACEBACK_EVERY == 0:
                log.exception("decoder %s: a %s record could not be handled (%d so far); "
                              "kept in the rejects stream", self.cfg.id, self.PROTOCOL, n)
            raw = getattr(item, "raw", b"")
            await self.ingest.reject(self.cfg.id, raw if isinstance(raw, bytes) else b"",
                                     f"{self.PROTOCOL}: not handled ({type(exc).__name__})")

    async def handle(self, item: Any) -> None:
        raise NotImplementedError

    async def damaged(self, item: Damaged) -> None:
        """Count a damaged record by its reason and keep it in the rejects stream."""
        self.stats["damaged"] += 1
        key = _NUMBERS.sub("N", item.reason)[:80]
        if key not in self.damaged_reasons and len(self.damaged_reasons) >= MAX_REASONS:
            key = "other"
        self.damaged_reasons[key] = self.damaged_reasons.get(key, 0) + 1
        await self.ingest.reject(self.cfg.id, item.raw, f"{self.PROTOCOL}: {item.reason}")

    async def status(self, fields: dict[str, Any]) -> None:
        self.health = {**fields, "last_seen_us": now_us()}
        await self.publish_health("status")
