"""Times are integer microseconds everywhere; this module turns them into text.

Results are measured in thousandths and shown truncated to hundredths
(DOMAIN.md §1.4): 74.449 s is shown "1:14.44", never rounded up.
"""
from __future__ import annotations

import time

US_PER_S = 1_000_000
US_PER_MS = 1_000


def now_us() -> int:
    """Wall-clock time in integer microseconds (for hop stamps, never for results)."""
    return time.time_ns() // 1_000


def to_thousandths(t_us: int) -> int:
    """Truncate a µs time to whole thousandths, still in µs: ``74_449_999 -> 74_449_000``.

    Thousandths are the resolution that decides ranks (DOMAIN.md §1.4), so every race
    time is recorded through this one operation. It floors, like ``//``: a negative
    time moves away from zero.
    """
    return t_us // US_PER_MS * US_PER_MS


def format_time(t_us: int | None, digits: int = 2) -> str:
    """Format a race time as ``SS.hh`` or ``M:SS.hh``, truncated (not rounded).

    ``digits`` is the number of decimals shown (2 for display, 3 for official lists).
    """
    if t_us is None:
        return ""
    if t_us < 0:
        return "-" + format_time(-t_us, digits)
    unit = 10 ** (6 - digits)
    ticks = t_us // unit
    frac = ticks % (10**digits)
    whole = ticks // (10**digits)
    minutes, seconds = divmod(whole, 60)
    if minutes:
        return f"{minutes}:{seconds:02d}.{frac:0{digits}d}"
    return f"{seconds}.{frac:0{digits}d}"


def format_diff(diff_us: int) -> str:
    """An unsigned difference, truncated to hundredths, but in thousandths when it is
    under one hundredth and not zero: "0.006", since thousandths decided it."""
    diff_us = abs(diff_us)
    return format_time(diff_us, 3 if 0 < diff_us < 10 * US_PER_MS else 2)


def format_gap(gap_us: int | None) -> str:
    """A signed gap, e.g. ``+0.14``, ``-0.01`` or ``+0.006`` (see :func:`format_diff`)."""
    if gap_us is None:
        return ""
    return ("+" if gap_us >= 0 else "-") + format_diff(gap_us)


def parse_time(value: int | str | None) -> int | None:
    """Read a time from a start-list file: an int is µs, a string is ``[M:]SS.fff``.

    >>> parse_time("1:14.45")
    74450000
    """
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ValueError(f"not a time: {value!r}")
    if isinstance(value, int):
        return value
    text = str(value).strip()
    minutes = 0
    if ":" in text:
        m, text = text.split(":", 1)
        minutes = int(m)
    if "." in text:
        s, frac = text.split(".", 1)
    else:
        s, frac = text, ""
    if not s.isdigit() or (frac and not frac.isdigit()) or len(frac) > 6:
        raise ValueError(f"not a time: {value!r}")
    return (minutes * 60 + int(s)) * US_PER_S + int((frac + "000000")[:6])
