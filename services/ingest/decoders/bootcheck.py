"""On every reconnect, is the P3 decoder still the boot whose numbers the link follows?

A decoder that restarts while the link is down numbers its passings from 1 again. If
it made at least as many passings as the old boot's highest number before the link is
back, nothing on the link shows it: its next passing continues the old count. So on
every connect where the current session holds a number, the link first asks (RESEND)
for the highest number stored there, N, and holds the live passings that come
meanwhile (:class:`BootCheck`, sans-I/O; :class:`BootChecking` does it for the link):

* N comes back (the request asks for N and the numbers after it, which the decoder
  answers in order): it is stored like any passing. The same passing (a duplicate) means the
  same boot; another passing is a conflict, which starts a new session as every
  conflict does, and the new boot's 1..N-1 and N+1.. are asked for.
* A number below N comes unasked: a decoder sends no lower number live, so it restarted.
* No answer within CHECK_WAIT_S: N is asked for once more (an answer lost), and with it
  the session's lowest number L (a new boot that made fewer than N passings has L if it
  made L: its answer is compared the same way). No answer again: the check is
  *unanswered*, and a passing above N (held, or the next to come) means the decoder no
  longer has N: it restarted with no RESET, or its memory was cleared. Either way a new
  session starts and its numbers below are asked for once from 1 (a cleared memory
  costs one session more; nothing stored before is touched).

The held passings are then handled in the order they came (their gaps asked for as
usual); with none held, the numbers past the highest are asked for where no request did
yet (what the decoder made while the link was down). A check that
nothing answers and no passing follows stays open (through reconnects, with what it
holds) until a passing decides it. A RESET or FIRST_CONTACT during the check settles it
as a restart.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from icetime.settings import Decoder

from .numbers import PassingNumbers
from .p3 import P3Passing
from .sessions import Sessions

log = logging.getLogger(__name__)
#: How long to wait for the decoder's answer to the check's RESEND, per try (s). A
#: decoder answers from memory in milliseconds; this is for a slow link.
CHECK_WAIT_S = 2.0
#: The check's RESEND is sent at most this often per connect (one retry: an answer lost).
CHECK_TRIES = 2
#: At most this many live passings are held while the check waits; one more decides it
#: as unanswered (a decoder making this many passings in 2 × CHECK_WAIT_S answers nothing).
HOLD_MAX = 1000

#: What a passing that comes during a check means (:meth:`BootCheck.sort`).
Sorted = Literal["answer", "lower", "hold", "unanswered"]


@dataclass(slots=True)
class BootCheck:
    """One check: ``number`` (N, the highest number the current session stored) and
    ``lowest`` (L, its lowest), asked for ``asked`` times in all; ``probes``: the numbers
    asked for so far; ``held``: live passings waiting for the verdict, in the order they
    came; ``unanswered``: every try went unanswered."""

    number: int
    lowest: int
    held: list[P3Passing] = field(default_factory=list)
    probes: set[int] = field(default_factory=set)
    asked: int = 0
    unanswered: bool = False
    #: Set once the verdict is in (the watcher stops waiting).
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def sort(self, n: int) -> Sorted:
        """What passing number ``n`` means now: an ``answer`` (a number asked for: the
        decoder's passing under it, to compare), ``lower`` (a restart), ``hold`` (wait
        for the verdict) or ``unanswered`` (N is gone while numbers go on: a restart)."""
        if n in self.probes:
            return "answer"
        if n < self.number:
            return "lower"
        if self.unanswered or len(self.held) >= HOLD_MAX:
            return "unanswered"
        return "hold"

    def state(self) -> dict[str, Any]:
        """For the health (``boot_check``)."""
        return {"number": self.number, "asked": self.asked, "unanswered": self.unanswered,
                "held": len(self.held)}


class BootChecking:
    """The check for a P3 link: a mixin of :class:`~services.ingest.decoders.link.P3Link`,
    which sets what is declared here. Every passing goes through :meth:`checked_passing`
    (under ``check_lock``, as the check's watcher task also releases passings)."""

    cfg: Decoder
    stats: dict[str, int]
    sessions: Sessions
    numbers: PassingNumbers | None
    check: BootCheck | None
    check_lock: asyncio.Lock
    checker: asyncio.Task[None] | None

    if TYPE_CHECKING:
        async def request(self, first: int, last: int) -> None: ...
        async def restart(self, reason: str, seq: int | None = None) -> str | None: ...
        async def store_number(self, p: P3Passing) -> None: ...
        async def publish_health(self, event: str) -> None: ...

    async def start_check(self, n: int, lowest: int) -> None:
        """On a connect (under ``check_lock``): ask for N (``n``; ``lowest``: L), and
        watch for the answer. A check still open from an earlier connect hands on what
        it holds."""
        held = self.check.held if self.check is not None else []
        check = self.check = BootCheck(n, lowest, held)
        self.stats["boot_checks"] += 1
        # N and what the decoder numbered after it while the link was down: it answers in
        # order, so N comes first, and the rest is stored in the session N's verdict says.
        await self._ask(check, n, n + self._max_range() - 1)
        if self.checker is not None:
            # The last connect's watcher waits (it cannot be inside the lock held here).
            self.checker.cancel()
        self.checker = asyncio.create_task(self._watch(check))

    async def stop_check(self) -> None:
        """Ingest stops: the watcher ends (held passings go with the process, as the
        spool does: the next connect's check and RESEND bring them again)."""
        if self.checker is not None:
            self.checker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.checker
            self.checker = None

    async def checked_passing(self, p: P3Passing) -> None:
        """A passing from the decoder: held, or it decides the check, or (no check open)
        handled at once."""
        async with self.check_lock:
            check = self.check
            if check is None:
                await self.store_number(p)
                return
            kind = check.sort(p.number)
            if kind == "hold":
                check.held.append(p)
            elif kind == "answer":
                restarts = self.sessions.restarts
                await self.store_number(p)  # a conflict under N starts a new session
                # The numbers past N come with the first request's answer; past L not.
                await self._settle(check, same_boot=self.sessions.restarts == restarts,
                                   ask_past=p.number != check.number)
            else:
                check.held.append(p)
                await self._restart(check, p.number, kind)

    async def restarted_during_check(self) -> None:
        """The decoder said it restarted (RESET, FIRST_CONTACT; under ``check_lock``)
        while a check was open: that is the verdict."""
        if self.check is not None:
            await self._settle(self.check, same_boot=False, ask_past=True)

    def _max_range(self) -> int:
        return self.numbers.max_range if self.numbers is not None else 1

    async def _ask(self, check: BootCheck, n: int, last: int | None = None) -> None:
        check.asked += 1
        check.probes.add(n)
        await self.request(n, n if last is None else last)

    async def _restart(self, check: BootCheck, n: int, kind: Sorted) -> None:
        if kind == "lower":
            reason = (f"passing number {n} came after a reconnect, below the highest "
                      f"stored ({check.number})")
        else:
            reason = (f"passing number {check.number} was not there after a reconnect, "
                      f"and passings went on from {check.held[0].number}")
        await self.restart(reason)
        await self._settle(check, same_boot=False, ask_past=False)
        if kind == "unanswered" and self.numbers is not None:
            # A decoder that answered neither N nor L has nothing below its first passing
            # here (a cleared memory): what was asked for once is not tracked as missing.
            self.numbers.give_up_missing()

    async def _settle(self, check: BootCheck, *, same_boot: bool, ask_past: bool) -> None:
        """The verdict is in: ask for the old gaps (same boot; after a restart the new
        boot's were asked for by on_restart), handle the held passings in order (their
        gaps are asked for as they come), and with ``ask_past`` and none held, ask for
        what the decoder may have numbered past the highest while the link was down."""
        self.check = None
        check.done.set()
        if same_boot and self.numbers is not None:
            for first, last in self.numbers.missing_requests():
                await self.request(first, last)
        held, check.held = check.held, []
        for p in held:
            await self.store_number(p)
        if ask_past and not held and self.numbers is not None:
            h = self.numbers.highest or 0
            await self.request(h + 1, h + self.numbers.max_range)
        await self.publish_health("boot_check")

    async def _watch(self, check: BootCheck) -> None:
        """Ask again once when N goes unanswered; then mark the check unanswered, and
        if passings are held, that is a restart."""
        try:
            for attempt in range(CHECK_TRIES):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(check.done.wait(), CHECK_WAIT_S)
                    return
                async with self.check_lock:
                    if self.check is not check:
                        return  # settled meanwhile, or a newer connect checks anew
                    if attempt + 1 < CHECK_TRIES:
                        await self._ask(check, check.number)
                        if check.lowest < check.number:
                            await self._ask(check, check.lowest)
                        continue
                    await self._unanswered(check)
        except Exception:  # a bug must not leave passings held for ever unseen
            self.stats["internal_errors"] += 1
            log.exception("decoder %s: the boot check failed", self.cfg.id)

    async def _unanswered(self, check: BootCheck) -> None:
        check.unanswered = True
        self.stats["boot_checks_unanswered"] += 1
        log.warning("decoder %s: passing numbers %s not answered after a reconnect "
                    "(%d requests): the first passing above %d will be taken for a new boot",
                    self.cfg.id, sorted(check.probes), check.asked, check.number)
        if check.held:
            await self._restart(check, check.held[0].number, "unanswered")
        else:
            await self.publish_health("boot_check")
