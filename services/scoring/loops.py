"""Extra loops in the ice (Thialf-style): unofficial splits and speeds between the
official passages of a long-track race.

A loop lies a fixed distance past the finish line along the lap; a skater crosses it
once a lap, so which race metre a crossing is depends on where she is in the race.
Pure: the long-track engine keeps one :class:`LoopSplits` per race.
"""
from __future__ import annotations

from typing import Any

from .distances import LAP_M


def loop_metre(loop_m: int, distance_m: int, after_m: int, lap_m: int = LAP_M) -> int:
    """The race metre at which a skater crosses a loop lying ``loop_m`` metres past the
    finish line: its first crossing after race metre ``after_m``."""
    start = (lap_m - distance_m % lap_m) % lap_m  # the start, on the lap
    m = (loop_m - start) % lap_m or lap_m
    while m <= after_m:
        m += lap_m
    return m


def speed_kmh(metres: int, us: int) -> float:
    """The mean speed over ``metres`` covered in ``us`` µs, in km/h to two decimals."""
    return round(metres / (us / 1e6) * 3.6, 2)


class LoopSplits:
    """Each row's splits at the loops, by race metre.

    ``loops`` maps a timing point id to its metres past the finish line; ``passage_m``
    are the metres of the race's official passages over ``distance_m``.
    """

    def __init__(self, loops: dict[str, int], distance_m: int, passage_m: list[int],
                 n_rows: int) -> None:
        self.loops = loops
        self.distance = distance_m
        self.passage_m = passage_m
        self.by_row: list[dict[int, dict[str, Any]]] = [{} for _ in range(n_rows)]

    def cross(self, row: int, point: str, t: int, passed: list[tuple[int, int]]
              ) -> dict[str, Any] | None:
        """Record ``row`` crossing loop ``point`` at race time ``t`` (µs), given its official
        passages so far as (metre, race time); returns the split entry, or None when
        the crossing is past the finish or a re-read of a split already recorded.

        The crossing's race metre is the loop's first crossing after the skater's last
        official passage *before this time*, so a split that arrives after a later
        finish-line passage (another decoder, another path) still lands in its place.
        """
        splits = self.by_row[row]
        known = passed + [(e["m"], e["t"]) for e in splits.values()]
        before = [(km, kt) for km, kt in known if kt < t]
        last_official = max((km for km, kt in before if km in self.passage_m), default=0)
        m = loop_metre(self.loops[point], self.distance, last_official)
        if m >= self.distance or m in splits:
            return None
        prev_m, prev_t = max(before, key=lambda x: x[1], default=(0, 0))
        speed = speed_kmh(m - prev_m, t - prev_t) if m > prev_m else None
        entry = {"point": point, "m": m, "t": t, "speed_kmh": speed}
        splits[m] = entry
        return entry

    def clear(self, row: int) -> None:
        self.by_row[row] = {}

    def listed(self, row: int) -> list[dict[str, Any]]:
        """The row's splits in race order."""
        splits = self.by_row[row]
        return [splits[m] for m in sorted(splits)]
