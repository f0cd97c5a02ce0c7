"""The competition rules (lap plans, points tables) from icetime/rules.toml, per season.

Pure data: the engine is handed a :class:`Rules` and never reads files itself.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_FILE = Path(__file__).with_name("rules.toml")


@dataclass(frozen=True)
class MassStartPoints:
    intermediate: tuple[int, ...]
    final: tuple[int, ...]


@dataclass(frozen=True)
class Rules:
    raw: dict[str, Any] = field(default_factory=dict)

    def short_track_laps(self, distance: int) -> float:
        return self._laps("laps", "short-track", distance)

    def relay_laps(self, distance: int) -> float:
        return self._laps("relay_laps", "relay", distance)

    def _laps(self, plan: str, what: str, distance: int) -> float:
        laps = self.raw["short_track"][plan].get(str(distance))
        if laps is None:
            known = ", ".join(self.raw["short_track"][plan])
            raise ValueError(f"no {what} lap plan for {distance} m (known: {known})")
        return float(laps)

    @property
    def short_track_lap_m(self) -> float:
        return float(self.raw["short_track"]["lap_m"])

    @property
    def mass_start_laps(self) -> int:
        return int(self.raw["mass_start"]["laps"])

    @property
    def mass_start_lap_m(self) -> float:
        return float(self.raw["mass_start"]["lap_m"])

    @property
    def sprint_laps(self) -> tuple[int, ...]:
        return tuple(int(x) for x in self.raw["mass_start"]["sprint_laps"])

    def world_cup_points(self, season: str | None, table: str) -> tuple[int, ...]:
        """World Cup points per rank from ``table`` (``long_track_a``, ``short_track``...)
        in the season's entry."""
        chosen = _in_force(self.raw["world_cup"]["points"], season)
        if table not in chosen:
            known = ", ".join(k for k in chosen if k != "since")
            raise ValueError(f"no World Cup points table {table!r} (known: {known})")
        return tuple(int(x) for x in chosen[table])

    def mass_start_points(self, season: str | None) -> MassStartPoints:
        """The table in force in ``season`` ("2022-23"); the newest if none is given."""
        chosen = _in_force(self.raw["mass_start"]["points"], season)
        return MassStartPoints(tuple(chosen["intermediate"]), tuple(chosen["final"]))


def _in_force(tables: list[dict[str, Any]], season: str | None) -> dict[str, Any]:
    """The entry in force in ``season`` (the newest if None): the latest ``since`` <= it."""
    ordered = sorted(tables, key=lambda t: t["since"])
    if season is None:
        return ordered[-1]
    fitting = [t for t in ordered if t["since"] <= season]
    if not fitting:
        raise ValueError(f"no table in force in season {season}")
    return fitting[-1]


def load(path: str | Path | None = None) -> Rules:
    with open(path or DEFAULT_FILE, "rb") as f:
        return Rules(tomllib.load(f))
