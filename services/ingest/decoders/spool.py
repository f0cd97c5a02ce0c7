"""How a link's passings reach ingest: in order, in the decoder's session, spooled
while storage is away.

A passing (or a start beacon: a passing of a ``gun_transponders`` id becomes a gun
for the pair called to the start) is handed to ingest in the session its decoder's
numbering says (:class:`~services.ingest.decoders.sessions.Sessions`; a number that
comes back with another passing means the decoder restarted: a new session,
docs/decoders.md "Sessions"). While Redis is away, passings wait in the link's spool,
in order, and are stored as soon as it answers (docs/decoders.md, "Health").

:class:`PassingStore` is the part of :class:`~services.ingest.decoders.base_link.DecoderLink`
that does this; it holds no connection of its own.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from redis.exceptions import RedisError

from icetime import keys
from icetime.settings import Decoder
from icetime.startlist import transponder_key
from icetime.timefmt import now_us

from .sessions import Sessions

if TYPE_CHECKING:
    from ..server import Ingest

log = logging.getLogger(__name__)
#: What became of a passing handed to ingest (:meth:`DecoderLink.store_passing`).
StoreResult = Literal["stored", "refused", "spooled", "retry"]
#: Health is published on each link change and STATUS, and after passings at most this
#: often (for decoders that send no STATUS).
HEALTH_EVERY_US = 1_000_000
#: Passings that could not be stored (Redis away) wait in the link's spool, in order, at
#: most this many (some 100 races of passings); past that a passing is counted as
#: ``not_stored`` and, over P3, asked for again once the spool is stored.
SPOOL_MAX = 10_000
#: While passings are spooled, the oldest is tried again this often: a stopped Redis
#: refuses a connection at once, so a try costs next to nothing.
SPOOL_RETRY_S = 0.2


@dataclass(slots=True)
class Pending:
    """A passing on its way to ingest: the feed input, its seq, the decoder's bytes, and
    the session its protocol chose when it arrived (Protime's day; None for the others,
    whose session is found when it is stored)."""

    inp: dict[str, Any]
    seq: int
    raw: bytes
    session: str | None = None


class PassingStore:
    """Storing passings: the spool, the sessions, restarts. A mixin of
    :class:`~services.ingest.decoders.base_link.DecoderLink`, which sets what is
    declared here."""

    #: See :class:`~services.ingest.decoders.base_link.DecoderLink`.
    PROTOCOL: str
    NUMBERED: bool
    cfg: Decoder
    ingest: Ingest
    stats: dict[str, int]
    anomalies: deque[dict[str, Any]]
    last_passing_us: int | None
    published_us: int
    sessions: Sessions
    sessions_loaded: bool
    spool: deque[Pending]
    drainer: asyncio.Task[None] | None
    spool_overflowed: bool
    spool_since: float

    async def publish_health(self, event: str) -> None:
        """Publish the link's health (:meth:`DecoderLink.publish_health`)."""
        raise NotImplementedError

    async def store_passing(self, seq: int, transponder: str, t: int, raw: bytes,
                            point: str | None = None, alias: str | None = None,
                            session: str | None = None) -> StoreResult:
        """Hand a passing (or a start beacon) to ingest: ``"stored"`` (or a duplicate of
        one stored), ``"refused"`` (ingest refused it and keeps it in the rejects
        stream), ``"spooled"`` (storage unavailable: kept in the link's spool and stored
        in order as soon as storage answers) or ``"retry"`` (storage unavailable and the
        spool full: counted as ``not_stored``, to be asked for again where the protocol
        can). ``alias``: the other id the chip reported (a ProChip's number beside its
        code). ``session``: the one the protocol chose (Protime), else None.

        While the spool holds passings, a new one joins it behind them, so passings are
        stored in the order they came. It goes in the session :meth:`session_order`
        says; a number that comes back with another passing starts a new session
        (:meth:`restart`) and is stored there."""
        if self._is_gun(transponder, alias):
            # The start impulse as a beacon passing: a gun for the pair called to the start.
            inp: dict[str, Any] = {"type": "gun", "seq": seq, "t": t}
        else:
            inp = {"type": "passing", "seq": seq, "transponder": transponder, "t": t,
                   "point": point or self.cfg.point}
            if alias is not None and alias != transponder:
                inp["transponder_alias"] = alias
        pending = Pending(inp, seq, raw, session)
        if not self.spool:
            result = await self._store(pending)
            if result != "retry":
                return result
        if len(self.spool) >= SPOOL_MAX:
            self.stats["not_stored"] += 1
            if not self.spool_overflowed:
                self.spool_overflowed = True
                log.warning("decoder %s: the spool is full (%d passings); later passings "
                            "are not kept until it is stored", self.cfg.id, SPOOL_MAX)
            return "retry"
        if not self.spool:
            self.spool_since = asyncio.get_running_loop().time()
            log.warning("decoder %s: storage unavailable; keeping passings in the link's "
                        "spool (at most %d) until it answers", self.cfg.id, SPOOL_MAX)
        self.spool.append(pending)
        if self.drainer is None or self.drainer.done():
            self.drainer = asyncio.create_task(self._drain())
        return "spooled"

    async def _store(self, p: Pending) -> StoreResult:
        """Store one passing now: ``"stored"``, ``"refused"`` or ``"retry"``."""
        try:
            reply = await self._store_in_session(p)
        except RedisError as exc:  # the sessions could not be loaded or saved
            self.ingest.outage.failed(exc, f"loading decoder {self.cfg.id}'s sessions")
            reply = {"ok": False, "retry": True}
        if not reply.get("ok"):
            if reply.get("retry"):
                return "retry"
            self.stats["refused"] += 1
            return "refused"
        self.last_passing_us = now_us()
        self.stats["duplicates" if reply.get("duplicate") else "passings"] += 1
        if self.last_passing_us - self.published_us > HEALTH_EVERY_US:
            # Decoders without STATUS records (ASCII, Protime) still show their counts.
            await self.publish_health("passing")
        return "stored"

    async def _drain(self) -> None:
        """Store the spool, oldest first, trying again every SPOOL_RETRY_S while storage
        is unavailable; new passings join its end meanwhile."""
        stored = 0
        while self.spool:
            await asyncio.sleep(SPOOL_RETRY_S)
            while self.spool:
                if await self._store_head() == "retry":
                    break
                self.spool.popleft()
                stored += 1
        log.info("decoder %s: %d spooled passings stored, in order, %.1f s after the "
                 "first was kept", self.cfg.id, stored,
                 asyncio.get_running_loop().time() - self.spool_since)
        overflowed, self.spool_overflowed = self.spool_overflowed, False
        await self.publish_health("spool_stored")
        await self.on_spool_stored(overflowed)

    async def _store_head(self) -> StoreResult:
        """Store the spool's oldest passing. A bug storing it costs that passing only
        (logged, counted, kept in the rejects stream), not the spool."""
        p = self.spool[0]
        try:
            return await self._store(p)
        except Exception:
            self.stats["internal_errors"] += 1
            log.exception("decoder %s: a spooled passing could not be stored; kept in the "
                          "rejects stream", self.cfg.id)
            await self.ingest.reject(self.cfg.id, p.raw, f"{self.PROTOCOL}: not handled")
            return "refused"

    async def on_spool_stored(self, overflowed: bool) -> None:
        """The spool is stored; ``overflowed``: passings were left out while it was full
        (a protocol that can ask for them again does it here)."""

    async def stop_spool(self) -> None:
        """Stop storing the spool (ingest stops): what it holds is lost with the process;
        a P3 decoder is asked for it again on the next connect."""
        if self.drainer is not None:
            self.drainer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.drainer
            self.drainer = None

    def _is_gun(self, transponder: str, alias: str | None) -> bool:
        guns = {transponder_key(g) for g in self.cfg.gun_transponders}
        return transponder_key(transponder) in guns or (
            alias is not None and transponder_key(alias) in guns)

    def session_order(self, p: Pending) -> list[str | None]:
        """The sessions to try a passing in, in turn (:meth:`Sessions.order`)."""
        return self.sessions.order(p.seq)

    async def _store_in_session(self, p: Pending) -> dict[str, Any]:
        """Store ``p`` in the first session that takes it; a conflict in the current
        session (a restarted decoder's number) starts a new one, where it is stored."""
        inp, seq, raw = p.inp, p.seq, p.raw
        await self.load_sessions()
        reply: dict[str, Any] = {}
        for session in self.session_order(p):
            reply = await self._accept(inp, session, raw)
            if not reply.get("conflict"):
                return await self._stored(reply, session, seq)
        if not self.NUMBERED:
            await self.ingest.reject(self.cfg.id, raw, str(reply.get("error")), inp)
            return reply
        session = await self.restart(f"passing number {seq} came again with another "
                                     "passing", seq)
        reply = await self._accept(inp, session, raw)
        if reply.get("conflict"):  # cannot be: the session is new
            await self.ingest.reject(self.cfg.id, raw, str(reply.get("error")), inp)
        return await self._stored(reply, session, seq)

    async def _accept(self, inp: dict[str, Any], session: str | None, raw: bytes
                      ) -> dict[str, Any]:
        doc = inp if session is None else {**inp, "session": session}
        return await self.ingest.accept(doc, self.cfg.id, raw, refuse_conflict=False)

    async def _stored(self, reply: dict[str, Any], session: str | None, seq: int
                      ) -> dict[str, Any]:
        if reply.get("ok") and self.NUMBERED and self.sessions.stored(session, seq):
            await self.save_sessions()
        return reply

    async def load_sessions(self) -> None:
        """The sessions as ingest saved them (once per link object); RedisError if
        Redis is away (the passing is asked for again)."""
        if self.sessions_loaded:
            return
        doc = await self.ingest.r.hget(keys.decoder_sessions(self.ingest.competition), self.cfg.id)
        if doc is not None:
            try:
                last = await self.ingest.last_seq(self.cfg.id, _current(doc))
                self.sessions = Sessions.load(json.loads(doc), last)
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("decoder %s: saved sessions unreadable (%s); starting anew",
                            self.cfg.id, exc)
                self.sessions = Sessions()
        self.sessions_loaded = True

    async def save_sessions(self) -> None:
        await self.ingest.r.hset(keys.decoder_sessions(self.ingest.competition), self.cfg.id,
                                 json.dumps(self.sessions.dump()))

    async def restart(self, reason: str, seq: int | None = None) -> str | None:
        """The decoder restarted (``reason``): a new session, said in the log and the
        health (event ``restart``). ``seq``: the number that showed it, if one did."""
        at = now_us()
        session: str | None
        try:
            await self.load_sessions()
            session = self.sessions.start(reason, at)
            await self.save_sessions()
        except RedisError as exc:  # kept in memory; a conflict after a reload says it again
            self.ingest.outage.failed(exc, f"saving decoder {self.cfg.id}'s sessions")
            session = self.sessions.current
        log.warning("decoder %s restarted (%s): new session %s", self.cfg.id, reason,
                    session)
        self.anomalies.append({"kind": "restart", "reason": reason, "session": session,
                               "at_us": at})
        await self.on_restart(seq)
        await self.publish_health("restart")
        return session

    async def on_restart(self, seq: int | None) -> None:
        """A new session began (``seq``: the number that showed it): protocol state
        that follows the decoder's numbers starts anew."""


def _current(doc: bytes | str) -> str | None:
    """The current session's id in saved sessions (for its last seq); None if unreadable."""
    try:
        spans = json.loads(doc)["spans"]
        return None if spans[0][0] is None else str(spans[0][0])
    except (ValueError, KeyError, TypeError, IndexError):
        return None
