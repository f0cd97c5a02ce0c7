"""Scoring workers that score any competition (services/scoring/pool.py).

Two worker processes with ``--any-competition`` (one by the flag, one by
``scoring.competitions = "*"``) share three competitions, each fed by its own ingest:
each competition is scored by exactly one worker, neither holds more than its fair
share (two of three). The owner of one competition is killed with SIGKILL mid-race;
the other takes every competition, and each race ends exactly as a fault-free run:
the same view, every event once, the same verdicts. A competition whose ingest starts
afterwards is picked up. Then, with the pool in this process: a worker that joins is
handed its share, and one that stops hands its competitions over at once.
(tests/test_cluster.py runs two such workers on a Redis Cluster.)
"""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections import Counter

from icetime import bus, keys
from icetime.cli import replay
from services.scoring.pool import Pool

from .conftest import (
    ROOT,
    Stack,
    fail_running_test,
    make_settings,
    race_view,
    service_died,
    stop_processes,
    without_inputs,
    write_venue_config,
)
from .test_pipeline import load_startlist
from .test_restart import FIXTURE, RACE, all_finished, expected_view

SPEED = 150.0
KILL_AT_PASSING = 30
RINKS = ("rink-a", "rink-b", "rink-c")
#: Events of the fixture's race, each written once: revision, pair_start, passage, finish.
EVENT_COUNTS = (1, 10, 40, 20)


def same_results(view, expected) -> None:
    assert view["classification"] == expected["classification"]
    assert without_inputs(view["results"]) == without_inputs(expected["results"])


def start_worker(config, url: str, name: str, log_path, *flags: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "REDIS_URL": url, "ICETIME_WORKER": name, "ICETIME_LOG": "INFO"}
    env.pop("ICETIME_SUPERVISOR_PID", None)
    with open(log_path, "wb") as log:
        return subprocess.Popen([sys.executable, "-m", "services.scoring", "--config",
                                 str(config), *flags], cwd=ROOT, env=env, stdout=log,
                                stderr=log)


def all_owned(held: dict[str, str]) -> bool:
    """Whether every competition in ``held`` (:func:`owners`) has a lease holder."""
    return all(held.values())


def stop_workers(workers) -> None:
    """SIGTERM every worker still running (:func:`tests.conftest.stop_processes`)."""
    stop_processes(list(workers.values()))


async def owners(r, competitions) -> dict[str, str]:
    """Competition -> the name (``ICETIME_WORKER``) of its lease's holder ("": none)."""
    held = {c: bus.text(await r.get(keys.scoring_lease(c))) for c in competitions}
    return {c: o.rsplit("/", 1)[-1] for c, o in held.items()}


async def wait_for(check, what: str, timeout_s: float = 30.0, ok=bool):
    """``await check()`` until it is truthy (or ``ok`` of it is); its value. Bounded by
    the condition, with a generous timeout for a busy machine."""
    try:
        async with asyncio.timeout(timeout_s):
            while not ok(got := await check()):
                await asyncio.sleep(0.05)
    except TimeoutError:
        # Where each task stands (a runner that ignored its stop once held a hand-over
        # for 40 s, fresh-clone run r2 of 2026-12-01): the next failure says where.
        stacks = [f"--- {t.get_name()}: " + " < ".join(
            f"{f.f_code.co_name}:{f.f_lineno}" for f in reversed(t.get_stack()))
            for t in asyncio.all_tasks() if not t.done()]
        print("\n".join(stacks), file=sys.stderr, flush=True)
        raise AssertionError(f"not within {timeout_s} s: {what}") from None
    return got


async def equals(got, want) -> bool:
    """Whether the awaitable ``got`` gives ``want`` (a check for :func:`wait_for`)."""
    return await got == want


async def live_workers(r) -> int:
    return int(await r.zcard(keys.SCORING_WORKERS))


async def verdicts(r, competition: str) -> list[tuple]:
    """The officials' stream as (input type, verdict, reason): what a competition's
    inputs were judged, without its own input ids and times."""
    out = []
    for _, fields in await r.xrange(keys.officials_stream(competition)):
        v = json.loads(fields[b"v"])
        out.append((v["type"], v["verdict"], v.get("reason")))
    return out


async def event_counts(r, competition: str) -> tuple[int, ...]:
    stream = bus.entries(await r.xrange(keys.events_stream(competition, RACE)))
    kinds = Counter(json.loads(f[b"e"])["type"] for _, f in stream if f)
    return tuple(kinds[k] for k in ("revision", "pair_start", "passage", "finish"))


async def finished(r, competition: str) -> bool:
    view = await race_view(r, RACE, competition)
    return view is not None and all_finished(view)


async def close_all(workers, stacks, r) -> None:
    """Stop the in-process worker pools, then the ingest stacks, then the client."""
    for w in workers:
        await w.close()
    for st in stacks:
        await st.close()
    await r.aclose()


async def start_ingest(url: str, competition: str) -> Stack:
    st = Stack(make_settings(url, competition_id=competition), url)
    await st.start("ingest")
    return st


class KillOwner:
    """A replay ``hold`` that SIGKILLs, at the script's ``at``-th passing, the worker
    holding ``competition``'s lease."""

    def __init__(self, r, workers, competition: str, at: int = KILL_AT_PASSING) -> None:
        self.r, self.workers, self.competition, self.at = r, workers, competition, at
        self.passings = 0
        self.killed = ""

    async def __call__(self, item) -> None:
        self.passings += item.inp["type"] == "passing"
        if item.inp["type"] == "passing" and self.passings == self.at:
            # A worker starved of CPU for over a renewal lets its lease run out and
            # takes it again at once: between the two nobody holds it. Kill the holder.
            got = await wait_for(lambda: owners(self.r, [self.competition]),
                                 f"an owner of {self.competition}", ok=all_owned)
            self.killed = got[self.competition]
            self.workers[self.killed].send_signal(signal.SIGKILL)


async def test_two_workers_share_three_competitions_one_killed(redis_server, tmp_path):
    url = redis_server.url
    for name in ("w1", "w2"):
        (tmp_path / name).mkdir()
    flag_config = write_venue_config(tmp_path / "w1")
    key_config = write_venue_config(tmp_path / "w2", '[scoring]\ncompetitions = "*"')
    r = bus.connect(url)
    workers: dict[str, subprocess.Popen[bytes]] = {}
    stacks: list[Stack] = []
    try:
        workers["w1"] = start_worker(flag_config, url, "w1", tmp_path / "w1.log",
                                     "--any-competition")
        workers["w2"] = start_worker(key_config, url, "w2", tmp_path / "w2.log")
        await wait_for(lambda: equals(live_workers(r), 2), "both workers announced")
        for rink in RINKS:  # each ingest registers its competition with its first input
            stacks.append(await start_ingest(url, rink))
            await load_startlist(stacks[-1])

        async def shared():
            """Every competition owned, at most the fair share, ceil(3 / 2) = 2, each."""
            got = await owners(r, RINKS)
            return all(got.values()) and sorted(Counter(got.values()).values()) == [1, 2]

        await wait_for(shared, "each worker scores its share")
        kill = KillOwner(r, workers, RINKS[0])
        await asyncio.wait_for(asyncio.gather(*(
            replay(FIXTURE, st.settings, speed=SPEED, announce=False,
                   hold=kill if st is stacks[0] else None) for st in stacks)), 120)
        assert kill.killed and workers[kill.killed].wait(10) == -signal.SIGKILL
        survivor = next(name for name in workers if name != kill.killed)
        for rink in RINKS:
            await wait_for(lambda rink=rink: finished(r, rink), f"{rink} finished", 60)
        assert set((await owners(r, RINKS)).values()) == {survivor}
        expected = expected_view()
        judged = await verdicts(r, RINKS[0])
        assert ("startlist", "applied", None) in judged
        for rink in RINKS:
            same_results(await race_view(r, RACE, rink), expected)
            assert await event_counts(r, rink) == EVENT_COUNTS, rink
            # Each worker scored one competition at least from start to end before the
            # kill: a competition taken over is judged as one that never was.
            assert await verdicts(r, rink) == judged, rink
            assert (await r.xpending(keys.raw_stream(rink), keys.SCORING_GROUP))["pending"] == 0
        took_over = (tmp_path / f"{survivor}.log").read_text()
        assert f"scoring {RINKS[0]} as " in took_over, took_over

        # A competition registered later (its ingest's first input) is picked up.
        stacks.append(await start_ingest(url, "rink-d"))
        await load_startlist(stacks[-1])
        await wait_for(lambda: equals(owners(r, ["rink-d"]), {"rink-d": survivor}),
                       "rink-d scored by the survivor")
        await wait_for(lambda: verdicts(r, "rink-d"), "rink-d's start list judged")
        assert await verdicts(r, "rink-d") == [("startlist", "applied", None)]
    finally:
        stop_workers(workers)
        for st in stacks:
            await st.close()
        await r.aclose()


class Worker:
    """A worker that scores any competition, in this process: the pool
    ``python -m services.scoring --any-competition`` runs, under ``name``."""

    def __init__(self, url: str, name: str) -> None:
        self.r = bus.connect(url)
        self.pool = Pool(make_settings(url), self.r, name)
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(self.pool.run(self.stop), name=f"pool {name}")
        self.task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        """A pool that ends before it is stopped fails the running test at once, with
        what it died of (as a Stack's service does), not at the test's timeout."""
        if self.stop.is_set():
            return
        fail_running_test(service_died(f"worker {self.pool.name}", task))

    async def close(self) -> None:
        """Stop as on SIGTERM: the pool hands its competitions over."""
        self.stop.set()
        try:
            await asyncio.wait_for(self.task, 10)
        finally:
            await self.pool.close()
            await self.r.aclose()


async def test_a_worker_hands_over_its_extra_competitions_when_another_joins(redis_server):
    """One worker takes all three competitions; a second that joins gets its share
    (one) handed over, and a worker that stops hands its own over at once."""
    url = redis_server.url
    r = bus.connect(url)
    workers: list[Worker] = []
    stacks: list[Stack] = []
    try:
        workers.append(Worker(url, "w1"))
        for rink in RINKS:
            stacks.append(await start_ingest(url, rink))
            await load_startlist(stacks[-1], wait=False)
        await wait_for(lambda: equals(owners(r, RINKS), dict.fromkeys(RINKS, "w1")),
                       "w1 scores all three")
        workers.append(Worker(url, "w2"))

        async def shared():
            got = await owners(r, RINKS)
            return sorted(Counter(got.values()).items()) == [("w1", 2), ("w2", 1)]

        await wait_for(shared, "w1 handed one competition to w2")
        await workers.pop(0).close()
        # Handed over on a clean stop: its leases are released at once (w2 takes them
        # at its next poll), not left to run out.
        assert set((await owners(r, RINKS)).values()) <= {"", "w2"}
        await wait_for(lambda: equals(owners(r, RINKS), dict.fromkeys(RINKS, "w2")),
                       "w2 scores all three")
        assert await live_workers(r) == 1
        for rink in RINKS:
            assert await verdicts(r, rink) == [("startlist", "applied", None)]
    finally:
        await close_all(workers, stacks, r)
