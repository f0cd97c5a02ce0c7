"""Official times in the engine: what counts when photo-finish and manual times meet
the mass start's sprint points, a restart, and each other.

* A mass start's final sprint points go to the first across the line by the finish
  times that count (photo, manual), like the finish ranking, and move with every
  correction; the classification (podium, then sprint points) follows.
* A restart voids the attempt and its official times: they stay in the log (the desk's
  audit) and count again if the restart is undone.
* Of two official times of equal precedence for one skater and passage, the one keyed
  last counts (the official's last word), not the later race time; undoing it brings the
  earlier back.

Each holds whatever order the network delivered the reads in (hypothesis): only the
order the officials keyed their inputs in counts.
"""
from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from services.scoring.competition import Competition

from .conftest import feed
from .test_order import GUN_T, skaters
from .test_pack import assert_fold

# ---------------------------------------------------------------- mass start
MS = "ms"
MS_BIBS = ("1", "2", "3", "4", "5")
#: Four laps, the intermediate sprint at lap 2; the 2018/19 tables (3-2-1; 60-40-20-10-6-3).
MS_RACE = {"id": MS, "name": "Mass Start", "kind": "mass_start", "laps": 4,
           "sprint_laps": [2], "skaters": list(MS_BIBS)}
LAP_US = 30_000_000
#: The field in a line 0.3 s apart, bib 1 ahead, but at the finish bibs 1 to 3 cross
#: within 10 ms of each other: the transponders say 1, 2, 3; at the sprint (lap 2) the
#: order is 5, 4, 3 (they came round the outside).
def ms_reads() -> list[dict[str, Any]]:
    out = []
    for lap in range(1, 5):
        for i, b in enumerate(MS_BIBS):
            gap = 300_000 * i
            if lap == 2:
                gap = 300_000 * (len(MS_BIBS) - 1 - i)
            if lap == 4 and i < 3:
                gap = 5_000 * i
            out.append({"type": "passing", "transponder": b * 2,
                        "t": GUN_T + lap * LAP_US + gap})
    return out


def photo(bib: str, time_us: int, race: str = MS) -> dict[str, Any]:
    return {"type": "finish_time", "race": race, "bib": bib, "time_us": time_us,
            "origin": "photo"}


#: The photo finish reverses the transponders' first three: 3, 2, 1.
PHOTOS = [photo("3", 4 * LAP_US + 1_000), photo("2", 4 * LAP_US + 4_000),
          photo("1", 4 * LAP_US + 7_000)]


def mass_start(reads_order: list[int] | None = None,
               desk: list[dict[str, Any]] = ()) -> Competition:
    comp = Competition()
    feed(comp, "sl", {"type": "startlist", "skaters": skaters(*MS_BIBS), "races": [MS_RACE]})
    feed(comp, "g", {"type": "gun", "race": MS, "t": GUN_T})
    reads = ms_reads()
    for n in reads_order if reads_order is not None else range(len(reads)):
        feed(comp, f"r{n}", reads[n])
    for n, inp in enumerate(desk):
        feed(comp, f"d{n}", inp)
    return comp


def points(comp: Competition, race: str = MS) -> dict[str, int]:
    return comp.view(race)["pack"]["sprint_points"]


def test_the_final_sprint_points_follow_the_photo_finish():
    comp = mass_start()
    # The transponders' order first: 60-40-20 to 1, 2, 3 (plus the lap-2 sprint's 1 to 3).
    assert points(comp) == {"1": 60, "2": 40, "3": 21, "4": 12, "5": 9}
    for n, inp in enumerate(PHOTOS):
        feed(comp, f"p{n}", inp)
    view = comp.view(MS)
    assert points(comp) == {"1": 20, "2": 40, "3": 61, "4": 12, "5": 9}
    cls = view["classification"]
    assert cls["bib"] == ["3", "2", "1", "4", "5"]
    assert cls["sprint_points"] == [61, 40, 20, 12, 9]
    # Her photo undone, bib 3's transponder read is behind 2's and 1's photo times.
    feed(comp, "u", {"type": "decision", "race": MS, "action": "void", "target": "p0"})
    assert points(comp) == {"1": 40, "2": 60, "3": 21, "4": 12, "5": 9}
    assert comp.view(MS)["classification"]["bib"] == ["2", "1", "3", "4", "5"]
    # A new photo moves them again.
    feed(comp, "p3", photo("1", 4 * LAP_US))
    assert points(comp) == {"1": 60, "2": 40, "3": 21, "4": 12, "5": 9}
    assert comp.view(MS)["classification"]["bib"] == ["1", "2", "3", "4", "5"]


def test_the_final_sprint_points_follow_a_photo_that_came_before_the_reads():
    """The photo times keyed before the last reads reached scoring: each finish takes
    the points its photo time gives, from who crossed before; the events say so."""
    reads = ms_reads()
    last = [n for n, r in enumerate(reads) if r["t"] >= GUN_T + 4 * LAP_US]
    inputs = [("sl", {"type": "startlist", "skaters": skaters(*MS_BIBS), "races": [MS_RACE]}),
              ("g", {"type": "gun", "race": MS, "t": GUN_T})]
    inputs += [(f"r{n}", reads[n]) for n in range(len(reads)) if n not in last]
    inputs += [(f"d{n}", inp) for n, inp in enumerate(PHOTOS)]
    inputs += [(f"r{n}", reads[n]) for n in last]
    comp, events = Competition(), []
    for iid, inp in inputs:
        events += feed(comp, iid, inp).get(MS, [])
    assert points(comp) == {"1": 20, "2": 40, "3": 61, "4": 12, "5": 9}
    assert comp.view(MS)["classification"] == mass_start(desk=PHOTOS).view(MS)["classification"]
    # Bib 3's finish took the 60 from bib 2, who had taken them from bib 1: her event
    # says so, and the classification comes whole.
    third = next(e for e in events if e["type"] == "finish" and e["bib"] == "3")
    assert third["sprint_points_moved"] == {"1": 20, "2": 40}
    assert third["classification"]["bib"][:3] == ["3", "2", "1"]
    assert_fold(comp.view(MS), events)


def arrivals(reads: list[dict[str, Any]], desk: list[dict[str, Any]], order: list[int],
             at: list[int]) -> list[tuple[str, dict[str, Any]]]:
    """The reads in the network's ``order``, the officials' inputs in their keyed order,
    each ``desk[i]`` delivered after the first ``at[i]`` reads (``at`` ascending)."""
    out: list[tuple[str, dict[str, Any]]] = []
    d = 0
    for n, r in enumerate(order):
        while d < len(desk) and at[d] <= n:
            out.append((f"d{d}", desk[d]))
            d += 1
        out.append((f"r{r}", reads[r]))
    out += [(f"d{i}", desk[i]) for i in range(d, len(desk))]
    return out


def outcome(comp: Competition, race: str) -> tuple[Any, ...]:
    view = comp.view(race)
    return (view["classification"], view.get("pack", {}).get("sprint_points"),
            view.get("pack", {}).get("sprints"),
            {b: r["final"] for b, r in view["results"].items()})


@settings(max_examples=25, deadline=None)
@given(st.data())
def test_the_sprint_points_do_not_depend_on_the_arrival_order(data):
    """Reads in any order, the photo times among them anywhere (in their keyed order):
    the points, finals and classification are those of the reads in time order."""
    reads = ms_reads()
    order = data.draw(st.permutations(range(len(reads))))
    at = sorted(data.draw(st.lists(st.integers(0, len(reads)), min_size=len(PHOTOS),
                                   max_size=len(PHOTOS))))
    comp = Competition()
    feed(comp, "sl", {"type": "startlist", "skaters": skaters(*MS_BIBS), "races": [MS_RACE]})
    feed(comp, "g", {"type": "gun", "race": MS, "t": GUN_T})
    for iid, inp in arrivals(reads, PHOTOS, list(order), at):
        feed(comp, iid, inp)
    assert outcome(comp, MS) == outcome(mass_start(desk=PHOTOS), MS)


def test_a_manual_finish_time_moves_the_final_sprint_points():
    comp = mass_start(desk=[{"type": "decision", "race": MS, "action": "manual_time",
                             "bib": "2", "time_us": 4 * LAP_US - 1_000}])
    assert points(comp) == {"1": 40, "2": 60, "3": 21, "4": 12, "5": 9}
    assert comp.view(MS)["classification"]["bib"][:3] == ["2", "1", "3"]


def test_a_pack_race_refuses_a_manual_time_at_an_intermediate_line():
    """A pack race times its finish only: a manual time for a sprint lap's line is
    refused with its reason rather than taken for a finish time."""
    comp = mass_start()
    before = comp.view(MS)
    assert feed(comp, "m", {"type": "decision", "race": MS, "action": "manual_time",
                            "bib": "2", "m": 800, "time_us": 59_000_000}) == {}
    assert comp.last_reason == "race ms: a pack race times its finish only (m: 800; the " \
        "finish is 1600)"
    assert comp.view(MS) == before
