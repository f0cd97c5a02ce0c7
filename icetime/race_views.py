"""The race views: a race as a whole (a ``revision``'s ``view``, a snapshot), one Struct
per shape (docs/protocol.md, "The race view").

The view's shape depends on ``view.race.kind`` and carries no tag of its own, so it
cannot sit in a tagged union. :data:`VIEW_TYPES` maps each kind to its Struct
(:class:`LongTrackView`, :class:`PackView`, :class:`MarathonView`, :class:`RoundsView`,
:class:`StandingsView`) and :func:`decode_view` checks a view against it; the schema of
``view`` (in ``docs/schema/race-event.json``, :mod:`icetime.messages`) points at those
five.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

import msgspec
from msgspec import UNSET, Meta, UnsetType

from icetime.race_events import (
    Classification,
    Final,
    MarathonCounts,
    PackState,
    PassageRow,
    SplitEntry,
    Status,
    WaveRun,
    _Obj,
)


class SkaterInfo(_Obj):
    bib: str
    name: str
    short: str
    nation: str
    pb: int | None
    sb: int | None


class NameInfo(_Obj):
    """A competitor's name in the rounds and standings views."""

    bib: str
    name: str
    short: str | UnsetType = UNSET
    nation: str | UnsetType = UNSET


class TeamEntry(_Obj):
    skaters: list[str]
    members: dict[str, SkaterInfo]


class HeldRead(_Obj):
    """A read held for the officials, never a passage: its time is far outside what the
    distance allows."""

    input: Annotated[str, Meta(description="the raw stream id of the read")]
    bib: str
    transponder: str
    point: str
    t: Annotated[int, Meta(description="its time on the common clock, µs")]
    reason: str


class Result(_Obj):
    """One competitor's passages (`null` until passed), final, status and splits."""

    passages: list[PassageRow | None]
    final: Final | None
    status: Status | None
    splits: list[SplitEntry]


class PairEntry(_Obj):
    pair: int
    inner: str | None
    outer: str | None


class OnIce(_Obj):
    pair: int
    attempt: int
    clock_origin_us: int
    rate: float


LongTrackKind = Literal["long_track_individual", "team_pursuit", "team_sprint", "mixed_relay"]
PackKind = Literal["short_track", "mass_start", "short_track_relay"]


class LongTrackRaceInfo(_Obj):
    id: str
    name: str
    kind: LongTrackKind
    distance: int
    passages: list[int]
    records: dict[str, int]
    official: bool


class LongTrackView(_Obj):
    """A pair race (long-track individual distance or team event)."""

    race: LongTrackRaceInfo
    skaters: dict[str, SkaterInfo]
    pairs: list[PairEntry]
    current_pair: int | None
    on_ice: dict[str, OnIce]
    results: dict[str, Result]
    classification: Classification
    stories: list[str]
    held: list[HeldRead]
    in_field: Annotated[list[str], Meta(description=(
        "skaters (a team's members) whose chip lies in the loop field: read again and "
        "again without leaving it"))]
    revision: int
    teams: dict[str, TeamEntry] | UnsetType = UNSET


class PointsTable(_Obj):
    """The mass start's sprint points by place: at an intermediate sprint, at the finish."""

    sprint: list[int]
    final: list[int]


class PackRaceInfo(_Obj):
    id: str
    name: str
    kind: PackKind
    distance: int
    laps: int | float
    lap_m: float
    passages: list[float]
    round: str | None
    official: bool
    sprint_laps: list[int]
    sprint_points_table: PointsTable | None


class Voided(_Obj):
    attempt: int
    reason: str
    crossings: Annotated[int, Meta(description="the leader's crossings then")]
    order: list[str]


class PackView(_Obj):
    """A pack race (short track, relay, mass start)."""

    race: PackRaceInfo
    skaters: dict[str, SkaterInfo]
    start_order: list[str]
    voided: list[Voided]
    results: dict[str, Result]
    pack: PackState
    classification: Classification
    stories: list[str]
    held: list[HeldRead]
    revision: int
    teams: dict[str, TeamEntry] | UnsetType = UNSET


class MarathonPoint(_Obj):
    point: str
    m: int


class MarathonRaceInfo(_Obj):
    id: str
    name: str
    kind: Literal["marathon"]
    distance: Annotated[int, Meta(description="metres from the start to the finish point")]
    course: list[MarathonPoint]
    official: bool


class MarathonSkater(_Obj):
    bib: str
    name: str
    short: str
    nation: str
    club: str
    wave: int


class MarathonWave(_Obj):
    wave: int
    name: str | None
    size: int
    run: WaveRun | None


class MarathonResult(_Obj):
    """A skater's race times (µs) by timing point in course order (`null`: no read
    there, a visible gap), her status, and the points (`k`) whose time an official keyed
    in. Only skaters with a passage or a status have one. Compact: a view of 10,000
    skaters is sent whole on every revision and snapshot."""

    t: list[int | None]
    status: Status | None
    manual: list[int]


class MarathonView(_Obj):
    """A marathon: `order` lists, per timing point, the bibs ranked there (fastest
    first; skaters with a status are left out). The classification is not carried: it
    follows from `order` and `results` (finishers by time, then by furthest point)."""

    race: MarathonRaceInfo
    skaters: dict[str, MarathonSkater]
    waves: dict[str, MarathonWave]
    results: dict[str, MarathonResult]
    order: list[list[str]]
    counts: MarathonCounts
    stories: list[str]
    revision: int


class RoundsRaceInfo(_Obj):
    id: str
    name: str
    kind: Literal["rounds"]
    distance: int
    official: bool


class RoundEntry(_Obj):
    name: str
    races: list[str]


class Ranking(_Obj):
    bib: list[str]
    rank: list[int]
    how: list[str]


class RoundsView(_Obj):
    """A short-track event in rounds (`event-<id>`)."""

    race: RoundsRaceInfo
    rounds: list[RoundEntry]
    ranking: Ranking
    skaters: dict[str, NameInfo]
    stories: list[str]
    revision: int


class StandingsRaceInfo(_Obj):
    id: str
    name: str
    kind: Literal["standings"]


class CupRow(_Obj):
    bib: str
    rank: int
    points: Annotated[int, Meta(description="World Cup points")]
    before: int
    races: dict[str, int]


class Cup(_Obj):
    cup: str
    rows: list[CupRow]


class Counted(_Obj):
    id: str
    name: str
    cup: str


class StandingsView(_Obj):
    """The World Cup standings (`wc-standings`)."""

    race: StandingsRaceInfo
    skaters: dict[str, NameInfo]
    cups: list[Cup]
    counted: list[Counted]
    stories: list[str]
    revision: int


RaceView = LongTrackView | PackView | MarathonView | RoundsView | StandingsView
#: The view type for each ``view.race.kind``.
VIEW_TYPES: dict[str, type[_Obj]] = {
    **{k: LongTrackView for k in get_args(LongTrackKind)},
    **{k: PackView for k in get_args(PackKind)},
    "marathon": MarathonView, "rounds": RoundsView, "standings": StandingsView,
}


def decode_view(view: dict[str, Any]) -> RaceView:
    """A race view (a plain dict) as its Struct, by ``view["race"]["kind"]``; raises
    ``msgspec.ValidationError`` if it does not fit, ``KeyError`` for an unknown kind."""
    out: RaceView = msgspec.convert(view, VIEW_TYPES[view["race"]["kind"]])  # type: ignore
    return out
