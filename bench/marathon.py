"""A natural-ice marathon fixture, generated: a 200 km course on a lake with a timing point
every 25 km, skaters started in waves, and the reads a venue really gets (late and out of
order across timing points, twice, missed, one chip resting on a mat).

``build(skaters, seed)`` is deterministic: the same arguments give the same fixture, so
tests and benches regenerate it rather than commit a large file. It returns a fixture
document (``startlist`` and a ``script`` of timed inputs, as ``icetime.replay``
replays it) and the truth the reads were made from, for tests to check the engine
against. ``python -m bench.marathon --skaters 10000 --out marathon.json`` writes one.

The script's ``inputs`` are ``[arrival µs, source, input]``, arrival and ``t`` counted
from the replay's start (``icetime.replay.script_inputs`` adds the clocks' base).
"""
from __future__ import annotations

import argparse
import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RACE = "ae200"
KM = 1000
#: The course: start, a timing point every 25 km, the finish 200 km out.
COURSE = [("start", 0)] + [(f"km{k}", k * KM) for k in range(25, 200, 25)] + \
    [("finish", 200 * KM)]
WAVE_SIZE = 2500
#: The first gun, and the time between two waves' guns.
FIRST_GUN_US, WAVE_GAP_US = 60_000_000, 600_000_000
#: Timing points whose decoder drops its link for a while: its reads arrive after.
OUTAGE_POINT, OUTAGE_FROM_US, OUTAGE_US = "km125", 2 * 3600_000_000, 20 * 60_000_000
MISSED, DOUBLE, SECOND_DECODER, DNF = 0.01, 0.08, 0.01, 0.05
#: The resting chip: a skater sits on the km100 mat this long, read every second.
REST_POINT, REST_US = "km100", 150_000_000

#: Nation, share of the field, first names, surnames, clubs.
NATIONS: list[tuple[str, float, list[str], list[str], list[str]]] = [
    ("NED", 0.72,
     ["Jan", "Pieter", "Sjoerd", "Anna", "Femke", "Marieke", "Gerrit", "Wietske", "Hylke",
      "Sanne", "Bauke", "Jitske", "Kees", "Ireen", "Rintje", "Lotte", "Tjerk", "Geertje"],
     ["de Vries", "van der Meer", "Bakker", "Visser", "Hoekstra", "de Jong", "Dijkstra",
      "van Dijk", "Postma", "Wijnstra", "Kramer", "Zijlstra", "de Boer", "Smit", "Jansen",
      "van den Berg", "Meijer", "Bosma", "Veenstra", "Terpstra"],
     ["IJsclub Noordlaren", "STG Amsterdam", "IJsvereniging Giethoorn", "KNSB Gewest Friesland",
      "Schaatsvereniging Heerenveen", "IJsclub Nooitgedacht", "Thialf Toerschaatsers",
      "IJsclub Dokkum", "Schaatsclub Den Haag", "Marathonteam Drenthe"]),
    ("BEL", 0.06, ["Pieter", "Lies", "Wout", "Hanne", "Bram", "Elke"],
     ["Peeters", "Janssens", "Maes", "Claes", "Wouters", "De Smet"],
     ["Schaatsclub Antwerpen", "IJsclub Gent"]),
    ("GER", 0.05, ["Jürgen", "Katrin", "Lukas", "Sabine", "Matthias", "Jörg"],
     ["Müller", "Schmidt", "Schäfer", "Weiß", "Böhm", "Krüger"],
     ["Eissportverein Inzell", "Berliner SC"]),
    ("AUT", 0.03, ["Florian", "Theresa", "Lukas", "Magdalena"],
     ["Gruber", "Huber", "Pichler", "Moser"], ["Eisclub Weissensee", "ESV Villach"]),
    ("FIN", 0.03, ["Jussi", "Aino", "Mikko", "Sanna"],
     ["Jääskeläinen", "Mäkinen", "Virtanen", "Lehtonen"], ["Helsingin Luistelijat"]),
    ("SWE", 0.03, ["Erik", "Åsa", "Lars", "Ingrid"],
     ["Ström", "Åberg", "Lindqvist", "Nilsson"], ["Vikingarännet Klubb", "Uppsala SK"]),
    ("NOR", 0.02, ["Øystein", "Kari", "Sindre", "Ingeborg"],
     ["Sørensen", "Haugen", "Bakke", "Lie"], ["Hamar IL"]),
    ("CAN", 0.02, ["Ryan", "Chloé", "Liam", "Émilie"],
     ["Tremblay", "Gagnon", "Roy", "MacDonald"], ["Ottawa Skate Club"]),
    ("SUI", 0.02, ["Reto", "Corinne", "Urs", "Nadja"],
     ["Meier", "Brunner", "Zürcher", "Keller"], ["Eisclub St. Moritz"]),
    ("GBR", 0.02, ["Oliver", "Emily", "James", "Sophie"],
     ["Smith", "O'Brien", "Jones", "Taylor"], ["Fen Skating Association"]),
]


@dataclass
class Truth:
    """What the reads were made from: per bib, the race time (µs) at each point the
    engine should show (first read, after its wave's gun; None: missed or not reached);
    the bibs that stopped, and the resting chip's bib."""
    passages: dict[str, list[int | None]] = field(default_factory=dict)
    stopped: set[str] = field(default_factory=set)
    resting: str = ""
    waves: dict[int, list[str]] = field(default_factory=dict)


def _skaters(n: int, rnd: random.Random) -> list[dict[str, Any]]:
    weights = [w for _, w, *_ in NATIONS]
    out = []
    for i in range(1, n + 1):
        nation, _, first, last, clubs = rnd.choices(NATIONS, weights)[0]
        name = f"{rnd.choice(first)} {rnd.choice(last)}"
        short = name.split(" ", 1)[1]
        out.append({"bib": str(i), "name": name, "short": short, "nation": nation,
                    "club": rnd.choice(clubs), "transponders": [str(500_000 + i)]})
    return out


def _speeds(n: int, rnd: random.Random) -> list[float]:
    """Average speeds (m/s), fastest first: the fast skaters start in the first wave."""
    kmh = [min(42.0, max(16.0, rnd.lognormvariate(math.log(27.0), 0.15))) for _ in range(n)]
    return sorted((v / 3.6 for v in kmh), reverse=True)


def build(skaters: int = 10_000, seed: int = 2026) -> tuple[dict[str, Any], Truth]:
    """The fixture document and the truth behind its reads (module docstring)."""
    rnd = random.Random(seed)
    people = _skaters(skaters, rnd)
    speeds = _speeds(skaters, rnd)
    n_waves = max(3, math.ceil(skaters / WAVE_SIZE))
    size = math.ceil(skaters / n_waves)
    waves = {w + 1: [p["bib"] for p in people[w * size:(w + 1) * size]]
             for w in range(n_waves)}
    truth = Truth(waves=waves)
    inputs: list[list[Any]] = []
    for w, bibs in waves.items():
        gun = FIRST_GUN_US + (w - 1) * WAVE_GAP_US
        inputs.append([gun + rnd.randint(20_000, 400_000), "gun",
                       {"type": "gun", "race": RACE, "wave": w, "t": gun}])
        for j, bib in enumerate(bibs):
            row = int(bib) - 1
            truth.passages[bib] = _reads(bib, gun, j, speeds[row], rnd, inputs, truth)
    _rest(truth, waves, rnd, inputs)
    inputs.sort(key=lambda x: x[0])
    doc = {"about": (f"A generated 200 km marathon on natural ice (bench/marathon.py, {skaters} "
                     f"skaters, seed {seed}): names, clubs, speeds and reads are made up."),
           "startlist": {
        "competition": {"id": "ae-2026", "name": "Alternative Elfstedentocht 2026"},
        "skaters": people,
        "races": [{"id": RACE, "name": "200 km tour", "kind": "marathon",
                   "course": [{"point": p, "m": m} for p, m in COURSE],
                   "waves": [{"wave": w, "name": f"Wave {w}", "skaters": bibs}
                             for w, bibs in waves.items()]}]},
        "script": {"race": RACE, "format": "marathon", "inputs": inputs}}
    return doc, truth


def _arrival(point: str, t: int, rnd: random.Random) -> int:
    """When a read made at ``t`` reaches ingest: a second or so later, or after the
    outage of its decoder's link (then RESENT in a burst)."""
    at = t + rnd.randint(100_000, 3_000_000)
    if point == OUTAGE_POINT and OUTAGE_FROM_US <= t < OUTAGE_FROM_US + OUTAGE_US:
        at = OUTAGE_FROM_US + OUTAGE_US + rnd.randint(0, 30_000_000)
    return at


def _reads(bib: str, gun: int, j: int, speed: float, rnd: random.Random,
           inputs: list[list[Any]], truth: Truth) -> list[int | None]:
    """One skater's reads along the course; returns what the engine should show."""
    tr = str(500_000 + int(bib))
    stop = rnd.randrange(1, len(COURSE)) if rnd.random() < DNF else len(COURSE)
    if stop < len(COURSE):
        truth.stopped.add(bib)
    shown: list[int | None] = [None] * len(COURSE)
    t = gun + j * 80_000 + rnd.randint(0, 2_000_000)  # crossing the start line
    for k, (point, m) in enumerate(COURSE):
        if k:
            leg = (m - COURSE[k - 1][1]) / (speed * (1 - 0.01 * k) * rnd.uniform(0.96, 1.04))
            t += int(leg * 1e6)
        if k >= stop:
            break
        if rnd.random() < MISSED:
            continue
        read = {"type": "passing", "transponder": tr, "point": point, "t": t}
        inputs.append([_arrival(point, t, rnd), f"mat-{point}", read])
        shown[k] = (t - gun) // 1000 * 1000
        if rnd.random() < DOUBLE:  # the chip read again as it leaves the mat
            again = {**read, "t": t + rnd.randint(20_000, 800_000)}
            inputs.append([_arrival(point, again["t"], rnd), f"mat-{point}", again])
        if rnd.random() < SECOND_DECODER:  # the spare decoder on the same mat
            spare = {**read, "t": t + rnd.randint(0, 5_000)}
            inputs.append([_arrival(point, spare["t"], rnd), f"mat-{point}-b", spare])
    return shown


def _rest(truth: Truth, waves: dict[int, list[str]], rnd: random.Random,
          inputs: list[list[Any]]) -> None:
    """One skater sits on the km100 mat: read every second for REST_US after her
    passage; and one stands on the start mat from before her wave's gun."""
    k = next(i for i, (p, _) in enumerate(COURSE) if p == REST_POINT)
    resting = next(b for b in waves[1] if truth.passages[b][k] is not None)
    truth.resting = resting
    gun = FIRST_GUN_US
    first = gun + int(truth.passages[resting][k] or 0)
    tr = str(500_000 + int(resting))
    for n in range(1, REST_US // 1_000_000):
        t = first + n * 1_000_000 + rnd.randint(0, 50_000)
        inputs.append([_arrival(REST_POINT, t, rnd), f"mat-{REST_POINT}",
                       {"type": "passing", "transponder": tr, "point": REST_POINT, "t": t}])
    early = waves[max(waves)][0]
    wave_gun = FIRST_GUN_US + (max(waves) - 1) * WAVE_GAP_US
    tr = str(500_000 + int(early))
    for n in range(-30, 3):  # before the gun: no passage (held, then dropped)
        t = wave_gun + n * 2_000_000 - 1_000_000
        inputs.append([_arrival("start", t, rnd), "mat-start",
                       {"type": "passing", "transponder": tr, "point": "start", "t": t}])
    # Her first read after the gun is her start passage (the start line is under her).
    after = wave_gun + 1_000_000
    start = truth.passages[early][0]
    if start is None or start > after - wave_gun:
        truth.passages[early][0] = after - wave_gun


def engine_cost(skaters: int, seed: int = 2026) -> dict[str, float]:
    """The engine alone on a generated race: µs per input (every read, every gun, in
    arrival order), and the bytes of the largest ``course_passage`` event."""
    from icetime.messages import convert_input
    from icetime.replay import script_inputs
    from services.scoring.competition import Competition

    doc, _ = build(skaters, seed)
    inputs = [convert_input({**it.inp, "source": it.source})
              for it in script_inputs(doc)]
    comp = Competition()
    comp.feed("sl", convert_input({"type": "startlist", **doc["startlist"]}))
    largest = 0
    started = time.perf_counter()
    for n, inp in enumerate(inputs):
        for ev in comp.feed(f"in-{n}", inp).get(RACE, []):
            if ev["type"] == "course_passage":
                largest = max(largest, len(json.dumps(ev)))
    spent = time.perf_counter() - started
    return {"skaters": skaters, "inputs": len(inputs), "us_per_input": spent / len(inputs) * 1e6,
            "event_bytes_max": largest}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.marathon", description=__doc__)
    ap.add_argument("--skaters", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--out", type=Path, help="write the fixture here")
    ap.add_argument("--engine", action="store_true",
                    help="time the engine alone at 40, 1,000 and --skaters skaters")
    args = ap.parse_args(argv)
    if args.engine:
        for n in (40, 1000, args.skaters):
            r = engine_cost(n, args.seed)
            print(f"marathon engine: {r['skaters']:>6} skaters, {r['inputs']:>6} inputs, "
                  f"{r['us_per_input']:6.1f} µs per input, largest passage event "
                  f"{r['event_bytes_max']} B")
        return 0
    if args.out is None:
        ap.error("--out is needed to write a fixture (or --engine to time the engine)")
    doc, truth = build(args.skaters, args.seed)
    args.out.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    reads = sum(1 for _, _, i in doc["script"]["inputs"] if i["type"] == "passing")
    print(f"wrote {args.out}: {args.skaters} skaters in {len(truth.waves)} waves, "
          f"{reads} reads, {len(truth.stopped)} stop on the way")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
