"""Long-track geometry: where the timed passages of each distance fall (DOMAIN.md §1.2).

Every official intermediate is a passage of the finish line, so the start sits
``distance mod 400`` metres before it and the passages follow every 400 m.
"""
from __future__ import annotations

LAP_M = 400


def passages(distance_m: int, lap_m: int = LAP_M) -> list[int]:
    """Cumulative metres of every finish-line passage, e.g. 1000 -> [200, 600, 1000]."""
    if distance_m <= 0:
        raise ValueError(f"distance must be positive, got {distance_m}")
    first = distance_m % lap_m or lap_m
    return list(range(first, distance_m + 1, lap_m))


def min_segment_us(passage_m: list[int], max_speed_mps: float) -> list[int]:
    """The least plausible time to cover each segment: the minimum-lap debounce.

    A read sooner than this after the previous accepted passage (or the gun) is
    the same skater seen again (second ankle, re-detection), not a new passage.
    """
    out = []
    prev = 0
    for m in passage_m:
        out.append(int((m - prev) / max_speed_mps * 1_000_000))
        prev = m
    return out
