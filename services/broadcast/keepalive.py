"""The WebSocket keepalive of a broadcast node: ONE task for every connection.

The ``websockets`` library's own keepalive runs a task per connection (a timer, a ping
and a timeout each): at 10,000 clients that is 10,000 tasks and 20,000 timers the event
loop keeps sorted, a measurable share of a fan-out node's CPU. Here one task pings every
client once per ``interval`` seconds, in batches of :data:`PING_BATCH` spread over the
interval (so the pings of 10,000 clients never hold the loop for long), and closes a
connection that has not answered within ``timeout`` seconds (docs/delivery.md,
"Keepalive"). The pings are the library's own (:meth:`ServerConnection.ping`); the
server is started with its per-connection keepalive off (``ping_interval=None``).

A client whose unsent bytes stand above its connection's low-water mark at its ping (it
has stopped reading, or reads very slowly) is not sent the ping, which would only wait
behind those bytes; it is closed at the deadline unless it has taken them by then.
Closing is a close frame (1011, when it can still reach the client) and the TCP
connection cut at once: a client silent that long would not finish a closing handshake.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import deque
from typing import cast

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.frames import Close, CloseCode, Frame, Opcode
from websockets.protocol import State

log = logging.getLogger(__name__)
#: Clients pinged in one go; the batches of a round are spread over the interval.
PING_BATCH = 100
#: What a client that did not answer in time is sent before its connection is cut.
CLOSE_FRAME = Frame(Opcode.CLOSE, Close(CloseCode.INTERNAL_ERROR,
                                        "keepalive ping timeout").serialize()
                    ).serialize(mask=False, extensions=[])


#: A ping sent (or due, for a backed-up client): (deadline on the loop's clock, the
#: connection, the future its pong completes; None when the ping was not sent).
Pending = tuple[float, ServerConnection, "asyncio.Future[float] | None"]


def backed_up(ws: ServerConnection) -> bool:
    """Whether more is unsent to ``ws`` than its transport's low-water mark (its
    connection may be paused: a ping would wait for it to drain)."""
    transport = ws.transport
    return transport.get_write_buffer_size() > transport.get_write_buffer_limits()[0]


class Keepalive:
    """Pings every added connection once per ``interval`` s and closes one that has not
    answered within ``timeout`` s (close code 1011, "keepalive ping timeout"). Raises
    ValueError for an interval or timeout that is not positive."""

    def __init__(self, interval: float, timeout: float, batch: int = PING_BATCH) -> None:
        if interval <= 0 or timeout <= 0 or batch < 1:
            raise ValueError("keepalive interval, timeout and batch must be positive")
        self.interval = interval
        self.timeout = timeout
        self.batch = batch
        #: The connections pinged, in the order they came (a dict as an ordered set).
        self.clients: dict[ServerConnection, None] = {}
        #: Pings not judged yet, by deadline (sent in time order, so sorted).
        self.pending: deque[Pending] = deque()
        #: Connections closed for not answering (``/api/health``: ``keepalive_closed``).
        self.closed = 0
        self.pings = 0
        self.task: asyncio.Task[None] | None = None

    def add(self, ws: ServerConnection) -> None:
        self.clients[ws] = None

    def discard(self, ws: ServerConnection) -> None:
        self.clients.pop(ws, None)

    def start(self) -> None:
        self.task = asyncio.create_task(self.run(), name="keepalive")

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task

    async def run(self) -> None:
        """Rounds forever: every client known at a round's start is pinged once in it."""
        loop = asyncio.get_running_loop()
        while True:
            clients = list(self.clients)
            batches = max(1, math.ceil(len(clients) / self.batch))
            start = loop.time()
            for i in range(batches):
                try:
                    self.judge(loop.time())
                    await self.ping(clients[i * self.batch:(i + 1) * self.batch],
                                    loop.time() + self.timeout)
                except Exception:  # one bad connection must not end every client's keepalive
                    log.exception("keepalive: a batch failed; going on with the next")
                await asyncio.sleep(max(0.0, start + (i + 1) * self.interval / batches
                                        - loop.time()))

    async def ping(self, batch: list[ServerConnection], deadline: float) -> None:
        """Ping each open connection of ``batch``; its pong is due by ``deadline``."""
        for ws in batch:
            if ws.state is not State.OPEN or ws not in self.clients:
                continue  # closing already, or gone since the round began
            if backed_up(ws):
                self.pending.append((deadline, ws, None))
                continue
            try:
                # Open and not paused: this writes the ping and returns at once.
                pong = cast("asyncio.Future[float]", await ws.ping())
            except ConnectionClosed:
                continue
            self.pings += 1
            self.pending.append((deadline, ws, pong))

    def judge(self, now: float) -> None:
        """Close every connection whose pong was due by ``now`` and has not come (or,
        not pinged for being backed up, that still is)."""
        while self.pending and self.pending[0][0] <= now:
            _, ws, pong = self.pending.popleft()
            if ws.state is not State.OPEN or ws not in self.clients:
                continue
            answered = not backed_up(ws) if pong is None else pong.done()
            if not answered:
                self.drop(ws)

    def drop(self, ws: ServerConnection) -> None:
        """Close ``ws`` for not answering: a close frame (1011) when everything sent
        before it has reached the kernel (a client that still reads gets it), then the
        TCP connection is cut at once; a client that has not answered a ping for
        ``timeout`` s would not answer a closing handshake either."""
        self.closed += 1
        self.discard(ws)
        log.info("closing a client that did not answer a ping within %g s", self.timeout)
        transport = ws.transport
        if transport.get_write_buffer_size() == 0:
            transport.write(CLOSE_FRAME)
        transport.abort()
