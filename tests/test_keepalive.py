"""The broadcast node's keepalive (one task for every client): a client that answers its
pings stays; one that has stopped reading and answering is closed (real sockets, the
real stack, pings every 0.2 s)."""
from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
import time

import aiohttp

from .conftest import make_settings, start_stack

INTERVAL_S = 0.3
#: Long enough for the answering client (in this process, beside the node) to answer on
#: a machine at load 25, where 0.4 s was not: the node closed it too.
TIMEOUT_S = 1.5
#: ``time`` requests a stalled client sends and never reads the answers of (about 60
#: bytes each, 1.2 MB): several times what its receive buffers, the node's send buffer
#: and the connection's low-water mark together hold.
FLOOD = 20_000


def masked(opcode: int, payload: bytes) -> bytes:
    """One client frame (masked, a payload under 64 KB)."""
    mask = os.urandom(4)
    size = bytes([0x80 | len(payload)]) if len(payload) < 126 else \
        bytes([0x80 | 126]) + struct.pack("!H", len(payload))
    return bytes([0x80 | opcode]) + size + mask + bytes(
        b ^ mask[i % 4] for i, b in enumerate(payload))


class Raw:
    """A WebSocket client on a plain socket, so the test decides when it reads."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.pings = 0

    @classmethod
    async def open(cls, port: int, rcvbuf: int | None = None) -> Raw:
        sock = socket.socket()
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write((f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                      f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                      "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(reader, writer)

    async def frame(self) -> tuple[int, bytes] | None:
        """The next server frame (opcode, payload); None at the end of the connection."""
        try:
            head = await self.reader.readexactly(2)
            n = head[1] & 0x7F
            if n == 126:
                n = struct.unpack("!H", await self.reader.readexactly(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", await self.reader.readexactly(8))[0]
            return head[0] & 0x0F, await self.reader.readexactly(n)
        except (asyncio.IncompleteReadError, ConnectionError):
            return None

    async def answer(self) -> None:
        """Read everything and answer every ping, until the connection ends."""
        while (frame := await self.frame()) is not None:
            opcode, payload = frame
            if opcode == 0x9:
                self.pings += 1
                self.writer.write(masked(0xA, payload))

    async def until_close(self) -> list[tuple[int, bytes]]:
        """Every frame left, up to the server's close frame or the end of the connection
        (bounded: the test fails rather than hangs when neither comes)."""
        frames = []
        async with asyncio.timeout(30):
            while (frame := await self.frame()) is not None:
                frames.append(frame)
                if frame[0] == 0x8:
                    break
        return frames


async def closed_by_keepalive(http_port: int) -> int:
    async with aiohttp.ClientSession() as s:
        async with s.get(f"http://127.0.0.1:{http_port}/api/health") as resp:
            return int((await resp.json())["broadcast"]["keepalive_closed"])


async def test_keepalive_closes_silent_clients_and_keeps_answering_ones(redis_server):
    st = await start_stack(make_settings(redis_server.url, ping_interval_s=INTERVAL_S,
                                         ping_timeout_s=TIMEOUT_S), redis_server.url)
    try:
        port, http = st.settings.broadcast_ws_port, st.settings.broadcast_http_port
        good = await Raw.open(port)
        answering = asyncio.create_task(good.answer())
        # Silent: the handshake, then it neither reads nor answers.
        silent = await Raw.open(port)
        # Stalled: it asks for far more than the buffers between it and the node hold,
        # and reads none of it, so the node has bytes queued for it it cannot send.
        stalled = await Raw.open(port, rcvbuf=4096)
        request = masked(0x1, json.dumps({"op": "time", "c": 1}).encode())
        stalled.writer.write(request * FLOOD)
        deadline = time.monotonic() + 60
        while await closed_by_keepalive(http) < 2:
            assert time.monotonic() < deadline, "the keepalive closed neither client"
            await asyncio.sleep(INTERVAL_S)
        pings_then = good.pings
        assert pings_then >= 1
        # The silent client, reading at last: the pings it left unanswered, then the
        # close frame (1011) and the end of the connection.
        frames = await silent.until_close()
        assert await silent.frame() is None  # and the connection ends
        assert {op for op, _ in frames} <= {0x9, 0x8}, frames
        assert frames[-1][0] == 0x8
        code = struct.unpack("!H", frames[-1][1][:2])[0]
        assert (code, frames[-1][1][2:]) == (1011, b"keepalive ping timeout")
        # The stalled one's connection ends too (whatever of its backlog it still reads).
        async with asyncio.timeout(30):
            while await stalled.frame() is not None:
                pass
        # The answering client was pinged on and is still served.
        while good.pings < pings_then + 3:
            assert not answering.done(), "the answering client was closed"
            await asyncio.sleep(INTERVAL_S)
        assert await closed_by_keepalive(http) == 2
        answering.cancel()
        for c in (good, silent, stalled):
            c.writer.close()
    finally:
        await st.close()
