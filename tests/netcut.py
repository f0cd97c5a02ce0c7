"""A TCP relay that can pull the network out from under its clients, as a phone in a
tunnel does: no FIN, no RST, the bytes just stop (and new connections go nowhere)."""
from __future__ import annotations

import asyncio
import contextlib


class Cable:
    def __init__(self, target_port: int = 0, target_unix: str = "") -> None:
        #: Where connections are relayed to; may be set after :meth:`start`, before the
        #: first client connects (the relay's own port is needed to configure the target).
        self.target_port = target_port
        #: A unix socket to relay to instead (a redis-server on its private socket).
        self.target_unix = target_unix
        self.up = True
        self.port = 0
        #: Reads swallowed while cut (the far end never heard of them), in both directions.
        self.swallowed = 0
        self.pipes: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = []
        self.dead: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = []
        self.tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        """Listen on a free port of 127.0.0.1; returns it (also ``port``)."""
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self.port

    def cut(self) -> None:
        """Every open connection goes silent; new ones are dropped."""
        self.up = False

    def restore(self) -> None:
        """New connections work again; the silent ones stay dead, as after a real drop."""
        self.up = True
        self.dead += self.pipes
        self.pipes = []

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.up:
            writer.transport.abort()
            return
        try:
            if self.target_unix:
                up_r, up_w = await asyncio.open_unix_connection(self.target_unix)
            else:
                up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        generation = (writer, up_w)
        self.pipes.append(generation)
        for src, dst in ((reader, up_w), (up_r, writer)):
            task = asyncio.create_task(self._pump(src, dst, generation))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter,
                    generation: tuple[asyncio.StreamWriter, asyncio.StreamWriter]) -> None:
        with contextlib.suppress(OSError, ConnectionError):
            while data := await src.read(65536):
                if not self.up or generation not in self.pipes:
                    self.swallowed += 1
                    continue  # swallowed: the far end never hears of it
                dst.write(data)
                await dst.drain()
        if generation in self.pipes:
            dst.close()

    async def close(self) -> None:
        self.server.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for a, b in self.pipes + self.dead:
            a.transport.abort()
            b.transport.abort()
        await self.server.wait_closed()
