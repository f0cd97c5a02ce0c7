"""Ingest's core, whatever the transport (TCP: :mod:`.feed_tcp`, HTTP:
:mod:`.feed_http`): authenticate, validate, append to the raw log or reject.

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
input from the same source within DOUBLE_CLICK_S is the same input (a double click),
unless an undo (a ``void``) was stored in between: what was undone, sent again, is new.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from typing import Any

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from icetime import bus, keys
from icetime.logs import about
from icetime.messages import Clock, FeedInput, Passing, stored
from icetime.settings import ConfigError, Settings, Source
from icetime.settings import load as load_settings
from icetime.timefmt import now_us

from .admission import (
    RoleRefused,
    check_role,
    check_seq,
    double_click_key,
    is_undo,
    tokens_of,
    unforeseen,
)
from .decoders.base_link import DecoderLink
from .feed import FeedError, NotJSON, validate

log = logging.getLogger(__name__)
REJECTS_MAXLEN = 100_000
REJECT_KEEP_BYTES = 4096
#: How long a sender that waits for scoring's verdict is kept waiting, at most (s).
VERDICT_WAIT_S = 5.0
#: How often a waiting sender looks for the verdict: first, and at most (s).
VERDICT_POLL_S = (0.002, 0.05)
#: A person's input without ``seq`` or Idempotency-Key: the same input from the same
#: source within this many seconds is a repeat (a double click), stored once.
DOUBLE_CLICK_S = 10
#: How long an ``Idempotency-Key`` holds (s).
IDEMPOTENCY_KEY_S = 24 * 3600
#: How often the configuration file is checked for new tokens (s).
TOKENS_CHECK_S = 1.0
#: Input types a timing device sends, many a second: they wait for the verdict only when
#: asked to (the others, people's inputs, wait by default over HTTP).
SENSOR_INPUTS = (Passing, Clock)


class IngestCore:
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
        try:
            docs = await self._keyed(inputs, src, key)
            await self.register()
            appended = await self.bus.append_inputs(docs)
            await self._count_undos(inputs, appended)
            await self._note_last_passing(inputs, appended)
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

    async def _keyed(self, inputs: list[tuple[FeedInput, int, bytes]], src: Source | None,
                     key: str) -> list[tuple[dict[str, Any], str, int]]:
        """Each input as stored, stamped with its receipt time, with its idempotency key
        and how long it holds (s; 0: for ever): ``key``, or for a person's input with
        neither ``seq`` nor key its double-click key. Raises RedisError."""
        person = not key and src is not None and src.effective_role != "decoder"
        undos = -1
        docs = []
        for inp, rx, _ in inputs:
            inp.rx_us = rx
            own_key, ttl = key, IDEMPOTENCY_KEY_S if key else 0
            if inp.seq is None and person:
                if undos < 0:
                    undos = int(await self.r.hget(keys.ingest_stats(self.competition),
                                                  "undos") or 0)
                own_key, ttl = double_click_key(inp, undos), DOUBLE_CLICK_S
            docs.append((stored(inp), own_key, ttl))
        return docs

    async def _note_last_passing(self, inputs: list[tuple[FeedInput, int, bytes]],
                                 appended: list[tuple[str, bus.Appended]]) -> None:
        """Keep the newest passing stored (keys.last_passing), whatever its source, for
        the monitor's "last passing" (a mat's reads count as much as a decoder's).
        Raises RedisError."""
        newest = next(((inp, rx) for (inp, rx, _), (_, what) in
                       zip(reversed(inputs), reversed(appended), strict=True)
                       if what == "new" and isinstance(inp, Passing)), None)
        if newest is not None:
            inp, rx = newest
            await self.r.set(keys.last_passing(self.competition), json.dumps(
                {"at_us": rx, "source": inp.source, "point": inp.point}))

    async def _count_undos(self, inputs: list[tuple[FeedInput, int, bytes]],
                           appended: list[tuple[str, bus.Appended]]) -> None:
        """Count the undos newly stored: a double click's key changes with the count, so
        what an undo undid, sent again, is a new input (:func:`double_click_key`).
        Raises RedisError."""
        n = sum(1 for (inp, _, _), (_, what) in zip(inputs, appended, strict=True)
                if what == "new" and is_undo(inp))
        if n:
            await self.r.hincrby(keys.ingest_stats(self.competition), "undos", n)

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
