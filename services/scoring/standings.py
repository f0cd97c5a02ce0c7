"""World Cup standings from official results (DOMAIN.md §5). Pure functions.

A race takes part when its start-list entry names a cup: ``"world_cup": {"cup":
"Women 1000 m", "table": "long_track_a"}`` (and ``"overall": "Women overall"`` to add
its points to an overall classification too, as short track does). Only races an
official has declared official count; each rank scores the points of the season's
table. The season so far comes from the start list's ``standings_before``.
"""
from __future__ import annotations

from typing import Any, Protocol

from icetime.rules import Rules

STANDINGS_ID = "wc-standings"


class Scored(Protocol):
    id: str
    name: str
    is_official: bool
    world_cup: dict[str, Any] | None
    season: str | None

    def classification(self) -> dict[str, list[Any]]: ...


#: Cup -> bib -> {"bib", "before", "points", "races": {race id: points}} (and "rank").
Cups = dict[str, dict[str, dict[str, Any]]]


def compute(races: list[Scored], rules: Rules, before: dict[str, dict[str, int]],
            names: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The standings view: every cup with each skater's points, official races only."""
    cups: Cups = {}
    for cup, prior in before.items():
        for bib in prior:
            _entry(cups, before, cup, bib)
    counted = []
    for race in races:
        wc = race.world_cup
        if wc and race.is_official:
            counted.append({"id": race.id, "name": race.name, "cup": wc["cup"]})
            _score(cups, before, race, wc, rules)
    out: list[dict[str, Any]] = [{"cup": cup, "rows": _ranked(table, names)}
                                 for cup, table in cups.items()]
    bibs = {e["bib"] for c in out for e in c["rows"]}
    return {
        "race": {"id": STANDINGS_ID, "name": "World Cup standings", "kind": "standings"},
        "skaters": {b: names.get(b, {"bib": b, "name": b, "short": b, "nation": ""})
                    for b in sorted(bibs)},
        "cups": out,
        "counted": counted,
        "stories": [],
    }


def _entry(cups: Cups, before: dict[str, dict[str, int]], cup: str, bib: str
           ) -> dict[str, Any]:
    """A skater's row in a cup, made on first use with the season's points so far."""
    table = cups.setdefault(cup, {})
    if bib not in table:
        prior = int(before.get(cup, {}).get(bib, 0))
        table[bib] = {"bib": bib, "before": prior, "points": prior, "races": {}}
    return table[bib]


def _score(cups: Cups, before: dict[str, dict[str, int]], race: Scored, wc: dict[str, Any],
           rules: Rules) -> None:
    """Add an official race's points (its table, by rank) to its cup and its overall."""
    points = rules.world_cup_points(race.season, wc["table"])
    cls = race.classification()
    for bib, rank in zip(cls["bib"], cls["rank"], strict=True):
        pts = points[rank - 1] if rank <= len(points) else 0
        for target in (wc["cup"], wc.get("overall")):
            if target:
                e = _entry(cups, before, str(target), bib)
                e["points"] += pts
                e["races"][race.id] = pts


def _ranked(table: dict[str, dict[str, Any]], names: dict[str, dict[str, Any]]
            ) -> list[dict[str, Any]]:
    """A cup's rows by points, then name; equal points share a rank."""
    rows = sorted(table.values(), key=lambda e: (-e["points"], names.get(e["bib"], {})
                                                 .get("name", e["bib"])))
    for i, e in enumerate(rows):
        tie = i and e["points"] == rows[i - 1]["points"]
        e["rank"] = rows[i - 1]["rank"] if tie else i + 1
    return rows
