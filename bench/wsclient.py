"""A minimal WebSocket client for the latency bench: the measured system is the server.

One asyncio Protocol per connection; it stamps the time a chunk of bytes
arrives, before any parsing, and splits server frames (unmasked; icetime
sends text frames without extensions). Payloads are decoded after the run, so
a thousand clients in one process still stamp receipts within microseconds.
"""
from __future__ import annotations

import asyncio
import base64
import json
import os
import struct

from icetime.timefmt import now_us


class RawClient(asyncio.Protocol):
    def __init__(self, subscribe: dict) -> None:
        self.subscribe = subscribe
        self.buf = bytearray()
        self.handshaken = False
        self.frames: list[tuple[int, bytes]] = []  # (receipt µs, payload)
        self.ready = asyncio.Event()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        host, port = transport.get_extra_info("peername")[:2]
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write((f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                         f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                         "Sec-WebSocket-Version: 13\r\n\r\n").encode())

    def send_text(self, text: str) -> None:
        self.send_frame(0x1, text.encode())

    def send_frame(self, opcode: int, payload: bytes) -> None:
        """One masked client frame (a payload under 64 KB)."""
        mask = os.urandom(4)
        header = bytes([0x80 | opcode, 0x80 | len(payload)]) if len(payload) < 126 else \
            bytes([0x80 | opcode, 0x80 | 126]) + struct.pack("!H", len(payload))
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        assert self.transport
        self.transport.write(header + mask + masked)

    def data_received(self, data: bytes) -> None:
        got = now_us()
        self.buf += data
        if not self.handshaken and not self._handshake():
            return
        while (frame := self._next_frame()) is not None:
            opcode, payload = frame
            if opcode == 0x1:
                self.frames.append((got, payload))
                if not self.ready.is_set() and payload.startswith(b'{"type":"snapshot"'):
                    self.ready.set()
            elif opcode == 0x9:
                # The server's keepalive: a client that never answers is closed.
                self.send_frame(0xA, payload)

    def _handshake(self) -> bool:
        """Take the server's HTTP reply off the buffer and subscribe; False until the
        reply is whole. Raises ConnectionError if it is not 101 (switching protocols)."""
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return False
        if not self.buf.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(self.buf[:end].decode(errors="replace"))
        del self.buf[:end + 4]
        self.handshaken = True
        self.send_text(json.dumps(self.subscribe))
        return True

    def _next_frame(self) -> tuple[int, bytes] | None:
        """Take one whole (unmasked, server) frame off the buffer: (opcode, payload);
        None until one is whole."""
        if len(self.buf) < 2:
            return None
        n = self.buf[1] & 0x7F
        off = 2
        if n == 126:
            if len(self.buf) < 4:
                return None
            n, off = struct.unpack_from("!H", self.buf, 2)[0], 4
        elif n == 127:
            if len(self.buf) < 10:
                return None
            n, off = struct.unpack_from("!Q", self.buf, 2)[0], 10
        if len(self.buf) < off + n:
            return None
        opcode = self.buf[0] & 0x0F
        payload = bytes(self.buf[off:off + n])
        del self.buf[:off + n]
        return opcode, payload

    def close(self) -> None:
        if self.transport:
            self.transport.close()


async def open_client(host: str, port: int, subscribe: dict) -> RawClient:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(lambda: RawClient(subscribe), host, port)
    return proto
