"""Pull the plug: SIGKILL each service mid-race; nothing is lost, nothing doubled."""
from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

from icetime import bus, keys, settings
from icetime.cli import Supervisor, replay
from icetime.keys import DEFAULT_COMPETITION as MAIN
from icetime.replay import load_fixture
from services.scoring.competition import Competition

from .conftest import feed, without_inputs, write_venue_config
from .fans import follow_race

FIXTURE = load_fixture(Path(__file__).parents[1] / "fixtures" / "beijing2023_w1000a.json")
RACE = "bj23-w1000a"


def expected_view():
    from icetime.replay import script_inputs
    comp = Competition()
    feed(comp, "sl", {"type": "startlist", **FIXTURE["startlist"]})
    for n, it in enumerate(script_inputs(FIXTURE)):
        feed(comp, f"i{n}", {**it.inp, "source": it.source})
    return comp.view(RACE)


def all_finished(view):
    """True once all 20 skaters of the 1000 m are classified."""
    return len(view["classification"]["bib"]) == 20


async def test_sigkill_each_service_mid_race(tmp_path):
    config = str(write_venue_config(tmp_path))
    sup = Supervisor(config, settings.load(config))
    await asyncio.to_thread(sup.start)
    cfg = sup.cfg  # with the ports the services bound; a restarted one binds them again
    try:
        await asyncio.to_thread(sup.load_startlist, FIXTURE)
        ws_url = f"ws://127.0.0.1:{cfg.broadcast_ws_port}/"
        done, log = asyncio.Event(), []
        fan = asyncio.create_task(follow_race(ws_url, RACE, done, log, all_finished))
        kills: list[asyncio.Task[None]] = []

        async def kill(name):
            proc = sup.procs[name]
            os.kill(proc.pid, signal.SIGKILL)
            # Gone for sure (a loaded machine can take a while to reap it), then the
            # supervisor's check restarts it.
            await asyncio.to_thread(proc.wait, 10)
            await asyncio.to_thread(sup.check_children)

        # Each pair has 12 passings (two skaters, three lines, two ankles): mid-pair 2,
        # 4 and 6, one service after the other, while the replay goes on.
        plan, passings = {18: "scoring", 42: "broadcast", 66: "ingest"}, 0

        async def hold(item):
            nonlocal passings
            passings += item.inp["type"] == "passing"
            if item.inp["type"] == "passing" and passings in plan:
                if kills:
                    await kills[-1]  # one service down at a time
                kills.append(asyncio.create_task(kill(plan[passings])))

        feed = asyncio.create_task(replay(FIXTURE, cfg, speed=150.0, announce=False,
                                          hold=hold))
        await asyncio.wait_for(feed, 60)
        assert len(kills) == 3
        await asyncio.wait_for(asyncio.gather(*kills), 30)
        view = await asyncio.wait_for(fan, 60)
        assert sup.restarts == {"scoring": 1, "broadcast": 1, "ingest": 1}
        assert ("dropped",) in log

        expected = expected_view()
        assert view["classification"] == expected["classification"]
        assert without_inputs(view["results"]) == without_inputs(expected["results"])
        # No gap, no duplicate: the offsets seen after the first snapshot are exactly the
        # stream's, once each.
        seen = [x[1] for x in log if x[0] == "event"]
        assert len(seen) == len(set(seen))
        r = bus.connect(sup.url)
        try:
            stream = [i.decode() for i, _ in await r.xrange(keys.events_stream(MAIN, RACE))]
            first_snapshot = next(x[1] for x in log if x[0] == "snapshot")
            after = [s for s in stream if bus.parse_id(s) > bus.parse_id(first_snapshot)]
            resnaps = [x[1] for x in log if x[0] == "snapshot"][1:]
            assert not resnaps, "the client should have resumed, not re-snapshotted"
            assert seen == after
            # The events are exactly those of an undisturbed run: 1 start list revision,
            # 10 pair starts, 40 passages, 20 finishes.
            kinds = [json.loads(f[b"e"])["type"] for _, f in
                     await r.xrange(keys.events_stream(MAIN, RACE))]
            assert (kinds.count("revision"), kinds.count("pair_start"), kinds.count("passage"),
                    kinds.count("finish")) == (1, 10, 40, 20)
            assert await r.xpending(keys.raw_stream(MAIN), keys.SCORING_GROUP) == {
                "pending": 0, "min": None, "max": None, "consumers": []}
        finally:
            await r.aclose()
    finally:
        await asyncio.to_thread(sup.stop)
