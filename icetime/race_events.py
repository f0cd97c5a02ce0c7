"""The race events: what scoring publishes per race (docs/protocol.md §2), as the tagged
union :data:`RaceEvent` on ``type``: ``revision``, ``pair_start``, ``start``,
``passage``, ``finish``, ``split``, ``wave_start``, ``course_passage``, ``refused``.

An event's field that only some races carry (``pair`` in long track, ``pack`` in pack
races) is ``UNSET`` when absent and ``None`` only where the engine sends ``null``, so
decoding an event and encoding it again gives the same object. A ``revision``'s
``view`` stays a ``dict``; its types are :mod:`icetime.race_views`'.

The JSON Schema ``docs/schema/race-event.json`` is generated from these types and the
views' (:mod:`icetime.messages`).
"""
from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from msgspec import UNSET, Meta, Struct, UnsetType

Lane = Literal["I", "O"]
Origin = Literal["transponder", "photo", "beam", "manual"]
Flag = Literal["WR", "TR", "PB", "SB"]
Status = Literal["DNS", "DNF", "DQ", "PEN", "YC", "RC", "ADV"]


class _Obj(Struct, forbid_unknown_fields=True, kw_only=True):
    """Part of an event or a view: unknown fields are an error, so the types stay honest."""


class Hops(_Obj):
    """When each hop handled the input that caused the event (µs): source send (`null`
    when the source sent no `sent_us`), ingest receive, scoring publish."""

    source_us: int | None
    ingest_us: int | None
    scoring_us: int


_LONG_TRACK_ROW = ("rank", "gap_best", "best_bib", "leader_bib", "gap_partner", "projected")
_PACK_ROW = ("lap_number", "position")


class PassageRow(_Obj):
    """One passage: in long track a passage point (`rank`, `gap_best`, … present), in a
    pack race a finish-line crossing (`lap_number`, `position` present). `lap_time` is
    the time since the previous passage (µs), in both."""

    k: int
    m: int | float
    t: int
    lap_time: Annotated[int, Meta(description="time since the previous passage, µs")]
    gap_leader: int | None
    input: Annotated[str | UnsetType, Meta(description=(
        "the raw stream id of the input that made this passage: the read (a passing), or "
        "the official's manual time or photo-finish time; absent in views older than "
        "this field"))] = UNSET
    rank: int | UnsetType = UNSET
    gap_best: int | UnsetType = UNSET
    best_bib: str | UnsetType = UNSET
    leader_bib: str | None | UnsetType = UNSET
    gap_partner: int | None | UnsetType = UNSET
    projected: int | None | UnsetType = UNSET
    skaters: Annotated[dict[str, int] | UnsetType, Meta(description=(
        "team events: the team's skaters at this line, bib -> race time"))] = UNSET
    lap_number: Annotated[int | UnsetType, Meta(description=(
        "pack races: the crossing's number, 1-based"))] = UNSET
    position: int | UnsetType = UNSET
    skater: Annotated[str | UnsetType, Meta(description=(
        "relays: who of the team crossed"))] = UNSET
    missing: Annotated[list[int] | UnsetType, Meta(description=(
        "long track: the passages (metres) missed since the previous recorded one, "
        "left empty; `lap_time` then spans them"))] = UNSET
    origin: Annotated[Literal["manual"] | UnsetType, Meta(description=(
        "long track, an intermediate passage: `manual` where an official keyed its time "
        "in (a `manual_time` decision); absent for a read. The finish's origin is "
        "`final.origin`"))] = UNSET

    @property
    def is_pack(self) -> bool:
        return self.position is not UNSET

    def __post_init__(self) -> None:
        mine, other = (_PACK_ROW, _LONG_TRACK_ROW) if self.is_pack else \
            (_LONG_TRACK_ROW, _PACK_ROW + ("skater",))
        if any(getattr(self, f) is UNSET for f in mine) or \
                any(getattr(self, f) is not UNSET for f in other):
            raise ValueError("a passage row is either long track (rank, gap_best, best_bib, "
                             "leader_bib, gap_partner, projected) or pack (lap_number, "
                             "position)")
        if self.skaters is not UNSET and self.is_pack:
            raise ValueError("'skaters' is a long-track team event's")


class Final(_Obj):
    """A finish: long track adds the `flags` it beat; a pack race the `position` across
    the line by transponder."""

    t: int
    origin: Origin
    flags: list[Flag] | UnsetType = UNSET
    position: int | UnsetType = UNSET

    def __post_init__(self) -> None:
        if (self.flags is UNSET) == (self.position is UNSET):
            raise ValueError("a final has 'flags' (long track) or 'position' (pack)")


class Classification(_Obj):
    """Finished competitors without a status, columnar (`sprint_points`: mass start
    only)."""

    bib: list[str]
    rank: list[int]
    t: list[int]
    behind: list[int]
    sprint_points: list[int] | UnsetType = UNSET


class SplitEntry(_Obj):
    """An unofficial split at an extra loop, at race metre `m`."""

    point: str
    m: int
    t: int
    speed_kmh: float | None


class PackRun(_Obj):
    attempt: int
    clock_origin_us: int
    rate: float


class Sprint(_Obj):
    """A mass start's intermediate sprint: who scored, and their sprint points."""

    sprint: int
    lap_number: int
    bibs: list[str]
    sprint_points: list[int]


class Breakaway(_Obj):
    bibs: list[str]
    gap_us: int
    gap_m: int | None
    lap_number: int


class PackState(_Obj):
    """A pack race's race-wide state, in the view and whole in a `start` event (relays
    add `warning`, `active`, `exchanges`, `late_exchange`); a crossing's event carries
    what changed (:class:`PackChange`)."""

    run: PackRun | None
    order: list[str]
    laps_to_go: int
    bell: bool
    crossings: Annotated[dict[str, int], Meta(description="crossings made, per bib")]
    stopped: list[str]
    sprint_points: Annotated[dict[str, int] | None, Meta(description=(
        "mass start: sprint points per bib so far"))]
    sprints: list[Sprint]
    breakaway: Breakaway | None
    attempt: int
    in_field: Annotated[list[str], Meta(description=(
        "skaters (a relay's members) whose chip lies in the loop field: read again and "
        "again without leaving it"))]
    warning: bool | UnsetType = UNSET
    active: dict[str, str | None] | UnsetType = UNSET
    exchanges: dict[str, int] | UnsetType = UNSET
    late_exchange: list[str] | UnsetType = UNSET


class PackMove(_Obj, rename={"frm": "from"}):
    """Where a crossing takes its competitor in the race order: from index `from` to
    index `to` (counted after taking her out of the order)."""

    frm: int
    to: int


class PackChange(_Obj):
    """What a crossing changed in a pack race's :class:`PackState`, for the crossing
    competitor (the event's `bib`): her `move` in the order, her `crossings` made, her
    `sprint_points` (mass start; else `null`), who stopped at this crossing
    (`now_stopped`; she herself is no longer stopped); relays: her team's `active`
    skater and `exchanges`. The fields that do not grow with the field come whole, as
    in :class:`PackState`. Its size does not grow with the field."""

    run: PackRun | None
    move: PackMove
    laps_to_go: int
    bell: bool
    crossings: Annotated[int, Meta(description="her crossings made")]
    now_stopped: Annotated[list[str], Meta(description=(
        "who stopped at this crossing (start order)"))]
    sprint_points: Annotated[int | None, Meta(description=(
        "mass start: her sprint points so far"))]
    sprints: list[Sprint]
    breakaway: Breakaway | None
    attempt: int
    in_field: list[str]
    warning: bool | UnsetType = UNSET
    active: str | None | UnsetType = UNSET
    exchanges: int | UnsetType = UNSET
    late_exchange: list[str] | UnsetType = UNSET


class Ranked(_Obj):
    """A finisher's place in the classification (columnar): inserted at index `at`
    with her `rank`, `t` and `behind` (µs, and `sprint_points` in a mass start). The
    `tied` rows right behind her share her time and keep their rank; every other row
    behind her goes down one rank. At `at` 0 everyone's `behind` is measured from her."""

    at: int
    rank: int
    t: int
    behind: int
    tied: int
    sprint_points: int | UnsetType = UNSET


class _Event(Struct, tag_field="type", forbid_unknown_fields=True, kw_only=True):
    race: str
    input: Annotated[str, Meta(description="the raw stream id of the input that caused it")]
    hops: Hops | UnsetType = UNSET


class Revision(_Event, tag="revision"):
    """A correction, a start list, rounds or standings: the whole recomputed race."""

    reason: str
    view: Annotated[dict[str, Any], Meta(
        description="The race view; its shape follows `race.kind`.",
        extra_json_schema={"anyOf": [{"$ref": "#/$defs/LongTrackView"},
                                     {"$ref": "#/$defs/PackView"},
                                     {"$ref": "#/$defs/MarathonView"},
                                     {"$ref": "#/$defs/RoundsView"},
                                     {"$ref": "#/$defs/StandingsView"}]})]


class PairStart(_Event, tag="pair_start"):
    """A pair race's gun: the pair (two skaters, or two teams) is on the ice."""

    pair: int
    attempt: int
    clock_origin_us: Annotated[int, Meta(description="server wall time of the gun, µs")]
    rate: float
    bibs: list[str]


class Start(_Event, tag="start"):
    """A pack race's gun."""

    attempt: int
    bibs: list[str]
    pack: PackState


def _check_family(ev: Passage | Finish) -> None:
    pack = ev.pack is not UNSET
    if pack != ev.row.is_pack or (ev.pair is UNSET) != pack or (ev.lane is UNSET) != pack:
        raise ValueError(f"a {'pack' if pack else 'long-track'} {type(ev).__name__.lower()} "
                         "has a row of its kind and "
                         + ("'pack'" if pack else "'pair' and 'lane'"))


class Passage(_Event, tag="passage"):
    """A passage (long track: `pair`, `lane`) or a finish-line crossing (pack: `pack`,
    what it changed in the race-wide state)."""

    bib: str
    row: PassageRow
    stories: list[str]
    pair: int | UnsetType = UNSET
    lane: Lane | UnsetType = UNSET
    pack: PackChange | UnsetType = UNSET

    def __post_init__(self) -> None:
        _check_family(self)


class Finish(_Event, tag="finish"):
    """A finish: a passage, plus the `final`, her place in the classification
    (`ranked`; the whole `classification` instead when her finish moves another row
    too), and whether the pair (long track) or the race (pack) is done."""

    bib: str
    row: PassageRow
    stories: list[str]
    final: Final
    ranked: Ranked | UnsetType = UNSET
    classification: Classification | UnsetType = UNSET
    finish_rows: Annotated[dict[str, PassageRow] | UnsetType, Meta(description=(
        "pack races: the finish crossings of skaters who finished before her that her "
        "finish changed (an official finish time put her ahead of them), bib -> row"))] = UNSET
    sprint_points_moved: Annotated[dict[str, int] | UnsetType, Meta(description=(
        "mass start: the sprint points so far of skaters who finished before her whose "
        "final sprint points her finish changed (an official finish time put her ahead "
        "of them across the line), bib -> sprint points"))] = UNSET
    pair: int | UnsetType = UNSET
    lane: Lane | UnsetType = UNSET
    pair_done: bool | UnsetType = UNSET
    pack: PackChange | UnsetType = UNSET
    race_done: bool | UnsetType = UNSET

    def __post_init__(self) -> None:
        _check_family(self)
        if (self.ranked is UNSET) == (self.classification is UNSET):
            raise ValueError("a finish has 'ranked' or the whole 'classification'")
        pack = self.pack is not UNSET
        if (self.race_done is UNSET) == pack or (self.pair_done is UNSET) != pack \
                or (self.final.position is not UNSET) != pack:
            raise ValueError("a long-track finish has 'pair_done', a pack finish "
                             "'race_done' (and a final of its kind)")


class Split(_Event, tag="split"):
    """An unofficial split at an extra loop (long track); never changes results."""

    bib: str
    pair: int
    lane: Lane
    split: SplitEntry


class WaveRun(_Obj):
    """A marathon wave's running clock: the server wall time of its gun (µs) and the
    rate (replays)."""

    clock_origin_us: int
    rate: float


class MarathonCounts(_Obj):
    """How far the field has come: skaters with a passage, passages per timing point
    (course order), finishers, waves started, skaters with a status."""

    started: int
    passed: list[int]
    finished: int
    waves: int
    status: int


class WaveStart(_Event, tag="wave_start"):
    """A marathon wave's gun: its skaters' times run from it."""

    wave: int
    run: WaveRun
    counts: MarathonCounts


class CourseRow(_Obj):
    """A marathon passage: timing point `k` (course order) named `point`, `m` metres
    along the course, at race time `t` (µs from the wave's gun)."""

    k: int
    point: str
    m: int
    t: int


class CoursePassage(_Event, tag="course_passage"):
    """A skater passed a timing point of a marathon (or an earlier read of it
    arrived). Carries the passage and the rank, never the classification: `at` is
    where the bib goes in that point's order (after taking out her earlier passage
    there, if any); `rank` counts the skaters strictly faster, plus one. Both are
    `null` for a skater with a status (her passages show, she is not ranked). No story
    lines: who is fastest so far depends on which reads have arrived, and the view is
    the same whatever their arrival order."""

    bib: str
    row: CourseRow
    rank: int | None
    at: int | None
    counts: MarathonCounts


class Refused(_Event, tag="refused"):
    """An input naming this race that scoring could not apply, and why. It changes
    nothing: the race goes on as if the input had not come (a fold ignores it)."""

    input_type: Annotated[str, Meta(description="the refused input's `type`")]
    source: Annotated[str, Meta(description="the source that sent it")]
    reason: Annotated[str, Meta(description="why scoring refused it, for a person")]
    seq: Annotated[int | UnsetType, Meta(description="its `seq`, if it had one")] = UNSET


#: Every event a race stream carries (docs/protocol.md §2), tagged on ``type``.
RaceEvent = Revision | PairStart | Start | Passage | Finish | Split | WaveStart | \
    CoursePassage | Refused
EVENT_TYPES: dict[str, type[_Event]] = {
    t.__struct_config__.tag: t for t in get_args(RaceEvent)}
