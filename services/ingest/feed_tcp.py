"""The TCP feed: a hello with a token, then newline-delimited inputs, answered in order.

A connection's first line is its hello (docs/protocol.md); the inputs of one read are
typed, checked and stored together (:meth:`TcpFeed.accept_lines`) and answered in one
write. A connection whose token is gone (the tokens were reloaded) is told so and
closed.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

import msgspec
from redis.exceptions import RedisError

from icetime.messages import FeedInput
from icetime.settings import Source
from icetime.timefmt import now_us

from .admission import check_role, check_seq, unforeseen
from .core import IngestCore
from .feed import FeedError, LineSplitter, decode_line, parse_json

log = logging.getLogger(__name__)
NOT_AUTHENTICATED = 'first send {"type":"hello","token":"..."} with a valid token'
REVOKED = "this connection's token is no longer valid (the tokens were reloaded); " \
    "connect again with a valid token"


class TcpConnection:
    """One TCP feed connection: its hello, then its inputs, read by read. The inputs of
    one read are stored together and answered in one write (a source that sends many
    lines at once, a window of unanswered inputs, costs one append and one system
    call); a connection that waits for verdicts is answered input by input, each as
    soon as it is judged."""

    def __init__(self, ingest: TcpFeed, peer: Any, writer: asyncio.StreamWriter) -> None:
        self.ingest = ingest
        self.peer = peer
        self.writer = writer
        self.splitter = LineSplitter()
        #: The source its hello named (None until then), and whether it waits for verdicts.
        self.src: Source | None = None
        self.wait = False
        #: The connection is to be closed (the replies so far are sent).
        self.closing = False

    async def send(self, replies: list[dict[str, Any]]) -> None:
        if replies:
            self.writer.write(b"".join(msgspec.json.encode(r) + b"\n" for r in replies))
            await self.writer.drain()

    async def feed(self, data: bytes) -> None:
        """Answer the lines ``data`` completes, in order."""
        run: list[bytes] = []
        for line in self.splitter.feed(data):
            if isinstance(line, bytes) and self.src is not None:
                run.append(line)
                if self.wait:
                    await self.inputs(run)
                    run = []
                continue
            await self.inputs(run)
            run = []
            if self.closing:
                return
            await self.send([await self.other(line)])
            if self.closing:
                return
        await self.inputs(run)

    async def inputs(self, lines: list[bytes]) -> None:
        if not lines or self.src is None:
            return
        if self.ingest.tokens.get(self.src.token) != self.src:
            await self.ingest.reject(self.src.id, lines[0], "token no longer valid")
            self.closing = True
            await self.send([{"ok": False, "error": REVOKED}])
            return
        await self.send(await self.ingest.accept_lines(lines, self.src, self.wait))

    async def other(self, line: bytes | FeedError) -> dict[str, Any]:
        """The reply to a line that is no input: one refused by the splitter, or the
        hello."""
        if isinstance(line, FeedError):
            await self.ingest.reject(self.src.id if self.src else None, b"", str(line))
            return {"ok": False, "error": str(line)}
        self.src, answer, self.closing = await self.ingest.hello(line, self.peer)
        self.wait = answer.get("wait") is True
        return answer


class TcpFeed(IngestCore):
    """Ingest's TCP side: the hello and the lines of a connection."""

    async def hello(self, line: bytes, peer: Any
                    ) -> tuple[Source | None, dict[str, Any], bool]:
        """A TCP connection's first line: (its source or None, the reply, close after
        the reply). A hello with ``"wait": true`` asks for scoring's verdict on each
        input before its reply.

        Not JSON: refused, the connection may send its hello again. JSON that is not a
        hello with a valid token: refused, and the connection is closed. Storage
        unavailable: a ``retry`` reply, and the connection stays open for another hello.
        """
        try:
            obj = parse_json(line)
        except FeedError as exc:
            await self.reject(None, line, str(exc))
            return None, {"ok": False, "error": str(exc)}, False
        src = self.source_for(obj.get("token") if isinstance(obj, dict) else None)
        if src is None or obj.get("type") != "hello":
            await self.reject(None, line, "not authenticated")
            return None, {"ok": False, "error": NOT_AUTHENTICATED}, True
        session = obj.get("session")
        if isinstance(session, int) and not isinstance(session, bool):
            session = str(session)
        if session is not None and not (isinstance(session, str) and 0 < len(session) <= 64):
            await self.reject(src.id, line, "hello: bad session")
            return None, {"ok": False, "error": "'session' must be a name of 1 to 64 "
                          "characters"}, True
        try:
            last_seq = await self.last_seq(src.id, session)
        except RedisError as exc:
            self.outage.failed(exc, "answering a hello (sources are told to retry)")
            log.debug("source %s said hello from %s while storage is unavailable: %s",
                      src.id, peer, exc)
            return None, {"ok": False, "error": "storage unavailable; send the hello again",
                          "retry": True}, False
        self.outage.ok()
        log.debug("source %s connected from %s", src.id, peer)
        reply = {"ok": True, "source": src.id, "role": src.effective_role,
                 "last_seq": last_seq}
        if session is not None:
            reply["session"] = session
        if obj.get("wait") is True:
            reply["wait"] = True
        return src, reply, False

    async def handle_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        conn = TcpConnection(self, peer, writer)
        try:
            while not conn.closing and (data := await reader.read(65536)):
                await conn.feed(data)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            log.debug("source %s disconnected (%s)", conn.src.id if conn.src else "?", peer)
            writer.close()

    async def accept_lines(self, lines: list[bytes], src: Source, wait: bool
                           ) -> list[dict[str, Any]]:
        """Type each TCP line of one read of a connection straight into its input type
        (refusing it with the reason when it is none, or outside ``src``'s role), and
        store the valid inputs in one script call (:meth:`store_many`); the replies,
        in order."""
        replies: list[dict[str, Any] | None] = []
        valid: list[tuple[int, FeedInput, int, bytes]] = []
        for line in lines:
            rx = now_us()
            try:
                inp = decode_line(line, src.id)
                check_role(inp, src)
                check_seq(inp)
            except FeedError as exc:
                replies.append(await self.refuse(src.id, line, exc))
                continue
            except Exception as exc:  # a bug must cost this input, not the connection
                replies.append(await self.refuse(src.id, line, unforeseen(exc, src.id)))
                continue
            valid.append((len(replies), inp, rx, line))
            replies.append(None)
        stored_replies = await self.store_many([(inp, rx, line) for _, inp, rx, line in valid],
                                               src=src, wait=wait) if valid else []
        for (i, *_), reply in zip(valid, stored_replies, strict=True):
            replies[i] = reply
        return [r for r in replies if r is not None]
