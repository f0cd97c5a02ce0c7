"""A decoder's sessions: one per boot, so that a restarted decoder's numbers are new.

A decoder numbers its passings (P3 passing numbers, AMB ASCII record numbers), and a
restart numbers them from the start again. Ingest keys every input by (source, session,
seq): each boot of a decoder is a *session*, and the same number in another session is
another passing. :class:`Sessions` holds a link's current session and the number range
each earlier one stored (sans-I/O: the link loads and saves it, see ``base_link.DecoderLink``).

A new session starts when the decoder says it restarted (a RESET or FIRST_CONTACT
record), when its clock since boot goes back (AMB ASCII), or when a number comes back
with other content than the one stored under it (ingest calls that a ``conflict``): the
proof, whatever the decoder said. A P3 link asks for such a number on every connect
(:mod:`.bootcheck`), so a restart while the link was down is found however many
passings the new boot made. A decoder's first session has no id (``None``), so the
inputs of a decoder that never restarts keep the keys they always had.

No genuine passing is dropped, and none is stored twice: a number inside an earlier
session's range is tried in that session first (a RESEND answer for a passing of the old
boot is a duplicate there, or fills its gap), and only a conflict there sends it on; a
conflict in the current session starts a new one.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Earlier sessions whose ranges are kept (and restarts shown in the health).
MAX_SESSIONS_KEPT = 10


@dataclass(slots=True)
class Span:
    """A session and the lowest and highest number stored in it (None: none yet)."""

    session: str | None
    lo: int | None = None
    hi: int | None = None

    def holds(self, seq: int) -> bool:
        return self.lo is not None and self.hi is not None and self.lo <= seq <= self.hi

    def add(self, seq: int) -> None:
        self.lo = seq if self.lo is None else min(self.lo, seq)
        self.hi = seq if self.hi is None else max(self.hi, seq)


@dataclass(slots=True)
class Sessions:
    """``now``: the current session's span; ``earlier``: the ones before, newest first."""

    now: Span = field(default_factory=lambda: Span(None))
    earlier: list[Span] = field(default_factory=list)
    #: Sessions started since the link started.
    restarts: int = 0
    #: The last restarts: {"session", "reason", "at_us", "ended_at"}.
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def current(self) -> str | None:
        return self.now.session

    def start(self, reason: str, at_us: int) -> str:
        """Begin a new session at ``at_us`` (host µs, also its id). Returns its id."""
        session = str(at_us)
        while session == self.now.session or any(s.session == session for s in self.earlier):
            session += "+"  # two restarts in one µs are still two sessions
        ended = self.now
        self.earlier = [ended, *self.earlier][:MAX_SESSIONS_KEPT]
        self.now = Span(session)
        self.restarts += 1
        self.history = [{"session": session, "reason": reason, "at_us": at_us,
                         "ended_at": ended.hi}, *self.history][:MAX_SESSIONS_KEPT]
        return session

    def order(self, seq: int) -> list[str | None]:
        """The sessions to try ``seq`` in, in turn: earlier ones that stored numbers
        around it (newest first), then the current one."""
        return [s.session for s in self.earlier if s.holds(seq)] + [self.now.session]

    def stored(self, session: str | None, seq: int) -> bool:
        """``seq`` is stored in ``session``: widen that session's range. True when its
        lowest number moved (then save it: the highest is the source's last seq)."""
        for span in (self.now, *self.earlier):
            if span.session == session:
                lo = span.lo
                span.add(seq)
                return span.lo != lo
        return False

    def state(self) -> dict[str, Any]:
        """For the health: the session, how many restarts, the last ones."""
        return {"session": self.current, "restarts": self.restarts,
                "restart_history": list(self.history)}

    def dump(self) -> dict[str, Any]:
        """What to save (JSON) so a restarted ingest carries on in the same session."""
        return {"spans": [[s.session, s.lo, s.hi] for s in (self.now, *self.earlier)],
                "history": self.history}

    @classmethod
    def load(cls, doc: dict[str, Any], last_seq: int | None) -> Sessions:
        """Back from :meth:`dump`, the current session's highest number being
        ``last_seq`` (what ingest stored last). ValueError, KeyError or TypeError if
        ``doc`` is not a dump."""
        spans = [Span(None if s is None else str(s), lo, hi) for s, lo, hi in doc["spans"]]
        if not spans:
            raise ValueError("no session")
        now = spans[0]
        if last_seq is not None:
            now.add(last_seq)
        return cls(now, spans[1:], 0, list(doc.get("history", [])))
