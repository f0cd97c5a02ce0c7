"""Links to timing decoders: connect, decode, hand passings to ingest, lose nothing.

One link per ``[[decoders]]`` entry, by its ``protocol``:

* ``p3`` (:class:`P3Link`): MYLAPS/AMB P3 on TCP. PASSING records become feed
  inputs with ``seq = passing number``, so (decoder, session, passing number) makes them
  idempotent. Passing numbers are consecutive per decoder: a gap, or a reconnect,
  sends RESEND requests (TOR 0x04, FROM 0x01 / UNTIL 0x02) for what is missing,
  bounded by :mod:`.numbers` (a jump is reported, not asked for).
  With ``sync_clock``, GET_TIME measures the decoder's clock.
* ``amb_ascii`` (:class:`AmbAsciiLink`): the legacy AMB ASCII lines on TCP; the
  decoder's own record number is the ``seq``.
* ``protime`` (:class:`ProtimeLink`): Chronelec/TAG Heuer Protime telegrams on TCP
  (a serial-to-TCP converter); every valid telegram is acknowledged with ESC 0x11,
  and its transponder and time of day make the ``seq``, so a repeat is a duplicate.
  ``protime_udp`` (:class:`ProtimeUdpLink`) listens for them on UDP instead (the
  decoder sends to port 2008 and wants the ack back).

All of them:

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
import contextlib
import json
import logging
import re
import struct
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from redis.exceptions import RedisError

from icetime import keys
from icetime.settings import Decoder
from icetime.startlist import transponder_key
from icetime.timefmt import now_us

from . import Damaged, amb_ascii, protime
from .numbers import Anomaly, PassingNumbers
from .p3 import TOR, P3Decoder, P3Passing, P3Record, classify, encode, u
from .sessions import Sessions
from .timeofday import on_day

if TYPE_CHECKING:
    from ..server import Ingest

log = logging.getLogger(__name__)
#: What became of a passing handed to ingest (:meth:`DecoderLink.store_passing`).
StoreResult = Literal["stored", "refused", "spooled", "retry"]
#: Health is published on each link change and STATUS, and after passings at most this
#: often (for decoders that send no STATUS).
HEALTH_EVERY_US = 1_000_000
#: A link that stayed up this long was a good one: reconnect at once after it drops.
STABLE_LINK_S = 2.0
#: Reconnect attempts start this far apart and double up to MAX_BACKOFF_S, so a decoder
#: that is switched off (or not there today) costs one attempt a minute.
FIRST_BACKOFF_S = 0.1
MAX_BACKOFF_S = 60.0
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
#: An AMB ASCII clock (time since the decoder's start) that goes back further than this
#: was restarted (its records arrive in order: there is no resend to bring old ones).
CLOCK_BACK_US = 1_000_000
#: P3 records by which a decoder says it (re)started: a new session.
RESTART_RECORDS = (TOR["RESET"], TOR["FIRST_CONTACT"])
#: Passings that could not be stored (Redis away) wait in the link's spool, in order, at
#: most this many (some 100 races of passings); past that a passing is counted as
#: ``not_stored`` and, over P3, asked for again once the spool is stored.
SPOOL_MAX = 10_000
#: While passings are spooled, the oldest is tried again this often: a stopped Redis
#: refuses a connection at once, so a try costs next to nothing.
SPOOL_RETRY_S = 0.2


@dataclass(slots=True)
class Pending:
    """A passing on its way to ingest: the feed input, its seq, the decoder's bytes, and
    the session its protocol chose when it arrived (Protime's day; None for the others,
    whose session is found when it is stored)."""

    inp: dict[str, Any]
    seq: int
    raw: bytes
    session: str | None = None


class CaptureLog:
    """Append-only log of every byte a decoder sent, with receive times."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.f = path.open("ab")

    def write(self, data: bytes) -> None:
        self.f.write(struct.pack("<QI", now_us(), len(data)) + data)
        self.f.flush()

    def close(self) -> None:
        self.f.close()


def read_capture(path: Path) -> list[tuple[int, bytes]]:
    data = path.read_bytes()
    out, i = [], 0
    while i + 12 <= len(data):
        t, n = struct.unpack_from("<QI", data, i)
        out.append((t, data[i + 12:i + 12 + n]))
        i += 12 + n
    return out


def resend_request(first: int, last: int) -> bytes:
    return encode(TOR["RESEND"], [(0x01, u(first, 4)), (0x02, u(last, 4))])


def make_link(cfg: Decoder, ingest: Ingest, capture_dir: Path) -> DecoderLink:
    """The link for a configured decoder, by its protocol (one of settings.PROTOCOLS;
    ValueError for another)."""
    kind = LINKS.get(cfg.protocol)
    if kind is None:
        raise ValueError(f"decoder {cfg.id}: unknown protocol {cfg.protocol!r} "
                         f"(known: {', '.join(LINKS)})")
    return kind(cfg, ingest, capture_dir)


class DecoderLink:
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
        #: (those waiting in the spool now).
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
                **self.stats, "spooled": len(self.spool), "spool_max": SPOOL_MAX,
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

    async def store_passing(self, seq: int, transponder: str, t: int, raw: bytes,
                            point: str | None = None, alias: str | None = None,
                            session: str | None = None) -> StoreResult:
        """Hand a passing (or a start beacon) to ingest: ``"stored"`` (or a duplicate of
        one stored), ``"refused"`` (ingest refused it and keeps it in the rejects
        stream), ``"spooled"`` (storage unavailable: kept in the link's spool and stored
        in order as soon as storage answers) or ``"retry"`` (storage unavailable and the
        spool full: counted as ``not_stored``, to be asked for again where the protocol
        can). ``alias``: the other id the chip reported (a ProChip's number beside its
        code). ``session``: the one the protocol chose (Protime), else None.

        While the spool holds passings, a new one joins it behind them, so passings are
        stored in the order they came. It goes in the session :meth:`session_order`
        says; a number that comes back with another passing starts a new session
        (:meth:`restart`) and is stored there."""
        if self._is_gun(transponder, alias):
            # The start impulse as a beacon passing: a gun for the pair called to the start.
            inp: dict[str, Any] = {"type": "gun", "seq": seq, "t": t}
        else:
            inp = {"type": "passing", "seq": seq, "transponder": transponder, "t": t,
                   "point": point or self.cfg.point}
            if alias is not None and alias != transponder:
                inp["transponder_alias"] = alias
        pending = Pending(inp, seq, raw, session)
        if not self.spool:
            result = await self._store(pending)
            if result != "retry":
                return result
        if len(self.spool) >= SPOOL_MAX:
            self.stats["not_stored"] += 1
            if not self.spool_overflowed:
                self.spool_overflowed = True
                log.warning("decoder %s: the spool is full (%d passings); later passings "
                            "are not kept until it is stored", self.cfg.id, SPOOL_MAX)
            return "retry"
        if not self.spool:
            self.spool_since = asyncio.get_running_loop().time()
            log.warning("decoder %s: storage unavailable; keeping passings in the link's "
                        "spool (at most %d) until it answers", self.cfg.id, SPOOL_MAX)
        self.spool.append(pending)
        if self.drainer is None or self.drainer.done():
            self.drainer = asyncio.create_task(self._drain())
        return "spooled"

    async def _store(self, p: Pending) -> StoreResult:
        """Store one passing now: ``"stored"``, ``"refused"`` or ``"retry"``."""
        try:
            reply = await self._store_in_session(p)
        except RedisError as exc:  # the sessions could not be loaded or saved
            self.ingest.outage.failed(exc, f"loading decoder {self.cfg.id}'s sessions")
            reply = {"ok": False, "retry": True}
        if not reply.get("ok"):
            if reply.get("retry"):
                return "retry"
            self.stats["refused"] += 1
            return "refused"
        self.last_passing_us = now_us()
        self.stats["duplicates" if reply.get("duplicate") else "passings"] += 1
        if self.last_passing_us - self.published_us > HEALTH_EVERY_US:
            # Decoders without STATUS records (ASCII, Protime) still show their counts.
            await self.publish_health("passing")
        return "stored"

    async def _drain(self) -> None:
        """Store the spool, oldest first, trying again every SPOOL_RETRY_S while storage
        is unavailable; new passings join its end meanwhile."""
        stored = 0
        while self.spool:
            await asyncio.sleep(SPOOL_RETRY_S)
            while self.spool:
                if await self._store_head() == "retry":
                    break
                self.spool.popleft()
                stored += 1
        log.info("decoder %s: %d spooled passings stored, in order, %.1f s after the "
                 "first was kept", self.cfg.id, stored,
                 asyncio.get_running_loop().time() - self.spool_since)
        overflowed, self.spool_overflowed = self.spool_overflowed, False
        await self.publish_health("spool_stored")
        await self.on_spool_stored(overflowed)

    async def _store_head(self) -> StoreResult:
        """Store the spool's oldest passing. A bug storing it costs that passing only
        (logged, counted, kept in the rejects stream), not the spool."""
        p = self.spool[0]
        try:
            return await self._store(p)
        except Exception:
            self.stats["internal_errors"] += 1
            log.exception("decoder %s: a spooled passing could not be stored; kept in the "
                          "rejects stream", self.cfg.id)
            await self.ingest.reject(self.cfg.id, p.raw, f"{self.PROTOCOL}: not handled")
            return "refused"

    async def on_spool_stored(self, overflowed: bool) -> None:
        """The spool is stored; ``overflowed``: passings were left out while it was full
        (a protocol that can ask for them again does it here)."""

    async def stop_spool(self) -> None:
        """Stop storing the spool (ingest stops): what it holds is lost with the process;
        a P3 decoder is asked for it again on the next connect."""
        if self.drainer is not None:
            self.drainer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.drainer
            self.drainer = None

    def _is_gun(self, transponder: str, alias: str | None) -> bool:
        guns = {transponder_key(g) for g in self.cfg.gun_transponders}
        return transponder_key(transponder) in guns or (
            alias is not None and transponder_key(alias) in guns)

    def session_order(self, p: Pending) -> list[str | None]:
        """The sessions to try a passing in, in turn (:meth:`Sessions.order`)."""
        return self.sessions.order(p.seq)

    async def _store_in_session(self, p: Pending) -> dict[str, Any]:
        """Store ``p`` in the first session that takes it; a conflict in the current
        session (a restarted decoder's number) starts a new one, where it is stored."""
        inp, seq, raw = p.inp, p.seq, p.raw
        await self.load_sessions()
        reply: dict[str, Any] = {}
        for session in self.session_order(p):
            reply = await self._accept(inp, session, raw)
            if not reply.get("conflict"):
                return await self._stored(reply, session, seq)
        if not self.NUMBERED:
            await self.ingest.reject(self.cfg.id, raw, str(reply.get("error")), inp)
            return reply
        session = await self.restart(f"passing number {seq} came again with another "
                                     "passing", seq)
        reply = await self._accept(inp, session, raw)
        if reply.get("conflict"):  # cannot be: the session is new
            await self.ingest.reject(self.cfg.id, raw, str(reply.get("error")), inp)
        return await self._stored(reply, session, seq)

    async def _accept(self, inp: dict[str, Any], session: str | None, raw: bytes
                      ) -> dict[str, Any]:
        doc = inp if session is None else {**inp, "session": session}
        return await self.ingest.accept(doc, self.cfg.id, raw, refuse_conflict=False)

    async def _stored(self, reply: dict[str, Any], session: str | None, seq: int
                      ) -> dict[str, Any]:
        if reply.get("ok") and self.NUMBERED and self.sessions.stored(session, seq):
            await self.save_sessions()
        return reply

    async def load_sessions(self) -> None:
        """The sessions as ingest saved them (once per link object); RedisError if
        Redis is away (the passing is asked for again)."""
        if self.sessions_loaded:
            return
        doc = await self.ingest.r.hget(keys.decoder_sessions(self.ingest.competition), self.cfg.id)
        if doc is not None:
            try:
                last = await self.ingest.last_seq(self.cfg.id, _current(doc))
                self.sessions = Sessions.load(json.loads(doc), last)
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("decoder %s: saved sessions unreadable (%s); starting anew",
                            self.cfg.id, exc)
                self.sessions = Sessions()
        self.sessions_loaded = True

    async def save_sessions(self) -> None:
        await self.ingest.r.hset(keys.decoder_sessions(self.ingest.competition), self.cfg.id,
                                 json.dumps(self.sessions.dump()))

    async def restart(self, reason: str, seq: int | None = None) -> str | None:
        """The decoder restarted (``reason``): a new session, said in the log and the
        health (event ``restart``). ``seq``: the number that showed it, if one did."""
        at = now_us()
        session: str | None
        try:
            await self.load_sessions()
            session = self.sessions.start(reason, at)
            await self.save_sessions()
        except RedisError as exc:  # kept in memory; a conflict after a reload says it again
            self.ingest.outage.failed(exc, f"saving decoder {self.cfg.id}'s sessions")
            session = self.sessions.current
        log.warning("decoder %s restarted (%s): new session %s", self.cfg.id, reason,
                    session)
        self.anomalies.append({"kind": "restart", "reason": reason, "session": session,
                               "at_us": at})
        await self.on_restart(seq)
        await self.publish_health("restart")
        return session

    async def on_restart(self, seq: int | None) -> None:
        """A new session began (``seq``: the number that showed it): protocol state
        that follows the decoder's numbers starts anew."""


def _current(doc: bytes | str) -> str | None:
    """The current session's id in saved sessions (for its last seq); None if unreadable."""
    try:
        spans = json.loads(doc)["spans"]
        return None if spans[0][0] is None else str(spans[0][0])
    except (ValueError, KeyError, TypeError, IndexError):
        return None


class P3Link(DecoderLink):
    CAPTURE_SUFFIX = ".p3log"
    PROTOCOL = "P3"

    def __init__(self, cfg: Decoder, ingest: Ingest, capture_dir: Path) -> None:
        super().__init__(cfg, ingest, capture_dir)
        self.codec = P3Decoder()
        #: The passing numbers seen, what is missing; None until ingest says where it was.
        self.numbers: PassingNumbers | None = None
        self._time_asked_us: int | None = None
        self.stats["utc_only"] = 0  # passings timed by their UTC field (no RTC time)

    def state(self) -> dict[str, Any]:
        nb = self.numbers
        return {**super().state(),
                "highest_passing": nb.highest if nb else None,
                "missing": len(nb.missing) if nb else 0,
                "missing_given_up": nb.given_up if nb else 0,
                "jumps": nb.jumps if nb else 0,
                "new_numberings": nb.new_numberings if nb else 0}

    async def pump(self, reader: asyncio.StreamReader, stop: asyncio.Event) -> None:
        self.codec = P3Decoder()  # a new connection starts a new byte stream
        await super().pump(reader, stop)

    async def received(self, data: bytes) -> None:
        for item in self.codec.feed(data):
            await self.take(item)

    async def handle(self, item: P3Record | Damaged) -> None:
        kind = item if isinstance(item, Damaged) else classify(item)
        if isinstance(kind, Damaged):
            await self.damaged(kind)
        elif isinstance(kind, P3Passing):
            self.stats["passing_records"] += 1
            await self.on_passing(kind)
        elif kind.tor == TOR["STATUS"]:
            self.stats["status_records"] += 1
            await self.status(kind.fields)
        else:
            self.stats["other_records"] += 1
            if kind.tor == TOR["GET_TIME"]:
                await self.on_time(kind)
            elif kind.tor in RESTART_RECORDS:
                await self.restart(f"{kind.tor_name} record")

    async def _numbers(self) -> PassingNumbers:
        """The passing numbers, from where ingest's current session left off."""
        if self.numbers is None:
            await self.load_sessions()
            self.numbers = PassingNumbers(
                await self.ingest.last_seq(self.cfg.id, self.sessions.current))
        return self.numbers

    async def on_restart(self, seq: int | None) -> None:
        # The old boot's gaps are given up: its numbers are not the new boot's. The new
        # boot numbers from 1, and what it numbered while the link was down is asked for.
        self.numbers = PassingNumbers(0)
        if seq is not None:
            for first, last in self.numbers.arrived(seq).requests:
                await self.request(first, last)

    async def on_connect(self) -> None:
        if self.numbers is None:
            await self._numbers()
        assert self.numbers is not None
        # Whatever was missing, and whatever the decoder saw while the link was down.
        for first, last in self.numbers.reconnect_requests():
            await self.request(first, last)

    async def clock_loop(self) -> None:
        while self.writer is not None:
            self._time_asked_us = now_us()
            self.writer.write(encode(TOR["GET_TIME"], []))
            await self.writer.drain()
            await asyncio.sleep(CLOCK_CHECK_S)

    async def on_time(self, rec: P3Record) -> None:
        """A GET_TIME answer: the decoder's clock was ``rtc_time`` half-way through the
        round trip (the error is at most half the round trip, kept as clock_rtt_us)."""
        asked, got = self._time_asked_us, now_us()
        rtc = rec.fields.get("rtc_time")
        if asked is None or rtc is None:
            return
        self._time_asked_us = None
        self.clock_rtt_us = got - asked
        offset = (asked + got) // 2 - int(rtc)
        if abs(offset - self.offset_us) < CLOCK_STEP_US:
            return
        log.info("decoder %s: clock offset %+d us (was %+d, round trip %d us)", self.cfg.id,
                 offset, self.offset_us, self.clock_rtt_us)
        reply = await self.ingest.accept(
            {"type": "clock", "offset_us": offset, "rtt_us": self.clock_rtt_us},
            self.cfg.id, rec.raw)
        if reply.get("ok"):
            self.offset_us = offset
            await self.publish_health("clock")

    async def request(self, first: int, last: int) -> None:
        if self.writer is None:
            return
        self.stats["resend_requests"] += 1
        self.writer.write(resend_request(first, last))
        await self.writer.drain()

    async def on_passing(self, p: P3Passing) -> None:
        numbers = await self._numbers()  # a record before on_connect ran: replays, tests
        if p.clock == "utc":
            self.stats["utc_only"] += 1
        verdict = numbers.arrived(p.number)
        if verdict.anomaly is not None:
            await self.report(verdict.anomaly)
        if verdict.requests:
            log.warning("decoder %s: passings %d..%d missing; asking again (%d request%s)",
                        self.cfg.id, verdict.requests[0][0], verdict.requests[-1][1],
                        len(verdict.requests), "" if len(verdict.requests) == 1 else "s")
        for first, last in verdict.requests:
            await self.request(first, last)
        if await self.store_passing(p.number, p.transponder, p.t_us, p.raw,
                                    alias=p.alias) == "retry":
            # Not kept (the spool is full): asked for once the spool is stored, not with
            # the next passing, whose RESEND answer would find the spool still full.
            (await self._numbers()).failed(p.number, ask=False)

    async def on_spool_stored(self, overflowed: bool) -> None:
        if overflowed and self.numbers is not None:
            for first, last in self.numbers.missing_requests():
                await self.request(first, last)

    async def report(self, a: Anomaly) -> None:
        """A jump in the passing numbers: logged, counted, and shown in health."""
        if a.kind == "jump":
            log.warning("decoder %s: passing number jumped from %d to %d; not asking for "
                        "the gap (a corrupted number, or a decoder numbering anew)",
                        self.cfg.id, a.highest, a.to)
        else:
            log.warning("decoder %s: passings go on from %d: a new numbering (the old one "
                        "ended at %d); earlier gaps given up", self.cfg.id, a.to, a.highest)
        self.anomalies.append({"kind": a.kind, "from": a.highest, "to": a.to,
                               "at_us": now_us()})
        await self.publish_health("anomaly")


class AmbAsciiLink(DecoderLink):
    """AMB ASCII lines: no resend in this protocol, so a reconnect relies on the
    decoder's own buffering; its record numbers still make repeats duplicates. Its time
    counts from the decoder's start (a clock that goes back is a restart: a new session)
    unless ``time_of_day`` says the decoder was set to the time of day."""

    CAPTURE_SUFFIX = ".amblog"
    PROTOCOL = "AMB ASCII"

    def __init__(self, cfg: Decoder, ingest: Ingest, capture_dir: Path) -> None:
        super().__init__(cfg, ingest, capture_dir)
        self.codec = amb_ascii.AmbAsciiDecoder()
        #: The decoder's clock at its last passing (seconds since its start, in µs).
        self.clock_us: int | None = None

    async def pump(self, reader: asyncio.StreamReader, stop: asyncio.Event) -> None:
        self.codec = amb_ascii.AmbAsciiDecoder()
        await super().pump(reader, stop)

    async def received(self, data: bytes) -> None:
        for item in self.codec.feed(data):
            await self.take(item)

    async def handle(self, item: amb_ascii.AsciiRecord | Damaged) -> None:
        if isinstance(item, Damaged):
            await self.damaged(item)
        elif item.kind == "passing":
            self.stats["passing_records"] += 1
            inp = amb_ascii.passing_input(item, self.cfg.point)
            t = await self.decoder_time(inp["t"])
            await self.store_passing(inp["seq"], inp["transponder"], t, item.raw)
        elif item.kind == "status":
            self.stats["status_records"] += 1
            await self.status(item.fields)
        else:
            self.stats["other_records"] += 1

    async def decoder_time(self, t: int) -> int:
        """A passing's time: put on its day (``time_of_day``), or else seen as the
        decoder's time since its start, which only a restart turns back."""
        if self.cfg.time_of_day:
            return on_day(t, self.offset_us, now_us())[0]
        if self.clock_us is not None and t < self.clock_us - CLOCK_BACK_US:
            await self.restart(f"its clock went back from {self.clock_us / 1e6:.3f} s to "
                               f"{t / 1e6:.3f} s since its start")
        self.clock_us = t
        return t


class ProtimeLink(DecoderLink):
    """Protime telegrams on TCP: each valid one is acknowledged, or the decoder repeats it.
    Their times are times of day, put on their day (``timeofday``) unless the decoder's
    ``time_of_day`` is false."""

    CAPTURE_SUFFIX = ".protimelog"
    PROTOCOL = "Protime"
    NUMBERED = False  # its seq is the passing itself: there is no numbering to restart

    def __init__(self, cfg: Decoder, ingest: Ingest, capture_dir: Path) -> None:
        super().__init__(cfg, ingest, capture_dir)
        self.codec = protime.ProtimeDecoder()

    async def pump(self, reader: asyncio.StreamReader, stop: asyncio.Event) -> None:
        self.codec = protime.ProtimeDecoder()
        await super().pump(reader, stop)

    async def received(self, data: bytes) -> None:
        acks = await self.store_telegrams(self.codec, data)
        if acks and self.writer is not None:
            self.writer.write(acks)
            await self.writer.drain()

    async def store_telegrams(self, codec: protime.ProtimeDecoder, data: bytes) -> bytes:
        """Store what ``data`` completes; return the acknowledgements to send. They go
        only after the passings are stored: a crash in between means the decoder sends
        them again, which the seq turns into duplicates."""
        items, acks = codec.feed(data)
        for item in items:
            await self.take(item)
        return acks

    async def handle(self, item: protime.ProtimeRecord | Damaged) -> None:
        if isinstance(item, Damaged):
            await self.damaged(item)
            return
        self.stats["passing_records"] += 1
        f = item.fields
        # Protime numbers nothing; a telegram is its transponder at its millisecond
        # of the day, so a repeat (an unheard ack) is a duplicate, not a new passing.
        # The day is the session: the same millisecond tomorrow is another passing.
        seq = int(f["transponder"]) * 100_000_000 + f["time_of_day_us"] // 1000
        inp = protime.passing_input(item, seq, self.cfg.point)
        t, days = inp["t"], 0
        if self.cfg.time_of_day is not False:
            t, days = on_day(t, self.offset_us, now_us())
        # Another loop (B01) at the same millisecond is another passing too.
        parts = ([f"day-{days}"] if days else []) + ([f["loop"]] if f["loop"] != "STA" else [])
        await self.store_passing(seq, inp["transponder"], t, item.raw, inp["point"],
                                 session="/".join(parts) or None)

    def session_order(self, p: Pending) -> list[str | None]:
        return [p.session]


class ProtimeUdpLink(ProtimeLink):
    """Protime over UDP: the decoder sends telegrams to our ``port`` (2008 by custom) and
    waits for the acknowledgement back at the address it sent from. ``port = 0`` binds
    any free port; the one bound is ``listen_port`` in the health (event ``listening``)."""

    listen_port: int | None = None

    def state(self) -> dict[str, Any]:
        return {**super().state(), "listen_port": self.listen_port}

    async def _run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[bytes, Any]] = asyncio.Queue()

        class Receiver(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: Any) -> None:
                queue.put_nowait((data, addr))

        # A port that cannot be bound raises: run() closes the capture log and the
        # supervisor logs it and tries again.
        transport, _ = await loop.create_datagram_endpoint(
            Receiver, local_addr=(self.cfg.host, self.cfg.port))
        codecs: dict[Any, protime.ProtimeDecoder] = {}  # one byte stream per sender
        try:
            self.listen_port = int(transport.get_extra_info("sockname")[1])
            self.stats["connects"] += 1
            await self.publish_health("listening")
            while not stop.is_set():
                try:
                    data, addr = await asyncio.wait_for(queue.get(), 1.0)
                except TimeoutError:
                    continue
                if self.capture is not None:
                    self.capture.write(data)
                if not self.connected:
                    self.connected = True
                    log.info("decoder %s heard from %s", self.cfg.id, addr)
                    await self.publish_health("connected")
                acks = await self.store_telegrams(
                    codecs.setdefault(addr, protime.ProtimeDecoder()), data)
                if acks:
                    transport.sendto(acks, addr)
        finally:
            transport.close()


#: The link class per ``protocol``: the same names as settings.PROTOCOLS (a test checks).
LINKS: dict[str, type[DecoderLink]] = {
    "p3": P3Link, "amb_ascii": AmbAsciiLink, "protime": ProtimeLink,
    "protime_udp": ProtimeUdpLink}
