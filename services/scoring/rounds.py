"""Short-track rounds: heats to finals, advancement, the event's ranking (DOMAIN.md §4).

An event is one distance raced in rounds. The first round's races are in the start list;
when every race of a round is official, the skaters it sends on are worked out and the
next round's races are created (the engine then runs them like any race). Pure: the
engine hands in its races and gets back the start-list entries of the races to create.

    {"id": "w1500", "name": "Women 1500 m", "distance": 1500, "season": "2022-23",
     "rounds": [
       {"name": "Semi-finals", "races": ["w1500-sf1", "w1500-sf2"],
        "advance": [{"to": "Final A", "places": [1, 2], "best": {"place": 3, "count": 1}},
                    {"to": "Final B", "places": [3, 4]}]},
       {"name": "Final A"}, {"name": "Final B"}]}

* ``places``: the places in each race that go to ``to``; ``best``: of the skaters placed
  ``place``, the ``count`` fastest go too (the "best thirds").
* A skater the referee advanced (ADV) goes to the first ``to`` of the round.
* A round with ``heats`` divides its skaters over that many races (heats), seeded by the place
  and time that brought them (serpentine); otherwise it is one race.
* A skater sanctioned PEN in a race does not advance from it; a YC or RC also forfeits
  every other result of the event.
* The event's ranking: Final A's finishers, then Final B's (so a Final B skater takes a
  medal when Final A skaters are penalised), then everyone else by the round they went
  out in (the later first), their place there, then their time.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Protocol

FORFEITING = ("YC", "RC")


def _each_once(advancing: dict[str, list[tuple[int, int, str]]]) -> dict[str, list[str]]:
    """Round name -> its skaters' bibs in (place, time) order, from (place, time µs, bib)
    rows; a bib goes only to the first round naming it (an ADV skater who also placed
    goes once)."""
    sent: set[str] = set()
    result: dict[str, list[str]] = {}
    for to, rows in advancing.items():
        result[to] = []
        for _, _, b in sorted(rows):
            if b not in sent:
                sent.add(b)
                result[to].append(b)
    return result


class RoundRace(Protocol):
    id: str
    is_official: bool
    status: list[str | None]
    bibs: list[str]

    def classification(self) -> dict[str, list[Any]]: ...


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "", name.lower())


class Event:
    """A competition event (the ISU's term): one distance raced in rounds. Not a race
    event (``model.RaceEvent``, what races publish)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.id = str(spec["id"])
        self.name = str(spec.get("name", self.id))
        self.distance = int(spec["distance"])
        self.season = spec.get("season")
        self.world_cup: dict[str, Any] | None = spec.get("world_cup")
        self.rounds: list[dict[str, Any]] = [dict(r) for r in spec["rounds"]]
        for r in self.rounds:
            r.setdefault("races", [])
        self.by_name = {r["name"]: i for i, r in enumerate(self.rounds)}
        self.forfeited: set[str] = set()
        self.is_official = False
        self.ranking: dict[str, list[Any]] = {"bib": [], "rank": [], "how": []}

    def race_ids(self) -> set[str]:
        return {rid for r in self.rounds for rid in r["races"]}

    def step(self, races: Mapping[str, RoundRace]) -> list[dict[str, Any]]:
        """Start-list entries of the races to create now (empty most of the time)."""
        self.note_races(races)
        out: list[dict[str, Any]] = []
        for rnd in self.rounds:
            targets = [a["to"] for a in rnd.get("advance", [])]
            if not targets or any(self.rounds[self.by_name[t]]["races"] for t in targets):
                continue  # a last round, or already sent on
            held = [races.get(rid) for rid in rnd["races"]]
            if not held or any(r is None or not r.is_official for r in held):
                continue
            for target, bibs in self._advance(rnd, [r for r in held if r]).items():
                out += self._create(self.rounds[self.by_name[target]], bibs)
        return out

    def _advance(self, rnd: dict[str, Any], held: list[RoundRace]) -> dict[str, list[str]]:
        out: dict[str, list[tuple[int, int, str]]] = {a["to"]: [] for a in rnd["advance"]}
        forfeited = self.forfeited
        for rule_no, rule in enumerate(rnd["advance"]):
            places = set(rule.get("places", []))
            best = rule.get("best")
            candidates: list[tuple[int, int, str]] = []
            for race in held:
                cls = race.classification()
                for bib, rank, t in zip(cls["bib"], cls["rank"], cls["t"], strict=True):
                    if bib in forfeited:
                        continue
                    if rank in places:
                        out[rule["to"]].append((rank, t, bib))
                    elif best and rank == best["place"]:
                        candidates.append((rank, t, bib))
                if rule_no == 0:  # the referee's advancements go to the main next round
                    out[rule["to"]] += [(0, 0, b) for i, b in enumerate(race.bibs)
                                        if race.status[i] == "ADV" and b not in forfeited]
            if best:
                out[rule["to"]] += sorted(candidates, key=lambda c: c[1])[:best["count"]]
        return _each_once(out)

    def _create(self, rnd: dict[str, Any], bibs: list[str]) -> list[dict[str, Any]]:
        heats = int(rnd.get("heats", 1))
        groups: list[list[str]] = [[] for _ in range(heats)]
        for n, bib in enumerate(bibs):  # serpentine: 1 2 3 3 2 1 ...
            sweep, pos = divmod(n, heats)
            groups[pos if sweep % 2 == 0 else heats - 1 - pos].append(bib)
        specs = []
        for h, group in enumerate(groups, start=1):
            suffix = str(h) if heats > 1 else ""
            rid = rnd.get("id") if heats == 1 and rnd.get("id") else \
                f"{self.id}-{slug(rnd['name'])}{suffix}"
            specs.append({"id": rid, "name": f"{self.name} · {rnd['name']}"
                                              + (f" {suffix}" if suffix else ""),
                          "kind": "short_track", "distance": self.distance,
                          "round": rnd["name"], "season": self.season, "skaters": group,
                          "event": self.id})
            rnd["races"].append(rid)
        return specs

    def note_races(self, races: Mapping[str, RoundRace]) -> None:
        """Who has a YC or RC anywhere in the event (their results are forfeited)."""
        out = set()
        for rnd in self.rounds:
            for rid in rnd["races"]:
                race = races.get(rid)
                if race is not None:
                    out |= {b for i, b in enumerate(race.bibs) if race.status[i] in FORFEITING}
        self.forfeited = out

    # ------------------------------------------------------------------ ranking
    def rank(self, races: Mapping[str, RoundRace]) -> None:
        """The event's ranking, from the last round back to the first."""
        self.note_races(races)
        placed: list[str] = []
        how: list[str] = []
        seen: set[str] = set()
        order = [self.by_name[n] for n in ("Final A", "Final B") if n in self.by_name]
        order += [i for i in reversed(range(len(self.rounds))) if i not in order]
        for i in order:
            rnd = self.rounds[i]
            rows = []
            for rid in rnd["races"]:
                race = races.get(rid)
                if race is None:
                    continue
                cls = race.classification()
                rows += [(rank, t, bib) for bib, rank, t in
                         zip(cls["bib"], cls["rank"], cls["t"], strict=True)]
            for rank, _t, bib in sorted(rows):
                if bib in seen or bib in self.forfeited:
                    continue
                seen.add(bib)
                placed.append(bib)
                how.append(f"{rnd['name']} {rank}")
        finals = [races.get(rid) for n in ("Final A", "Final B") if n in self.by_name
                  for rid in self.rounds[self.by_name[n]]["races"]]
        self.is_official = bool(finals) and all(r is not None and r.is_official for r in finals)
        self.ranking = {"bib": placed, "rank": list(range(1, len(placed) + 1)), "how": how}

    def classification(self) -> dict[str, list[Any]]:
        return self.ranking

    def view(self, names: dict[str, dict[str, Any]]) -> dict[str, Any]:
        return {
            "race": {"id": f"event-{self.id}", "name": self.name, "kind": "rounds",
                     "distance": self.distance, "official": self.is_official},
            "rounds": [{"name": r["name"], "races": list(r["races"])} for r in self.rounds],
            "ranking": self.ranking,
            "skaters": {b: names.get(b, {"bib": b, "name": b}) for b in self.ranking["bib"]},
            "stories": [],
        }
