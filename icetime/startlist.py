"""The start-list (competition file) format, checked at the boundary.

Ingest refuses a malformed file with a message naming the field; the engine
then only sees files that pass here. docs/startlist.md describes the format.
"""
from __future__ import annotations

from typing import Any

from icetime.timefmt import parse_time

DISTANCES = (500, 1000, 1500, 3000, 5000, 10000)


class StartListError(ValueError):
    pass


def _time(value: Any, where: str) -> None:
    try:
        parse_time(value)
    except (ValueError, TypeError):
        raise StartListError(f"{where}: not a time: {value!r}") from None


def validate_startlist(doc: dict[str, Any]) -> None:
    skaters = doc.get("skaters", [])
    races = doc.get("races", [])
    if not isinstance(skaters, list) or not isinstance(races, list):
        raise StartListError("'skaters' and 'races' must be lists")
    bibs: set[str] = set()
    seen_tr: dict[str, str] = {}
    for i, s in enumerate(skaters):
        where = f"skaters[{i}]"
        if not isinstance(s, dict) or "bib" not in s or not s.get("name"):
            raise StartListError(f"{where}: needs 'bib' and 'name'")
        bib = str(s["bib"])
        if bib in bibs:
            raise StartListError(f"{where}: bib {bib} appears twice")
        bibs.add(bib)
        trs = s.get("transponders", [])
        if not isinstance(trs, list):
            raise StartListError(f"{where}: 'transponders' must be a list")
        for tr in map(str, trs):
            if tr in seen_tr:
                raise StartListError(f"{where}: transponder {tr} also belongs to bib {seen_tr[tr]}")
            seen_tr[tr] = bib
        for kind in ("pb", "sb"):
            table = s.get(kind) or {}
            if not isinstance(table, dict):
                raise StartListError(f"{where}.{kind}: must map distance to time")
            for d, t in table.items():
                _time(t, f"{where}.{kind}.{d}")
    for i, r in enumerate(races):
        where = f"races[{i}]"
        if not isinstance(r, dict) or not r.get("id"):
            raise StartListError(f"{where}: needs an 'id'")
        if r.get("distance") not in DISTANCES:
            raise StartListError(f"{where}: 'distance' must be one of {DISTANCES}")
        for name, t in (r.get("records") or {}).items():
            _time(t, f"{where}.records.{name}")
        in_race: set[str] = set()
        for j, p in enumerate(r.get("pairs", [])):
            pw = f"{where}.pairs[{j}]"
            if not isinstance(p, dict) or not isinstance(p.get("pair"), int):
                raise StartListError(f"{pw}: needs an integer 'pair'")
            for lane in ("inner", "outer"):
                b = p.get(lane)
                if b is None:
                    continue
                if str(b) not in bibs:
                    raise StartListError(f"{pw}.{lane}: bib {b} is not in 'skaters'")
                if str(b) in in_race:
                    raise StartListError(f"{pw}.{lane}: bib {b} skates twice in this race")
                in_race.add(str(b))
