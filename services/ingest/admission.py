"""What a source may send: its role's input types, a ``seq`` on every passing, and
one input for a double click.

Roles: each token's source has a role (icetime.settings.ROLE_INPUTS) and may send
only that role's input types; any other input is refused, naming the role and the
input type (:func:`check_role`). A passing needs ``seq`` (:func:`check_seq`; see
docs/protocol.md, Idempotency). From a person (any role but decoder), an input with
neither ``seq`` nor Idempotency-Key is keyed by its content (:func:`double_click_key`).
"""
from __future__ import annotations

import hashlib
import logging

from icetime import bus
from icetime.messages import Decision, FeedInput, Passing, stored
from icetime.settings import ROLE_INPUTS, Source

from .feed import FeedError

log = logging.getLogger(__name__)
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


def is_undo(inp: FeedInput) -> bool:
    """Whether ``inp`` is a ``void`` decision (an undo)."""
    return type(inp) is Decision and inp.action == "void"


def double_click_key(inp: FeedInput, undos: int) -> str:
    """A key that is the same for the same input sent twice (stamps left out) while no
    undo (a ``void``) was stored in between: ``undos`` is how many the competition has
    had. An input repeated after an undo is a new input (the official sends again what
    was undone); an undo's own key leaves ``undos`` out, for its double click counts one."""
    body = {k: v for k, v in stored(inp).items() if k not in ("rx_us", "sent_us")}
    if not is_undo(inp):
        body["undos"] = undos
    return "auto:" + hashlib.sha256(bus.pack_input(body)).hexdigest()[:32]


def unforeseen(exc: Exception, source: str) -> FeedError:
    """A refusal for an input that raised what the feed's checks did not foresee (a bug):
    logged with its traceback, answered and kept like any refusal."""
    log.error("input from %s raised %r; refused", source, exc, exc_info=exc)
    return FeedError(f"ingest could not read this input ({type(exc).__name__}); "
                     "it is kept in the rejects stream for the desk")
