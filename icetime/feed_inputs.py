"""The feed inputs: what a source sends to ingest (docs/protocol.md §1), as the tagged
union :data:`FeedInput` on ``type``: ``passing``, ``gun``, ``clock``, ``call``,
``finish_time``, ``decision``, ``startlist``. Ingest decodes each line straight into
it; that is the whole validation (ranges, enums, required fields, unknown fields
refused so that a typo is named, not ignored), and a refusal says what is wrong in
words (:func:`explain`).

An input's optional field is ``None`` when absent, and ingest stores no key for it
(:func:`stored`).

Start lists are typed at the top level only (``skaters``, ``races``, ``events`` are
lists of objects): their rules depend on the race kind and live in
:func:`icetime.startlist.validate_startlist`, which a ``startlist`` input runs.

The JSON Schema ``docs/schema/feed-input.json`` is generated from these types
(:mod:`icetime.messages`).
"""
from __future__ import annotations

import difflib
import json
import re
from typing import Annotated, Any, ClassVar, Literal, get_args

import msgspec
import msgspec.inspect as mi
from msgspec import Meta, Struct

from icetime.startlist import StartListError, validate_startlist

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
