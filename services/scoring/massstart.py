"""What a pack race reads off the front of the field: the mass start's intermediate
sprints and their sprint points (DOMAIN.md §2), and breakaways with their gap.

``packorder.PackOrder`` builds on :class:`SprintsAndBreakaways`, and
``pack.PackRace`` on that; the points tables come from
the rules (per season). Breakaways are told in every pack race, the mass start above
all.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from icetime.rules import Rules

from . import stories
from .model import NOT_PASSED
from .race import RaceBase

#: A gap wider than this between consecutive skaters at a line splits the field.
GROUP_GAP_US = 1_000_000
#: A breakaway is at most this many skaters ahead of a gap.
BREAKAWAY_MAX = 3


class SprintsAndBreakaways(RaceBase):
    """Sprint points and breakaways of a pack race; the pack race keeps the crossings.

    State: ``sprint_k`` (crossing index -> sprint number, 1-based), the points tables
    (``table_intermediate``, ``table_final``: sprint points by place), ``sprint_points``
    per row, ``sprints`` as published, and the current ``breakaway``.
    """

    rules: Rules
    season: str | None
    n_cross: int
    lap_m: float
    crossings: npt.NDArray[np.int64]
    lead: int
    sprint_points: list[int]
    #: The rows holding the final sprint points, in finish order (at most the table's
    #: length): the first across the line by the finish times that count.
    scored: list[int]
    final_t: npt.NDArray[np.int64]
    excluded: npt.NDArray[np.bool_]
    sprints: list[dict[str, Any]]
    breakaway: dict[str, Any] | None

    def _times_at(self, k: int) -> list[int]:
        """The race times (µs) of crossing ``k`` made so far, ascending."""
        raise NotImplementedError

    def _configure_sprints(self, spec: dict[str, Any]) -> None:
        """Read the mass start's sprint laps and the season's points tables."""
        self.sprint_k: dict[int, int] = {}
        self.table_final: tuple[int, ...] = ()
        self.table_intermediate: tuple[int, ...] = ()
        if self.kind == "mass_start":
            table = self.rules.mass_start_points(self.season)
            self.table_intermediate, self.table_final = table.intermediate, table.final
            laps_at = [lap for lap in spec.get("sprint_laps", self.rules.sprint_laps)
                       if lap < self.n_cross]
            self.sprint_k = {lap - 1: i + 1 for i, lap in enumerate(laps_at)}

    def _sprint(self, row: int, k: int, position: int) -> list[str]:
        """``row`` crossed the line of an intermediate sprint (crossing ``k``) in
        ``position``: score its sprint points; the story line once the sprint is complete."""
        number = self.sprint_k[k]
        while len(self.sprints) < number:
            self.sprints.append({"sprint": len(self.sprints) + 1,
                                 "lap_number": sorted(self.sprint_k)[len(self.sprints)] + 1,
                                 "bibs": [], "sprint_points": []})
        sprint = self.sprints[number - 1]
        if position > len(self.table_intermediate):
            return []
        pts = self.table_intermediate[position - 1]
        self.sprint_points[row] += pts
        sprint["bibs"].append(self.bibs[row])
        sprint["sprint_points"].append(pts)
        if len(sprint["bibs"]) == len(self.table_intermediate):
            names = [self.skaters[self.row[b]].short for b in sprint["bibs"]]
            return [stories.pack_sprint(number, sprint["lap_number"], names,
                                       sprint["sprint_points"])]
        return []

    def _finish_key(self, i: int) -> tuple[int, int, int, int]:
        """Row ``i``'s place across the finish line: her finish time that counts
        (photo, beam, manual, else the transponder's; µs), then at equal thousandths the
        precedence of its origin (the photo finish is the official decision: a photo time
        places her ahead of a transponder time equal to it, never level), then her
        transponder's time, then the row."""
        official = self.official.get(i)
        prec = official[0] if official is not None else 0
        return (self.final_t.item(i), -prec, self.t.item(i, self.n_cross - 1), i)

    def _score_finish(self, row: int | None) -> list[int]:
        """Give the final sprint points by the finish order that counts (DOMAIN.md §2:
        the photo finish decides the order, as it does the ranking), not by the
        transponders' order: ``row`` has just finished (None: every finisher's place
        may have changed, by an official's time). Returns the rows whose sprint points
        changed. Only the scoring places are kept: a finish costs the table's length."""
        if not self.table_final:
            return []
        if row is None:
            rows = np.flatnonzero((self.final_t != NOT_PASSED) & ~self.excluded).tolist()
        else:
            rows = [*self.scored, row]
        top = sorted(rows, key=self._finish_key)[:len(self.table_final)]
        before = dict(zip(self.scored, self.table_final, strict=False))
        after = dict(zip(top, self.table_final, strict=False))
        changed = []
        for i in sorted(before.keys() | after.keys()):
            diff = after.get(i, 0) - before.get(i, 0)
            if diff:
                self.sprint_points[i] += diff
                changed.append(i)
        self.scored = top
        return changed

    def _update_breakaway(self, k: int, row: int, position: int, lines: list[str],
                          laps_to_go: int) -> None:
        """At the front's line: a few skaters more than GROUP_GAP_US clear of the rest."""
        if self.lead != k + 1 or position == 1:
            return
        col = self.t[:, k]
        # The front of the line only, from the times kept sorted: no sort per passing.
        times = self._times_at(k)
        crossed = np.array(times[:BREAKAWAY_MAX + 1], np.int64)
        gaps = np.diff(crossed)
        wide = np.nonzero(gaps > GROUP_GAP_US)[0]
        before = self.breakaway
        if wide.size == 0:
            if len(times) > BREAKAWAY_MAX:
                self.breakaway = None  # the front is together again
            return
        size = int(wide[0]) + 1
        if position != size + 1:
            return  # measured when the chase's first skater crosses
        gap = int(crossed[size] - crossed[0])
        leaders = [self.bibs[int(i)] for i in np.argsort(col, kind="stable")[:size]]
        entry = self.rows[row][k]
        chase_lap = int(entry["lap_time"]) if entry else 0
        # Metres: how far the chase's head is behind, at its own lap speed.
        metres = round(gap / chase_lap * self.lap_m) if chase_lap else None
        self.breakaway = {"bibs": leaders, "gap_us": gap, "gap_m": metres,
                          "lap_number": k + 1}
        if before is None or before["bibs"] != leaders or k % 2 == 0:
            names = [self.skaters[self.row[b]].short for b in leaders]
            lines.append(stories.pack_breakaway(names, gap, metres, laps_to_go))
