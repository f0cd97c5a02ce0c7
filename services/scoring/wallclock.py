"""Where a gun stands on the wall clock: the origin of the screens' running clock.

A page's running clock is the server's wall clock minus the run's ``clock_origin_us``.
For it to show the race time of the passages (``passing.t - gun.t``), the origin must
be the wall-clock instant of the gun's own ``t``, not of its arrival: a gun that arrives
30 s late (a network hold-up, a gun beacon behind a decoder link outage) would otherwise
put every screen's clock 30 s behind for the whole pair.

The relation between a source's times and ingest's wall clock is learnt from its inputs:
each timed input (a passing, a gun) with its ingest stamp ``rx_us`` says that the wall
clock read ``rx_us`` when the common clock read ``t`` or later. A network only delays, so
the smallest ``rx_us - t`` a source has shown (its *lag*) is the best estimate of the
offset between the two clocks. A gun's origin is then ``t + lag``, never later than its
arrival.

Pure: it is fed what ingest stamped and reads no clock (docs/time.md).
"""
from __future__ import annotations

#: A source's numbering (``source``, ``session``): a decoder's boot or a replay run may
#: have another clock relation than the last one, so each is learnt on its own.
Key = tuple[str, str | int | None]

#: A lag below this (the source's clock ahead of the wall clock by more than network
#: jitter and NTP can explain: a fast replay, a clock set wrong) does not speak for the
#: common clock, so it is not used for another source's gun.
AHEAD_US = -250_000
#: A gun later than this by the estimate is not believed (a clock that stepped, two
#: sources on different clocks): the arrival is the origin, as with no estimate.
LATE_MAX_US = 30 * 60 * 1_000_000


class WallClock:
    """The smallest ``rx_us - t`` (µs; ``t`` on the common clock) seen per source key."""

    def __init__(self) -> None:
        self.lags: dict[Key, int] = {}

    def seen(self, key: Key, rx_us: int | None, t: int) -> None:
        """Learn from one timed input: ingest stamped ``rx_us`` (wall clock, µs; None
        when fed without ingest) for common-clock time ``t`` (µs)."""
        if rx_us is None:
            return
        lag = rx_us - t
        if lag < self.lags.get(key, lag + 1):
            self.lags[key] = lag

    def forget(self, source: str) -> None:
        """A source's clock was set anew (a measured ``clock`` offset): what its earlier
        times said of the wall clock no longer holds."""
        for key in [k for k in self.lags if k[0] == source]:
            del self.lags[key]

    def origin(self, key: Key, rx_us: int | None, t: int, rate: float) -> int:
        """The wall-clock µs of a gun at common-clock ``t`` that ingest stamped
        ``rx_us``; learns from it as :meth:`seen`.

        The gun's own source's lag maps it when that source has sent before. A source
        heard from first (a starter's gun, late) maps by the common clock the other
        sources show: the smallest lag of those not ahead of the wall clock, which then
        stands as its own (its next gun, late too, is mapped the same way). With no
        estimate, a believed lateness above :data:`LATE_MAX_US`, or a replay's ``rate``
        other than 1 (its times run faster than the wall clock; it sends them on time),
        the arrival is the origin. 0 without ``rx_us`` (an engine fed directly)."""
        if rx_us is None:
            return 0
        lag = self.lags.get(key)
        if lag is None:
            lag = min((v for v in self.lags.values() if v >= AHEAD_US), default=None)
            if lag is not None:
                self.lags[key] = lag
        self.seen(key, rx_us, t)
        if lag is None or rate != 1.0:
            return rx_us
        late = rx_us - t - lag
        return rx_us if late <= 0 or late > LATE_MAX_US else t + lag
