"""The order of a pack race and its classification (DOMAIN.md §2, §4): the race order
(crossings made, then who made the last one first), each line's crossing times, the
finishers ranked (short track by finish time, equal thousandths sharing a place; the
mass start's podium, then sprint points), and the live ``pack`` state.

The order, each line's crossing times and the classification are kept sorted from
crossing to crossing (bisection and one list shift), and rebuilt from the arrays after
a reset, a checkpoint load, a status or an official's time: no sort per passing.
:class:`PackOrder` builds on ``massstart.SprintsAndBreakaways``;
``packcrossings.PackCrossings`` builds on it.
"""
from __future__ import annotations

import bisect
from typing import Any

import numpy as np
import numpy.typing as npt

from .massstart import SprintsAndBreakaways
from .model import NOT_PASSED, Run

#: Mass start: the first this many across the finish line are 1-2-3, whatever their points.
PODIUM = 3


class PackOrder(SprintsAndBreakaways):
    """The kept order and classification of a pack race; ``pack.PackRace`` fills the
    state (``configure``, ``_reset``), ``packcrossings.PackCrossings`` moves it."""

    run: Run | None
    #: Per row: race time (µs) of the last crossing; out of the ranking (a sanction);
    #: stopped; finish time (µs, NOT_PASSED before the finish).
    last: npt.NDArray[np.int64]
    excluded: npt.NDArray[np.bool_]
    stopped: npt.NDArray[np.bool_]
    final_t: npt.NDArray[np.int64]
    cross_m: list[float]
    attempt: int
    bell: bool
    warning: bool
    #: Relays, per row: the skater on the track, exchanges made; teams that exchanged
    #: in the last two laps.
    active: list[str | None]
    exchanges: list[int]
    late_exchange: list[str]
    #: Who stopped at the latest crossing.
    now_stopped: list[str]

    def _forget_order(self) -> None:
        """Drop the kept order and classification: rebuilt from the arrays when next
        needed (after a reset, a checkpoint load, a status or an official's time)."""
        self.okeys: list[tuple[int, int, int, int]] | None = None
        self.okey: list[tuple[int, int, int, int]] = []
        self.by_time: list[tuple[int, ...]] | None = None
        self.by_points: list[tuple[int, ...]] = []
        self.times: list[list[int]] | None = None

    def _done(self, racing: int | None = None) -> bool:
        """Whether the race is over: everyone finished, stopped or sanctioned, or the
        race is official (its clock stops then, whoever has no time). ``racing``: a row
        known to have just crossed; while she races on, the race is not over, and the
        whole field need not be looked at (on every passage of 10,000 skaters)."""
        if self.run is None:
            return False
        if self.is_official:
            return True
        if racing is not None and self.final_t.item(racing) == NOT_PASSED \
                and not self.stopped.item(racing) and not self.excluded.item(racing):
            return False
        return bool(np.all((self.final_t != NOT_PASSED) | self.stopped | self.excluded))

    def _order(self) -> list[str]:
        """The race order now: crossings made, then who made the last one first; the
        finished by their (official) finish time; sanctioned skaters last."""
        bibs = self.bibs
        return [bibs[key[3]] for key in self._order_keys()]

    def _order_key(self, i: int) -> tuple[int, int, int, int]:
        """Row ``i``'s sort key in the race order (:meth:`_order`)."""
        final = self.final_t.item(i)
        when = final if final != NOT_PASSED else self.last.item(i)
        return (int(self.excluded.item(i)), -self.crossings.item(i), when, i)

    def _order_keys(self) -> list[tuple[int, int, int, int]]:
        """The race order as sorted keys, kept from crossing to crossing (a crossing
        moves one key: :meth:`_move`); built from the arrays when it was dropped."""
        if self.okeys is None:
            self.okey = [self._order_key(i) for i in range(len(self.bibs))]
            self.okeys = sorted(self.okey)
        return self.okeys

    def _move(self, row: int) -> dict[str, int]:
        """Take ``row``, whose crossings, last crossing or finish changed, to her new
        place in the kept order: where she was (``from``) and where she goes (``to``,
        counted after taking her out). Two bisections and a list shift: no sort."""
        keys = self._order_keys()
        at = bisect.bisect_left(keys, self.okey[row])
        del keys[at]
        new = self.okey[row] = self._order_key(row)
        to = bisect.bisect_left(keys, new)
        keys.insert(to, new)
        return {"from": at, "to": to}

    def _times_at(self, k: int) -> list[int]:
        """The race times (µs) of crossing ``k`` made so far, ascending: kept from
        crossing to crossing (a crossing adds one by bisection); built from the
        crossings table when dropped."""
        if self.times is None:
            self.times = [sorted(col[col != NOT_PASSED].tolist()) for col in self.t.T]
        return self.times[k]

    def _points_key(self, i: int) -> tuple[int, ...]:
        """Finisher ``i``'s sort key behind a mass start's podium (:meth:`classification`)."""
        pts = self.sprint_points[i]
        return (0 if pts else 1, -pts, *self._finish_key(i))

    def _time_key(self, i: int) -> tuple[int, ...]:
        """Finisher ``i``'s place by finish time: (finish time µs, row); a mass start's
        place across the line (:meth:`_finish_key`: at equal thousandths, the photo
        finish's time ahead of a transponder's)."""
        if self.kind == "mass_start":
            return self._finish_key(i)
        return (self.final_t.item(i), i)

    def _ranked_keys(self) -> list[tuple[int, ...]]:
        """The classified finishers as sorted :meth:`_time_key`, kept from finish to
        finish (and, for a mass start, ``by_points``: :meth:`_points_key` sorted);
        built from the arrays when they were dropped."""
        if self.by_time is None:
            rows = np.flatnonzero((self.final_t != NOT_PASSED) & ~self.excluded).tolist()
            self.by_time = sorted(self._time_key(i) for i in rows)
            self.by_points = sorted(self._points_key(i) for i in rows)
        return self.by_time

    def _classify(self, row: int) -> dict[str, Any] | None:
        """Classify ``row``, who has just finished, in the kept classification: her
        place ``at`` (index), ``rank``, finish time ``t`` and ``behind`` the leader (µs),
        her ``sprint_points`` (mass start), and ``tied``: how many rows right behind her
        share her time, and so her rank. Every other row behind her goes down one rank;
        at ``at`` 0, everyone's ``behind`` is measured from her. None when her finish
        moves another row too (a mass start's podium taken from one who finished
        earlier, by an official time): the event then carries the whole classification."""
        by_time = self._ranked_keys()
        t = self.final_t.item(row)
        mine = self._time_key(row)
        pos = bisect.bisect_left(by_time, mine)
        by_time.insert(pos, mine)
        change: dict[str, Any] = {"at": pos, "rank": pos + 1, "t": t,
                                  "behind": t - by_time[0][0], "tied": 0}
        if self.kind != "mass_start":
            # Equal times share the rank where that time starts.
            change["rank"] = bisect.bisect_left(by_time, (t, -1)) + 1
            change["tied"] = bisect.bisect_left(by_time, (t + 1, -1)) - pos - 1
            return change
        key = self._points_key(row)
        bisect.insort(self.by_points, key)
        change["sprint_points"] = self.sprint_points[row]
        if pos < PODIUM:
            # On the podium, whatever her points: another row leaves it, unless the
            # podium was not full.
            return change if len(by_time) <= PODIUM else None
        # Behind the podium by points: her place among the finishers by points, less
        # the podium's skaters ahead of her there.
        ahead = sum(1 for k in by_time[:PODIUM] if self._points_key(k[-1]) < key)
        at = PODIUM + bisect.bisect_left(self.by_points, key) - ahead
        change.update(at=at, rank=at + 1)
        return change

    def _pack_change(self, row: int, move: dict[str, int]) -> dict[str, Any]:
        """What a crossing by ``row`` changed in :meth:`pack_state`: her ``move`` in the
        order (``from``, ``to``: indices, ``to`` counted after taking her out), her
        crossings made and sprint points, who stopped at it (``now_stopped``; she herself
        is no longer stopped), her relay's active skater and exchanges; the fields that
        do not grow with the field (laps to go, bell, sprints, breakaway...) whole."""
        run = self.run
        return {
            "run": None if run is None or self._done(row) else run.public(),
            "move": move,
            "laps_to_go": self.n_cross - self.lead,
            "bell": self.bell,
            "crossings": int(self.crossings[row]),
            "now_stopped": self.now_stopped,
            "sprint_points": self.sprint_points[row] if self.kind == "mass_start" else None,
            "sprints": self.sprints,
            "breakaway": self.breakaway,
            "attempt": self.attempt,
            "in_field": self.lying(),
            **({"warning": self.warning, "active": self.active[row],
                "exchanges": self.exchanges[row], "late_exchange": list(self.late_exchange)}
               if self.teams else {}),
        }

    def pack_state(self) -> dict[str, Any]:
        """The live state of the race as a whole: the view's ``pack``, and a ``start``
        event's. A crossing's event carries what it changed (:meth:`_pack_change`)."""
        lead = int(self.crossings.max(initial=0))
        run = self.run
        return {
            "run": None if run is None or self._done() else run.public(),
            "order": self._order(),
            "laps_to_go": self.n_cross - lead,
            "bell": self.bell,
            "crossings": dict(zip(self.bibs, self.crossings.tolist(), strict=True)),
            "stopped": self.bib_arr[self.stopped].tolist(),
            "sprint_points": (dict(zip(self.bibs, self.sprint_points, strict=True))
                       if self.kind == "mass_start" else None),
            "sprints": self.sprints,
            "breakaway": self.breakaway,
            "attempt": self.attempt,
            "in_field": self.lying(),
            **({"warning": self.warning,
                "active": dict(zip(self.bibs, self.active, strict=True)),
                "exchanges": dict(zip(self.bibs, self.exchanges, strict=True)),
                "late_exchange": list(self.late_exchange)}
               if self.teams else {}),
        }

    def classification(self) -> dict[str, list[Any]]:
        """Finishers only, columnar like the long-track one (plus ``sprint_points`` for a
        mass start).

        Short track: by finish time (official first); equal thousandths share a place.
        Mass start (DOMAIN.md §2): the first three across the line are 1-2-3; then by
        sprint points; those without sprint points behind, in finishing order.
        """
        rows = np.flatnonzero((self.final_t != NOT_PASSED) & ~self.excluded).tolist()
        final_t = self.final_t.tolist()

        def t_of(i: int) -> int:
            return int(final_t[i])
        rows.sort(key=self._time_key)
        if self.kind == "mass_start":
            podium, rest = rows[:PODIUM], rows[PODIUM:]
            rest.sort(key=self._points_key)
            rows = podium + rest
        ranks: list[int] = []
        for n, i in enumerate(rows):
            tie = (n and self.kind != "mass_start" and t_of(i) == t_of(rows[n - 1]))
            ranks.append(ranks[-1] if tie else n + 1)
        lead = t_of(rows[0]) if rows else 0
        out: dict[str, list[Any]] = {"bib": [self.bibs[i] for i in rows], "rank": ranks,
                                     "t": [t_of(i) for i in rows],
                                     "behind": [t_of(i) - lead for i in rows]}
        if self.kind == "mass_start":
            out["sprint_points"] = [self.sprint_points[i] for i in rows]
        return out
