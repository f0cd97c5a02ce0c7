"""The timing feed, sans-I/O: split bytes into lines, type each input, say what is wrong.

The inputs are the msgspec types of :mod:`icetime.messages` (the JSON Schema in
docs/schema/feed-input.json is generated from them). A TCP line is decoded straight into
them (:func:`decode_line`: parsing and validation in one pass); an object already parsed
(an HTTP body, a decoder link's input) goes through :func:`validate`. Both give the same
typed input, or raise :class:`FeedError` with a message for the person at the other end
of the cable, naming the field (``'t' out of range [0, 7258118400000000]: -5``).
:func:`icetime.messages.stored` is the form the raw stream keeps.
"""
from __future__ import annotations

from typing import Any

import msgspec

from icetime.messages import FeedInput, convert_input, decode_input, explain

#: One line of the feed, at most; a start list for a whole competition fits easily.
MAX_LINE = 4 * 1024 * 1024


class FeedError(ValueError):
    """An input refused. ``seq`` is the input's own ``seq`` when it could be read (the
    reply carries it back)."""

    def __init__(self, message: str, seq: Any = None) -> None:
        super().__init__(message)
        self.seq = seq


class NotJSON(FeedError):
    """The bytes are not one JSON document."""


def parse_json(line: bytes | str) -> Any:
    """One JSON document as Python objects; raises :class:`NotJSON`."""
    try:
        return msgspec.json.decode(line)
    except msgspec.DecodeError as exc:  # also a number out of range (1e400)
        raise NotJSON(f"not JSON: {exc}") from None


def _stamp(inp: FeedInput, source: str) -> FeedInput:
    # A source may only speak for itself.
    if inp.source is not None and inp.source != source:
        raise FeedError(f"this connection is source '{source}', not '{inp.source}'", inp.seq)
    inp.source = source
    return inp


def validate(obj: Any, source: str) -> FeedInput:
    """Type one parsed input from ``source``, stamped with the source.

    Raises :class:`FeedError` if it is not a valid input or names another source.
    """
    if not isinstance(obj, dict):
        raise FeedError("an input must be a JSON object")
    try:
        inp = convert_input(obj)
    except msgspec.ValidationError as exc:
        raise FeedError(explain(exc, obj), obj.get("seq")) from None
    return _stamp(inp, source)


def decode_line(line: bytes | str, source: str) -> FeedInput:
    """Type one JSON line from ``source`` in one pass (the TCP hot path).

    Raises :class:`NotJSON`, or :class:`FeedError` with the same message
    :func:`validate` gives for the parsed object.
    """
    try:
        inp = decode_input(line)
    except msgspec.DecodeError:
        # The slow path, only for refusals: parse, and let validate() find the words.
        return validate(parse_json(line), source)
    return _stamp(inp, source)


class LineSplitter:
    """Splits a byte stream into lines, refusing (not buffering) over-long ones."""

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.max_line = max_line
        self.buf = bytearray()
        self.discarding = False

    def feed(self, data: bytes) -> list[bytes | FeedError]:
        out: list[bytes | FeedError] = []
        self.buf += data
        while True:
            nl = self.buf.find(b"\n")
            if nl < 0:
                if len(self.buf) > self.max_line:
                    if not self.discarding:
                        out.append(FeedError(f"line longer than {self.max_line} bytes"))
                    self.discarding = True
                    self.buf.clear()
                return out
            line = bytes(self.buf[:nl]).rstrip(b"\r")
            del self.buf[: nl + 1]
            if self.discarding:
                self.discarding = False
                continue
            if len(line) > self.max_line:
                out.append(FeedError(f"line longer than {self.max_line} bytes"))
            elif line.strip():
                out.append(line)
