"""Configuration: a TOML file (docs/configuration.md) plus environment overrides.

``REDIS_URL`` in the environment wins over the file; with neither, icetime runs
its own embedded redis-server in ``data_dir``.
"""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_DATA_DIR = ".icetime/data"


@dataclass(frozen=True)
class Source:
    """A timing source allowed to feed ingest: a decoder, the gun, photo finish, an official."""

    id: str
    token: str
    #: Added to the source's times to map its clock onto the common race clock.
    offset_us: int = 0


@dataclass(frozen=True)
class Decoder:
    """A timing decoder icetime connects to (P3 on TCP 5403)."""

    id: str  # the source id its passings carry
    host: str
    port: int = 5403
    protocol: str = "p3"
    #: The timing point of its loop ("finish" is the official line).
    point: str = "finish"
    offset_us: int = 0
    #: Pseudo-transponders that are the start gun on this decoder (ProChip: 9991/9992/9995).
    gun_transponders: tuple[str, ...] = ()
    #: Measure the decoder's clock with GET_TIME and put its passings on the host clock.
    sync_clock: bool = False


@dataclass(frozen=True)
class Settings:
    redis_url: str = ""
    data_dir: str = DEFAULT_DATA_DIR
    aof_fsync: str = "everysec"
    host: str = "127.0.0.1"
    ingest_http_port: int = 8090
    ingest_tcp_port: int = 5410
    broadcast_http_port: int = 8080
    broadcast_ws_port: int = 8081
    #: Public WebSocket URL given to pages; empty means "same host, ws port".
    public_ws_url: str = ""
    sources: tuple[Source, ...] = ()
    decoders: tuple[Decoder, ...] = ()
    #: Start lists (competition files) loaded when ``icetime run`` starts.
    startlists: tuple[str, ...] = ()
    #: Fastest plausible skater speed; a passing sooner than segment/speed after
    #: the previous one is a re-read, not a passage (the minimum-lap debounce).
    max_speed_mps: float = 20.0
    #: Extra loops in the ice for unofficial splits: point id -> metres past the finish line.
    loops: dict[str, int] = field(default_factory=dict)
    #: The rules file (lap plans, points tables); empty: the one icetime ships.
    rules_file: str = ""
    #: Frames queued for a client that is catching up before it is given a fresh snapshot.
    client_queue_max: int = 512
    #: Unsent bytes a live client may have before it leaves the live path (latest state wins).
    client_buffer_max: int = 256 * 1024
    extra: dict[str, Any] = field(default_factory=dict)

    def source(self, source_id: str) -> Source | None:
        for s in self.sources:
            if s.id == source_id:
                return s
        return None

    def source_offsets(self) -> dict[str, int]:
        return {**{s.id: s.offset_us for s in self.sources},
                **{d.id: d.offset_us for d in self.decoders}}


def _rules_file(name: str, base: Path) -> str:
    if not name:
        return ""
    return name if Path(name).is_absolute() else str((base / name).resolve())


def load(path: str | os.PathLike[str] | None = None) -> Settings:
    """Read settings from ``path`` (or ``$ICETIME_CONFIG``), then apply env overrides."""
    raw: dict[str, Any] = {}
    path = path or os.environ.get("ICETIME_CONFIG")
    base = Path(".")
    if path:
        p = Path(path)
        raw = tomllib.loads(p.read_text())
        base = p.parent
    redis = raw.get("redis", {})
    ingest = raw.get("ingest", {})
    broadcast = raw.get("broadcast", {})
    scoring = raw.get("scoring", {})
    sources = tuple(
        Source(id=str(s["id"]), token=str(s["token"]), offset_us=int(s.get("offset_us", 0)))
        for s in raw.get("sources", [])
    )
    decoders = tuple(
        Decoder(id=str(d["id"]), host=str(d["host"]), port=int(d.get("port", 5403)),
                protocol=str(d.get("protocol", "p3")), point=str(d.get("point", "finish")),
                offset_us=int(d.get("offset_us", 0)),
                gun_transponders=tuple(str(g) for g in d.get("gun_transponders", ())),
                sync_clock=bool(d.get("sync_clock", False)))
        for d in raw.get("decoders", []))
    data_dir = os.environ.get("ICETIME_DATA", redis.get("data_dir", DEFAULT_DATA_DIR))
    if not Path(data_dir).is_absolute():
        data_dir = str((base / data_dir).resolve())  # relative to the configuration file
    startlists = tuple(
        str((base / s).resolve()) if not Path(s).is_absolute() else s
        for s in raw.get("competition", {}).get("startlists", [])
    )
    return Settings(
        redis_url=os.environ.get("REDIS_URL", redis.get("url", "")),
        data_dir=data_dir,
        aof_fsync=redis.get("appendfsync", "everysec"),
        host=raw.get("host", "127.0.0.1"),
        ingest_http_port=int(ingest.get("http_port", 8090)),
        ingest_tcp_port=int(ingest.get("tcp_port", 5410)),
        broadcast_http_port=int(broadcast.get("http_port", 8080)),
        broadcast_ws_port=int(broadcast.get("ws_port", 8081)),
        public_ws_url=str(broadcast.get("public_ws_url", "")),
        sources=sources,
        decoders=decoders,
        startlists=startlists,
        max_speed_mps=float(scoring.get("max_speed_mps", 20.0)),
        loops={str(k): int(v) for k, v in scoring.get("loops", {}).items()},
        rules_file=_rules_file(raw.get("rules", {}).get("file", ""), base),
        client_queue_max=int(broadcast.get("client_queue_max", 512)),
        client_buffer_max=int(broadcast.get("client_buffer_max", 256 * 1024)),
        extra=raw,
    )
