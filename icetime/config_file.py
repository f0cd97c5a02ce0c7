"""The configuration file's shape (docs/configuration.md), and how a file that does not
fit it is told.

Every table of the TOML file is a msgspec Struct that forbids unknown keys and bounds
every value (:class:`VenueFile`); a value that does not fit is told as one line naming
the key (:func:`explain`), e.g. ``unknown key 'broadcast.htp_port'``. The sources'
roles (docs/configuration.md, "Roles") are here too. Reading the file, the checks a
type cannot say and the environment overrides are :mod:`icetime.settings`'.
"""
from __future__ import annotations

import re
from typing import Annotated, Any, Literal, get_args

import msgspec
from msgspec import Meta, Struct

from icetime import keys

DEFAULT_DATA_DIR = ".icetime/data"
#: The ``[[decoders]] protocol`` values: one link class each (services/ingest/decoders/link.py).
Protocol = Literal["p3", "amb_ascii", "protime", "protime_udp"]
PROTOCOLS: tuple[str, ...] = get_args(Protocol)
#: Redis's ``appendfsync`` policies.
AppendFsync = Literal["always", "everysec", "no"]
#: A port icetime listens on; 0 asks the system for a free one.
ListenPort = Annotated[int, Meta(ge=0, le=65535)]
#: A port icetime connects to (or, for protime_udp, a decoder sends to).
RemotePort = Annotated[int, Meta(ge=1, le=65535)]
Name = Annotated[str, Meta(min_length=1)]


class ConfigError(ValueError):
    """A configuration icetime cannot run with; the message is one line naming the
    file (or environment variable) and the key."""


#: What a token may send (docs/configuration.md, "Roles"): its input types.
Role = Literal["decoder", "gun", "photo", "referee", "loader", "admin"]
ROLES: tuple[str, ...] = get_args(Role)
#: The feed input types (``type``) each role may send. ``admin`` may send all of them;
#: a source with no role is an admin too (configurations written before roles), and
#: ingest warns about it at start.
ROLE_INPUTS: dict[str, frozenset[str]] = {
    "decoder": frozenset({"passing", "clock"}),
    "gun": frozenset({"gun", "call"}),
    "photo": frozenset({"finish_time"}),
    # The chief referee keys in the photo-finish time read off the image, too.
    "referee": frozenset({"decision", "call", "finish_time"}),
    "loader": frozenset({"startlist"}),
    "admin": frozenset({"passing", "clock", "gun", "call", "finish_time", "decision",
                        "startlist"}),
}
#: The roles that may open the officials' desk (/desk and its /api/desk endpoints).
DESK_ROLES = frozenset({"referee", "admin"})


class Source(Struct, frozen=True, forbid_unknown_fields=True):
    """A timing source allowed to feed ingest: a decoder, the gun, photo finish, an official."""

    id: Name
    token: Name
    #: Added to the source's times (µs) to map its clock onto the common race clock.
    offset_us: int = 0
    #: What its token may send; None (not given): everything, as ``admin``.
    role: Role | None = None

    @property
    def effective_role(self) -> str:
        """The role that applies: ``role``, or ``admin`` when none is given."""
        return self.role or "admin"

    def may_send(self, input_type: str) -> bool:
        """Whether this source's token may send inputs of ``type`` ``input_type``."""
        return input_type in ROLE_INPUTS[self.effective_role]


class Decoder(Struct, frozen=True, forbid_unknown_fields=True):
    """A timing decoder icetime connects to (P3 on TCP 5403)."""

    id: Name  # the source id its passings carry
    host: Name
    port: RemotePort = 5403
    protocol: Protocol = "p3"
    #: The timing point of its loop ("finish" is the official line).
    point: Name = "finish"
    #: Added to the decoder's times (µs) to reach the common clock.
    offset_us: int = 0
    #: Pseudo-transponders that are the start gun on this decoder (ProChip: 9991/9992/9995).
    gun_transponders: tuple[Name, ...] = ()
    #: Measure the decoder's clock with GET_TIME and put its passings on the host clock.
    sync_clock: bool = False
    #: The decoder's times are times of day (24 h, then 0 again): put each on its day.
    #: None: as the protocol has it (Protime yes; AMB ASCII and P3 no).
    time_of_day: bool | None = None


class _Section(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class _Redis(_Section, frozen=True):
    url: str = ""
    data_dir: Name = DEFAULT_DATA_DIR
    appendfsync: AppendFsync = "everysec"


class _Ingest(_Section, frozen=True):
    http_port: ListenPort = 8090
    tcp_port: ListenPort = 5410


class _Broadcast(_Section, frozen=True):
    http_port: ListenPort = 8080
    ws_port: ListenPort = 8081
    public_ws_url: str = ""
    client_queue_max: Annotated[int, Meta(ge=1)] = 512
    client_buffer_max: Annotated[int, Meta(ge=1)] = 256 * 1024
    client_subscriptions_max: Annotated[int, Meta(ge=1)] = 64
    client_subscribe_rate: Annotated[float, Meta(gt=0)] = 10.0
    ping_interval_s: Annotated[float, Meta(gt=0)] = 20.0
    ping_timeout_s: Annotated[float, Meta(gt=0)] = 20.0
    #: The RMonitor scoreboard feed (TCP); 50000 is where scoreboards look by default.
    rmonitor_port: ListenPort = 50000
    rmonitor_race: str = ""
    results_max_age_s: Annotated[int, Meta(ge=0, le=3600)] = 2


class _Scoring(_Section, frozen=True):
    #: The health and readiness listener (/healthz, /api/ready); not given: none.
    http_port: ListenPort | None = None
    max_speed_mps: Annotated[float, Meta(gt=0)] = 20.0
    loops: dict[Name, int] = {}
    checkpoint_every: Annotated[int, Meta(ge=1)] = 10_000
    #: ``"*"``: score any competition of the registry; not given: ``competition.id``.
    competitions: str | msgspec.UnsetType = msgspec.UNSET


class _Rules(_Section, frozen=True):
    file: str = ""


class _Relay(_Section, frozen=True):
    #: The cloud Redis the relay mirrors the venue's races to; empty: no relay.
    cloud_url: str = ""
    http_port: ListenPort = 8070


class _Competition(_Section, frozen=True):
    id: str = keys.DEFAULT_COMPETITION
    startlists: tuple[Name, ...] = ()
    loader: Name | msgspec.UnsetType = msgspec.UNSET


class VenueFile(_Section, frozen=True):
    host: Name = "127.0.0.1"
    redis: _Redis = msgspec.field(default_factory=_Redis)
    ingest: _Ingest = msgspec.field(default_factory=_Ingest)
    broadcast: _Broadcast = msgspec.field(default_factory=_Broadcast)
    scoring: _Scoring = msgspec.field(default_factory=_Scoring)
    rules: _Rules = msgspec.field(default_factory=_Rules)
    relay: _Relay = msgspec.field(default_factory=_Relay)
    competition: _Competition = msgspec.field(default_factory=_Competition)
    sources: tuple[Source, ...] = ()
    decoders: tuple[Decoder, ...] = ()


_MSGSPEC = re.compile(r"^(?P<what>.*?)(?: - at `\$(?P<at>[^`]*)`)?$")
_FIELD = re.compile(r"`([^`]*)`")
_EXPECTED = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false",
             "array": "a list", "object": "a table", "null": "nothing"}


def explain(exc: msgspec.ValidationError, raw: dict[str, Any]) -> str:
    """msgspec's ``Object contains unknown field `htp_port` - at `$.broadcast``` as
    ``unknown key 'broadcast.htp_port'``, the other failures as ``key: problem``."""
    m = _MSGSPEC.match(str(exc))
    assert m is not None  # the pattern matches any text
    what, at = m["what"], (m["at"] or "").lstrip(".")
    named = _FIELD.search(what)
    if what.startswith("Object contains unknown field") and named:
        return f"unknown key {_join(at, named[1])!r}"
    if what.startswith("Object missing required field") and named:
        return f"missing key {_join(at, named[1])!r}"
    key = at or "the file"
    got = _lookup(raw, at)
    if what.startswith("Invalid enum value"):
        allowed = _allowed(at)
        return f"{key}: {got!r} is not allowed" + (f" (allowed: {allowed})" if allowed else "")
    for name, words in _EXPECTED.items():
        what = what.replace(f"`{name}`", words)
    what = (what.replace("Expected a string of length >= 1", "must not be empty")
            .replace("Expected", "expected"))
    plain = got is _MISSING or "got" in what or what.startswith("must")
    shown = "" if plain else f", got {got!r}"
    return f"{key}: {what}{shown}"


_MISSING = object()


def _join(at: str, name: str) -> str:
    return f"{at}.{name}" if at else name


def _lookup(raw: Any, at: str) -> Any:
    """The value at a msgspec path (``decoders[0].port``) in the raw TOML."""
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", at):
        try:
            raw = raw[int(part[1:-1])] if part.startswith("[") else raw[part]
        except (KeyError, IndexError, TypeError, ValueError):
            return _MISSING
    return raw


def _allowed(at: str) -> str:
    leaf = re.sub(r"\[\d+\]", "", at).rsplit(".", 1)[-1]
    values = {"protocol": PROTOCOLS, "appendfsync": get_args(AppendFsync),
              "role": ROLES}.get(leaf, ())
    return ", ".join(values)
