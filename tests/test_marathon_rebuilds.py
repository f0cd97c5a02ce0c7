"""A marathon scored through lost leases and rebuilds, and after an earlier replay of the
same chips, gives the results of one uninterrupted run (trial 7: after a 10,000-skater
replay with 14 rebuilds, and an earlier replay sent before the start list, the
front-runners' passages after km75 were missing). The engine against the fixture's
truth is tests/test_marathon.py."""
from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

import pytest

from bench.marathon import RACE, build
from bench.restart import fill
from icetime import bus, keys
from icetime.cli.replaying import fixture_path
from icetime.keys import DEFAULT_COMPETITION as MAIN
from icetime.messages import convert_input
from icetime.replay import load_fixture, script_inputs
from icetime.settings import Settings
from services.scoring.competition import Competition
from services.scoring.runner import ScoringRunner

from .conftest import race_view

SKATERS = 200
#: The second replay's clock base; the first replay's is ``GAP_US`` earlier (trial 7:
#: 80 s), so the two replays' reads overlap in time.
BASE_US = 1_800_000_000_000_000
GAP_US = 80_000_000
REBUILT = "rebuilt from the checkpoint"


@functools.cache
def replays() -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """The fixture, and its inputs as two replay sessions send them: the first at
    ``BASE_US - GAP_US``, the second at ``BASE_US`` (``rx_us``: ingest's stamp at 100x)."""
    doc, _ = build(SKATERS)

    def session(name: str, base: int) -> list[dict[str, Any]]:
        return [{**it.inp, "source": it.source, "session": name, "rx_us": base + it.at_us // 100}
                for it in script_inputs(doc, clock_base_us=base, rate=1000.0)]

    return doc, session("replay-1", BASE_US - GAP_US), session("replay-2", BASE_US)


def startlist(doc: dict[str, Any]) -> dict[str, Any]:
    return {"type": "startlist", **doc["startlist"]}


def engine_results(inputs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each skater's passages after feeding ``inputs`` to one engine, uninterrupted."""
    comp = Competition()
    for n, inp in enumerate(inputs):
        comp.feed(f"x{n}", convert_input(inp))
    return results(comp.view(RACE))


def results(view: dict[str, Any]) -> dict[str, Any]:
    return {bib: (r["t"], r["status"]) for bib, r in view["results"].items()}


def clean_run() -> dict[str, Any]:
    doc, _, second = replays()
    return engine_results([startlist(doc), *second])


# ---------------------------------------------------------------- the engine
def test_an_earlier_replay_before_the_start_list_changes_nothing():
    """The same fixture replayed first without a start list (its reads are of chips
    nobody wears, its guns refused), then the start list, then replayed again 80 s
    later: the results of the second replay alone."""
    doc, first, second = replays()
    part = first[: len(first) * 4 // 10]  # trial 7 stopped it 40 % in
    assert engine_results([*part, startlist(doc), *second]) == clean_run()


@pytest.mark.xfail(strict=True, reason=(
    "reads of the earlier replay that came after the start list, before any gun of "
    "their skaters, are held (competition.HELD_MAX) and released by the second "
    "replay's guns: their times lie after those guns (the earlier clock base is only "
    "80 s behind), so they land as passages 80 s early; nothing in a held read but "
    "its session tells the two replays apart"))
def test_an_earlier_replay_still_sending_when_the_start_list_came_changes_nothing():
    """As above, but the start list came while the first replay was still sending (its
    last 10 %, before its guns were sent again): the results of the second replay."""
    doc, first, second = replays()
    part = first[: len(first) * 4 // 10]
    at = len(part) * 9 // 10
    assert engine_results([*part[:at], startlist(doc), *part[at:], *second]) == clean_run()


# ---------------------------------------------------------------- the scoring worker
async def scored_to(r: Any, last: str, stop: asyncio.Event) -> None:
    while bus.text(await r.get(keys.scoring_progress(MAIN)) or b"") != last:
        if stop.is_set():
            return
        await asyncio.sleep(0.01)


async def progress_count(r: Any) -> int:
    mark = await r.get(keys.scoring_progress(MAIN))
    return 0 if mark is None else len(await r.xrange(keys.raw_stream(MAIN), "-", mark))


@pytest.mark.parametrize("earlier_replay", [False, True])
async def test_a_marathon_scored_through_lost_leases_ends_as_one_run(
        redis_server, redis_client, earlier_replay, caplog):
    """The scoring worker loses its lease to another worker at several points of the
    race (each time it stands by, takes the lease back and rebuilds from the checkpoint
    and the raw log, as under load in trial 7): the rebuilt engine and the published
    results are those of one uninterrupted run."""
    caplog.set_level(logging.INFO, logger="services.scoring.recovery")
    doc, first, second = replays()
    inputs = [*(first[: len(first) * 4 // 10] if earlier_replay else []),
              startlist(doc), *second]
    r = redis_client
    last = await fill(r, inputs)
    settings = Settings(redis_url=redis_server.url, checkpoint_every=300)
    runner = ScoringRunner(settings, r)
    stop = asyncio.Event()
    work = asyncio.create_task(runner.run(stop))
    lease = keys.scoring_lease(MAIN)
    try:
        for share in (0.2, 0.35, 0.5, 0.65, 0.8):
            async with asyncio.timeout(60):
                while await progress_count(r) < share * len(inputs):
                    await asyncio.sleep(0.005)
            # Another worker takes the lease for a moment: this one loses it.
            rebuilt = caplog.text.count(REBUILT)
            await r.set(lease, "another-worker", px=1500)
            async with asyncio.timeout(30):
                while runner.owning is not False:
                    await asyncio.sleep(0.01)
            await r.delete(lease)
            async with asyncio.timeout(30):  # it takes the lease back and rebuilds
                while caplog.text.count(REBUILT) == rebuilt:
                    await asyncio.sleep(0.01)
        async with asyncio.timeout(120):
            await scored_to(r, last, stop)
    finally:
        stop.set()
        await work
    assert caplog.text.count(REBUILT) >= 5, caplog.text
    want = clean_run()
    assert results(runner.engine.view(RACE)) == want
    published = await race_view(r, RACE)
    assert published is not None and results(published) == want


def test_a_start_list_reusing_the_marathons_bibs_is_refused_and_takes_none_of_its_reads():
    """Another start list that gives the marathon's bibs to other skaters (the Beijing
    1000 m, bibs 1-20, replayed during the marathon as in trial 7: once its guns came,
    reads go by bib to the race of the latest gun, and the marathon lost its
    front-runners' passages) is refused whole, naming the bib, both skaters and the
    race that has it: the marathon's results are those it has alone."""
    doc, _, second = replays()
    beijing = load_fixture(fixture_path("beijing2023_w1000a"))
    gun_at = BASE_US + 600_000_000  # 10 minutes into the marathon, as the clocks go
    other = [{**it.inp, "source": it.source, "session": "replay-3"}
             for it in script_inputs(beijing, clock_base_us=gun_at)]
    half = len(second) // 4
    comp = Competition()
    for n, inp in enumerate([startlist(doc), *second[:half]]):
        comp.feed(f"x{n}", convert_input(inp))
    skaters = {s["bib"]: s["name"] for s in doc["startlist"]["skaters"]}
    assert comp.feed("beijing", convert_input({"type": "startlist", **beijing["startlist"]})) == {}
    assert comp.stats["refused"] == 1
    assert comp.last_reason == (
        f"skaters[0]: bib 1 is {skaters['1']} in this competition (race {RACE}), not "
        "Ellia Smeding: a bib is one skater in a competition. Give Ellia Smeding another "
        "bib, or load this start list into a competition of its own (an icetime configured "
        "with another competition.id; the file's own competition id does not choose it); "
        "nothing of it was applied")
    assert "bj23-w1000a" not in comp.races and comp.skaters["1"].name == skaters["1"]
    for n, inp in enumerate([*other, *second[half:]]):
        comp.feed(f"y{n}", convert_input(inp))
    assert results(comp.view(RACE)) == clean_run()
