"""Ingest: the timing feed over TCP (newline-delimited JSON) and HTTP POST.

Contract: an input is acknowledged ``ok`` only after it is in the raw stream.
A repeat of (source, session, seq) with the same content is acknowledged as a
duplicate and stored once; with other content it is refused (``conflict``).
Anything refused gets an error line back, is counted, and is kept in the
rejects stream with the bytes as they came; the connection carries on. No line,
whatever its bytes, ends a connection without a reply or gives HTTP 500: a line
that trips an unforeseen error is refused like any other (and logged with its
traceback). Tokens travel in the Authorization header or the TCP hello only: a
``token`` in a URL's query string is refused on every HTTP endpoint.

Roles: each token's source has a role (icetime.settings.ROLE_INPUTS) and may send
only that role's input types; any other input is refused, naming the role and the
input type, and counted (``refused_role``). The tokens are read again, without a
restart, when the configuration file changes (:meth:`Ingest.watch_tokens`); a TCP
connection whose token is gone is told so and closed.

Verdicts: a sender that asks to wait (HTTP ``?wait=1``, TCP hello ``"wait": true``)
is answered only once scoring has judged the input: ``ok`` true with ``verdict``
``applied``, or ``ok`` false with ``verdict`` ``refused`` and scoring's reason (or
``pending`` after VERDICT_WAIT_S). Over HTTP, people's inputs (every type but passings
and clock offsets) wait by default (``?wait=0`` answers once stored), as long as a
scoring worker reads the feed (its consumer group exists): ``ok`` is never said of an
input scoring will refuse. A passing needs ``seq`` (:func:`check_seq`).
Idempotency: an input without ``seq`` is stored once per (source, ``Idempotency-Key``
header) for a day; from a person (any role but decoder) with neither, an identical
input from the same source within DOUBLE_CLICK_S is the same input (a double click).
"""
from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import msgspec
import redis.asyncio as aioredis
from aiohttp import web
from redis.exceptions import RedisError

from icetime import bus, keys
from icetime.logs import about
from icetime.messages import Clock, FeedInput, Passing, stored
from icetime.service import Ready, binding, healthz, listen_port, readiness
from icetime.settings import ROLE_INPUTS, ConfigError, Settings, Source
from icetime.settings import load as load_settings
from icetime.timefmt import now_us

from .decoders.base_link import DecoderLink
from .decoders.link import make_link
from .desk import Desk, security_headers
from .feed import MAX_LINE, FeedError, LineSplitter, NotJSON, decode_line, parse_json, validate

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
REJECTS_MAXLEN = 100_000
REJECT_KEEP_BYTES = 4096
#: A decoder link task that fails is restarted after this long, doubling up to
#: RESTART_MAX_S while it keeps failing (reset once a run lasted RESTART_STABLE_S).
RESTART_FIRST_S = 0.1
RESTART_MAX_S = 30.0
RESTART_STABLE_S = 10.0
#: Query parameters that would put a token in a URL (proxy and access logs keep URLs).
URL_TOKEN_PARAMS = ("token", "access_token")
TOKEN_IN_URL = ("a token in the URL is refused (URLs are kept in proxy and access logs); "
                "send it in the header 'Authorization: Bearer <token>'")
NOT_AUTHENTICATED = 'first send {"type":"hello","token":"..."} with a valid token'
REVOKED = "this connection's token is no longer valid (the tokens were reloaded); " \
    "connect again with a valid token"
#: How long a sender that waits for scoring's verdict is kept waiting, at most (s).
VERDICT_WAIT_S = 5.0
#: How often a waiting sender looks for the verdict: first, and at most (s).
VERDICT_POLL_S = (0.002, 0.05)
#: A person's input without ``seq`` or Idempotency-Key: the same input from the same
#: source within this many seconds is a repeat (a double click), stored once.
DOUBLE_CLICK_S = 10
#: How long an ``Idempotency-Key`` holds (s).
IDEMPOTENCY_KEY_S = 24 * 3600
IDEMPOTENCY_KEY_MAX = 128
#: How often the configuration file is checked for new tokens (s).
TOKENS_CHECK_S = 1.0
WAIT_VALUES = ("1", "true", "yes")
NO_WAIT_VALUES = ("0", "false", "no")
#: Input types a timing device sends, many a second: they wait for the verdict only when
#: asked to (the others, people's inputs, wait by default over HTTP).
SENSOR_INPUTS = (Passing, Clock)
NO_SEQ = ("a passing needs 'seq' (the decoder's own number for it): without one a resend "
          "after a lost reply would be a second read; see docs/protocol.md, Idempotency")


class RoleRefused(FeedError):
    """An input outside its token's role."""


def tokens_of(sources: tuple[Source, ...]) -> dict[str, Source]:
    return {s.token: s for s in sources}


def input_type(inp: FeedInput) -> str:
    tag: str = inp.__struct_config__.tag  # type: ignore[assignment]
    return tag


def check_role(inp: FeedInput, src: Source | None) -> None:
    """Raise :class:`RoleRefused` if ``src``'s role may not send ``inp`` (``src`` None:
    a decoder link of ingest's own, which may send what it reads)."""
    kind = input_type(inp)
    if src is None or src.may_send(kind):
        return
    role = src.effective_role
    raise RoleRefused(f"role '{role}' (source '{src.id}') may not send a '{kind}' input; "
                      f"it may send: {', '.join(sorted(ROLE_INPUTS[role]))}", inp.seq)


def check_seq(inp: FeedInput) -> None:
    """Raise :class:`FeedError` for a passing without ``seq``: a decoder's resend must be
    known as one, and a read has no person behind it to key it otherwise."""
    if inp.seq is None and type(inp) is Passing:
        raise FeedError(NO_SEQ)


def double_click_key(inp: FeedInput) -> str:
    """A key that is the same for the same input sent twice (stamps left out)."""
    body = {k: v for k, v in stored(inp).items() if k not in ("rx_us", "sent_us")}
    return "auto:" + hashlib.sha256(bus.pack_input(body)).hexdigest()[:32]


def unforeseen(exc: Exception, source: str) -> FeedError:
    """A refusal for an input that raised what the feed's checks did not foresee (a bug):
    logged with its traceback, answered and kept like any refusal."""
    log.error("input from %s raised %r; refused", source, exc, exc_info=exc)
    return FeedError(f"ingest could not read this input ({type(exc).__name__}); "
                     "it is kept in the rejects stream for the desk")


class TcpConnection:
    """One TCP feed connection: its hello, then its inputs, read by read. The inputs of
    one read are stored together and answered in one write (a source that sends many
    lines at once, a window of unanswered inputs, costs one append and one system
    call); a connection that waits for verdicts is answered input by input, each as
    soon as it is judged."""

    def __init__(self, ingest: Ingest, peer: Any, writer: asyncio.StreamWriter) -> None:
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


class Ingest:
    """The transport-independent core: authenticate, validate, append or reject."""

    def __init__(self, settings: Settings, r: aioredis.Redis) -> None:
        self.r = r
        #: The competition this ingest feeds (``[competition] id``): its raw log.
        self.competition = settings.competition_id
        self.bus = bus.Bus(r, self.competition)
        self.settings = settings
        #: token -> its source (id, role); replaced whole when the tokens are reloaded.
        self.tokens = tokens_of(settings.sources)
        self.config_stamp = self._config_stamp()
        self.links: list[DecoderLink] = []
        #: A scoring worker's consumer group was seen on the raw stream.
        self.scored = False
        #: This life has added the competition to the registry (:meth:`register`).
        self.registered = False
        #: Logs a Redis outage once (a warning, then "recovered"), not per input.
        self.outage = bus.Outage(log, "ingest")
        for s in settings.sources:
            if s.role is None:
                log.warning("source %s has no role: its token may send every input "
                            "(as admin); give it one (docs/configuration.md, Roles)", s.id)

    def source_for(self, token: Any) -> Source | None:
        """The source a token belongs to; None for anything else (any JSON value may
        arrive as a hello's ``token``)."""
        return self.tokens.get(token) if isinstance(token, str) and token else None

    # ------------------------------------------------------------------ tokens
    def _config_stamp(self) -> tuple[int, int] | None:
        if not self.settings.config_file:
            return None
        try:
            st = os.stat(self.settings.config_file)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def reload_tokens(self) -> bool:
        """Read the sources (tokens, roles) again from the configuration file if it
        changed; True if they were replaced. A file that no longer loads is logged and
        the tokens in use are kept."""
        stamp = self._config_stamp()
        if stamp is None or stamp == self.config_stamp:
            return False
        self.config_stamp = stamp
        try:
            fresh = load_settings(self.settings.config_file).sources
        except ConfigError as exc:
            log.error("tokens not reloaded, the ones in use are kept: %s", exc)
            return False
        before = {s.id for s in self.tokens.values()}
        self.tokens = tokens_of(fresh)
        log.info("tokens reloaded from %s: %d sources (added %s, removed %s)",
                 self.settings.config_file, len(fresh),
                 sorted({s.id for s in fresh} - before) or "none",
                 sorted(before - {s.id for s in fresh}) or "none")
        return True

    async def watch_tokens(self, stop: asyncio.Event) -> None:
        """Reload the tokens whenever the configuration file changes, until ``stop``."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), TOKENS_CHECK_S)
            self.reload_tokens()

    # ------------------------------------------------------------------ inputs
    async def accept(self, obj: Any, source: str, raw: bytes, *, src: Source | None = None,
                     wait: bool | None = False, key: str = "",
                     refuse_conflict: bool = True) -> dict[str, Any]:
        """Type, stamp and store one parsed input (HTTP, decoder links); the reply.

        ``src``: the token's source, whose role must allow the input (None: a decoder
        link of ingest's own). ``wait``: answer with scoring's verdict (None: for
        people's inputs, when a scoring worker reads the feed). ``key``: the
        sender's idempotency key ("" none). ``refuse_conflict=False``: a conflict is
        answered but not kept as a refusal (a decoder link tries the input in another
        session)."""
        rx = now_us()
        try:
            inp = validate(obj, source)
            check_role(inp, src)
            check_seq(inp)
        except FeedError as exc:
            return await self.refuse(source, raw, exc, obj)
        except Exception as exc:  # a bug must cost this input, not the connection
            return await self.refuse(source, raw, unforeseen(exc, source))
        return await self.store(inp, rx, raw, src=src, wait=wait, key=key,
                                refuse_conflict=refuse_conflict)

    async def refuse(self, source: str, raw: bytes, exc: FeedError,
                     obj: Any = None) -> dict[str, Any]:
        """Count and keep a refused input (``obj``: as parsed, for the log's race and
        input id); the reply to send."""
        await self.reject(source, raw, str(exc), obj)
        if isinstance(exc, RoleRefused):
            with contextlib.suppress(RedisError):
                await self.r.hincrby(keys.ingest_stats(self.competition), "refused_role", 1)
        if isinstance(exc, NotJSON):
            return {"ok": False, "error": str(exc)}
        return {"ok": False, "error": str(exc), "seq": exc.seq}

    async def store(self, inp: FeedInput, rx: int, raw: bytes = b"", *,
                    src: Source | None = None, wait: bool | None = False, key: str = "",
                    refuse_conflict: bool = True) -> dict[str, Any]:
        """Append one valid input to the raw log once (see the module's Idempotency); the
        reply, with scoring's verdict when ``wait``. A repeat of its (source, session,
        seq) with the same content is acknowledged as a duplicate; with other content it
        is refused (``conflict``), counted and kept in the rejects stream like any
        refusal."""
        return (await self.store_many([(inp, rx, raw)], src=src, wait=wait, key=key,
                                      refuse_conflict=refuse_conflict))[0]

    async def store_many(self, inputs: list[tuple[FeedInput, int, bytes]], *,
                         src: Source | None = None, wait: bool | None = False,
                         key: str = "", refuse_conflict: bool = True
                         ) -> list[dict[str, Any]]:
        """:meth:`store` for each (input, receipt µs, bytes as received), appended in
        order in one script call (the lines of one read of a TCP connection); the
        replies, in order. Storage unavailable: every reply says resend."""
        docs: list[tuple[dict[str, Any], str, int]] = []
        for inp, rx, _ in inputs:
            inp.rx_us = rx
            ttl = IDEMPOTENCY_KEY_S if key else 0
            own_key = key
            if inp.seq is None and not key and src is not None \
                    and src.effective_role != "decoder":
                own_key, ttl = double_click_key(inp), DOUBLE_CLICK_S
            docs.append((stored(inp), own_key, ttl))
        try:
            await self.register()
            appended = await self.bus.append_inputs(docs)
        except RedisError as exc:
            self.registered = False  # Redis may have come back empty: register again
            self.outage.failed(exc, "storing inputs (sources are told to resend)")
            log.debug("cannot store %d inputs from %s: %s", len(inputs), inputs[0][0].source,
                      exc, extra=about(inputs[0][0]))
            return [{"ok": False, "error": "storage unavailable; resend this input",
                     "retry": True, "seq": inp.seq} for inp, _, _ in inputs]
        self.outage.ok()
        return [await self.stored_reply(inp, raw, doc, stream_id, what, wait, refuse_conflict)
                for (inp, _, raw), (doc, _, _), (stream_id, what)
                in zip(inputs, docs, appended, strict=True)]

    async def stored_reply(self, inp: FeedInput, raw: bytes, doc: dict[str, Any],
                           stream_id: str, what: bus.Appended, wait: bool | None,
                           refuse_conflict: bool) -> dict[str, Any]:
        """The reply to an input the raw log took as ``what`` (see :meth:`store`)."""
        if what == "conflict":
            where = f" in session '{inp.session}'" if inp.session is not None else ""
            error = (f"seq {inp.seq}{where} was already used by source '{inp.source}' for "
                     f"another input (stored as {stream_id}); a new input needs a new seq, "
                     "or a new session")
            if refuse_conflict:
                await self.reject(inp.source, raw or msgspec.json.encode(doc), error, doc)
                with contextlib.suppress(RedisError):
                    await self.r.hincrby(keys.ingest_stats(self.competition), "conflict", 1)
            return {"ok": False, "error": error, "seq": inp.seq, "conflict": True}
        reply: dict[str, Any] = {"ok": True, "id": stream_id, "seq": inp.seq}
        if what == "duplicate":
            reply["duplicate"] = True
        if wait is None:
            wait = type(inp) not in SENSOR_INPUTS and await self.scoring_reads()
        if wait:
            await self.judged(reply)
        return reply

    async def register(self) -> None:
        """Add the competition to the registry of competitions (:data:`keys.COMPETITIONS`)
        before its first raw input of this life, so a scoring worker that scores any
        competition (``scoring.competitions = "*"``) finds it. The registry is in another
        slot than the competition, so it cannot be written by the append script: it is
        written first, and a raw input is never in a competition the registry lacks.
        Raises RedisError."""
        if not self.registered:
            await self.r.sadd(keys.COMPETITIONS, self.competition)
            self.registered = True

    async def scoring_reads(self) -> bool:
        """Whether a scoring worker reads the raw stream (its consumer group exists; it
        stays once made, so a True is kept). Without one nobody would judge an input, and
        waiting would only delay the reply."""
        if self.scored:
            return True
        try:
            groups = await self.r.xinfo_groups(keys.raw_stream(self.competition))
        except RedisError:
            return False  # no stream yet, or storage away: the reply says "stored"
        self.scored = any(bus.text(g.get("name")) == keys.SCORING_GROUP for g in groups)
        return self.scored

    async def judged(self, reply: dict[str, Any]) -> None:
        """Add scoring's verdict on the stored input ``reply["id"]`` to its reply: ``ok``
        stays true only when it was applied; refused, or not judged within
        VERDICT_WAIT_S (``pending``), it is false, with ``stored`` true and the reason."""
        try:
            verdict = await self.verdict(reply["id"])
        except RedisError as exc:
            self.outage.failed(exc, "waiting for verdicts")
            verdict = {"verdict": "pending"}
        reply["verdict"] = verdict["verdict"]
        if verdict["verdict"] == "applied":
            return
        reply.update(ok=False, stored=True)
        if verdict["verdict"] == "refused":
            reply["error"] = f"refused by scoring: {verdict.get('reason', '')}"
        else:
            reply["error"] = (f"stored, but scoring has not judged it within "
                              f"{VERDICT_WAIT_S:g} s (is scoring running?); its verdict "
                              "will be on the officials' stream")

    async def verdict(self, sid: str) -> dict[str, Any]:
        """Scoring's verdict on raw input ``sid``: its verdict key once written; an
        input scoring has passed (its progress mark) without one was applied (passings
        and clock offsets get a verdict only when refused); ``pending`` after
        VERDICT_WAIT_S. Raises RedisError."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + VERDICT_WAIT_S
        target = bus.parse_id(sid)
        delay, longest = VERDICT_POLL_S
        while True:
            v, mark = await self.r.mget([keys.verdict_key(self.competition, sid),
                                         keys.scoring_progress(self.competition)])
            if v is None and mark is not None and bus.parse_id(mark) >= target:
                # The verdict and the mark are written together: read it once more, in
                # case both landed between the two reads.
                v = await self.r.get(keys.verdict_key(self.competition, sid))
                if v is None:
                    return {"verdict": "applied"}
            if v is not None:
                found: dict[str, Any] = json.loads(v)
                return found
            if loop.time() >= deadline:
                return {"verdict": "pending"}
            await asyncio.sleep(delay)
            delay = min(delay * 2, longest)

    async def reject(self, source: str | None, raw: bytes, reason: str,
                     obj: Any = None) -> None:
        """Count and keep a refused input (``raw`` as it came; ``obj``, if it was JSON,
        names its race and seq in the log line)."""
        context = about({**obj, "source": source or "?"}) if isinstance(obj, dict) else {}
        log.warning("rejected input from %s: %s", source or "?", reason, extra=context)
        try:
            await self.r.xadd(keys.rejects_stream(self.competition), {
                "source": source or "", "reason": reason, "rx_us": now_us(),
                "raw": raw[:REJECT_KEEP_BYTES]}, maxlen=REJECTS_MAXLEN, approximate=True)
            await self.r.hincrby(keys.ingest_stats(self.competition), "rejected", 1)
        except RedisError as exc:
            self.outage.failed(exc, "recording a reject")

    async def last_seq(self, source: str, session: str | None = None) -> int | None:
        """The highest seq stored from ``source`` (in ``session``, if given); None if none."""
        v = await self.r.hget(keys.source_seq(self.competition), bus.seq_field(source, session))
        return int(v) if v is not None else None

    # ------------------------------------------------------------------ TCP
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

    # ------------------------------------------------------------------ HTTP
    @web.middleware
    async def no_token_in_url(self, request: web.Request, handler: Handler
                              ) -> web.StreamResponse:
        """Refuse, on every endpoint, a request whose URL carries a token: the token
        is already in some log by then, and accepting it would keep it there."""
        if any(name in request.query for name in URL_TOKEN_PARAMS):
            log.warning("refused %s %s: a token in the URL (query string not logged)",
                        request.method, request.path)
            await self.reject(None, b"", "a token in the URL")
            return web.json_response({"ok": False, "error": TOKEN_IN_URL}, status=400)
        return await handler(request)

    def _auth(self, request: web.Request) -> Source:
        """The source of the request's bearer token; raises HTTPUnauthorized."""
        header = request.headers.get("Authorization", "")
        src = self.source_for(header[7:] if header[:7].lower() == "bearer " else None)
        if src is None:
            raise web.HTTPUnauthorized(text=json.dumps({
                "ok": False, "error": "bad token: send 'Authorization: Bearer <token>'"}),
                content_type="application/json")
        return src

    @staticmethod
    def _options(request: web.Request) -> tuple[bool | None, str]:
        """(wait for the verdict: True, False, or None when ``wait`` is not given (the
        default: people's inputs wait), the Idempotency-Key header or "")."""
        asked = request.query.get("wait", "").lower()
        wait = True if asked in WAIT_VALUES else False if asked in NO_WAIT_VALUES else None
        return wait, request.headers.get("Idempotency-Key", "")[:IDEMPOTENCY_KEY_MAX]

    async def _body(self, request: web.Request, source: str) -> bytes | web.Response:
        """The request body, or the reply refusing it (too long, or empty)."""
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            error = f"body longer than {MAX_LINE} bytes"
        else:
            if body.strip():
                return body
            error = ("empty body: send one JSON object, an array of them, or "
                     "newline-delimited objects")
        await self.reject(source, b"", error)
        status = 413 if error.startswith("body longer") else 400
        return web.json_response({"ok": False, "error": error}, status=status)

    async def http_feed(self, request: web.Request) -> web.Response:
        src = self._auth(request)
        source = src.id
        wait, key = self._options(request)
        body = await self._body(request, source)
        if isinstance(body, web.Response):
            return body
        try:
            parsed = parse_json(body)
            items = parsed if isinstance(parsed, list) else [parsed]
            single = not isinstance(parsed, list)
            raws = [msgspec.json.encode(x) for x in items]
        except FeedError:
            # Not one JSON document: newline-delimited JSON, line by line.
            single = False
            items, raws = [], []
            for line in body.splitlines():
                if line.strip():
                    raws.append(line)
                    try:
                        items.append(parse_json(line))
                    except FeedError as exc:
                        items.append(exc)
        results = []
        for i, (obj, raw) in enumerate(zip(items, raws, strict=True)):
            if isinstance(obj, FeedError):
                await self.reject(source, raw, str(obj))
                results.append({"ok": False, "error": str(obj)})
            else:
                results.append(await self.accept(
                    obj, source, raw, src=src, wait=wait,
                    key=key if single or not key else f"{key}:{i}"))
        return web.json_response(results[0] if single and results else results)

    async def http_startlist(self, request: web.Request) -> web.Response:
        src = self._auth(request)
        source = src.id
        wait, key = self._options(request)
        body = await self._body(request, source)
        if isinstance(body, web.Response):
            return body
        try:
            doc = parse_json(body)
        except FeedError as exc:
            await self.reject(source, body, str(exc))
            return web.json_response({"ok": False, "error": str(exc)}, status=400)
        if isinstance(doc, dict):
            doc = {**doc, "type": "startlist"}
        result = await self.accept(doc, source, body, src=src, wait=wait, key=key)
        if result["ok"] or result.get("verdict") == "pending":
            await self.remember_chips(doc)
        status = 200 if result["ok"] else 202 if result.get("verdict") == "pending" else 400
        return web.json_response(result, status=status)

    async def remember_chips(self, doc: Any) -> None:
        """Whose each transponder of an accepted start list is (keys.chips), for the
        desk's flags. Best effort: a Redis error leaves the desk learning owners from
        the passages, as before."""
        skaters = doc.get("skaters") if isinstance(doc, dict) else None
        chips = {str(t): str(s["bib"]) for s in skaters or [] if isinstance(s, dict) and "bib" in s
                 for t in s.get("transponders") or []} if isinstance(skaters, list) else {}
        if chips:
            with contextlib.suppress(RedisError, OSError):
                await self.r.hset(keys.chips(self.competition), mapping=cast(Any, chips))

    async def http_stats(self, request: web.Request) -> web.Response:
        try:
            counters = await self.r.hgetall(keys.ingest_stats(self.competition))
            raw_length = await self.r.xlen(keys.raw_stream(self.competition))
        except RedisError as exc:
            self.outage.failed(exc, "answering /api/stats")
            # The links' own state still shows what they hold (their spools).
            return web.json_response({"ok": False, "error": f"storage unavailable: {exc}",
                                      "retry": True, "decoders": self.decoder_states()},
                                     status=503)
        # The counters a reader looks for are there at 0 too, not only once they move.
        stats: dict[str, Any] = dict.fromkeys(
            ("accepted", "duplicate", "conflict", "rejected", "refused_role"), 0)
        stats.update({bus.text(k): int(v) for k, v in counters.items()})
        stats["raw_length"] = raw_length
        stats["decoders"] = self.decoder_states()
        return web.json_response(stats)

    def decoder_states(self) -> dict[str, dict[str, Any]]:
        """Each decoder link's state (:meth:`DecoderLink.state`) by decoder id."""
        return {link.cfg.id: link.state() for link in self.links}

    async def http_whoami(self, request: web.Request) -> web.Response:
        """The token's source, its role and the input types it may send."""
        src = self._auth(request)
        return web.json_response({"source": src.id, "role": src.effective_role,
                                  "inputs": sorted(ROLE_INPUTS[src.effective_role])})

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_LINE, middlewares=[self.no_token_in_url])
        app.on_response_prepare.append(security_headers)
        app.add_routes([web.post("/feed", self.http_feed),
                        web.post("/api/startlist", self.http_startlist),
                        web.get("/api/stats", self.http_stats),
                        web.get("/api/whoami", self.http_whoami),
                        web.get("/healthz", healthz),
                        web.get("/api/ready", readiness(self.r))])
        Desk(self).routes(app)
        return app


async def supervise(link: DecoderLink, stop: asyncio.Event) -> None:
    """Run one decoder link until ``stop``. If its task fails (an exception the link did
    not handle), the traceback is logged, health shows the link down with the reason
    (event ``failed``), and it is restarted with backoff; a failing link never takes
    ingest or the other links with it."""
    loop = asyncio.get_running_loop()
    delay = RESTART_FIRST_S
    while not stop.is_set():
        started = loop.time()
        try:
            await link.run(stop)
        except Exception as exc:
            link.failed(exc)
            log.exception("decoder %s: link task failed (%d so far); restarting in %.1f s",
                          link.cfg.id, link.stats["failures"], delay)
            await link.publish_health("failed")
        else:
            return
        if loop.time() - started > RESTART_STABLE_S:
            delay = RESTART_FIRST_S
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
        delay = min(delay * 2, RESTART_MAX_S)


async def serve(settings: Settings, r: aioredis.Redis, stop: asyncio.Event,
                ready: Ready | None = None) -> None:
    """Run the feed until ``stop`` is set; ``ready`` gets ``{"ingest_http_port",
    "ingest_tcp_port"}`` once both listeners are bound (port 0: any free port).
    Raises BindFailed (an OSError) when a configured port cannot be bound."""
    ingest = Ingest(settings, r)
    runner = web.AppRunner(ingest.app(), access_log=None)
    await runner.setup()
    tcp: asyncio.Server | None = None
    links: list[DecoderLink] = []
    link_tasks: list[asyncio.Task[None]] = []
    try:
        with binding("ingest_http_port", settings.host, settings.ingest_http_port):
            await web.TCPSite(runner, settings.host, settings.ingest_http_port).start()
        with binding("ingest_tcp_port", settings.host, settings.ingest_tcp_port):
            tcp = await asyncio.start_server(ingest.handle_tcp, settings.host,
                                             settings.ingest_tcp_port, limit=MAX_LINE)
        ports = {"ingest_http_port": listen_port(runner.addresses),
                 "ingest_tcp_port": listen_port(s.getsockname() for s in tcp.sockets)}
        log.info("feed on tcp://%s:%d and http://%s:%d/feed", settings.host,
                 ports["ingest_tcp_port"], settings.host, ports["ingest_http_port"])
        links = [make_link(d, ingest, Path(settings.data_dir) / "captures")
                 for d in settings.decoders]
        ingest.links = links
        link_tasks = [asyncio.create_task(supervise(link, stop)) for link in links]
        link_tasks.append(asyncio.create_task(ingest.watch_tokens(stop)))
        if ready:
            await ready(ports)
        await stop.wait()
    finally:
        for task in link_tasks:
            task.cancel()
        await asyncio.gather(*link_tasks, return_exceptions=True)
        if tcp is not None:
            tcp.close()
            await tcp.wait_closed()
        await runner.cleanup()
