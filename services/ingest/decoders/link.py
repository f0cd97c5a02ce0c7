"""Links to timing decoders: connect, decode, hand passings to ingest, lose nothing.

One link per ``[[decoders]]`` entry, by its ``protocol``:

* ``p3`` (:class:`P3Link`): MYLAPS/AMB P3 on TCP. PASSING records become feed
  inputs with ``seq = passing number``, so (decoder, passing number) makes them
  idempotent. Passing numbers are consecutive per decoder: a gap, or a reconnect,
  sends a RESEND request (TOR 0x04, FROM 0x01 / UNTIL 0x02) for what is missing.
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
* publish health (link up or down, the decoder's status fields, the last passing,
  the counters, the clock offset): the latest per decoder in a Redis hash, every
  change as an event in a capped stream (see docs/decoders.md, "Health").
"""
from __future__ import annotations

import asyncio
import json
import logging
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

from icetime import keys
from icetime.settings import Decoder
from icetime.timefmt import now_us

from . import Damaged, amb_ascii, protime
from .p3 import TOR, P3Decoder, P3Record, encode, u

if TYPE_CHECKING:
    from ..server import Ingest

log = logging.getLogger(__name__)
#: After a reconnect, ask for this many passings past the last one we hold.
RESEND_WINDOW = 10_000
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

    def __init__(self, cfg: Decoder, ingest: Ingest, capture_dir: Path) -> None:
        self.cfg = cfg
        self.ingest = ingest
        self.capture = CaptureLog(capture_dir / f"{cfg.id}{self.CAPTURE_SUFFIX}")
        self.stats: dict[str, int] = {"connects": 0, "passings": 0, "duplicates": 0,
                                      "damaged": 0, "resend_requests": 0}
        self.health: dict[str, Any] = {}
        self.connected = False
        self.last_passing_us: int | None = None
        self.offset_us = cfg.offset_us  # decoder clock + offset_us = host clock
        self.clock_rtt_us: int | None = None
        self.published_us = 0
        self.writer: asyncio.StreamWriter | None = None
        #: Loop time the link went down (warned about once); None while it is up.
        self.down_since: float | None = None

    def state(self) -> dict[str, Any]:
        """What the monitor and /api/health show for this decoder."""
        return {"id": self.cfg.id, "protocol": self.cfg.protocol, "point": self.cfg.point,
                "connected": self.connected, "status": self.health,
                "last_passing_us": self.last_passing_us,
                "clock_offset_us": self.offset_us, "clock_rtt_us": self.clock_rtt_us,
                **self.stats}

    async def publish_health(self, event: str) -> None:
        """The latest state in the hash, and the change as an event in the stream."""
        self.published_us = now_us()
        doc = json.dumps({"event": event, "at_us": self.published_us, **self.state()})
        r = self.ingest.r
        try:
            async with r.pipeline(transaction=False) as pipe:
                pipe.hset(keys.DECODERS_HASH, self.cfg.id, doc)
                pipe.xadd(keys.DECODER_HEALTH_STREAM, {"d": doc},
                          maxlen=keys.DECODER_HEALTH_MAXLEN, approximate=True)
                await pipe.execute()
        except Exception as exc:  # health is best effort: never stop the passings for it
            log.warning("decoder %s: health not published: %s", self.cfg.id, exc)

    async def run(self, stop: asyncio.Event) -> None:
        try:
            await self._run(stop)
        finally:
            self.capture.close()
            if self.writer is not None:
                self.writer.close()

    async def _run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        backoff = FIRST_BACKOFF_S
        where = f"{self.cfg.host}:{self.cfg.port}"
        back: asyncio.TimerHandle | None = None
        while not stop.is_set():
            try:
                reader, self.writer = await asyncio.open_connection(self.cfg.host, self.cfg.port)
            except OSError as exc:
                if self.down_since is None:
                    self.down_since = loop.time()
                    log.warning("decoder %s at %s unreachable (%s); retrying quietly, at "
                                "least every %.0f s", self.cfg.id, where, exc, MAX_BACKOFF_S)
                else:
                    log.debug("decoder %s at %s still unreachable (%s); retry in %.1f s",
                              self.cfg.id, where, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                continue
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
            self.capture.write(data)
            await self.received(data)

    async def on_connect(self) -> None:
        """Called after each (re)connect, before reading."""

    async def clock_loop(self) -> None:
        """Measure the decoder's clock (protocols that can)."""

    async def received(self, data: bytes) -> None:
        raise NotImplementedError

    async def damaged(self, item: Damaged, protocol: str) -> None:
        self.stats["damaged"] += 1
        await self.ingest.reject(self.cfg.id, item.raw, f"{protocol}: {item.reason}")

    async def status(self, fields: dict[str, Any]) -> None:
        self.health = {**fields, "last_seen_us": now_us()}
        await self.publish_health("status")

    async def store_passing(self, seq: int, transponder: str, t: int, raw: bytes,
                            point: str | None = None) -> bool:
        """Hand a passing (or a start beacon) to ingest; True once it is stored."""
        if transponder in self.cfg.gun_transponders:
            # The start impulse as a beacon passing: a gun for the pair called to the start.
            inp: dict[str, Any] = {"type": "gun", "seq": seq, "t": t}
        else:
            inp = {"type": "passing", "seq": seq, "transponder": transponder, "t": t,
                   "point": point or self.cfg.point}
        reply = await self.ingest.accept(inp, self.cfg.id, raw)
        if not reply.get("ok"):
            return False
        self.last_passing_us = now_us()
        self.stats["duplicates" if reply.get("duplicate") else "passings"] += 1
        if self.last_passing_us - self.published_us > HEALTH_EVERY_US:
            # Decoders without STATUS records (ASCII, Protime) still show their counts.
            await self.publish_health("passing")
        return True


class P3Link(DecoderLink):
    CAPTURE_SUFFIX = ".p3log"

    def __init__(self, cfg: Decoder, ingest: Ingest, capture_dir: Path) -> None:
        super().__init__(cfg, ingest, capture_dir)
        self.codec = P3Decoder()
        self.have: set[int] = set()  # passing numbers stored this session
        self.highest: int | None = None
        self._time_asked_us: int | None = None

    async def pump(self, reader: asyncio.StreamReader, stop: asyncio.Event) -> None:
        self.codec = P3Decoder()  # a new connection starts a new byte stream
        await super().pump(reader, stop)

    async def received(self, data: bytes) -> None:
        for item in self.codec.feed(data):
            if isinstance(item, Damaged):
                await self.damaged(item, "P3")
            elif item.tor == TOR["PASSING"]:
                await self.on_passing(item)
            elif item.tor == TOR["GET_TIME"]:
                await self.on_time(item)
            elif item.tor == TOR["STATUS"]:
                await self.status(item.fields)

    async def on_connect(self) -> None:
        if self.highest is None:
            last = await self.ingest.last_seq(self.cfg.id)
            self.highest = last
            if last is not None:
                self.have.update(range(max(0, last - RESEND_WINDOW), last + 1))
        if self.highest is not None:
            # Whatever the decoder saw while the link was down.
            await self.request(self.highest + 1, self.highest + RESEND_WINDOW)

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

    async def on_passing(self, rec: P3Record) -> None:
        f = rec.fields
        n = f.get("passing_number")
        if n is None or ("transponder" not in f and "tran_code" not in f):
            await self.ingest.reject(self.cfg.id, rec.raw, "P3 passing without number or id")
            return
        if self.highest is not None and n > self.highest + 1:
            missing = [m for m in range(self.highest + 1, n) if m not in self.have]
            if missing:
                log.warning("decoder %s: passings %d..%d missing; asking again", self.cfg.id,
                            missing[0], missing[-1])
                await self.request(missing[0], missing[-1])
        transponder = str(f.get("tran_code") or f["transponder"])
        if await self.store_passing(n, transponder, f["rtc_time"], rec.raw):
            self.have.add(n)
            self.highest = n if self.highest is None else max(self.highest, n)


class AmbAsciiLink(DecoderLink):
    """AMB ASCII lines: no resend in this protocol, so a reconnect relies on the
    decoder's own buffering; its record numbers still make repeats duplicates."""

    CAPTURE_SUFFIX = ".amblog"

    async def pump(self, reader: asyncio.StreamReader, stop: asyncio.Event) -> None:
        self.codec = amb_ascii.AmbAsciiDecoder()
        await super().pump(reader, stop)

    async def received(self, data: bytes) -> None:
        for item in self.codec.feed(data):
            if isinstance(item, Damaged):
                await self.damaged(item, "AMB ASCII")
            elif item.kind == "passing":
                inp = amb_ascii.passing_input(item, self.cfg.point)
                await self.store_passing(inp["seq"], inp["transponder"], inp["t"], item.raw)
            elif item.kind == "status":
                await self.status(item.fields)


class ProtimeLink(DecoderLink):
    """Protime telegrams on TCP: each valid one is acknowledged, or the decoder repeats it."""

    CAPTURE_SUFFIX = ".protimelog"

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
            if isinstance(item, Damaged):
                await self.damaged(item, "Protime")
                continue
            f = item.fields
            # Protime numbers nothing; a telegram is its transponder at its millisecond
            # of the day, so a repeat (an unheard ack) is a duplicate, not a new passing.
            seq = int(f["transponder"]) * 100_000_000 + f["time_of_day_us"] // 1000
            inp = protime.passing_input(item, seq, self.cfg.point)
            await self.store_passing(seq, inp["transponder"], inp["t"], item.raw,
                                     inp["point"])
        return acks


class ProtimeUdpLink(ProtimeLink):
    """Protime over UDP: the decoder sends telegrams to our ``port`` (2008 by custom) and
    waits for the acknowledgement back at the address it sent from. ``port = 0`` binds
    any free port; the one bound is ``listen_port`` in the health (event ``listening``)."""

    listen_port: int | None = None

    def state(self) -> dict[str, Any]:
        return {**super().state(), "listen_port": self.listen_port}

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[bytes, Any]] = asyncio.Queue()

        class Receiver(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: Any) -> None:
                queue.put_nowait((data, addr))

        try:
            transport, _ = await loop.create_datagram_endpoint(
                Receiver, local_addr=(self.cfg.host, self.cfg.port))
        except BaseException:
            self.capture.close()
            raise
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
            self.capture.close()


#: The link class per ``protocol``: the same names as settings.PROTOCOLS (a test checks).
LINKS: dict[str, type[DecoderLink]] = {
    "p3": P3Link, "amb_ascii": AmbAsciiLink, "protime": ProtimeLink,
    "protime_udp": ProtimeUdpLink}
