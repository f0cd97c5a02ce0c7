"""A timing source's side of the TCP feed: hello, one line per input, one reply each.

Used by ``icetime replay``, the benchmarks and the tests, and a worked example
of docs/protocol.md. A dropped connection is reopened with backoff and the
unacknowledged input is sent again: ingest drops the repeat by (source, session, seq).
"""
from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

log = logging.getLogger(__name__)
#: The longest wait between two attempts (s): after an outage (of ingest, or of its
#: Redis, when ingest answers "retry") the input goes again at most this much later.
RETRY_MAX_S = 0.5


class FeedRefused(RuntimeError):
    pass


class FeedClient:
    def __init__(self, host: str, port: int, token: str, retry_for: float = 30.0,
                 wait: bool = False) -> None:
        """``wait``: ask ingest to answer each input with scoring's verdict
        (docs/protocol.md, "Waiting for the verdict")."""
        self.host, self.port, self.token = host, port, token
        self.retry_for = retry_for
        self.wait = wait
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.last_seq: int | None = None
        #: More fields for the hello (``{"session": …}``: the last seq of that session).
        self.hello_extra: dict[str, Any] = {}

    async def connect(self) -> dict[str, Any]:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port,
                                                                 limit=8 * 1024 * 1024)
        try:
            hello = await self._roundtrip({"type": "hello", "token": self.token,
                                           **self.hello_extra,
                                           **({"wait": True} if self.wait else {})})
        except BaseException:
            await self.close()
            raise
        if not hello.get("ok"):
            await self.close()
            if hello.get("retry"):  # storage unavailable: send() says hello again later
                raise ConnectionResetError(hello.get("error", "retry"))
            raise FeedRefused(hello.get("error", "refused"))
        self.last_seq = hello.get("last_seq")
        return hello

    async def _roundtrip(self, obj: dict[str, Any]) -> dict[str, Any]:
        assert self.writer and self.reader
        self.writer.write(json.dumps(obj, separators=(",", ":")).encode() + b"\n")
        await self.writer.drain()
        line = await self.reader.readline()
        if not line:
            raise ConnectionResetError("feed closed the connection")
        reply: dict[str, Any] = json.loads(line)
        return reply

    async def send(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Send one input and return ingest's reply, reconnecting as needed."""
        delay = 0.05
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.retry_for
        while True:
            try:
                if self.writer is None:
                    await self.connect()
                reply = await self._roundtrip(obj)
                if reply.get("retry") and loop.time() < deadline:
                    raise ConnectionResetError(reply.get("error"))
                return reply
            except (OSError, ConnectionError, asyncio.IncompleteReadError) as exc:
                await self.close()
                if loop.time() > deadline:
                    raise
                log.warning("feed connection lost (%s); retrying in %.2fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except (OSError, ConnectionError):
                pass
        self.reader = self.writer = None
