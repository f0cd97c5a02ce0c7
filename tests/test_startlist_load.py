"""Start lists of many races: one start list of every race or one per race give the same
results, and a start list touches only the races it changes (docs/startlist.md)."""
from __future__ import annotations

import copy
import gc
from pathlib import Path
from typing import Any

from icetime.replay import load_fixture, script_inputs
from services.scoring import checkpoint
from services.scoring.competition import Competition

from .conftest import feed

FIXTURES = Path(__file__).parent.parent / "fixtures"
COPIES = 2


def day() -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[list[dict[str, Any]]]]:
    """(skaters, races, each race's script): two copies of the Beijing 1000 m (the same
    20 skaters, one after the other) and the Beijing mass start (its bibs renamed "m1"...),
    skated after them."""
    pairs = load_fixture(FIXTURES / "beijing2023_w1000a.json")
    race = pairs["startlist"]["races"][0]
    first = script_inputs(pairs)
    span = first[-1].at_us + 60_000_000
    skaters = list(pairs["startlist"]["skaters"])
    races, scripts = [], []
    for c in range(COPIES):
        rid = f"{race['id']}-{c}"
        races.append({**copy.deepcopy(race), "id": rid})
        scripts.append([{**it.inp, "source": it.source, "rx_us": it.at_us,
                         **({"race": rid} if it.inp["type"] == "gun" else {})}
                        for it in script_inputs(pairs, clock_base_us=c * span)])
    pack = load_fixture(FIXTURES / "beijing2023_w_massstart.json")
    skaters += [{**s, "bib": f"m{s['bib']}"} for s in pack["startlist"]["skaters"]]
    mass = pack["startlist"]["races"][0]
    races.append({**mass, "skaters": [f"m{b}" for b in mass["skaters"]]})
    scripts.append([{**it.inp, "source": it.source, "rx_us": it.at_us}
                    for it in script_inputs(pack, clock_base_us=COPIES * span)])
    return skaters, races, scripts


def startlist(skaters: list[dict[str, Any]], races: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "startlist", "skaters": skaters, "races": races}


def run(per_race: bool) -> tuple[Competition, dict[str, list[dict[str, Any]]]]:
    """The day fed to a fresh engine: one start list of every race first, or each race's
    start list just before its script. Returns the engine and each race's events, in
    order (the start list's revision without its input id: one input or several)."""
    skaters, races, scripts = day()
    comp = Competition()
    events: dict[str, list[dict[str, Any]]] = {}

    def take(input_id: str, inp: dict[str, Any]) -> None:
        out = feed(comp, input_id, inp)
        assert not comp.last_error, comp.last_error
        for rid, evs in out.items():
            events.setdefault(rid, []).extend(
                {k: v for k, v in e.items() if k != "input"} if input_id.startswith("sl")
                else e for e in evs)

    if not per_race:
        take("sl", startlist(skaters, races))
    for n, (race, script) in enumerate(zip(races, scripts, strict=True)):
        if per_race:
            take(f"sl-{n}", startlist(skaters, [race]))
        for i, inp in enumerate(script):
            take(f"{n}-{i}", inp)
    return comp, events


def test_one_start_list_or_one_per_race_give_the_same_views_and_events():
    whole, whole_events = run(per_race=False)
    each, each_events = run(per_race=True)
    assert list(whole.races) == list(each.races)
    assert len(whole.races) == COPIES + 1
    for rid in whole.races:
        assert whole.view(rid) == each.view(rid), rid
        assert whole_events[rid] == each_events[rid], rid
        assert whole.view(rid)["classification"]["bib"], rid  # the race was skated
    assert whole_events.keys() == each_events.keys()


def test_a_start_list_touches_only_the_races_it_changes():
    skaters, races, _ = day()
    comp, _ = run(per_race=False)
    views = {rid: comp.view(rid) for rid in comp.races}

    assert feed(comp, "again", startlist(skaters, races)) == {}
    assert not comp.last_error
    assert {rid: comp.view(rid) for rid in comp.races} == views

    # One race's draw changes: that race alone is recomputed.
    moved = copy.deepcopy(races)
    first = moved[1]["pairs"][0]
    first["inner"], first["outer"] = first["outer"], first["inner"]
    out = feed(comp, "draw", startlist(skaters, moved))
    assert list(out) == [moved[1]["id"]]
    assert [e["type"] for e in out[moved[1]["id"]]] == ["revision"]
    assert comp.view(moved[1]["id"])["pairs"][0]["inner"] == first["inner"]
    assert comp.view(moved[1]["id"])["revision"] == views[moved[1]["id"]]["revision"] + 1
    assert comp.view(moved[0]["id"]) == views[moved[0]["id"]]

    # A skater's name changes: every race that shows her is recomputed, no other.
    renamed = [{**s, "name": "Renamed Skater"} if s["bib"] == "3" else s for s in skaters]
    out = feed(comp, "name", startlist(renamed, moved))
    assert sorted(out) == sorted(r["id"] for r in races[:COPIES])
    for rid in out:
        assert comp.view(rid)["skaters"]["3"]["name"] == "Renamed Skater"
    assert comp.view(races[-1]["id"]) == views[races[-1]["id"]]


def test_a_restored_engine_leaves_the_races_a_start_list_keeps_sealed():
    skaters, races, _ = day()
    comp, _ = run(per_race=False)
    restored = checkpoint.load(checkpoint.Saver().fields(comp))
    assert restored is not None and isinstance(restored.races, checkpoint.RaceStore)

    assert feed(restored, "again", startlist(skaters, races)) == {}
    assert not restored.last_error
    assert list(restored.races.loaded()) == []

    moved = copy.deepcopy(races)
    moved[2]["name"] = "Women 1000 m · Division A (again)"
    out = feed(restored, "name", startlist(skaters, moved))
    assert list(out) == [moved[2]["id"]]
    assert [rid for rid, _ in restored.races.loaded()] == [moved[2]["id"]]
    assert restored.view(moved[2]["id"])["race"]["name"] == moved[2]["name"]


def test_a_refused_start_list_changes_nothing_and_leaves_the_collector_on():
    skaters, races, _ = day()
    comp = Competition()
    feed(comp, "sl", startlist(skaters, races[:1]))
    # A chip of a skater already loaded, given to a new skater: refused by the engine.
    thief = {**skaters[0], "bib": "77", "name": "Chip Thief"}
    assert feed(comp, "bad", {"type": "startlist", "skaters": [thief]}) == {}
    assert "given to bibs" in comp.last_error
    assert list(comp.races) == [races[0]["id"]] and "77" not in comp.skaters
    assert gc.isenabled()
    # The refused file left no trace: the race it named is new to the next start list.
    assert list(feed(comp, "good", startlist(skaters, races[:2]))) == [races[1]["id"]]


def test_a_bib_is_one_skater_a_start_list_may_update_her_but_not_give_her_bib_away():
    """A name fixed (a chip in common) or the chips changed (the same name) is the same
    skater, updated; another name with no chip in common is another person, and the
    whole start list giving her the bib is refused, naming what to do."""
    skaters, races, _ = day()
    comp = Competition()
    feed(comp, "sl", startlist(skaters, races[:1]))
    rid = races[0]["id"]
    first = skaters[0]
    fixed = {**first, "name": first["name"].upper() + " Jr"}
    feed(comp, "fix-name", startlist([fixed, *skaters[1:]], races[:1]))
    assert comp.skaters[first["bib"]].name == fixed["name"]
    chips = {**fixed, "transponders": ["5999991"]}
    feed(comp, "new-chips", startlist([chips, *skaters[1:]], races[:1]))
    assert comp.by_transponder["5999991"] == first["bib"]
    # Letter case and spacing aside, the name is the same: new chips again, an update.
    spaced = {**chips, "name": " " + fixed["name"].lower() + " ", "transponders": ["5999992"]}
    assert list(feed(comp, "respaced", startlist([spaced, *skaters[1:]], races[:1]))) == [rid]
    assert comp.stats["applied"] == 4 and comp.stats["refused"] == 0
    # Another person on her bib, with a new skater and a new race in the same file.
    other = {"bib": first["bib"], "name": "Someone Else", "transponders": ["5999993"]}
    newcomer = {"bib": "88", "name": "New Comer", "transponders": ["5999994"]}
    race = {"id": "other-500", "distance": 500,
            "pairs": [{"pair": 1, "inner": "88", "outer": first["bib"]}]}
    assert feed(comp, "clash", startlist([newcomer, other], [race])) == {}
    assert comp.stats["refused"] == 1
    assert comp.last_error == (
        f"clash: skaters[1]: bib {first['bib']} is {spaced['name']} in this competition "
        f"(race {rid}), not Someone Else: a bib is one skater in a competition. Give "
        "Someone Else another bib, or load this start list into a competition of its own "
        "(an icetime configured with another competition.id; the file's own competition "
        "id does not choose it); nothing of it was applied")
    assert "88" not in comp.skaters and "other-500" not in comp.races
    assert comp.skaters[first["bib"]].name == spaced["name"]
    assert "5999993" not in comp.by_transponder
    # A skater in no race yet is named so.
    feed(comp, "bench", startlist([newcomer], []))
    assert feed(comp, "clash-2", startlist([{**newcomer, "name": "Other",
                                              "transponders": []}], [])) == {}
    assert "bib 88 is New Comer in this competition (in no race yet), not Other" in (
        comp.last_reason)
    # Before the chips are given out, a name fixed is an update: no read goes by her bib.
    feed(comp, "nochips", startlist([{"bib": "99", "name": "Ana Smit", "transponders": []}], []))
    feed(comp, "nochips-fixed", startlist([{"bib": "99", "name": "Anna Smit",
                                            "transponders": []}], []))
    assert comp.skaters["99"].name == "Anna Smit" and comp.stats["refused"] == 2
