"""The provisional classification of a race on time, kept sorted as finishes arrive.

Pure numpy bookkeeping, no race rules: the long-track engine decides who counts.
"""
from __future__ import annotations

import bisect
from typing import Any

import numpy as np
import numpy.typing as npt


class TimeClassification:
    """Finish times ascending (µs, truncated to thousandths) with their rows, in arrays
    preallocated for every competitor; the first ``n`` entries count. Equal thousandths
    share a rank, and the ranks they take are skipped: 1, 2, 2, 4.
    """

    def __init__(self, size: int) -> None:
        self.t = np.empty(size, np.int64)
        self.rows = np.empty(size, np.int64)
        self.rank = np.empty(size, np.int64)
        self.n = 0

    def leader(self) -> int:
        """The leading row, or -1 while nobody is classified."""
        return self.rows.item(0) if self.n else -1

    def insert(self, row: int, t: int) -> tuple[int, int]:
        """Classify ``row`` with finish time ``t`` (µs); returns its place (index,
        after every equal time) and its rank. Every row behind it goes down one rank."""
        n = self.n
        ct, cr, rk = self.t, self.rows, self.rank
        # bisect reads log2(n) items: cheaper than searchsorted's call overhead at any n here.
        pos = bisect.bisect_right(ct, t, 0, n)
        # Insert after any equal time: shift the tail one place (numpy copes with
        # the overlap). Everything behind is strictly slower, so its rank moves down
        # by one; a tie takes the rank of the time it equals.
        ct[pos + 1:n + 1] = ct[pos:n]
        cr[pos + 1:n + 1] = cr[pos:n]
        rk[pos + 1:n + 1] = rk[pos:n] + 1
        rank: int = rk.item(pos - 1) if pos and ct.item(pos - 1) == t else pos + 1
        ct[pos] = t
        cr[pos] = row
        rk[pos] = rank
        self.n = n + 1
        return pos, rank

    def rebuild(self, rows: npt.NDArray[np.int64], finals: npt.NDArray[np.int64]) -> None:
        """Classify again from scratch: ``rows`` that count, with their finish times."""
        order = np.argsort(finals, kind="stable")
        self.n = n = len(rows)
        self.rows[:n] = rows[order]
        ct = self.t[:n]
        ct[:] = finals[order]
        # Equal thousandths share a rank: each time's rank is where its value starts.
        starts = np.empty(n, bool)
        starts[:1] = True
        np.not_equal(ct[1:], ct[:-1], out=starts[1:])
        self.rank[:n] = np.maximum.accumulate(np.where(starts, np.arange(1, n + 1), 0))

    def columns(self, bibs: npt.NDArray[Any]) -> dict[str, list[Any]]:
        """Columnar, as published: ``bib``, ``rank``, ``t`` and ``behind`` the leader (µs);
        ``bibs`` maps a row to its bib."""
        n = self.n
        ct = self.t[:n]
        lead = ct.item(0) if n else 0
        return {"bib": bibs[self.rows[:n]].tolist(),
                "rank": self.rank[:n].tolist(),
                "t": ct.tolist(), "behind": (ct - lead).tolist()}
