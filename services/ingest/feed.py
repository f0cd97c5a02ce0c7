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

from icetime.bus import pack_input
from icetime.messages import FeedInput, StartList, convert_input, decode_input, explain, stored

#: One line of the feed, at most; a start list for a whole competition fits easily.
MAX_LINE = 4 * 1024 * 1024
#: A refusal's words, at most: they go back on the wire, into the rejects stream and the
#: log, and an input's own text quoted in them (a 3 MB field name) must not make them huge.
MAX_ERROR = 300
#: A ``seq`` sent back in a refusal: an integer in 64 bits or a string this long, at most
#: (anything else, a list or a 3 MB string, is not echoed).
MAX_ECHO = 64


def _echo(seq: Any) -> Any:
    if isinstance(seq, int) and not isinstance(seq, bool) and -2**63 <= seq < 2**64:
        return seq
    if isinstance(seq, str) and len(seq) <= MAX_ECHO:
        return seq
    return None


class FeedError(ValueError):
    """An input refused, in at most :data:`MAX_ERROR` characters. ``seq`` is the input's
    own ``seq`` when it could be read and is small enough to send back (the reply carries
    it), else None."""

    def __init__(self, message: str, seq: Any = None) -> None:
        if len(message) > MAX_ERROR:
            message = message[:MAX_ERROR - 3] + "..."
        super().__init__(message)
        self.seq = _echo(seq)


class NotJSON(FeedError):
    """The bytes are not one JSON document."""


def parse_json(line: bytes | str) -> Any:
    """One JSON document as Python objects; raises :class:`NotJSON`."""
    try:
        return msgspec.json.decode(line)
    except msgspec.DecodeError as exc:  # also a number out of range (1e400, 5,000 digits)
        raise NotJSON(f"not JSON: {exc}") from None
    except RecursionError:  # msgspec parses nested arrays by recursion
        raise NotJSON("not JSON that can be read: nested too deeply") from None


def _stamp(inp: FeedInput, source: str) -> FeedInput:
    # A source may only speak for itself.
    if inp.source is not None and inp.source != source:
        raise FeedError(f"this connection is source '{source}', not '{inp.source}'", inp.seq)
    inp.source = source
    if isinstance(inp, StartList):
        # The one input with free-form parts: a number beyond 64 bits or nesting beyond
        # msgpack's limit would pass the types and then fail to be stored.
        try:
            pack_input(stored(inp))
        except (OverflowError, ValueError, TypeError, RecursionError) as exc:
            raise FeedError(f"start list: cannot be stored ({exc}); numbers must fit in "
                            "64 bits", inp.seq) from None
    return inp


def _words(err: msgspec.ValidationError, obj: dict[str, Any]) -> str:
    try:
        return explain(err, obj)
    except RecursionError:  # a deeply nested value quoted in the message
        return str(err)


def validate(obj: Any, source: str) -> FeedInput:
    """Type one parsed input from ``source``, stamped with the source.

    Raises :class:`FeedError` if it is not a valid input or names another source.
    """
    if not isinstance(obj, dict):
        raise FeedError("an input must be a JSON object")
    try:
        inp = convert_input(obj)
    except msgspec.ValidationError as exc:
        raise FeedError(_words(exc, obj), obj.get("seq")) from None
    except RecursionError:
        raise FeedError("an input nested too deeply", obj.get("seq")) from None
    return _stamp(inp, source)


def decode_line(line: bytes | str, source: str) -> FeedInput:
    """Type one JSON line from ``source`` in one pass (the TCP hot path).

    Raises :class:`NotJSON`, or :class:`FeedError` with the same message
    :func:`validate` gives for the parsed object.
    """
    try:
        inp = decode_input(line)
    except (msgspec.DecodeError, RecursionError):
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
