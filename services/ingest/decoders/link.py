"""Links to timing decoders: connect, decode, hand passings to ingest, lose nothing.

One link per ``[[decoders]]`` entry, by its ``protocol``:

* ``p3`` (:class:`P3Link`): MYLAPS/AMB P3 on TCP. PASSING records become feed
  inputs with ``seq = passing number``, so (decoder, session, passing number) makes them
  idempotent. Passing numbers are consecutive per decoder: a gap, or a reconnect,
  sends RESEND requests (TOR 0x04, FROM 0x01 / UNTIL 0x02) for what is missing,
  bounded by :mod:`.numbers` (a jump is reported, not asked for). A reconnect first
  checks the decoder did not restart meanwhile (:mod:`.bootcheck`).
  With ``sync_clock``, GET_TIME measures the decoder's clock.
* ``amb_ascii`` (:class:`AmbAsciiLink`): the legacy AMB ASCII lines on TCP; the
  decoder's own record number is the ``seq``.
* ``protime`` (:class:`ProtimeLink`): Chronelec/TAG Heuer Protime telegrams on TCP
  (a serial-to-TCP converter); every valid telegram is acknowledged with ESC 0x11,
  and its transponder and time of day make the ``seq``, so a repeat is a duplicate.
  ``protime_udp`` (:class:`ProtimeUdpLink`) listens for them on UDP instead (the
  decoder sends to port 2008 and wants the ack back).

What every link does is :class:`~services.ingest.decoders.base_link.DecoderLink`'s:
capture, reconnect with backoff, damaged records, health, and storing passings
(:mod:`.spool`).
"""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from icetime.settings import Decoder
from icetime.timefmt import now_us

from . import Damaged, amb_ascii, protime
from .base_link import CLOCK_CHECK_S, CLOCK_STEP_US, DecoderLink
from .bootcheck import BootCheck, BootChecking
from .numbers import Anomaly, PassingNumbers
from .p3 import TOR, P3Decoder, P3Passing, P3Record, classify, encode, u
from .spool import Pending
from .timeofday import on_day

if TYPE_CHECKING:
    from ..server import Ingest

log = logging.getLogger(__name__)
#: An AMB ASCII clock (time since the decoder's start) that goes back further than this
#: was restarted (its records arrive in order: there is no resend to bring old ones).
CLOCK_BACK_US = 1_000_000
#: P3 records by which a decoder says it (re)started: a new session.
RESTART_RECORDS = (TOR["RESET"], TOR["FIRST_CONTACT"])


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

class P3Link(DecoderLink, BootChecking):
    """A P3 decoder on TCP. On every connect it checks the decoder is the boot the
    current session follows (:mod:`.bootcheck`), then asks for what is missing."""

    CAPTURE_SUFFIX = ".p3log"
    PROTOCOL = "P3"

    def __init__(self, cfg: Decoder, ingest: Ingest, capture_dir: Path) -> None:
        super().__init__(cfg, ingest, capture_dir)
        self.codec = P3Decoder()
        #: The passing numbers seen, what is missing; None until ingest says where it was.
        self.numbers: PassingNumbers | None = None
        self._time_asked_us: int | None = None
        self.stats["utc_only"] = 0  # passings timed by their UTC field (no RTC time)
        #: The boot check open now (None: none), its watcher task, and the lock that
        #: keeps passings in order between the pump and the watcher.
        self.check: BootCheck | None = None
        self.checker: asyncio.Task[None] | None = None
        self.check_lock = asyncio.Lock()
        self.stats["boot_checks"] = 0  # connects that asked for the highest number stored
        self.stats["boot_checks_unanswered"] = 0  # ...and had no answer, asked twice

    def state(self) -> dict[str, Any]:
        nb = self.numbers
        return {**super().state(),
                "highest_passing": nb.highest if nb else None,
                "missing": len(nb.missing) if nb else 0,
                "missing_given_up": nb.given_up if nb else 0,
                "jumps": nb.jumps if nb else 0,
                "new_numberings": nb.new_numberings if nb else 0,
                "held": len(self.check.held) if self.check else 0,
                "boot_check": self.check.state() if self.check else None}

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
                async with self.check_lock:
                    await self.restart(f"{kind.tor_name} record")
                    await self.restarted_during_check()

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
        numbers = await self._numbers()
        async with self.check_lock:
            now = self.sessions.now
            if now.lo is not None and now.hi is not None:
                # Is it the same boot? The missing numbers are asked for once it says.
                await self.start_check(now.hi, now.lo)
                return
            # Nothing stored in this session to check against: whatever was missing, and
            # whatever the decoder saw while the link was down.
            for first, last in numbers.reconnect_requests():
                await self.request(first, last)

    async def on_stop(self) -> None:
        await self.stop_check()

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
        """RESEND ``first``..``last``. On a link that is down or drops meanwhile it is not
        sent, and the passings go on being handled (held ones too): the next connect's
        boot check and its requests ask again."""
        if self.writer is None:
            return
        self.stats["resend_requests"] += 1
        try:
            self.writer.write(resend_request(first, last))
            await self.writer.drain()
        except OSError as exc:
            log.debug("decoder %s: RESEND %d..%d not sent: %s", self.cfg.id, first, last, exc)

    async def on_passing(self, p: P3Passing) -> None:
        await self._numbers()  # a record before on_connect ran: replays, tests
        await self.checked_passing(p)

    async def store_number(self, p: P3Passing) -> None:
        """Follow the passing's number (asking for gaps) and store it."""
        numbers = await self._numbers()
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
