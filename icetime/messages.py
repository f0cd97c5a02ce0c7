"""Every message of the timing feed and of the race event streams, defined once.

Two tagged unions on ``type``, built from msgspec ``Struct`` types:

* :data:`FeedInput`: what a source sends to ingest (docs/protocol.md §1): ``passing``,
  ``gun``, ``clock``, ``call``, ``finish_time``, ``decision``, ``startlist``. Ingest
  decodes each line straight into it; that is the whole validation (ranges, enums,
  required fields, unknown fields refused so that a typo is named, not ignored).
* :data:`RaceEvent`: what scoring publishes per race (§2): ``revision``, ``pair_start``,
  ``start``, ``passage``, ``finish``, ``split``, ``wave_start``, ``course_passage``,
  ``refused``.

The JSON Schemas in docs/schema/ are generated from these types
(``python -m icetime.messages --write docs/schema``; ``--check`` compares), and the
tests hold the checked-in files, the protocol's examples and every event the engine
emits for every fixture to them.

Absent versus null. An *input's* optional field is ``None`` when absent, and ingest
stores no key for it (:func:`stored`). An *event's* field that only some races carry
(``pair`` in long track, ``pack`` in pack races) is ``UNSET`` when absent and ``None``
only where the engine sends ``null``, so decoding an event and encoding it again gives
the same object.

The race ``view`` (a ``revision``'s whole race) stays a ``dict`` on the event: its shape
depends on ``view.race.kind`` and carries no tag of its own, so it cannot sit in a
tagged union. :data:`VIEW_TYPES` maps each kind to its Struct (:class:`LongTrackView`,
:class:`PackView`, :class:`MarathonView`, :class:`RoundsView`, :class:`StandingsView`)
and :func:`decode_view` checks a view against it; the schema of ``view`` points at those five.

Start lists are typed at the top level only (``skaters``, ``races``, ``events`` are
lists of objects): their rules depend on the race kind and live in
:func:`icetime.startlist.validate_startlist`, which a ``startlist`` input runs.
"""
from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, get_args

import msgspec
import msgspec.inspect as mi
from msgspec import UNSET, Meta, Struct, UnsetType

from icetime.startlist import MarathonRace, StartListError, validate_startlist

#: A passing time must be a plausible µs count on some clock (0 .. year 2200 in µs).
MAX_TIME_US = 7_258_118_400_000_000
#: A race time (official finish time, manual time) is under a day.
MAX_RACE_TIME_US = 24 * 3600 * 10**6
MAX_SEQ = 2**53
MAX_PAIR = 1000

# ---------------------------------------------------------------- field types
Seq = Annotated[int, Meta(ge=0, le=MAX_SEQ, description=(
    "The source's own sequence number; with the source, the idempotency key."))]
TimeUs = Annotated[int, Meta(ge=0, le=MAX_TIME_US, description="µs on the source's clock")]
RaceTimeUs = Annotated[int, Meta(ge=1, le=MAX_RACE_TIME_US, description="race time, µs")]
Pair = Annotated[int, Meta(ge=1, le=MAX_PAIR)]
Wave = Annotated[int, Meta(ge=1, le=MAX_PAIR)]
#: A name (race id, bib, transponder, point). Integers are accepted and become strings.
Name = Annotated[str, Meta(min_length=1, max_length=64)] | int
Reason = Annotated[str, Meta(min_length=1, max_length=200)] | int
FinishOrigin = Literal["photo", "beam", "manual"]
Action = Literal["void", "manual_time", "dq", "dns", "dnf", "reinstate", "restart",
                 "official", "pen", "yc", "rc", "adv", "reassign"]

#: The fields each decision action needs (docs/protocol.md, decision). ``restart`` names
#: the pair in a pair race (a pack race restarts as a whole); ``official`` makes World Cup
#: points count; ``pen``, ``yc``, ``rc``, ``adv`` are short-track referee decisions.
DECISIONS: dict[str, tuple[str, ...]] = {
    "void": ("target",),
    "manual_time": ("bib", "time_us"),
    "dq": ("bib",), "dns": ("bib",), "dnf": ("bib",), "reinstate": ("bib",),
    "restart": (),
    "official": (),
    "pen": ("bib",), "yc": ("bib",), "rc": ("bib",), "adv": ("bib",),
    "reassign": ("transponder", "bib"),
}
assert set(DECISIONS) == set(get_args(Action))


# ---------------------------------------------------------------- feed inputs
class _Input(Struct, tag_field="type", forbid_unknown_fields=True, kw_only=True):
    seq: Seq | None = None
    session: Annotated[Name | None, Meta(description=(
        "The source's numbering this seq belongs to (a decoder's boot, a replay run); "
        "with source and seq, the idempotency key."))] = None
    sent_us: Annotated[TimeUs | None, Meta(
        description="When the source sent it (its clock), for latency stamps.")] = None
    source: Annotated[str | None, Meta(description=(
        "Stamped by ingest with the authenticated source; an input naming another "
        "source is refused."))] = None
    rx_us: Annotated[int | None, Meta(description=(
        "Stamped by ingest: when it received the input (host clock, µs)."))] = None

    #: Fields typed :data:`Name`: an integer sent there is stored as its string.
    _names: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        if isinstance(self.session, int):
            self.session = str(self.session)
        for name in self._names:
            if isinstance(getattr(self, name), int):
                setattr(self, name, str(getattr(self, name)))


#: The fields ingest stamps on an input; a sender has no need to know them.
_STAMPED = ("source", "rx_us")
#: The fields every input has (stamps and keys), as opposed to its own.
_INPUT_FIELDS = frozenset(_Input.__struct_fields__)


class Passing(_Input, tag="passing"):
    """A transponder crossed a loop. Only `finish` passings are official passages; other
    points are splits at extra loops, or stored and counted."""

    transponder: Name
    t: TimeUs
    point: Annotated[Name | None, Meta(description=(
        "The loop; `finish` unless given (`null` counts as not given)."))] = "finish"
    transponder_alias: Annotated[Name | None, Meta(description=(
        "Another id the same chip reported in the same read (a ProChip's number beside "
        "its code): the start list may name the chip either way."))] = None
    _names = ("transponder", "point", "transponder_alias")

    def __post_init__(self) -> None:
        if self.point is None:
            self.point = "finish"
        super().__post_init__()


class Gun(_Input, tag="gun"):
    """The start of a pair (or of a pack race, or of a marathon's wave); its `t` is
    race-time zero. Without `race` and `pair` it starts what was last called to the
    start."""

    t: TimeUs
    race: Name | None = None
    pair: Pair | None = None
    wave: Annotated[Wave | None, Meta(description=(
        "marathon: the start wave this gun starts"))] = None
    rate: Annotated[float, Meta(gt=0, le=1000, description=(
        "How fast the race clock runs against the wall clock (replays only; default 1)."))
    ] | None = None
    _names = ("race",)

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("pair", "wave"):
            if getattr(self, name) is not None and self.race is None:
                raise ValueError(f"a gun that names a '{name}' names its 'race' too")


class Clock(_Input, tag="clock"):
    """This source's clock offset, measured: from this input on its times are
    `t + offset_us` on the common clock."""

    offset_us: Annotated[int, Meta(ge=-MAX_TIME_US, le=MAX_TIME_US)]
    rtt_us: Annotated[int, Meta(ge=0, le=60 * 10**6, description=(
        "The measurement's round trip: the offset is good to half of it."))] | None = None


class Call(_Input, tag="call"):
    """An official calls a pair (or a pack race) to the start: the next gun without a
    race starts it."""

    race: Name
    pair: Pair | None = None
    _names = ("race",)


class FinishTime(_Input, tag="finish_time"):
    """An official finish time from photo finish or a finish beam, as race time."""

    race: Name
    bib: Name
    time_us: RaceTimeUs
    origin: Annotated[FinishOrigin | None, Meta(description=(
        "Where the time comes from; `photo` unless given (`null` counts as not given)."))
    ] = "photo"
    _names = ("race", "bib")

    def __post_init__(self) -> None:
        if self.origin is None:
            self.origin = "photo"
        super().__post_init__()


class Decision(_Input, tag="decision"):
    """An official's decision; the race is recomputed from its inputs. Each `action`
    needs its own fields (void: target; manual_time: bib, time_us; dq, dns, dnf,
    reinstate, pen, yc, rc, adv: bib; reassign: transponder, bib); fields an action
    does not use are dropped."""

    race: Name
    action: Action
    target: Annotated[Name | None, Meta(
        description="void: the raw stream id of the input that no longer counts")] = None
    bib: Annotated[Name | None, Meta(
        description="the skater, or in a team event the team (id or any of its skaters)")
    ] = None
    time_us: RaceTimeUs | None = None
    pair: Annotated[Pair | None, Meta(description="restart: the pair (pair races)")] = None
    m: Annotated[int, Meta(ge=1, le=100_000, description=(
        "manual_time: the passage's metres (default the finish)"))] | None = None
    reason: Reason | None = None
    transponder: Annotated[Name | None, Meta(description=(
        "reassign: the chip (as a decoder or the start list writes it) whose passings, "
        "past and future, are the skater `bib`'s"))] = None
    _names = ("race", "target", "bib", "reason", "transponder")

    def __post_init__(self) -> None:
        super().__post_init__()
        need = DECISIONS[self.action]
        missing = [f"'{n}'" for n in need if getattr(self, n) is None]
        if missing:
            raise ValueError(f"a '{self.action}' decision needs {' and '.join(missing)}")
        keep = {*need, *(("pair",) if self.action == "restart" else ())}
        for name in ("target", "bib", "time_us", "pair", "transponder"):
            if name not in keep:
                setattr(self, name, None)


class StartList(_Input, tag="startlist"):
    """A start list (docs/startlist.md), checked whole before anything changes."""

    competition: dict[str, Any] | None = None
    skaters: list[dict[str, Any]] | None = None
    races: list[dict[str, Any]] | None = None
    events: Annotated[list[dict[str, Any]] | None, Meta(
        description="short-track events in rounds")] = None
    standings_before: Annotated[dict[str, dict[str, int]] | None, Meta(
        description="World Cup: the season so far, {cup: {bib: points}}")] = None

    def __post_init__(self) -> None:
        # The start list itself, without what every input carries (seq, source, ...).
        doc = {k: v for k, v in msgspec.structs.asdict(self).items()
               if v is not None and k not in _INPUT_FIELDS}
        try:
            validate_startlist(doc)
        except StartListError as exc:
            raise ValueError(f"start list: {exc}") from None


#: Every input a source may send (docs/protocol.md §1), tagged on ``type``.
FeedInput = Passing | Gun | Clock | Call | FinishTime | Decision | StartList
INPUT_TYPES: dict[str, type[_Input]] = {
    t.__struct_config__.tag: t for t in get_args(FeedInput)}
_INPUT_DECODER = msgspec.json.Decoder(FeedInput)


def decode_input(line: bytes | str) -> FeedInput:
    """One JSON line straight into its input type.

    Raises ``msgspec.DecodeError`` (not JSON) or its subclass ``msgspec.ValidationError``
    (JSON, but not a valid input; :func:`explain` words it for a person).
    """
    return _INPUT_DECODER.decode(line)


def convert_input(obj: Any) -> FeedInput:
    """An already parsed object into its input type; raises ``msgspec.ValidationError``."""
    out: FeedInput = msgspec.convert(obj, FeedInput)
    return out


def stored(inp: FeedInput) -> dict[str, Any]:
    """The input as the raw stream keeps it: a plain dict with absent fields left out
    (ingest packs it with msgpack; :func:`decode_stored` reads it back)."""
    return {k: v for k, v in msgspec.to_builtins(inp).items() if v is not None}


_STORED_DECODER = msgspec.msgpack.Decoder(FeedInput)


def decode_stored(data: bytes) -> FeedInput:
    """A raw stream entry's msgpack bytes (:func:`stored`, packed) back into its input
    type, checked as ingest checked it.

    Raises ``msgspec.DecodeError`` (not msgpack) or its subclass
    ``msgspec.ValidationError`` (not a valid input).
    """
    return _STORED_DECODER.decode(data)


# ---------------------------------------------------------------- errors, in words
_AT = re.compile(r"^(?P<detail>.*) - at `\$(?P<path>.*)`$", re.S)
_FIELD = re.compile(r"`([^`]*)`")


def _kinds() -> str:
    names = list(INPUT_TYPES)
    return f"{', '.join(names[:-1])} or {names[-1]}"


def _json(value: Any) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _interval(t: mi.IntType | mi.FloatType) -> str:
    lo = f"[{t.ge}" if t.ge is not None else f"({t.gt}" if t.gt is not None else "(-inf"
    hi = f"{t.le}]" if t.le is not None else f"{t.lt})" if t.lt is not None else "inf)"
    return f"{lo}, {hi}"


def _plain(typ: mi.Type) -> mi.Type:
    while isinstance(typ, mi.Metadata):  # descriptions wrap the type
        typ = typ.type
    return typ


def _field_message(name: str, typ: mi.Type, value: Any, detail: str) -> str:
    """Say what field ``name`` must be, from its declared type."""
    typ = _plain(typ)
    members = [_plain(m) for m in (typ.types if isinstance(typ, mi.UnionType) else (typ,))]
    members = [m for m in members if not isinstance(m, mi.NoneType)]
    for m in members:
        if isinstance(m, mi.StrType):
            size = f"at most {m.max_length} characters" if m.max_length else "any length"
            return f"'{name}' must be a non-empty string of {size}"
    for m in members:
        if isinstance(m, mi.LiteralType):
            return (f"'{name}' must be one of {', '.join(map(str, m.values))}, "
                    f"got {_json(value)}")
        if isinstance(m, mi.IntType):
            if isinstance(value, int) and not isinstance(value, bool):
                return f"'{name}' out of range {_interval(m)}: {value}"
            return f"'{name}' must be an integer, got {_json(value)}"
        if isinstance(m, mi.FloatType):
            return f"'{name}' must be a number in {_interval(m)}"
        if isinstance(m, mi.ListType):
            return f"'{name}' must be a list"
        if isinstance(m, mi.DictType):
            return f"'{name}' must be an object"
    return f"'{name}': {detail}"


def explain(err: msgspec.ValidationError, obj: Any) -> str:
    """A feed input's validation error in words for the person at the other end of the
    cable, naming the field: ``'t' out of range [0, 7258118400000000]: -5``.

    ``obj`` is the input as parsed JSON (for the offending value and the input type).
    """
    msg = str(err)
    if not isinstance(obj, dict):
        return "an input must be a JSON object"
    kind = obj.get("type")
    cls = INPUT_TYPES.get(kind) if isinstance(kind, str) else None
    at = _AT.match(msg)
    if at is None:
        quoted = _FIELD.findall(msg)
        if msg.startswith("Object missing required field") and quoted:
            if quoted[0] == "type":
                return f"an input needs a 'type': one of {_kinds()}"
            return f"'{quoted[0]}' is required in a {kind} input"
        if msg.startswith("Object contains unknown field") and quoted and cls is not None:
            known = [f.name for f in mi.type_info(cls).fields  # type: ignore[attr-defined]
                     if f.name not in _STAMPED]  # ingest's to fill, not the sender's
            # No field name is long: comparing a 3 MB one with each takes seconds.
            close = difflib.get_close_matches(quoted[0], known, n=1) \
                if len(quoted[0]) <= 64 else []
            hint = f" (did you mean '{close[0]}'?)" if close else \
                f" (a {kind} has {', '.join(known)})"
            name = quoted[0] if len(quoted[0]) <= 64 else quoted[0][:61] + "..."
            return f"unknown field '{name}' in a {kind} input{hint}"
        return msg  # our own checks (__post_init__) already speak plainly
    detail, path = at["detail"], at["path"].lstrip(".")
    if path == "type":
        if kind is None:
            return f"an input needs a 'type': one of {_kinds()}"
        return f"unknown type {kind!r}: expected {_kinds()}"
    if cls is not None:
        fields = {f.name: f for f in mi.type_info(cls).fields}  # type: ignore[attr-defined]
        if path in fields:
            return _field_message(path, fields[path].type, obj.get(path), detail)
    return f"'{path}': {detail.replace('`', '')}"


# ---------------------------------------------------------------- race events
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


# ---------------------------------------------------------------- race views
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


# ---------------------------------------------------------------- JSON Schema
_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def schemas() -> dict[str, str]:
    """The JSON Schema files, by file name, as the text to write."""
    out = {}
    for name, roots, title, about in (
            ("feed-input.json", [FeedInput], "icetime feed input",
             "One input a source sends to ingest (docs/protocol.md §1), tagged on `type`."),
            ("race-event.json", [RaceEvent, *get_args(RaceView)], "icetime race event",
             "One event of a race stream (docs/protocol.md §2), tagged on `type`; "
             "a revision's `view` is one of the views in $defs, by `race.kind`."),
            ("startlist-marathon.json", [MarathonRace], "icetime marathon race",
             "One marathon entry of a start list's `races` (docs/startlist.md).")):
        (root, *_), defs = msgspec.json.schema_components(roots)
        doc = {"$schema": _SCHEMA_DIALECT, "title": title, "description": about,
               **root, "$defs": defs}
        out[name] = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m icetime.messages --write DIR`` writes the schemas; ``--check DIR``
    exits 1 if the files there differ from the types."""
    ap = argparse.ArgumentParser(prog="python -m icetime.messages",
                                 description="JSON Schemas of the feed inputs and race events")
    group = ap.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", metavar="DIR", type=Path)
    group.add_argument("--check", metavar="DIR", type=Path)
    args = ap.parse_args(argv)
    stale = []
    for name, text in schemas().items():
        if args.write:
            args.write.mkdir(parents=True, exist_ok=True)
            (args.write / name).write_text(text, encoding="utf-8")
            print(f"wrote {args.write / name}")
        else:
            path = args.check / name
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(str(path))
    if stale:
        print(f"out of date (run python -m icetime.messages --write {args.check}): "
              + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
