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
        laps = self.raw["short_track"]["laps"].get(str(distance))
        if laps is None:
            known = ", ".join(self.raw["short_track"]["laps"])
            raise ValueError(f"no short-track lap plan for {distance} m (known: {known})")
        return float(laps)

    def relay_laps(self, distance: int) -> float:
        laps = self.raw["short_track"]["relay_laps"].get(str(distance))
        if laps is None:
            known = ", ".join(self.raw["short_track"]["relay_laps"])
            raise ValueError(f"no relay lap plan for {distance} m (known: {known})")
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

    def mass_start_points(self, season: str | None) -> MassStartPoints:
        """The table in force in ``season`` ("2022-23"); the newest if none is given."""
        tables = sorted(self.raw["mass_start"]["points"], key=lambda t: t["since"])
        chosen = tables[-1] if season is None else None
        for t in tables:
            if season is not None and t["since"] <= season:
                chosen = t
        if chosen is None:
            raise ValueError(f"no mass-start points table for season {season}")
        return MassStartPoints(tuple(chosen["intermediate"]), tuple(chosen["final"]))


def load(path: str | Path | None = None) -> Rules:
    with open(path or DEFAULT_FILE, "rb") as f:
        return Rules(tomllib.load(f))
