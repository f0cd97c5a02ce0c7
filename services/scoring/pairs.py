"""The draw of a pair race: who skates in which pair and lane, and against whom.

Pure: the long-track engine reads its start list through these and keeps the tables.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: One pair of the draw: (pair number, inner lane's bib, outer lane's bib); a pair may
#: have one skater (the other lane is None).
Pair = tuple[int, str | None, str | None]


def read_pairs(specs: list[dict[str, Any]]) -> tuple[list[Pair], list[str]]:
    """The start list's ``pairs`` entries as :data:`Pair` tuples, and every bib in draw
    order (inner before outer). Raises KeyError or ValueError on a malformed entry."""
    pairs: list[Pair] = []
    bibs: list[str] = []
    for p in specs:
        inner = str(p["inner"]) if p.get("inner") is not None else None
        outer = str(p["outer"]) if p.get("outer") is not None else None
        pairs.append((int(p["pair"]), inner, outer))
        bibs += [b for b in (inner, outer) if b is not None]
    return pairs, bibs


@dataclass(frozen=True)
class Draw:
    """Per row (plain lists: read one at a time on the hot path): its pair number, its
    lane (``"I"`` or ``"O"``) and its partner's row (-1 skating alone); and each pair's
    rows."""

    pair_no: list[int]
    lane_of: list[str]
    partner_of: list[int]
    pair_rows: dict[int, list[int]]

    @classmethod
    def of(cls, pairs: list[Pair], row: dict[str, int]) -> Draw:
        """The tables for ``pairs``, with ``row`` mapping each bib to its row."""
        n = len(row)
        draw = cls([0] * n, [""] * n, [-1] * n, {})
        for pair, inner, outer in pairs:
            rows = [row[b] for b in (inner, outer) if b is not None]
            draw.pair_rows[pair] = rows
            for r in rows:
                draw.pair_no[r] = pair
            if inner is not None:
                draw.lane_of[row[inner]] = "I"
            if outer is not None:
                draw.lane_of[row[outer]] = "O"
            if len(rows) == 2:
                draw.partner_of[rows[0]], draw.partner_of[rows[1]] = rows[1], rows[0]
        return draw
