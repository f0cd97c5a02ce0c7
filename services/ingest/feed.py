"""The timing feed, sans-I/O: split bytes into lines, check each input, say what is wrong.

Both transports (TCP lines and HTTP POST) run every object through
:func:`validate`; docs/protocol.md is the contract it enforces. A rejected
input raises :class:`FeedError` with a message meant for the person at the
other end of the cable.
"""
from __future__ import annotations

import json
from typing import Any

from icetime.startlist import StartListError, validate_startlist

#: One line of the feed, at most; a start list for a whole competition fits easily.
MAX_LINE = 4 * 1024 * 1024
#: A passing time must be a plausible µs count on some clock (0 .. year 2200 in µs).
MAX_TIME_US = 7_258_118_400_000_000
DECISIONS = {
    "void": ("target",),
    "manual_time": ("bib", "time_us"),
    "dq": ("bib",),
    "dns": ("bib",),
    "dnf": ("bib",),
    "reinstate": ("bib",),
    "restart": (),  # a pair race names the pair; a pack race restarts as a whole
    "official": (),  # the race's results are official: World Cup points count
    # Short-track referee decisions (DOMAIN.md §4).
    "pen": ("bib",),
    "yc": ("bib",),
    "rc": ("bib",),
    "adv": ("bib",),
}
FINISH_ORIGINS = ("photo", "beam", "manual")


class FeedError(ValueError):
    pass


def _int(obj: dict[str, Any], name: str, lo: int = 0, hi: int = MAX_TIME_US) -> int:
    v = obj.get(name)
    if isinstance(v, bool) or not isinstance(v, int):
        raise FeedError(f"'{name}' must be an integer, got {json.dumps(v)}")
    if not lo <= v <= hi:
        raise FeedError(f"'{name}' out of range [{lo}, {hi}]: {v}")
    return v


def _str(obj: dict[str, Any], name: str, max_len: int = 64) -> str:
    v = obj.get(name)
    if isinstance(v, int) and not isinstance(v, bool):
        v = str(v)
    if not isinstance(v, str) or not v or len(v) > max_len:
        raise FeedError(f"'{name}' must be a non-empty string of at most {max_len} characters")
    return v


def parse_json(line: bytes | str) -> Any:
    try:
        return json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FeedError(f"not JSON: {exc}") from None


def validate(obj: Any, source: str) -> dict[str, Any]:
    """Check one input from ``source``; return the normalised input to store.

    The authenticated ``source`` is stamped on the input: a source may only
    speak for itself.
    """
    if not isinstance(obj, dict):
        raise FeedError("an input must be a JSON object")
    kind = obj.get("type")
    claimed = obj.get("source")
    if claimed is not None and claimed != source:
        raise FeedError(f"this connection is source '{source}', not '{claimed}'")
    out: dict[str, Any] = {"type": kind, "source": source}
    if "seq" in obj:
        out["seq"] = _int(obj, "seq", 0, 2**53)
    if "sent_us" in obj:
        out["sent_us"] = _int(obj, "sent_us")
    if kind == "passing":
        out["transponder"] = _str(obj, "transponder")
        out["t"] = _int(obj, "t")
        out["point"] = _str(obj, "point") if "point" in obj else "finish"
    elif kind == "gun":
        # A gun names its race (and pair, in a pair race), or nothing: then it starts
        # what was last called to the start (a beacon cannot know which pair it is).
        if "race" in obj or "pair" in obj:
            out["race"] = _str(obj, "race")
        if "pair" in obj:
            out["pair"] = _int(obj, "pair", 1, 1000)
        out["t"] = _int(obj, "t")
        if "rate" in obj:
            rate = obj["rate"]
            if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate <= 1000:
                raise FeedError("'rate' must be a number in (0, 1000]")
            out["rate"] = rate
    elif kind == "clock":
        # This source's clock as measured against the host clock: race times are
        # source time + offset_us from this input on (earlier results stay as they are).
        out["offset_us"] = _int(obj, "offset_us", -MAX_TIME_US, MAX_TIME_US)
        if "rtt_us" in obj:
            out["rtt_us"] = _int(obj, "rtt_us", 0, 60 * 10**6)
    elif kind == "call":
        out["race"] = _str(obj, "race")
        if "pair" in obj:
            out["pair"] = _int(obj, "pair", 1, 1000)
    elif kind == "finish_time":
        out["race"] = _str(obj, "race")
        out["bib"] = _str(obj, "bib")
        out["time_us"] = _int(obj, "time_us", 1, 24 * 3600 * 10**6)
        origin = obj.get("origin", "photo")
        if origin not in FINISH_ORIGINS:
            raise FeedError(f"'origin' must be one of {', '.join(FINISH_ORIGINS)}")
        out["origin"] = origin
    elif kind == "decision":
        out["race"] = _str(obj, "race")
        action = obj.get("action")
        if action not in DECISIONS:
            raise FeedError(f"'action' must be one of {', '.join(DECISIONS)}, got {action!r}")
        out["action"] = action
        for name in DECISIONS[action]:
            if name == "time_us":
                out[name] = _int(obj, name, 1, 24 * 3600 * 10**6)
            elif name == "pair":
                out[name] = _int(obj, name, 1, 1000)
            else:
                out[name] = _str(obj, name)
        if action == "restart" and "pair" in obj:
            out["pair"] = _int(obj, "pair", 1, 1000)
        if "m" in obj:
            out["m"] = _int(obj, "m", 1, 100_000)
        if "reason" in obj:
            out["reason"] = _str(obj, "reason", 200)
    elif kind == "startlist":
        try:
            validate_startlist(obj)
        except StartListError as exc:
            raise FeedError(f"start list: {exc}") from None
        for name in ("competition", "skaters", "races"):
            if name in obj:
                out[name] = obj[name]
    else:
        raise FeedError(
            f"unknown type {kind!r}: expected passing, gun, call, clock, finish_time, "
            "decision or startlist")
    return out


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
