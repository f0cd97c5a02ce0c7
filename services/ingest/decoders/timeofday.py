"""Decoders that give the time of day (Protime; AMB ASCII set to the time of day), sans-I/O.

Such a clock runs from 00:00 to 24:00 and starts again: a race that runs over midnight
would see its later passings 24 hours before its gun. :func:`on_day` puts a time of day
on the day it belongs to, by the host's clock at receipt: the day that brings
``time of day + the decoder's offset`` nearest to now. That needs no state, so a
RESEND or a late telegram from before midnight that arrives after it lands on the day
before, and a restarted ingest carries on as before; it is right while the host's clock
and the offset put the decoder within 12 hours of the truth.

With ``offset_us`` set as docs/decoders.md says (the host-clock µs of the decoder's
midnight on the day it was set), the first day's times are the time of day itself; each
later day adds 24 hours. With no offset, times are put on the days of the Unix epoch.
"""
from __future__ import annotations

DAY_US = 86_400_000_000


def on_day(tod_us: int, offset_us: int, host_us: int) -> tuple[int, int]:
    """(``tod_us`` plus whole days, the number of days added): the time whose mapping
    onto the host clock (``+ offset_us``) is nearest to ``host_us``, never before day 0.

    ``tod_us`` is µs since the decoder's midnight (0 to 24 h)."""
    days = max(0, round((host_us - offset_us - tod_us) / DAY_US))
    return tod_us + days * DAY_US, days
