"""Timing-decoder protocols, each a sans-I/O codec with the same shape.

A codec's decoder has ``feed(bytes)`` and returns, in order, a record for each
valid message and a :class:`Damaged` (with why) for each one it could not use;
it carries on at the next message. ``passing_input()`` turns a passing record
into a feed input (docs/protocol.md).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Damaged:
    """A message that could not be used: the reason, and its bytes as received."""

    reason: str
    raw: bytes
