"""What both race engines share: the input log and how an input enters it, revisions,
official finish times, the decisions every race kind takes, and lookups.

``longtrack.LongTrackRace`` (pairs against the clock) and ``pack.PackRace``
(everyone starts together) are subclasses: each sets up its own state in
``configure``/``_reset`` and supplies the hooks below for what differs (a gun, a
passing, its statuses, a manual time, a restart, how it tells a revision).
"""
from __future__ import annotations

from typing import Any, ClassVar, assert_never

import numpy as np
import numpy.typing as npt

from icetime.messages import Decision, FinishTime, Gun
from icetime.timefmt import to_thousandths
from icetime.view import STORY_LOG_MAX

from .model import (
    FINISH_PRECEDENCE,
    NOT_PASSED,
    InputError,
    RaceEvent,
    RaceInput,
    RoutedGun,
    RoutedPassing,
    Skater,
    team_skater,
)


class RaceBase:
    """One race, fed its routed inputs in log order (see ``competition.Competition``).

    :meth:`feed` applies an input and returns the events it causes; a decision, a late
    official time or a restart instead replays the race's own input log
    (:meth:`recompute`) and returns one ``revision`` event carrying the whole view.
    """

    id: str
    kind: str
    revision: int
    log: list[tuple[str, RaceInput]]
    story_log: list[str]
    max_speed_mps: float
    bibs: list[str]
    skaters: list[Skater]
    row: dict[str, int]
    bib_arr: npt.NDArray[Any]
    row_of: dict[str, int]
    teams: dict[str, list[str]]
    members: dict[str, Skater]
    distance: int
    #: Race time (µs) of each row at each passage; NOT_PASSED until it passes.
    t: npt.NDArray[np.int64]
    #: Per row, per passage: the row entry published (None: not passed yet).
    rows: list[list[dict[str, Any] | None]]
    status: list[str | None]
    final: list[dict[str, Any] | None]
    #: row -> (precedence, time in µs truncated to thousandths, origin)
    official: dict[int, tuple[int, int, str]]
    is_official: bool
    world_cup: dict[str, Any] | None
    #: Decision actions that give a skater a status, and the status they give.
    status_actions: ClassVar[dict[str, str]] = {}

    def __init__(self, spec: dict[str, Any], skaters: dict[str, Skater],
                 max_speed_mps: float) -> None:
        self.id = str(spec["id"])
        self.revision = 0
        self.log = []
        # Lines already told stay told: a revision replays results, not the commentary.
        self.story_log = []
        self.max_speed_mps = max_speed_mps
        self.configure(spec, skaters)

    # ------------------------------------------------------------------ what differs
    def configure(self, spec: dict[str, Any], skaters: dict[str, Skater]) -> None:
        """Read the race's start-list entry (again, when the start list changes)."""
        raise NotImplementedError

    def _reset(self) -> None:
        """Empty every result, ready for a replay of the input log."""
        raise NotImplementedError

    def starters(self, gun: Gun) -> list[str]:
        """The bibs of the skaters a gun starts (transponders route to them)."""
        raise NotImplementedError

    def can_call(self, pair: int | None) -> bool:
        """Whether ``pair`` (None: the whole field) can be called to the start."""
        raise NotImplementedError

    def classification(self) -> dict[str, list[Any]]:
        raise NotImplementedError

    def view(self) -> dict[str, Any]:
        raise NotImplementedError

    def _on_gun(self, input_id: str, routed: RoutedGun) -> list[RaceEvent]:
        raise NotImplementedError

    def _on_passing(self, input_id: str, routed: RoutedPassing, emit: bool) -> list[RaceEvent]:
        """A routed passing: ``routed.bib`` crossed at ``routed.t`` (common clock, µs)."""
        raise NotImplementedError

    def _restart_reason(self, gun: Gun) -> str | None:
        """Why a gun restarts what already skated (a revision), or None for a start."""
        raise NotImplementedError

    def _set_status(self, row: int, status: str | None) -> None:
        raise NotImplementedError

    def _manual_time(self, row: int, time_us: int, m: int | None) -> None:
        """A time keyed in by an official: ``time_us`` at passage ``m`` (metres; None:
        the finish)."""
        raise NotImplementedError

    def _restart(self, decision: Decision) -> None:
        """An official's ``restart`` decision: the attempt no longer counts."""
        raise NotImplementedError

    def _unknown_decision(self, action: str) -> InputError:
        return InputError(f"unknown decision {action!r}")

    def _decision_lines(self, decision: Decision) -> list[str]:
        """Story lines a decision tells, before its revision."""
        return []

    def _revision_lines(self, reason: str, before: dict[str, list[Any]]) -> list[str]:
        """Story lines a revision tells, given the classification before it."""
        return []

    def _reset_results(self, n_passages: int) -> None:
        """Empty what both engines keep per row: the passage times and entries, the
        status, the final, the official finish times; and the race is not official."""
        n = len(self.bibs)
        # Column-major: a passing compares one whole passage column, kept contiguous.
        self.t = np.full((n, n_passages), NOT_PASSED, np.int64, order="F")
        self.rows = [[None] * n_passages for _ in range(n)]
        self.status = [None] * n
        self.final = [None] * n
        self.official = {}
        self.is_official = False  # set by an official's decision; World Cup points count

    # ------------------------------------------------------------------ input
    def feed(self, input_id: str, inp: RaceInput) -> list[RaceEvent]:
        """Apply one routed input; decisions, late official times and restarts give a
        revision. Raises :class:`InputError` (or KeyError, ValueError) on an input the
        race cannot apply; such an input leaves neither the log nor the state changed,
        so it never stands in the way of the race's later inputs."""
        self.log.append((input_id, inp))
        try:
            return self._feed(input_id, inp)
        except (InputError, KeyError, ValueError, TypeError):
            # A refused input kept in the log would be replayed, and refused again, by
            # every later correction: the race would refuse everything after it.
            self.log.pop()
            self._reset()
            self._replay_log()  # undo whatever the refused input had changed
            raise

    def _feed(self, input_id: str, inp: RaceInput) -> list[RaceEvent]:
        # Passings first: a class pattern that fails costs more on Struct types, and
        # passings are the hot path.
        match inp:
            case RoutedPassing():
                return self._on_passing(input_id, inp, emit=True)
            case Decision():
                told = self._decision_lines(inp)
                return self.recompute(input_id, f"decision: {inp.action}", told)
            case FinishTime() if self.final[self._row(inp.bib)] is not None:
                return self.recompute(input_id, f"official time ({inp.origin})")
            case RoutedGun():
                reason = self._restart_reason(inp.gun)
                if reason is not None:
                    return self.recompute(input_id, reason)
        return self._apply(input_id, inp, emit=True)

    def recompute(self, input_id: str, reason: str, told: list[str] | None = None
                  ) -> list[RaceEvent]:
        """Replay the race's input log from scratch and describe the result as one
        revision; ``told`` are story lines to tell with it."""
        before = self.classification()
        self._reset()
        self._replay_log()
        self.revision += 1
        self._tell(told or [])
        self._tell(self._revision_lines(reason, before))
        return [{"type": "revision", "race": self.id, "input": input_id, "reason": reason,
                 "view": self.view()}]

    def _apply(self, input_id: str, inp: RaceInput, emit: bool) -> list[RaceEvent]:
        """Apply one input to the state; ``emit=False`` in a replay (state only)."""
        match inp:
            case RoutedPassing():
                return self._on_passing(input_id, inp, emit)
            case RoutedGun():
                return self._on_gun(input_id, inp)
            case FinishTime():
                self._set_official(self._row(inp.bib), inp.origin or "photo", inp.time_us)
                return []
            case Decision():
                self._on_decision(inp)
                return []
        assert_never(inp)

    def _replay_log(self) -> None:
        """Apply the race's own input log again, quietly (emit=False), skipping voided
        inputs. Official finish times are authoritative whenever they arrive, so they
        are in place before the transponder finishes they replace are replayed."""
        voided = {str(i.target) for _, i in self.log
                  if isinstance(i, Decision) and i.action == "void"}
        for iid, inp in self.log:
            if isinstance(inp, FinishTime) and iid not in voided:
                self._apply(iid, inp, emit=False)
        for iid, inp in self.log:
            if iid not in voided and not isinstance(inp, FinishTime):
                self._apply(iid, inp, emit=False)

    def _on_decision(self, decision: Decision) -> None:
        action = decision.action
        if action == "void":
            return  # handled by the replay, which skips the target input
        if action == "official":
            self.is_official = True
        elif action in self.status_actions:
            self._set_status(self._row(decision.bib), self.status_actions[action])
        elif action == "reinstate":
            self._set_status(self._row(decision.bib), None)
        elif action == "manual_time":
            if decision.time_us is None:  # Decision itself refuses this; for the type
                raise InputError("a manual time needs 'time_us'")
            self._manual_time(self._row(decision.bib), decision.time_us, decision.m)
        elif action == "restart":
            self._restart(decision)
        else:
            raise self._unknown_decision(action)

    # ------------------------------------------------------------------ official times
    def _set_official(self, row: int, origin: str, time_us: int) -> None:
        """Keep an official finish time unless one of higher precedence (DOMAIN.md §1.4:
        manual > photo > beam > transponder; an unknown origin ranks as photo) is kept."""
        prec = FINISH_PRECEDENCE.get(origin, 2)
        t = to_thousandths(time_us)
        if row not in self.official or prec >= self.official[row][0]:
            self.official[row] = (prec, t, origin)

    def _official_finish(self, row: int, t: int) -> tuple[int, str]:
        """The finish time that counts for ``row`` and its origin: the official time when
        there is one, else ``t`` (µs) from the transponder."""
        official = self.official.get(row)
        return (official[1], official[2]) if official else (t, "transponder")

    # ------------------------------------------------------------------ lookups
    def _tell(self, lines: list[str]) -> None:
        if lines:
            self.story_log.extend(lines)
            del self.story_log[:-STORY_LOG_MAX]

    def _row(self, bib: Any) -> int:
        """The row of a bib, or of a team (by its id or by one of its skaters)."""
        row = self.row.get(str(bib), self.row_of.get(str(bib)))
        if row is None:
            raise InputError(f"race {self.id}: no bib {bib!r}")
        return row

    def _require_known(self, bibs: list[str], skaters: dict[str, Skater]) -> None:
        missing = [b for b in bibs if b not in skaters]
        if missing:
            raise InputError(f"race {self.id}: bibs not in the start list: {missing}")

    def _set_competitors(self, bibs: list[str], competitors: list[Skater]) -> None:
        """The race's rows: row i is ``bibs[i]``, competing as ``competitors[i]``."""
        self.bibs = bibs
        self.skaters = competitors
        self.row = {b: i for i, b in enumerate(bibs)}
        self.bib_arr = np.array(bibs, dtype=object)

    def _read_teams(self, specs: list[dict[str, Any]], skaters: dict[str, Skater]
                    ) -> list[Skater]:
        """Set ``teams`` and ``members`` from the start list's teams; return the teams
        as competitors. Every member must be in ``skaters``."""
        self.teams = {str(t["id"]): [str(b) for b in t["skaters"]] for t in specs}
        self._require_known([b for ms in self.teams.values() for b in ms], skaters)
        self.members = {b: skaters[b] for ms in self.teams.values() for b in ms}
        return [team_skater(t) for t in specs]

    # ------------------------------------------------------------------ output
    def _teams_view(self) -> dict[str, Any]:
        """The view's ``teams`` entry, when the competitors are teams."""
        if not self.teams:
            return {}
        return {"teams": {tid: {"skaters": ms,
                                "members": {m: self.members[m].public(self.distance)
                                            for m in ms}}
                          for tid, ms in self.teams.items()}}

    def _results_view(self, splits: list[list[dict[str, Any]]] | None = None
                      ) -> dict[str, dict[str, Any]]:
        """The view's ``results``: each competitor's passages, final, status, splits."""
        return {b: {"passages": self.rows[i], "final": self.final[i], "status": self.status[i],
                    "splits": splits[i] if splits is not None else []}
                for i, b in enumerate(self.bibs)}
