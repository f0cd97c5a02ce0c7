"""A P3 decoder on TCP, for demos and tests: real P3 bytes from a race script.

It numbers passings consecutively, stamps them with its own RTC clock, sends a
STATUS record every second and answers RESEND requests from its memory, as a
decoder does. ``drop_link()`` cuts every connection; passings that happen
while nobody is connected are kept and only delivered on RESEND. ``reboot()``
power-cycles it: the numbers start again from the first.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging

from icetime.timefmt import now_us

from .p3 import TOR, P3Decoder, P3Record, encode, u

log = logging.getLogger(__name__)
STATUS_EVERY_S = 1.0


class DecoderSimulator:
    def __init__(self, decoder_id: int = 0x000C00D0, first_passing: int = 1,
                 skew_us: int = 0) -> None:
        self.decoder_id = decoder_id
        #: How far this decoder's RTC is from the host clock (a decoder never set right).
        self.skew_us = skew_us
        self.first_passing = first_passing
        self.next_number = first_passing
        self.records: dict[int, bytes] = {}
        self.writers: set[asyncio.StreamWriter] = set()
        self.server: asyncio.base_events.Server | None = None
        self.handlers: set[asyncio.Task[None]] = set()
        self.resends_answered = 0
        self.resent_passings = 0
        self.down_until = 0.0
        self._status_task: asyncio.Task[None] | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        self.server = await asyncio.start_server(self._serve, host, port)
        self._status_task = asyncio.create_task(self._status_loop())
        return int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._status_task:
            self._status_task.cancel()
        self.drop_link()
        if self.handlers:  # let each connection see its EOF and finish
            await asyncio.wait(self.handlers, timeout=2)
        if self.server:
            self.server.close()
            await self.server.wait_closed()

    def drop_link(self, down_for_s: float = 0.0) -> None:
        """Cut every connection, and refuse new ones for ``down_for_s`` seconds."""
        self.down_until = asyncio.get_running_loop().time() + down_for_s
        for w in list(self.writers):
            w.close()
        self.writers.clear()

    def reboot(self, down_for_s: float = 0.0) -> None:
        """Power-cycle the decoder: the link drops, its memory is gone and it numbers its
        passings from the start again."""
        self.drop_link(down_for_s)
        self.records.clear()
        self.next_number = self.first_passing

    def passing(self, transponder: int, host_us: int) -> int:
        """A transponder crosses the loop at ``host_us`` (host clock); the record carries
        the decoder's own RTC time for it. Sent to whoever is connected."""
        n = self.next_number
        self.next_number += 1
        rec = encode(TOR["PASSING"], [
            (0x01, u(n, 4)), (0x03, u(transponder, 4)), (0x04, u(host_us + self.skew_us, 8)),
            (0x05, u(110, 2)), (0x06, u(38, 2)), (0x08, u(0, 2)), (0x81, u(self.decoder_id, 4))])
        self.records[n] = rec
        self._send(rec)
        return n

    def _send(self, data: bytes) -> None:
        for w in list(self.writers):
            if w.is_closing():
                self.writers.discard(w)
            else:
                w.write(data)

    async def _status_loop(self) -> None:
        while True:
            await asyncio.sleep(STATUS_EVERY_S)
            self._send(encode(TOR["STATUS"], [(0x01, u(30, 2)), (0x06, u(1, 1)),
                                              (0x07, u(210, 2)), (0x0C, u(120, 1)),
                                              (0x81, u(self.decoder_id, 4))]))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if asyncio.get_running_loop().time() < self.down_until:
            writer.close()  # the link is still "cut"
            return
        task = asyncio.current_task()
        if task is not None:
            self.handlers.add(task)
            task.add_done_callback(self.handlers.discard)
        self.writers.add(writer)
        decoder = P3Decoder()
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(4096):
                for item in decoder.feed(data):
                    if isinstance(item, P3Record) and item.tor == TOR["GET_TIME"]:
                        writer.write(encode(TOR["GET_TIME"], [
                            (0x01, u(now_us() + self.skew_us, 8)),
                            (0x81, u(self.decoder_id, 4))]))
                    elif isinstance(item, P3Record) and item.tor == TOR["RESEND"]:
                        first, last = item.fields.get("from", 0), item.fields.get("until", 0)
                        numbers = [n for n in range(first, min(last, self.next_number - 1) + 1)
                                   if n in self.records]
                        for n in numbers:
                            writer.write(self.records[n])
                        self.resends_answered += 1
                        self.resent_passings += len(numbers)
                        log.info("RESEND %d..%d: sent %d passings", first, last, len(numbers))
        self.writers.discard(writer)
        writer.close()

