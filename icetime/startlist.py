"""The start-list (competition file) format, checked at the boundary.

Ingest refuses a malformed file with a message naming the field; the engine
then only sees files that pass here. docs/startlist.md describes the format.
"""
from __future__ import annotations

import difflib
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

from icetime.timefmt import parse_time

DISTANCES = (500, 1000, 1500, 3000, 5000, 10000)
SHORT_TRACK_DISTANCES = (500, 1000, 1500)
RELAY_DISTANCES = (2000, 3000, 5000)
#: Team events: how many laps they may have, and team sizes (a reserve may be listed).
TEAM_EVENTS = {"team_pursuit": ((6, 8), (3, 4)), "team_sprint": ((3,), (3, 4)),
               "mixed_relay": ((6,), (2, 2))}
KINDS = ("long_track_individual", "short_track", "mass_start", "short_track_relay",
         *TEAM_EVENTS, "marathon")


class StartListError(ValueError):
    pass


#: The fields each part of a start list may have (docs/startlist.md); any other is
#: refused, naming it: a misspelt field is never silently ignored.
FIELDS: dict[str, frozenset[str]] = {k: frozenset(v.split()) for k, v in {
    "competition": "id name",
    "skater": "bib name short nation club transponders pb sb",
    "race": "id name distance kind laps pairs records round season skaters teams world_cup "
            "sprint_laps lines course waves",
    "pair": "pair inner outer",
    "team": "id name short nation skaters",
    "world_cup": "cup table overall",
    "lines": "inner outer",
    "event": "id name distance season world_cup rounds",
    "round": "id name races advance heats",
    "advance": "to places best",
    "best": "place count",
}.items()}


def known_fields(obj: Any, part: str, where: str) -> None:
    """Refuse a field of ``obj`` (a ``part`` of the start list, at ``where``) that
    :data:`FIELDS` does not list, naming it and the likeliest meant one."""
    if not isinstance(obj, dict):
        return
    allowed = FIELDS[part]
    for key in obj:
        if key not in allowed:
            close = difflib.get_close_matches(str(key)[:64], sorted(allowed), n=1)
            hint = (f"did you mean '{close[0]}'?" if close
                    else f"a {part.replace('_', ' ')} has {', '.join(sorted(allowed))}")
            raise StartListError(f"{where}: unknown field '{str(key)[:64]}' ({hint})")


def transponder_key(tr: object) -> str:
    """A transponder id as it is compared: decoders and start lists write one chip
    differently (Protime sends ``001003`` for the chip a start list gives as ``1003``, an
    integer or a string). Digits lose their leading zeros (``"000"`` is ``"0"``); a code
    (ProChip ``FL-94890``) is compared without surrounding spaces and case."""
    text = str(tr).strip()
    if text.isascii() and text.isdigit():
        return text.lstrip("0") or "0"
    return text.upper()


def _time(value: Any, where: str) -> None:
    try:
        parse_time(value)
    except (ValueError, TypeError):
        raise StartListError(f"{where}: not a time: {value!r}") from None


def _event(ev: Any, where: str, race_ids: set[str]) -> None:
    """A short-track event in rounds (services/scoring/rounds.py)."""
    known_fields(ev, "event", where)
    known_fields(ev.get("world_cup") if isinstance(ev, dict) else None, "world_cup",
                 f"{where}.world_cup")
    if not isinstance(ev, dict) or not ev.get("id") or ev.get("distance") not in \
            SHORT_TRACK_DISTANCES:
        raise StartListError(f"{where}: needs an 'id' and a short-track 'distance'")
    rounds = ev.get("rounds")
    if not isinstance(rounds, list) or not rounds:
        raise StartListError(f"{where}: needs a list of 'rounds'")
    names = [r.get("name") if isinstance(r, dict) else None for r in rounds]
    if None in names or len(set(names)) != len(names):
        raise StartListError(f"{where}.rounds: each round needs a 'name' of its own")
    for j, rnd in enumerate(rounds):
        _round_fields(rnd, f"{where}.rounds[{j}]")
        for rid in rnd.get("races", []):
            if str(rid) not in race_ids:
                raise StartListError(f"{where}.rounds[{j}]: race {rid} is not in 'races'")
        for rule in rnd.get("advance", []):
            if rule.get("to") not in names:
                raise StartListError(f"{where}.rounds[{j}]: advances to unknown round "
                                     f"{rule.get('to')!r}")


def _round_fields(rnd: dict[str, Any], where: str) -> None:
    known_fields(rnd, "round", where)
    for k, rule in enumerate(rnd.get("advance", [])):
        known_fields(rule, "advance", f"{where}.advance[{k}]")
        known_fields(rule.get("best") if isinstance(rule, dict) else None, "best",
                     f"{where}.advance[{k}].best")


def _team_event(r: dict[str, Any], where: str, kind: str, bibs: set[str]) -> None:
    """Team pursuit, team sprint, mixed relay: teams raced in pairs of teams."""
    laps, (lo, hi) = TEAM_EVENTS[kind]
    if r.get("laps") not in laps:
        raise StartListError(f"{where}: a {kind} has {' or '.join(map(str, laps))} 'laps'")
    _teams(r, where, bibs, lo, hi)
    _pairs(r, where, {str(t["id"]) for t in r["teams"]}, "team", "'teams'", "races twice")


def _pairs(r: dict[str, Any], where: str, known: set[str], noun: str, listed: str,
           twice: str) -> None:
    """A pair race's pairs: each names known competitors (skaters, or teams), once."""
    used: set[str] = set()
    for j, p in enumerate(r.get("pairs", [])):
        pw = f"{where}.pairs[{j}]"
        known_fields(p, "pair", pw)
        if not isinstance(p, dict) or not isinstance(p.get("pair"), int):
            raise StartListError(f"{pw}: needs an integer 'pair'")
        for lane in ("inner", "outer"):
            b = p.get(lane)
            if b is None:
                continue
            if str(b) not in known:
                raise StartListError(f"{pw}.{lane}: {noun} {b} is not in {listed}")
            if str(b) in used:
                raise StartListError(f"{pw}.{lane}: {noun} {b} {twice}")
            used.add(str(b))


def _relay(r: dict[str, Any], where: str, bibs: set[str]) -> None:
    """A short-track relay: teams of two to four skaters, each skater in one team."""
    if r.get("distance") not in RELAY_DISTANCES:
        raise StartListError(f"{where}: 'distance' must be one of {RELAY_DISTANCES}")
    _teams(r, where, bibs, 2, 4)


def _teams(r: dict[str, Any], where: str, bibs: set[str], lo: int, hi: int) -> None:
    teams = r.get("teams")
    if not isinstance(teams, list) or len(teams) < 2:
        raise StartListError(f"{where}: a relay needs a list of at least two 'teams'")
    ids: set[str] = set()
    taken: dict[str, str] = {}
    for j, team in enumerate(teams):
        tw = f"{where}.teams[{j}]"
        known_fields(team, "team", tw)
        if not isinstance(team, dict) or not team.get("id"):
            raise StartListError(f"{tw}: needs an 'id'")
        tid = str(team["id"])
        if tid in ids or tid in bibs:
            raise StartListError(f"{tw}: id {tid} is used twice (team ids and bibs are one set)")
        ids.add(tid)
        members = team.get("skaters")
        if not isinstance(members, list) or not lo <= len(members) <= hi:
            size = f"{lo}" if lo == hi else f"{lo} to {hi}"
            raise StartListError(f"{tw}: 'skaters' must list {size} bibs")
        for b in map(str, members):
            if b not in bibs:
                raise StartListError(f"{tw}.skaters: bib {b} is not in 'skaters'")
            if b in taken:
                raise StartListError(f"{tw}.skaters: bib {b} is already in team {taken[b]}")
            taken[b] = tid


def _pack_race(r: dict[str, Any], where: str, kind: str, bibs: set[str]) -> None:
    """A race where everyone starts together: a list of skaters, no pairs."""
    if kind == "short_track" and r.get("distance") not in SHORT_TRACK_DISTANCES:
        raise StartListError(f"{where}: 'distance' must be one of {SHORT_TRACK_DISTANCES}")
    if kind == "mass_start":
        laps = r.get("laps", 16)
        if isinstance(laps, bool) or not isinstance(laps, int) or not 1 <= laps <= 40:
            raise StartListError(f"{where}: 'laps' must be a whole number from 1 to 40")
    if kind == "short_track_relay":
        _relay(r, where, bibs)
        return
    skaters = r.get("skaters")
    if not isinstance(skaters, list) or not skaters:
        raise StartListError(f"{where}: a {kind} race needs a list of 'skaters' (bibs)")
    seen: set[str] = set()
    for b in map(str, skaters):
        if b not in bibs:
            raise StartListError(f"{where}.skaters: bib {b} is not in 'skaters'")
        if b in seen:
            raise StartListError(f"{where}.skaters: bib {b} is listed twice")
        seen.add(b)
    season = r.get("season")
    if season is not None and not (isinstance(season, str) and len(season) == 7
                                   and season[4] == "-"):
        raise StartListError(f"{where}: 'season' looks like \"2022-23\"")


class CoursePoint(Struct, forbid_unknown_fields=True):
    """A timing point of a marathon's course: its name (what the decoders at its mat
    send as ``point``) and how far along the course it lies."""

    point: Annotated[str, Meta(min_length=1, max_length=64)]
    m: Annotated[int, Meta(ge=0, le=1_000_000, description="metres from the start line")]


class Wave(Struct, forbid_unknown_fields=True):
    """A start wave: one gun starts its skaters; their times run from it."""

    wave: Annotated[int, Meta(ge=1, le=1000)]
    skaters: Annotated[list[Annotated[str, Meta(min_length=1, max_length=64)] | int],
                       Meta(min_length=1, description="bibs, each in one wave")]
    name: Annotated[str, Meta(max_length=64)] | None = None


class MarathonRace(Struct, forbid_unknown_fields=True):
    """A marathon on natural ice (docs/startlist.md): timing points along a course,
    skaters started in waves."""

    id: Annotated[str, Meta(min_length=1, max_length=64)] | int
    kind: Literal["marathon"]
    course: Annotated[list[CoursePoint], Meta(min_length=2, max_length=64, description=(
        "the timing points in course order, start first and finish last"))]
    waves: Annotated[list[Wave], Meta(min_length=1, max_length=1000)]
    name: Annotated[str, Meta(max_length=200)] | None = None


def _marathon(r: dict[str, Any], where: str, bibs: set[str]) -> None:
    """A marathon: its course (point names unique, metres increasing) and its waves
    (numbers unique, every bib known and in one wave)."""
    try:
        race = msgspec.convert(r, MarathonRace)
    except msgspec.ValidationError as exc:
        raise StartListError(f"{where}: {str(exc).replace('$.', '')}") from None
    names = [p.point for p in race.course]
    if len(set(names)) != len(names):
        raise StartListError(f"{where}.course: a timing point is named twice")
    metres = [p.m for p in race.course]
    if any(b <= a for a, b in zip(metres, metres[1:], strict=False)):
        raise StartListError(f"{where}.course: metres must increase along the course")
    numbers = [w.wave for w in race.waves]
    if len(set(numbers)) != len(numbers):
        raise StartListError(f"{where}.waves: a wave number is used twice")
    seen: set[str] = set()
    for j, wave in enumerate(race.waves):
        for b in map(str, wave.skaters):
            if b not in bibs:
                raise StartListError(f"{where}.waves[{j}]: bib {b} is not in 'skaters'")
            if b in seen:
                raise StartListError(f"{where}.waves[{j}]: bib {b} is in two waves")
            seen.add(b)


def validate_startlist(doc: dict[str, Any]) -> None:
    """Check a competition file (docs/startlist.md); raises StartListError naming the
    first field that is wrong."""
    skaters = doc.get("skaters", [])
    races = doc.get("races", [])
    if not isinstance(skaters, list) or not isinstance(races, list):
        raise StartListError("'skaters' and 'races' must be lists")
    known_fields(doc.get("competition"), "competition", "competition")
    bibs = _skaters(skaters)
    before = doc.get("standings_before", {})
    if not isinstance(before, dict) or not all(
            isinstance(t, dict) and all(isinstance(p, int) and not isinstance(p, bool)
                                        for p in t.values()) for t in before.values()):
        raise StartListError("'standings_before' maps a cup to {bib: points}")
    race_ids = {str(r.get("id")) for r in races if isinstance(r, dict)}
    for i, ev in enumerate(doc.get("events", [])):
        _event(ev, f"events[{i}]", race_ids)
    for i, r in enumerate(races):
        _race(r, f"races[{i}]", bibs)


def _skaters(skaters: list[Any]) -> set[str]:
    """The skaters' entries: a bib and a name each, bibs and transponders unique, times
    valid. Returns the bibs."""
    bibs: set[str] = set()
    seen_tr: dict[str, str] = {}
    for i, s in enumerate(skaters):
        where = f"skaters[{i}]"
        known_fields(s, "skater", where)
        if not isinstance(s, dict) or "bib" not in s or not s.get("name"):
            raise StartListError(f"{where}: needs 'bib' and 'name'")
        bib = str(s["bib"])
        if bib in bibs:
            raise StartListError(f"{where}: bib {bib} appears twice")
        bibs.add(bib)
        trs = s.get("transponders", [])
        if not isinstance(trs, list):
            raise StartListError(f"{where}: 'transponders' must be a list")
        for tr in trs:
            key = transponder_key(tr)
            if key in seen_tr:
                raise StartListError(f"{where}: transponder {tr} also belongs to bib "
                                     f"{seen_tr[key]}")
            seen_tr[key] = bib
        _personal_bests(s, where)
    return bibs


def _personal_bests(s: dict[str, Any], where: str) -> None:
    """A skater's ``pb`` and ``sb`` tables: distance -> time."""
    for kind in ("pb", "sb"):
        table = s.get(kind) or {}
        if not isinstance(table, dict):
            raise StartListError(f"{where}.{kind}: must map distance to time")
        for d, t in table.items():
            _time(t, f"{where}.{kind}.{d}")


def _race(r: Any, where: str, bibs: set[str]) -> None:
    """One entry of ``races``, by its ``kind``."""
    if not isinstance(r, dict) or not r.get("id"):
        raise StartListError(f"{where}: needs an 'id'")
    known_fields(r, "race", where)
    known_fields(r.get("lines"), "lines", f"{where}.lines")
    known_fields(r.get("world_cup"), "world_cup", f"{where}.world_cup")
    wc = r.get("world_cup")
    if wc is not None and not (isinstance(wc, dict) and isinstance(wc.get("cup"), str)
                               and isinstance(wc.get("table"), str)):
        raise StartListError(f"{where}.world_cup: needs a 'cup' and a points 'table'")
    kind = r.get("kind", "long_track_individual")
    if kind not in KINDS:
        raise StartListError(f"{where}: 'kind' must be one of {', '.join(KINDS)}")
    if kind in TEAM_EVENTS:
        _team_event(r, where, kind, bibs)
    elif kind == "marathon":
        _marathon(r, where, bibs)
    elif kind != "long_track_individual":
        _pack_race(r, where, kind, bibs)
    else:
        _long_track(r, where, bibs)


def _long_track(r: dict[str, Any], where: str, bibs: set[str]) -> None:
    """A long-track individual race: a distance, records, pairs of skaters."""
    if r.get("distance") not in DISTANCES:
        raise StartListError(f"{where}: 'distance' must be one of {DISTANCES}")
    for name, t in (r.get("records") or {}).items():
        _time(t, f"{where}.records.{name}")
    _pairs(r, where, bibs, "bib", "'skaters'", "skates twice in this race")
