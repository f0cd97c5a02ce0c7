"""Pull Redis's plug: SIGKILL redis-server mid-race, start it again on the same files.

Nothing acknowledged is lost (AOF), the services resume on their own within seconds
of Redis being back, a connected fan gets every event exactly once and in order, and
the logs say what happened in a warning and a "recovered" line, with no traceback.

Redis runs here with ``appendfsync always`` (``redis.appendfsync``), the setting that
makes "nothing acknowledged is lost" hold across a crash of Redis itself: with the
default ``everysec``, Redis may hold back its AOF write for up to 2 s while an fsync is
slow, and acknowledged writes of that window die with it (seen in a fresh-clone run on a
busy machine: an event a fan had received was gone from the stream after the restart,
and scored again under a new id). docs/configuration.md says so.
"""
from __future__ import annotations

import asyncio
import copy
import json
import logging
import os
import signal
import time

import aiohttp
import pytest
import websockets

from icetime import bus, keys
from icetime.cli import replay
from icetime.keys import DEFAULT_COMPETITION as MAIN
from icetime.messages import decode_stored
from icetime.redis_embed import EmbeddedRedis
from icetime.replay import script_inputs
from services.scoring.competition import Competition

from .conftest import TOKENS, caught_up, feed, without_inputs
from .fans import follow_race
from .test_pipeline import load_startlist
from .test_restart import FIXTURE, RACE, all_finished, expected_view

SPEED = 150.0
#: Redis is killed at this passing of the script: mid-pair 3 (12 passings a pair).
KILL_AT_PASSING = 30
DOWN_S = 5.0
#: How soon after Redis is back the fan must get its next race event (s).
RESUME_WITHIN_S = 3.0
OURS = ("icetime", "services")


@pytest.fixture
def redis_server(tmp_path):
    """conftest's ``redis_server``, fsyncing every write (see the module doc)."""
    with EmbeddedRedis(tmp_path / "redis", appendfsync="always") as emb:
        yield emb


class Outage:
    """A replay ``hold`` that pulls Redis's plug at the script's ``at``-th passing and
    starts it again on the same files ``DOWN_S`` later, while the replay goes on (its
    inputs answered "retry" meanwhile). ``killed_at`` and ``back_at`` are loop times,
    ``back_wall`` the wall clock when Redis was back."""

    def __init__(self, redis_server, at: int = KILL_AT_PASSING) -> None:
        self.redis_server, self.at = redis_server, at
        self.passings = 0
        self.task: asyncio.Task[None] | None = None
        self.killed_at = self.back_at = self.back_wall = 0.0

    async def __call__(self, item) -> None:
        self.passings += item.inp["type"] == "passing"
        if item.inp["type"] == "passing" and self.passings == self.at:
            self.task = asyncio.create_task(self.pull_the_plug())

    async def pull_the_plug(self) -> None:
        loop = asyncio.get_running_loop()
        proc = self.redis_server.proc
        assert proc is not None
        os.kill(proc.pid, signal.SIGKILL)
        await asyncio.to_thread(proc.wait, 10)
        self.killed_at = loop.time()
        await asyncio.sleep(DOWN_S)
        await asyncio.to_thread(self.redis_server.restart)  # same files; we hold the lock
        self.back_at, self.back_wall = loop.time(), time.time()

    async def over(self) -> None:
        assert self.task is not None, f"the script has fewer than {self.at} passings"
        await asyncio.wait_for(self.task, 30)


async def stored_seqs(redis_url: str, source: str) -> list[int | None]:
    """The ``seq`` of every input ``source`` has in the raw log, in stored order."""
    r = bus.connect(redis_url)
    try:
        raw = bus.entries(await r.xrange(keys.raw_stream(MAIN)))
    finally:
        await r.aclose()
    return [inp.seq for inp in (decode_stored(f[b"d"]) for _, f in raw if f)
            if inp.source == source]


@pytest.mark.alone
async def test_redis_killed_mid_race_and_back(stack, redis_server, caplog):
    caplog.set_level(logging.INFO)
    await load_startlist(stack)
    done, log = asyncio.Event(), []
    follower = asyncio.create_task(follow_race(stack.ws_url, RACE, done, log, all_finished))
    async with asyncio.timeout(10):
        while not log:  # subscribed: the snapshot is in
            await asyncio.sleep(0.02)
    outage = Outage(redis_server)
    feed = asyncio.create_task(replay(FIXTURE, stack.settings, speed=SPEED, announce=False,
                                      hold=outage))
    await asyncio.wait_for(feed, 60)
    await outage.over()
    view = await asyncio.wait_for(follower, 60)
    killed_at, back_at, back_wall = outage.killed_at, outage.back_at, outage.back_wall
    events_before = sum(1 for x in log if x[0] == "event" and x[2] < killed_at)

    next_event = min(x[2] for x in log if x[0] == "event" and x[2] > back_at)
    in_outage = [x for x in log if x[0] == "event" and killed_at < x[2] < back_at]
    print(f"\nevents before the kill {events_before}; during the outage {len(in_outage)}; "
          f"Redis down {back_at - killed_at:.2f} s; first race event "
          f"{next_event - back_at:.2f} s after Redis was back; "
          f"fan dropped {sum(1 for x in log if x[0] == 'dropped')} times")
    assert next_event - back_at < RESUME_WITHIN_S

    expected = expected_view()
    assert view["classification"] == expected["classification"]
    assert without_inputs(view["results"]) == without_inputs(expected["results"])

    # Every event exactly once, in order, and no second snapshot (a resume at most).
    snapshots = [x for x in log if x[0] == "snapshot"]
    assert len(snapshots) == 1, log
    seen = [x[1] for x in log if x[0] == "event"]
    r = bus.connect(redis_server.url)
    try:
        stream = bus.entries(await r.xrange(keys.events_stream(MAIN, RACE)))
        after = [sid for sid, _ in stream if bus.parse_id(sid) > bus.parse_id(snapshots[0][1])]
        assert seen == after
        kinds = [json.loads(f[b"e"])["type"] for _, f in stream if f]
        assert (kinds.count("revision"), kinds.count("pair_start"), kinds.count("passage"),
                kinds.count("finish")) == (1, 10, 40, 20)
        pending = await r.xpending(keys.raw_stream(MAIN), keys.SCORING_GROUP)
        assert pending["pending"] == 0
    finally:
        await r.aclose()

    ours = [rec for rec in caplog.records if rec.name.startswith(OURS)]
    for rec in ours:
        if rec.levelno >= logging.WARNING:
            print(f"{rec.levelname} {rec.name}: {rec.getMessage()}")
    tracebacks = [rec for rec in ours if rec.exc_info]
    assert not tracebacks, [f"{r.name}: {r.getMessage()}" for r in tracebacks]
    errors = [rec for rec in ours if rec.levelno >= logging.ERROR]
    assert not errors, [f"{r.name}: {r.getMessage()}" for r in errors]
    # Each service says once that Redis went, and once that it is back: within 2 s.
    for service in ("ingest", "scoring", "fan-out"):
        said = [rec for rec in ours if rec.getMessage().startswith(f"{service}: Redis")]
        assert [rec.levelno for rec in said] == [logging.WARNING, logging.INFO], (
            service, [rec.getMessage() for rec in said])
        assert "recovered" in said[1].getMessage()
        print(f"{service} resumed {said[1].created - back_wall:.2f} s after Redis was back")
        assert said[1].created - back_wall < 2.0


async def test_redis_killed_while_a_decoder_link_feeds_the_finish_loop(redis_server, tmp_path,
                                                                        caplog):
    """The loop's passings come over P3: those that cannot be stored wait in the link's
    spool and are stored in order once Redis is back (no RESEND needed), so the whole
    race, down to each passage's rank then and the stories, equals an undisturbed run."""
    from .test_decoder_link import decoder_stack, follow, post

    caplog.set_level(logging.INFO)
    async with decoder_stack(redis_server, tmp_path) as (st, sim):
        await post(st, "/api/startlist", FIXTURE["startlist"])
        outage = Outage(redis_server)
        feed = asyncio.create_task(replay(FIXTURE, st.settings, speed=SPEED, announce=False,
                                          decoder=sim, hold=outage))
        await asyncio.wait_for(feed, 60)
        await outage.over()
        # Scoring rebuilt after the outage and took every input first (on a busy machine
        # that outlasts the fan's own 10 s).
        r = bus.connect(redis_server.url)
        try:
            await caught_up(r, RACE, timeout_s=60)
        finally:
            await r.aclose()
        expected = expected_view()
        want = without_inputs(expected["results"])
        view = await follow(st, lambda v: without_inputs(v["results"]) == want)

    assert view["classification"] == expected["classification"]
    assert view["stories"] == expected["stories"]
    resends = [rec for rec in caplog.records if "missing; asking again" in rec.getMessage()]
    print(f"\n{len(resends)} RESEND requests for passings not stored during the outage")
    assert not resends  # the spool kept them
    assert not [rec for rec in caplog.records
                if rec.name.startswith(OURS) and (rec.exc_info or rec.levelno >= logging.ERROR)]


#: Redis stays away at least this long in the spool test (s).
SPOOL_DOWN_S = 3.0
DECODER = "finish-p3"


def two_pairs():
    """The fixture's last two pairs: a short race (2.6 s at SPEED)."""
    doc = copy.deepcopy(FIXTURE)
    doc["script"]["pairs"] = [p for p in doc["script"]["pairs"] if p["pair"] in (9, 10)]
    return doc


def fault_free_view(doc):
    comp = Competition()
    feed(comp, "sl", {"type": "startlist", **doc["startlist"]})
    for n, it in enumerate(script_inputs(doc)):
        feed(comp, f"i{n}", {**it.inp, "source": it.source})
    return comp.view(RACE)


async def watch(url, protocol, got, done):
    """A client following the race in ``protocol``: every message it gets, with its
    arrival time, as (type, loop time, message)."""
    loop = asyncio.get_running_loop()
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({"op": "subscribe", "race": RACE, "protocol": protocol}))
        while not done.is_set():
            try:
                msg = json.loads(await asyncio.wait_for(ws.recv(), 0.2))
            except TimeoutError:
                continue
            got.append((msg["type"], loop.time(), msg))


async def decoder_state(st):
    """The P3 link's state from ingest's GET /api/stats (it answers 503 with the links'
    state while Redis is away)."""
    async with aiohttp.ClientSession() as s:
        url = f"http://127.0.0.1:{st.settings.ingest_http_port}/api/stats"
        async with s.get(url) as r:
            return (await r.json())["decoders"][DECODER]


async def wait_for(check, what, timeout=20.0):
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.05)


async def test_passings_that_cross_while_redis_is_away_are_spooled_and_stored(
        redis_server, tmp_path, caplog):
    """Redis is killed just after the last pair's gun; every passing of that pair crosses
    the P3 decoder while it is away, and none after it is back. The link keeps them in
    its spool and stores them, once and in order, as soon as Redis answers (no RESEND, no
    later passing needed); the race equals a fault-free run. A connected client is told
    the data is stale meanwhile, and fresh again after."""
    from .test_decoder_link import decoder_stack, follow, post

    caplog.set_level(logging.INFO)
    loop = asyncio.get_running_loop()
    doc = two_pairs()
    guns = sum(1 for it in script_inputs(doc) if it.inp["type"] == "gun")
    crossing_in_outage = 0
    killed_at = None

    async with decoder_stack(redis_server, tmp_path) as (st, sim):
        await post(st, "/api/startlist", doc["startlist"])
        got2, got1, done = [], [], asyncio.Event()
        watchers = [asyncio.create_task(watch(st.ws_url, 2, got2, done)),
                    asyncio.create_task(watch(st.ws_url, 1, got1, done))]
        seen_guns = 0
        sent_before = 0  # passings sent before Redis is killed

        async def stored_before():
            return (await decoder_state(st))["passings"] == sent_before

        async def hold(item):
            nonlocal seen_guns, killed_at, crossing_in_outage, sent_before
            if item.inp["type"] == "gun":
                seen_guns += 1
            elif seen_guns < guns:
                sent_before += 1
            else:
                if killed_at is None:  # every gun is stored: kill before the next passing
                    # ...and every passing before it (on a busy machine the link may still
                    # hold the last ones: they would be spooled too).
                    await wait_for(stored_before, "the passings before the last pair stored")
                    proc = redis_server.proc
                    killed_at = loop.time()
                    os.kill(proc.pid, signal.SIGKILL)
                    await asyncio.to_thread(proc.wait, 10)
                crossing_in_outage += 1

        async def both_subscribed():  # each watcher's snapshot is in before the first passing
            return all(any(kind == "snapshot" for kind, _, _ in got) for got in (got1, got2))
        await wait_for(both_subscribed, "both clients subscribed")
        resends_before = sim.resends_answered
        await replay(doc, st.settings, speed=SPEED, announce=False, decoder=sim, hold=hold)
        assert killed_at is not None and crossing_in_outage == 12

        seen: list[dict] = []

        async def all_spooled():
            seen.append(await decoder_state(st))
            return seen[-1]["spooled"] == crossing_in_outage
        try:
            await wait_for(all_spooled, "every passing of the last pair spooled")
        except TimeoutError:
            raise AssertionError(f"not every passing spooled: {seen[-1:]}") from None
        await asyncio.sleep(max(0.0, killed_at + SPOOL_DOWN_S - loop.time()))
        back_at = loop.time()  # it answers before restart() returns: count from here
        await asyncio.to_thread(redis_server.restart)  # on the same files

        async def spool_stored():
            s = await decoder_state(st)
            return s["spooled"] == 0 and s["passings"] == 24
        await wait_for(spool_stored, "the spool stored")
        stored_after = loop.time() - back_at
        view = await follow(st, lambda v: len(v["classification"]["bib"]) == 4)
        state = await decoder_state(st)
        done.set()
        await asyncio.gather(*watchers)

    expected = fault_free_view(doc)
    print(f"\nRedis down {back_at - killed_at:.2f} s; {crossing_in_outage} passings spooled; "
          f"spool stored {stored_after:.2f} s after Redis was back; "
          f"RESEND requests answered {sim.resends_answered - resends_before}")
    assert view["classification"] == expected["classification"]
    assert without_inputs(view["results"]) == without_inputs(expected["results"])
    assert view["stories"] == expected["stories"]
    assert sim.resends_answered == resends_before  # nothing asked for again
    assert (state["passings"], state["duplicates"], state["not_stored"],
            state["refused"]) == (24, 0, 0, 0)
    # At the link's next spool retry (every 0.2 s) once Redis answers; the bound leaves room
    # for a busy machine (2.6 s seen, counted from before Redis' restart), far below what
    # waiting for a later passing or a RESEND would take (never, here).
    assert stored_after < 5.0

    # The protocol-2 client was told: stale soon after Redis went, fresh once it was back.
    statuses = [(m["stale"], at) for kind, at, m in got2 if kind == "status"]
    assert [stale for stale, _ in statuses] == [True, False], statuses
    told_stale, told_fresh = statuses[0][1] - killed_at, statuses[1][1] - back_at
    print(f"client told stale {told_stale:.2f} s after the kill, fresh {told_fresh:.2f} s "
          "after Redis was back")
    assert 0 <= told_stale < 5.0 and 0 <= told_fresh < 5.0  # docs/delivery.md: within 5 s
    # Both clients got the same events; the protocol-1 one no status message.
    assert not [x for x in got1 if x[0] == "status"]
    offsets = [[m["offset"] for kind, _, m in got if kind == "event"] for got in (got1, got2)]
    assert offsets[0] == offsets[1]
    # ...the missed ones after the "fresh" message, and the race's last among them.
    after = [m["event"]["type"] for kind, at, m in got2
             if kind == "event" and at >= statuses[1][1]]
    print(f"{len(offsets[1])} events, {len(after)} after the fresh status: {after}")
    assert "finish" in after

    numbers = await stored_seqs(redis_server.url, DECODER)
    assert numbers == list(range(1, 25))  # every passing, once, in the order it crossed
    assert not [rec for rec in caplog.records
                if rec.name.startswith(OURS) and (rec.exc_info or rec.levelno >= logging.ERROR)]


async def test_a_full_spool_counts_what_it_leaves_out_and_asks_for_it_again(
        redis_server, tmp_path, monkeypatch):
    """A spool of 3 and 6 passings while Redis is away: 3 are spooled, 3 are counted as
    not stored (the health says so), and once the spool is stored the P3 link asks the
    decoder to RESEND the other 3; all 6 end up stored, once each, in order."""
    from services.ingest.decoders import spool

    from .test_decoder_link import decoder_stack

    monkeypatch.setattr(spool, "SPOOL_MAX", 3)
    async with decoder_stack(redis_server, tmp_path) as (st, sim):
        sim.passing(4100201, time.time_ns() // 1000)  # stored: the link knows where it is

        async def stored(n):
            async def check():
                s = await decoder_state(st)
                return s["passings"] == n and s["spooled"] == 0
            return check
        await wait_for(await stored(1), "the first passing stored")
        proc = redis_server.proc
        os.kill(proc.pid, signal.SIGKILL)
        await asyncio.to_thread(proc.wait, 10)
        for _ in range(6):
            sim.passing(4100202, time.time_ns() // 1000)

        async def full():
            s = await decoder_state(st)
            return s["spooled"] == 3 and s["not_stored"] == 3
        await wait_for(full, "3 spooled, 3 left out")
        await asyncio.to_thread(redis_server.restart)
        await wait_for(await stored(7), "every passing stored")
        state = await decoder_state(st)

    assert sim.resends_answered >= 1 and sim.resent_passings >= 3
    assert (state["passings"], state["not_stored"], state["duplicates"]) == (7, 3, 0)
    numbers = await stored_seqs(redis_server.url, DECODER)
    assert numbers == list(range(1, 8))


async def test_the_http_apis_answer_503_while_redis_is_away(stack, redis_server, caplog):
    """Redis killed (and while it restarts, loading its files): the broadcast node's and
    ingest's HTTP APIs answer 503 with the JSON error and Retry-After a client retries
    on, not a 500 with a traceback in the log; once Redis is back, 200 again."""
    caplog.set_level(logging.INFO)
    await load_startlist(stack)
    desk = {"Authorization": f"Bearer {TOKENS['referee']}"}
    asks = [(f"http://127.0.0.1:{stack.settings.broadcast_http_port}/api/races", {}),
            (f"http://127.0.0.1:{stack.settings.ingest_http_port}/api/desk/races", desk)]
    proc = redis_server.proc
    assert proc is not None
    os.kill(proc.pid, signal.SIGKILL)
    await asyncio.to_thread(proc.wait, 10)
    async with aiohttp.ClientSession() as s:
        for url, headers in asks:
            async with s.get(url, headers=headers) as resp:
                assert resp.status == 503, (url, resp.status, await resp.text())
                assert resp.headers["Retry-After"] == "1"
                assert await resp.json() == {"ok": False, "retry": True,
                                             "error": "storage unavailable; try again"}
        await asyncio.to_thread(redis_server.restart)
        for url, headers in asks:
            async with asyncio.timeout(20):
                while True:  # the services' clients reconnect on their next command
                    async with s.get(url, headers=headers) as resp:
                        if resp.status == 200:
                            break
                        assert resp.status == 503, (url, resp.status, await resp.text())
                    await asyncio.sleep(0.1)
    tracebacks = [rec for rec in caplog.records if rec.exc_info]
    assert not tracebacks, [f"{r.name}: {r.getMessage()}" for r in tracebacks]
