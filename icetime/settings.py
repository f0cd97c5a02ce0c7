"""Configuration: a TOML file (docs/configuration.md) plus environment overrides.

The file is decoded into msgspec Structs that forbid unknown keys and bound every
value; the checks a type cannot say (unique source ids and tokens, a decoder whose id
is a source's, two listeners on one port, files that are not there) follow. Anything
wrong raises :class:`ConfigError` naming the file and the key, e.g.
``venue.toml: unknown key 'broadcast.htp_port'``.

Relative paths in the file (``redis.data_dir``, ``competition.startlists``,
``rules.file``) are relative to the file's folder. The environment wins over the file:
``ICETIME_CONFIG`` (the file, when no path is given), ``REDIS_URL``,
``ICETIME_CLOUD_URL`` (the relay's cloud Redis), ``ICETIME_DATA`` (relative to the
working directory); ``ICETIME_LOG`` is read by :mod:`icetime.logs`.
With no Redis URL, icetime runs its own embedded redis-server in ``data_dir``.
"""
from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from icetime import keys
from icetime.config_file import DEFAULT_DATA_DIR, explain

# The file's shape is defined in icetime.config_file; the services import these from here.
from icetime.config_file import DESK_ROLES as DESK_ROLES
from icetime.config_file import PROTOCOLS as PROTOCOLS
from icetime.config_file import ROLE_INPUTS as ROLE_INPUTS
from icetime.config_file import ConfigError as ConfigError
from icetime.config_file import Decoder as Decoder
from icetime.config_file import Source as Source
from icetime.config_file import VenueFile as _VenueFile

#: An extra loop lies this many metres or fewer past the finish line (the 400 m lap).
LOOP_MAX_M = 399
#: A ``redis+cluster://`` (or ``rediss+cluster://``) URL names one node of a Redis Cluster.
REDIS_SCHEMES = ("redis://", "rediss://", "unix://", "redis+cluster://", "rediss+cluster://")
WS_SCHEMES = ("ws://", "wss://")


@dataclass(frozen=True)
class Settings:
    """Everything a service or the supervisor reads; paths are absolute after :func:`load`."""

    redis_url: str = ""
    data_dir: str = DEFAULT_DATA_DIR
    aof_fsync: str = "everysec"
    host: str = "127.0.0.1"
    ingest_http_port: int = 8090
    ingest_tcp_port: int = 5410
    broadcast_http_port: int = 8080
    broadcast_ws_port: int = 8081
    #: The RMonitor scoreboard feed's TCP port (docs/results.md).
    broadcast_rmonitor_port: int = 50000
    #: The race the RMonitor feed shows; empty: the race with the latest event.
    rmonitor_race: str = ""
    #: Cache-Control max-age of the results API's answers, seconds.
    results_max_age_s: int = 2
    #: Public WebSocket URL given to pages: a ``ws://``/``wss://`` URL, or a path (``/ws``)
    #: on the host the page came from; empty means "same host, ws port".
    public_ws_url: str = ""
    sources: tuple[Source, ...] = ()
    decoders: tuple[Decoder, ...] = ()
    #: Start lists (competition files) loaded when ``icetime run`` starts.
    startlists: tuple[str, ...] = ()
    #: The source whose token loads them; empty: "officials" if there is one, else the first.
    startlist_loader: str = ""
    #: Fastest plausible skater speed; a passing sooner than segment/speed after
    #: the previous one is a re-read, not a passage (the minimum-lap debounce).
    max_speed_mps: float = 20.0
    #: Extra loops in the ice for unofficial splits: point id -> metres past the finish line.
    loops: dict[str, int] = field(default_factory=dict)
    #: The rules file (lap plans, points tables); empty: the one icetime ships.
    rules_file: str = ""
    #: Inputs between two scoring checkpoints (at least; a slow checkpoint waits longer).
    checkpoint_every: int = 10_000
    #: Scoring's health and readiness listener; None: scoring listens on nothing.
    scoring_http_port: int | None = None
    #: The worker scores any competition in the registry (``scoring.competitions = "*"``,
    #: ``--any-competition``; services/scoring/pool.py), not only ``competition_id``.
    scoring_any_competition: bool = False
    #: The cloud Redis the relay mirrors to (docs/cloud.md); empty: no relay runs.
    relay_cloud_url: str = ""
    #: The relay's health and readiness listener.
    relay_http_port: int = 8070
    #: Frames queued for a client that is catching up before it is given a fresh snapshot.
    client_queue_max: int = 512
    #: Unsent bytes a live client may have before it leaves the live path (latest state wins).
    client_buffer_max: int = 256 * 1024
    #: Races one WebSocket connection may follow at once.
    client_subscriptions_max: int = 64
    #: Subscribes per second a connection may send, in the long run (a token bucket
    #: holding ``client_subscriptions_max`` tokens, so a page may subscribe to its
    #: whole allowance at once).
    client_subscribe_rate: float = 10.0
    #: How often the broadcast node pings each WebSocket client, seconds.
    ping_interval_s: float = 20.0
    #: How long a client may take to answer a ping before it is closed, seconds.
    ping_timeout_s: float = 20.0
    #: The file these settings came from (absolute), or "" for the defaults.
    config_file: str = ""
    #: The competition this configuration's services feed, score and show by default:
    #: part of every key of its data (icetime/keys.py).
    competition_id: str = keys.DEFAULT_COMPETITION

    def source(self, source_id: str) -> Source | None:
        for s in self.sources:
            if s.id == source_id:
                return s
        return None

    def loader(self) -> Source | None:
        """The source that loads the start lists: ``competition.loader``, else
        "officials" if its role may, else the first source whose role may (None: none)."""
        if self.startlist_loader:
            return self.source(self.startlist_loader)
        officials = self.source("officials")
        if officials is not None and officials.may_send("startlist"):
            return officials
        return next((s for s in self.sources if s.may_send("startlist")), None)

    def source_offsets(self) -> dict[str, int]:
        return {**{s.id: s.offset_us for s in self.sources},
                **{d.id: d.offset_us for d in self.decoders}}


def config_path(path: str | os.PathLike[str] | None = None) -> Path | None:
    """The configuration file: ``path``, else ``$ICETIME_CONFIG``, else None."""
    chosen = path or os.environ.get("ICETIME_CONFIG") or None
    return Path(chosen) if chosen else None


def load(path: str | os.PathLike[str] | None = None) -> Settings:
    """Read settings from ``path`` (or ``$ICETIME_CONFIG``; neither: the defaults), then
    apply the environment overrides.

    Raises :class:`ConfigError` (one line, naming the file and key) for a file that
    cannot be read, is not TOML, has an unknown key or an impossible value.
    """
    file = config_path(path)
    label = str(file) if file else "configuration"
    raw: dict[str, Any] = {}
    base = Path.cwd()
    if file is not None:
        try:
            raw = tomllib.loads(file.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{file}: no such file") from None
        except IsADirectoryError:
            raise ConfigError(f"{file}: is a folder, not a configuration file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{file}: cannot be read: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{file}: not valid TOML: {exc}") from None
        file = file.resolve()
        base = file.parent
    try:
        venue = msgspec.convert(raw, _VenueFile)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{label}: {explain(exc, raw)}") from None
    return _settings(venue, base, label, str(file or ""))


#: Makes the error naming a key: ``bad("scoring.loops.x", "why")``.
_Bad = Callable[[str, str], ConfigError]


def _is_path(url: str) -> bool:
    """``/ws``: a path on the host the page came from (``//host`` names a host)."""
    return url.startswith("/") and not url.startswith("//")


def _settings(venue: _VenueFile, base: Path, label: str, config_file: str) -> Settings:
    def bad(key: str, problem: str) -> ConfigError:
        return ConfigError(f"{label}: {key}: {problem}")

    _check_unique(venue, bad)
    url = _redis_url(venue, bad)
    ws_url = venue.broadcast.public_ws_url
    if ws_url and not (ws_url.startswith(WS_SCHEMES) or _is_path(ws_url)):
        raise bad("broadcast.public_ws_url", f"{ws_url!r} is not a WebSocket URL "
                  "(starts with ws:// or wss://) or a path on the pages' host (/ws)")
    _check_loops(venue, bad)
    if not keys.COMPETITION_ID.fullmatch(venue.competition.id):
        raise bad("competition.id", f"{venue.competition.id!r} is not a competition id "
                  "(1..64 letters, digits, '_', '.', '-', starting with a letter or digit)")
    startlists = _startlists(venue, base, bad)
    loader = venue.competition.loader
    rules_file = _path(venue.rules.file, base) if venue.rules.file else ""
    if rules_file:
        _check_rules(rules_file, bad)
    env_data = os.environ.get("ICETIME_DATA")
    data_dir = str(Path(env_data).resolve()) if env_data else _path(venue.redis.data_dir, base)
    return Settings(
        redis_url=url,
        data_dir=data_dir,
        aof_fsync=venue.redis.appendfsync,
        host=venue.host,
        ingest_http_port=venue.ingest.http_port,
        ingest_tcp_port=venue.ingest.tcp_port,
        broadcast_http_port=venue.broadcast.http_port,
        broadcast_ws_port=venue.broadcast.ws_port,
        broadcast_rmonitor_port=venue.broadcast.rmonitor_port,
        rmonitor_race=venue.broadcast.rmonitor_race,
        results_max_age_s=venue.broadcast.results_max_age_s,
        public_ws_url=ws_url,
        sources=venue.sources,
        decoders=venue.decoders,
        startlists=startlists,
        startlist_loader="" if loader is msgspec.UNSET else loader,
        max_speed_mps=venue.scoring.max_speed_mps,
        loops=dict(venue.scoring.loops),
        rules_file=rules_file,
        checkpoint_every=venue.scoring.checkpoint_every,
        scoring_http_port=venue.scoring.http_port,
        scoring_any_competition=_any_competition(venue, bad),
        relay_cloud_url=_cloud_url(venue, bad),
        relay_http_port=venue.relay.http_port,
        client_queue_max=venue.broadcast.client_queue_max,
        client_buffer_max=venue.broadcast.client_buffer_max,
        client_subscriptions_max=venue.broadcast.client_subscriptions_max,
        client_subscribe_rate=venue.broadcast.client_subscribe_rate,
        ping_interval_s=venue.broadcast.ping_interval_s,
        ping_timeout_s=venue.broadcast.ping_timeout_s,
        config_file=config_file,
        competition_id=venue.competition.id,
    )


def _redis_url(venue: _VenueFile, bad: _Bad) -> str:
    """The Redis URL: ``REDIS_URL``, else ``redis.url``; "" for the embedded server."""
    if venue.redis.url and not venue.redis.url.startswith(REDIS_SCHEMES):
        raise bad("redis.url", f"{venue.redis.url!r} is not a Redis URL "
                  f"(starts with {', '.join(REDIS_SCHEMES)})")
    url = os.environ.get("REDIS_URL") or venue.redis.url
    if not url.startswith(REDIS_SCHEMES) and url:
        raise ConfigError(f"REDIS_URL: {url!r} is not a Redis URL "
                          f"(starts with {', '.join(REDIS_SCHEMES)})")
    return url


def _cloud_url(venue: _VenueFile, bad: _Bad) -> str:
    """The relay's cloud Redis: ``ICETIME_CLOUD_URL``, else ``relay.cloud_url``; "": none."""
    if venue.relay.cloud_url and not venue.relay.cloud_url.startswith(REDIS_SCHEMES):
        raise bad("relay.cloud_url", f"{venue.relay.cloud_url!r} is not a Redis URL "
                  f"(starts with {', '.join(REDIS_SCHEMES)})")
    url = os.environ.get("ICETIME_CLOUD_URL") or venue.relay.cloud_url
    if url and not url.startswith(REDIS_SCHEMES):
        raise ConfigError(f"ICETIME_CLOUD_URL: {url!r} is not a Redis URL "
                          f"(starts with {', '.join(REDIS_SCHEMES)})")
    return url


#: ``scoring.competitions``: every competition in the registry.
ANY_COMPETITION = "*"


def _any_competition(venue: _VenueFile, bad: _Bad) -> bool:
    """Whether ``scoring.competitions`` is ``"*"``; anything else given is refused
    (a list of ids is not taken: workers with different lists could leave a
    competition nobody may take)."""
    value = venue.scoring.competitions
    if value is msgspec.UNSET:
        return False
    if value != ANY_COMPETITION:
        raise bad("scoring.competitions", f"{value!r} is not \"*\" (any competition in "
                  "the registry); leave the key out to score competition.id only")
    return True


def _check_loops(venue: _VenueFile, bad: _Bad) -> None:
    for point, metres in venue.scoring.loops.items():
        if point == "finish":
            raise bad("scoring.loops.finish", "the finish line is not an extra loop")
        if not 0 < metres <= LOOP_MAX_M:
            raise bad(f"scoring.loops.{point}", f"{metres} is not 1..{LOOP_MAX_M} metres "
                      "past the finish line")


def _startlists(venue: _VenueFile, base: Path, bad: _Bad) -> tuple[str, ...]:
    """The start-list files as absolute paths, once each exists and has a source to
    load it (``competition.loader``, else a source whose role may load start lists)."""
    startlists = tuple(_path(s, base) for s in venue.competition.startlists)
    for i, s in enumerate(startlists):
        if not Path(s).is_file():
            raise bad(f"competition.startlists[{i}]", f"no such file {s}")
    loader = venue.competition.loader
    if loader is not msgspec.UNSET:
        named = next((s for s in venue.sources if s.id == loader), None)
        if named is None:
            raise bad("competition.loader", f"no [[sources]] entry has id {loader!r}")
        if not named.may_send("startlist"):
            raise bad("competition.loader", f"source {loader!r} has role {named.role!r}, "
                      "which may not load start lists (loader or admin may)")
    if startlists and not any(s.may_send("startlist") for s in venue.sources):
        raise bad("competition.startlists", "loading them needs a [[sources]] entry whose "
                  "role is loader or admin")
    return startlists


def _path(name: str, base: Path) -> str:
    return str((base / name).resolve())  # an absolute ``name`` ignores ``base``


def _first_repeat(values: Iterable[str]) -> tuple[int, int] | None:
    """The indexes (first, repeat) of the first value seen twice; None if none is."""
    seen: dict[str, int] = {}
    for i, v in enumerate(values):
        if v in seen:
            return seen[v], i
        seen[v] = i
    return None


def _check_unique(venue: _VenueFile, bad: _Bad) -> None:
    """Source ids, tokens and decoder ids are each unique; no decoder has a source's
    id (its passings carry that id as their source); no two listeners share a port."""
    if rep := _first_repeat(s.id for s in venue.sources):
        raise bad(f"sources[{rep[1]}].id",
                  f"{venue.sources[rep[1]].id!r} is already sources[{rep[0]}].id")
    if rep := _first_repeat(s.token for s in venue.sources):
        # The token itself is a secret: name the entries, not the value.
        raise bad(f"sources[{rep[1]}].token", f"the same token as sources[{rep[0]}]; "
                  "a token must tell its source apart")
    if rep := _first_repeat(d.id for d in venue.decoders):
        raise bad(f"decoders[{rep[1]}].id",
                  f"{venue.decoders[rep[1]].id!r} is already decoders[{rep[0]}].id")
    source_ids = {s.id for s in venue.sources}
    for i, d in enumerate(venue.decoders):
        if d.id in source_ids:
            raise bad(f"decoders[{i}].id", f"{d.id!r} is also a [[sources]] id; a decoder's "
                      "passings carry its id as their source, so it must be its own")
    listeners = {"ingest.http_port": venue.ingest.http_port,
                 "ingest.tcp_port": venue.ingest.tcp_port,
                 "broadcast.http_port": venue.broadcast.http_port,
                 "broadcast.ws_port": venue.broadcast.ws_port,
                 "broadcast.rmonitor_port": venue.broadcast.rmonitor_port,
                 "scoring.http_port": venue.scoring.http_port or 0,
                 "relay.http_port": venue.relay.http_port if venue.relay.cloud_url else 0}
    taken: dict[int, str] = {}
    for key, port in listeners.items():
        if port and port in taken:
            raise bad(key, f"{port} is also {taken[port]}; each listener needs its own port")
        taken[port] = key


def _check_rules(path: str, bad: _Bad) -> None:
    try:
        with open(path, "rb") as f:
            tomllib.load(f)
    except FileNotFoundError:
        raise bad("rules.file", f"no such file {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise bad("rules.file", f"{path} cannot be read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise bad("rules.file", f"{path} is not valid TOML: {exc}") from None
