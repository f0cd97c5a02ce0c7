"""Passing numbers of one decoder: which are missing, what to ask for again, sans-I/O.

A P3 decoder numbers its passings consecutively. :class:`PassingNumbers` follows
them and says which RESEND requests to send, within fixed bounds whatever the
numbers do:

* a gap of up to ``jump_limit`` numbers is tracked and asked for in requests of
  at most ``max_range`` numbers each;
* at most ``max_missing`` numbers are tracked; past that the oldest are given up
  (counted), so memory stays flat;
* a number further than ``jump_limit`` from the highest one is a *jump*: nothing
  is asked for. If the next number continues from the jumped one, the decoder
  numbers anew (a replaced or reset decoder): that is adopted as a *new
  numbering* and the old gaps are given up. If the old series goes on instead,
  the jump was one odd number and is left at that.
"""
from __future__ import annotations

from dataclasses import dataclass, field

#: A forward gap larger than this is not a gap but a jump.
JUMP_LIMIT = 10_000
#: At most this many numbers in one RESEND request.
MAX_RANGE = 1_000
#: At most this many missing numbers tracked.
MAX_MISSING = 10_000
#: At most this many requests for the tracked numbers after a reconnect.
MAX_RECONNECT_REQUESTS = 10


@dataclass(frozen=True, slots=True)
class Anomaly:
    """``kind`` is ``"jump"`` (``to`` is far from ``highest``) or ``"new_numbering"``
    (the numbering that jumped to ``to`` went on; ``highest`` was the old one's top)."""

    kind: str
    highest: int
    to: int


@dataclass(slots=True)
class Verdict:
    """What a passing number asks for: RESEND ranges (first, last, inclusive) and
    perhaps an anomaly to report."""

    requests: list[tuple[int, int]] = field(default_factory=list)
    anomaly: Anomaly | None = None


NOTHING = Verdict()


class PassingNumbers:
    """Follows one decoder's passing numbers. Every method is O(``jump_limit``) at
    worst and the state is at most ``max_missing`` numbers."""

    def __init__(self, highest: int | None = None, *, jump_limit: int = JUMP_LIMIT,
                 max_range: int = MAX_RANGE, max_missing: int = MAX_MISSING) -> None:
        self.highest = highest
        self.jump_limit = jump_limit
        self.max_range = max_range
        self.max_missing = max_missing
        #: Missing numbers, oldest first (a dict as an ordered set: giving up the
        #: oldest is then O(1) each, whatever the order they were found in).
        self.missing: dict[int, None] = {}
        #: Missing numbers not asked for yet (passings that could not be stored).
        self.unasked: set[int] = set()
        #: A number that jumped, waiting to see whether a new numbering follows it.
        self.candidate: int | None = None
        self.jumps = 0
        self.new_numberings = 0
        self.given_up = 0

    def arrived(self, n: int) -> Verdict:
        """Passing number ``n`` came from the decoder (live or resent)."""
        h = self.highest
        if h is None:
            self.highest = n
            return NOTHING
        if n == h + 1:  # the usual case, first
            self.highest = n
            self.candidate = None
            return self._with_unasked(NOTHING)
        if n in self.missing:  # an answer to a RESEND
            del self.missing[n]
            self.unasked.discard(n)
            return NOTHING
        if h - self.jump_limit <= n <= h:
            return NOTHING  # a repeat, or an answer we no longer tracked
        if h < n <= h + 1 + self.jump_limit:
            self._track(h + 1, n - 1)
            self.highest = n
            self.candidate = None
            return self._with_unasked(Verdict(self._ranges(h + 1, n - 1)))
        c = self.candidate
        if c is not None and c < n <= c + 1 + self.jump_limit:
            # The jumped number's series goes on: the decoder numbers anew from there.
            self.new_numberings += 1
            self.given_up += len(self.missing)
            self.missing.clear()
            self.unasked.clear()
            self.highest, self.candidate = c, None
            v = self.arrived(n)
            return Verdict(v.requests, Anomaly("new_numbering", h, c))
        self.candidate = n
        self.jumps += 1
        return Verdict([], Anomaly("jump", h, n))

    def failed(self, n: int, *, ask: bool = True) -> None:
        """Passing ``n`` arrived but could not be kept: ask for it again with the next
        passing's requests (``ask``), or only when :meth:`missing_requests` is called."""
        if len(self.missing) >= self.max_missing:
            self._give_up(1)
        self.missing[n] = None
        if ask:
            self.unasked.add(n)

    def give_up_missing(self) -> None:
        """Stop tracking every missing number (counted as given up): asked for once, an
        answer is still stored, but nothing asks again."""
        self.given_up += len(self.missing)
        self.missing.clear()
        self.unasked.clear()

    def missing_requests(self) -> list[tuple[int, int]]:
        """Requests for the tracked numbers: at most MAX_RECONNECT_REQUESTS windows of
        ``max_range``, the oldest first."""
        out: list[tuple[int, int]] = []
        for n in sorted(self.missing):
            if out and n - out[-1][0] < self.max_range:
                out[-1] = (out[-1][0], n)
            elif len(out) == MAX_RECONNECT_REQUESTS:
                break
            else:
                out.append((n, n))
        self.unasked.clear()
        return out

    def reconnect_requests(self) -> list[tuple[int, int]]:
        """What to ask for after a (re)connect: the tracked numbers (in at most
        MAX_RECONNECT_REQUESTS windows of ``max_range``, the oldest first) and the
        next ``max_range`` numbers past the highest, which the decoder may have
        numbered while the link was down (it answers only what it has)."""
        out = self.missing_requests()
        if self.highest is not None:
            out.append((self.highest + 1, self.highest + self.max_range))
        return out

    def _with_unasked(self, v: Verdict) -> Verdict:
        if not self.unasked:
            return v
        numbers = sorted(self.unasked)
        self.unasked.clear()
        extra: list[tuple[int, int]] = []
        for n in numbers:
            if extra and n - extra[-1][0] < self.max_range:
                extra[-1] = (extra[-1][0], n)
            else:
                extra.append((n, n))
        return Verdict(extra + v.requests, v.anomaly)

    def _ranges(self, first: int, last: int) -> list[tuple[int, int]]:
        return [(a, min(a + self.max_range - 1, last))
                for a in range(first, last + 1, self.max_range)]

    def _track(self, first: int, last: int) -> None:
        count = last - first + 1
        over = len(self.missing) + count - self.max_missing
        if over > 0:
            self._give_up(over)
        if count > self.max_missing:  # only the newest fit
            self.given_up += count - self.max_missing
            first = last - self.max_missing + 1
        self.missing.update(dict.fromkeys(range(first, last + 1)))

    def _give_up(self, count: int) -> None:
        """Forget the ``count`` missing numbers found first."""
        it = iter(self.missing)
        drop = [next(it) for _ in range(min(count, len(self.missing)))]
        for n in drop:
            del self.missing[n]
        self.unasked.difference_update(drop)
        self.given_up += len(drop)
