"""How reads become crossings in a pack race (DOMAIN.md §2, §4): every finish-line
crossing is a passage, placed by the lap it is expected after (a missed read skips a
crossing); the leader's laps to go, the relay's warning shot and the bell; relay
exchanges; a skater who has stopped (a fall); the finish and its final.

:class:`PackCrossings` builds on ``packorder.PackOrder``; ``pack.PackRace`` builds on
it.
"""
from __future__ import annotations

import bisect
from typing import Any

import numpy as np

from . import stories
from .model import NOT_PASSED, RaceEvent
from .packorder import PackOrder

#: Relays: the warning shot with this many laps to go (DOMAIN.md §4).
WARNING_LAPS = 3
#: No crossing for this many laps (of the lap just skated by someone else): stopped.
STOPPED_AFTER_LAPS = 2.0
#: The same, judged at a finish: the race has to end.
STOPPED_AT_FINISH_LAPS = 1.5
#: A skater's first read this much of a lap after the race's first crossing, before
#: anyone made a second, heads the field with her first crossing missed; sooner, it is
#: her first crossing (the back of a mass start crosses up to this far behind its head).
HEAD_GAP_LAPS = 0.7


class PackCrossings(PackOrder):
    """A pack race's crossings: ``_on_crossing`` takes a read that may be one."""

    #: Per crossing: the shortest time (µs) since the previous crossing (debounce).
    min_seg: list[int]
    #: The latest finisher's place in the classification, for its event.
    ranked: dict[str, Any] | None
    #: The rows whose finish crossing the latest finish changed (:meth:`_finish_rows`).
    refinished: list[int]
    #: Mass start: the rows, other than the latest finisher, whose final sprint points
    #: her finish changed (:meth:`_score_finish`).
    moved_points: list[int]

    def _on_crossing(self, input_id: str, row: int, t_common: int, emit: bool,
                     skater: str, left: int = 0) -> list[RaceEvent]:
        """A read of ``skater`` (for ``row``) at common-clock ``t_common`` (µs) that may be a
        crossing; ``left``: race time (µs) her chip left the loop field after lying in
        it (0: it did not)."""
        run = self.run
        if run is None or self.excluded[row]:
            return []
        prev_k, prev = int(self.crossings[row]), int(self.last[row])
        t = run.race_time(t_common)
        k = self._crossing_of(row, t, left)
        if k is None:
            return []
        # The kept order and classification are rebuilt, if they have to be, from the
        # state before this crossing: the move it makes is measured from there.
        self._order_keys()
        self._ranked_keys()
        times = self._times_at(k)
        self.now_stopped = []
        position = 1 + bisect.bisect_left(times, t)
        first_t = times[0] if times else t
        gap_leader = t - first_t if first_t < t else 0
        self.t[row, k] = t
        bisect.insort(times, t)
        self.crossings[row] = k + 1
        self.lead = max(self.lead, k + 1)
        self.last[row] = t
        self._made_passage(skater, t_common)
        # Since her previous recorded crossing (over any missed ones).
        lap_time = t - prev
        lines: list[str] = []
        self.stopped[row] = False
        entry: dict[str, Any] = {"k": k, "lap_number": k + 1, "m": self.cross_m[k], "t": t,
                                 "input": input_id, "lap_time": lap_time, "position": position,
                                 "gap_leader": gap_leader}
        if k > prev_k:
            # The crossings between were missed: empty, and named here (metres).
            entry["missing"] = self.cross_m[prev_k:k]
        if self.teams:
            entry["skater"] = skater
            lines += self._exchange(row, k, skater)
        self.rows[row][k] = entry
        laps_to_go = self.n_cross - self.lead
        if position == 1:
            lines += self._leader_lines(row, k, laps_to_go, emit)
        if k in self.sprint_k:
            lines += self._sprint(row, k, position)
        if k and lap_time:
            # At a finish, the race is ending: a skater a lap and a half adrift by then is
            # not coming (the race must be able to end without her).
            factor = STOPPED_AT_FINISH_LAPS if k == self.n_cross - 1 else STOPPED_AFTER_LAPS
            lines += self._check_stopped(row, t, int(factor * lap_time) // (k - prev_k + 1))
        self._update_breakaway(k, row, position, lines, laps_to_go)
        finished = k == self.n_cross - 1
        if finished:
            lines += self._finish(row, t, position)
            # The finish time that counts may be an official's (:meth:`_finish_rows`).
            entry = self.rows[row][k] or entry
        move = self._move(row)
        if not emit:
            return []  # a replay: the state is rebuilt, the lines were told already
        self._tell(lines)
        # Replaying a late read: the stories are told, an event would be dropped.
        return [] if self.replaying else [
            self._crossing_event(input_id, row, entry, lines, move, finished)]

    def _crossing_of(self, row: int, t: int, left: int) -> int | None:
        """The crossing (index) ``row``'s read at race time ``t`` (µs) makes, or None: a
        cool-down lap, the other ankle, a re-read, the start line right by the finish."""
        k = int(self.crossings[row])
        if k >= self.n_cross:
            return None
        prev = int(self.last[row])
        if t - prev < self.min_seg[k]:
            return None
        return self._place(row, k, t, max(prev, left))

    def _place(self, row: int, k: int, t: int, since: int) -> int:
        """The crossing (index, ``k`` or later) a read at race time ``t`` (µs) is. Her
        first read: :meth:`_place_first`. A later one: the crossing whose expected time
        it is nearest, the next one a lap (:meth:`_lap_us`) after ``since`` (her last
        crossing, or when she got up off the line), each later one a lap after that. A
        read about two laps after her last crossing is the crossing after next: one read
        was missed."""
        last = self.n_cross - 1
        if k >= last:
            return k
        if not k:
            return min(self._place_first(t), last)
        lap = self._lap_us(row, k)
        expect = since + lap
        if t <= expect:
            return k
        return min(k + (2 * (t - expect) + lap) // (2 * lap), last)

    def _place_first(self, t: int) -> int:
        """The crossing (index) a skater's first read at race time ``t`` (µs) is, by the
        race clock and the field's head: the latest crossing the head has made (reads
        are applied in race-time order, so she made it before ``t``; nobody makes a
        crossing before the first skater to make it), so a skater half a lap behind the
        head, or lapped, is never counted a lap ahead. Beyond the head only at the
        start: a read ``HEAD_GAP_LAPS`` of a lap after the race's first crossing, before
        anyone made a second, is a second crossing (she heads the field and her first
        was missed); the lap is the head's first segment's pace, at most a lap at half
        ``max_speed_mps``. Nothing here grows with the field."""
        if self.lead != 1:
            return max(self.lead - 1, 0)  # no crossing yet: the race's first
        head = self._times_at(0)[0]
        lap = min(int(head * self.lap_m / self.cross_m[0]), self._slow_lap_us())
        return 1 if t - head >= HEAD_GAP_LAPS * lap else 0

    def _lap_us(self, row: int, k: int) -> int:
        """The lap time (µs) ``row`` is expected to skate next, having made ``k``
        crossings: her own last lap; else the field leader's last lap; else her first
        segment's pace; else a lap at half ``max_speed_mps``."""
        tm = self.t
        if k >= 2:
            b = tm.item(row, k - 1)
            for j in range(k - 2, -1, -1):
                a = tm.item(row, j)
                if a != NOT_PASSED:
                    return max(1, (b - a) // (k - 1 - j))
        for j in range(self.lead - 1, 0, -1):
            after, before = self._times_at(j), self._times_at(j - 1)
            if after and before:
                return max(1, self._leader_lap(j, after[0], before[0]))
        if k == 1:
            return max(1, int(tm.item(row, 0) * self.lap_m / self.cross_m[0]))
        return self._slow_lap_us()

    def _leader_lap(self, j: int, first: int, first_before: int) -> int:
        """The lap (µs) into crossing ``j`` of the skater who made it first (at ``first``),
        from her own crossing before it; when she has none (missed), the first time at
        ``j`` less the first at ``j - 1`` (``first_before``). Not simply the latter: with
        the head's read at ``j`` missed, ``first`` is a skater behind her, and that "lap"
        is long by the gap between them (2 skaters, 21 laps: a head's missed second
        crossing was counted as her second lap, found by a hypothesis property). Once per
        skater (her second crossing), a scan of one column."""
        row_j = int(np.argmin(self.t[:, j]))  # NOT_PASSED is the largest int64
        own = self.t.item(row_j, j - 1)
        return first - own if own != NOT_PASSED else first - first_before

    def _slow_lap_us(self) -> int:
        """A lap (µs) at half ``max_speed_mps``: slower than anyone races."""
        return int(2 * self.lap_m / self.max_speed_mps * 1_000_000)

    def _crossing_event(self, input_id: str, row: int, entry: dict[str, Any], lines: list[str],
                        move: dict[str, int], finished: bool) -> RaceEvent:
        """A ``passage`` event, or a ``finish`` with the final and her place in the
        classification (``ranked``; the whole ``classification`` when her finish moves
        another row too). Both carry what changed (:meth:`_pack_change`), not the
        race-wide state: its size does not grow with the field."""
        base: RaceEvent = {"race": self.id, "input": input_id, "bib": self.bibs[row], "row": entry,
                           "pack": self._pack_change(row, move), "stories": lines}
        if finished:
            ranked: dict[str, Any] = {"classification": self.classification()} \
                if self.ranked is None else {"ranked": self.ranked}
            others = {self.bibs[i]: self.rows[i][-1] for i in self.refinished if i != row}
            moved = {self.bibs[i]: self.sprint_points[i] for i in self.moved_points}
            return {"type": "finish", **base, "final": self.final[row], **ranked,
                    **({"finish_rows": others} if others else {}),
                    **({"sprint_points_moved": moved} if moved else {}),
                    "race_done": self._done()}
        return {"type": "passage", **base}

    def _finish_rows(self) -> list[int]:
        """Make every finisher's finish crossing say what the finish times that count
        (``final_t``: photo, beam, manual or transponder, µs) say: its ``t`` is her
        final time, its ``position`` her place among the finishers by it (equal times
        share it), its ``gap_leader`` behind the first finish time, its ``lap_time``
        since her previous recorded crossing. Entries are replaced, never changed (a
        checkpoint shares them). Returns the rows whose finish crossing changed."""
        k = self.n_cross - 1
        rows = np.flatnonzero(self.final_t != NOT_PASSED).tolist()
        times = sorted(self.final_t.item(i) for i in rows)
        changed = []
        for i in rows:
            entry = self.rows[i][k]
            if entry is None:
                continue
            t = self.final_t.item(i)
            new = {**entry, "t": t, "lap_time": t - self._before(i, k),
                   "position": 1 + bisect.bisect_left(times, t), "gap_leader": t - times[0]}
            if new != entry:
                self.rows[i][k] = new
                changed.append(i)
        return changed

    def _before(self, row: int, k: int) -> int:
        """The race time (µs) of ``row``'s last recorded crossing before crossing ``k``
        (0, the gun, if none): where the lap time of ``k`` starts."""
        tm = self.t
        for j in range(k - 1, -1, -1):
            if tm.item(row, j) != NOT_PASSED:
                return int(tm.item(row, j))
        return 0

    def _exchange(self, row: int, k: int, skater: str) -> list[str]:
        """Who crossed for a team at crossing ``k``: a new name is an exchange since the
        last lap. Returns the story of an exchange in the last two laps."""
        lines = []
        if self.active[row] is not None and self.active[row] != skater:
            self.exchanges[row] += 1
            if k >= self.n_cross - 2 and self.bibs[row] not in self.late_exchange:
                # One skater must skate the last two laps (DOMAIN.md §4): the
                # referee's call, so it is flagged, not sanctioned.
                self.late_exchange.append(self.bibs[row])
                lines.append(stories.relay_late_exchange(self.skaters[row].short))
        self.active[row] = skater
        return lines

    def _leader_lines(self, row: int, k: int, laps_to_go: int, emit: bool) -> list[str]:
        """The leader at crossing ``k``: a new leader's story, and the relay's warning
        shot and the bell when they are due (each once)."""
        lines = []
        name = self.skaters[row].short
        if k and emit:
            before = self.t[:, k - 1]
            if self.bibs[int(np.argmin(before))] != self.bibs[row] and laps_to_go:
                lines.append(stories.pack_lead(name, laps_to_go))
        if self.teams and laps_to_go == WARNING_LAPS and not self.warning:
            self.warning = True
            lines.append(stories.relay_warning(name))
        if laps_to_go == 1 and not self.bell:
            self.bell = True
            lines.append(stories.pack_bell(name))
        return lines

    def _check_stopped(self, row: int, t: int, limit: int) -> list[str]:
        quiet = (t - self.last > limit) & ~self.stopped \
            & ~self.excluded & (self.final_t == NOT_PASSED)
        quiet[row] = False
        lines = []
        for j in np.flatnonzero(quiet).tolist():
            self.stopped[j] = True
            self.now_stopped.append(self.bibs[j])
            lines.append(stories.pack_stopped(self.skaters[j].short, int(self.crossings[j])))
        return lines

    def _finish(self, row: int, t: int, position: int) -> list[str]:
        final_t, origin = self._official_finish(row, t)
        self.final[row] = {"t": final_t, "origin": origin, "position": position}
        self.final_t[row] = final_t
        # With no official time, every finish crossing already says what the finals say.
        self.refinished = self._finish_rows() if self.official else []
        self.moved_points = [i for i in self._score_finish(row) if i != row] \
            if self.kind == "mass_start" else []
        if self.moved_points:
            # Her official time took final sprint points from who crossed before her:
            # the kept classification is rebuilt, and her event carries it whole.
            self.by_time, self.ranked = None, None
        else:
            self.ranked = self._classify(row)
        if self.ranked is not None:
            rank: int | None = self.ranked["rank"]
        else:
            cls = self.classification()
            rank = cls["rank"][cls["bib"].index(self.bibs[row])]
        sprint_points = self.sprint_points[row] if self.kind == "mass_start" else None
        return stories.pack_finish(self.skaters[row].short, final_t, rank, sprint_points)
