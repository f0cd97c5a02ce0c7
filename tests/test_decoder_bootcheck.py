"""A P3 decoder that restarted while the link was down is found on reconnect (the boot
check, services/ingest/decoders/bootcheck.py): through real sockets, the simulator, the
real ingest and Redis. Every passing of every boot is stored once, in its boot's session."""
from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from icetime import bus, keys
from icetime.keys import DEFAULT_COMPETITION as MAIN
from icetime.settings import Decoder
from icetime.timefmt import now_us
from services.ingest.decoders import base_link, bootcheck
from services.ingest.decoders import link as link_mod
from services.ingest.decoders.p3 import TOR, encode, u
from services.ingest.decoders.simulator import DecoderSimulator

from .conftest import make_settings
from .test_decoder_link import decoder_health, decoder_stack, linked

Read = tuple[str, int]  # (transponder, t): what crossed the loop


async def stored_from(url: str, source: str) -> list[dict[str, Any]]:
    r = bus.connect(url)
    try:
        return [x for x in (bus.unpack_input(f[b"d"]) for _, f in
                            await r.xrange(keys.raw_stream(MAIN))) if x["source"] == source]
    finally:
        await r.aclose()


async def until(st, what: str, cond: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """Wait (by condition, not by time) until the finish decoder's health says ``cond``."""
    h: dict[str, Any] = {}
    try:
        async with asyncio.timeout(20):
            while not cond(h := await decoder_health(st)):
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"waiting for {what}: {h}") from None
    return h


class Loop:
    """Crossings of distinct transponders at distinct times, through the simulator."""

    def __init__(self, sim: DecoderSimulator) -> None:
        self.sim, self.base, self.made = sim, now_us(), []
        self.n = itertools.count()

    def cross(self, count: int = 1) -> list[Read]:
        reads = []
        for _ in range(count):
            i = next(self.n)
            read = (str(4_100_000 + i), self.base + 1000 * i)
            self.sim.passing(int(read[0]), read[1])
            reads.append(read)
        self.made += reads
        return reads


def settled(count: int) -> Callable[[dict[str, Any]], bool]:
    """``count`` passings stored, none held, missing or spooled, the check over."""
    return lambda h: (h.get("passings") == count and h["boot_check"] is None
                      and h["missing"] == 0 and h["held"] == 0 and h["spooled"] == 0)


async def test_a_decoder_restarted_with_more_passings_than_the_old_highest_is_found(
        redis_server, tmp_path):
    """5 passings stored; the link drops and the decoder power-cycles without a RESET; its
    new boot makes 8 passings (more than 5) before the link is back, then 2 live ones.
    The link asks for number 5 on reconnect, gets another passing: a restart. All 15 are
    stored once, the new boot's 10 in a new session, numbered 1..10."""
    async with decoder_stack(redis_server, tmp_path) as (st, sim):
        loop = Loop(sim)
        await linked(st, 1)  # passings made before the first connect are never asked for
        old = loop.cross(5)
        await until(st, "the first boot's passings stored", settled(5))
        before = (await decoder_health(st))["connects"]
        sim.reboot()
        new = loop.cross(8)  # no await between: all made while the link is down
        h = await until(st, "the reconnect and its verdict",
                        lambda h: h["connects"] > before and h["restarts"] == 1
                        and h["boot_check"] is None)
        new += loop.cross(2)
        h = await until(st, "every passing stored", settled(15))
        stored = await stored_from(redis_server.url, "finish-p3")

    assert sorted((x["transponder"], x["t"]) for x in stored) == sorted(loop.made)
    assert len({(x.get("session"), x["seq"]) for x in stored}) == len(stored) == 15
    by_session: dict[str | None, list[dict[str, Any]]] = {}
    for x in stored:
        by_session.setdefault(x.get("session"), []).append(x)
    assert set(by_session) == {None, h["session"]}
    assert sorted((x["transponder"], x["t"]) for x in by_session[None]) == old
    assert sorted((x["seq"], x["transponder"], x["t"]) for x in by_session[h["session"]]) == [
        (i + 1, *read) for i, read in enumerate(new)]
    assert h["restarts"] == 1 and h["boot_checks"] >= 1
    [restart] = h["restart_history"]
    assert restart["reason"] == "passing number 5 came again with another passing"
    assert restart["ended_at"] == 5
    assert [a["kind"] for a in h["anomalies"]] == ["restart"]


async def test_a_link_that_only_dropped_is_no_restart(redis_server, tmp_path):
    """The same boot behind a dropped link: the check's answer is the passing stored under
    5, so no restart; the 3 passings made while down come on RESEND, then 2 live ones,
    all in the first session, numbered 1..10."""
    async with decoder_stack(redis_server, tmp_path) as (st, sim):
        loop = Loop(sim)
        await linked(st, 1)
        loop.cross(5)
        await until(st, "the first passings stored", settled(5))
        before = (await decoder_health(st))["connects"]
        sim.drop_link()
        loop.cross(3)
        await until(st, "the reconnect, its verdict and the RESEND",
                    lambda h: h["connects"] > before and settled(8)(h))
        loop.cross(2)
        h = await until(st, "every passing stored", settled(10))
        stored = await stored_from(redis_server.url, "finish-p3")

    assert sorted((x["seq"], x["transponder"], x["t"]) for x in stored) == [
        (i + 1, *read) for i, read in enumerate(loop.made)]
    assert all(x.get("session") is None for x in stored)
    assert h["restarts"] == 0 and h["restart_history"] == [] and h["session"] is None
    assert h["boot_checks"] >= 1 and h["passings"] == 10


async def test_a_decoder_whose_memory_was_cleared_answers_nothing_and_counts_on(
        redis_server, tmp_path, monkeypatch):
    """5 stored; while the link is down the decoder's memory is cleared but its numbering
    goes on (6, 7). Asked for 5.., it answers only 6 and 7 (held), then nothing for 5 or
    1 asked again: the check is unanswered, a new session takes 6, 7 and the live 8. Every
    passing is stored once; nothing stays missing."""
    monkeypatch.setattr(bootcheck, "CHECK_WAIT_S", 0.3)  # no answer will come: do not wait
    async with decoder_stack(redis_server, tmp_path) as (st, sim):
        loop = Loop(sim)
        await linked(st, 1)
        loop.cross(5)
        await until(st, "the first passings stored", settled(5))
        sim.drop_link()
        sim.records.clear()  # the memory, not the numbering
        loop.cross(2)
        h = await until(st, "the unanswered check's verdict", settled(7))
        loop.cross(1)
        h = await until(st, "every passing stored", settled(8))
        stored = await stored_from(redis_server.url, "finish-p3")

    assert sorted((x.get("session") or "", x["seq"], x["transponder"], x["t"])
                  for x in stored) == sorted(
        [("", i + 1, *read) for i, read in enumerate(loop.made[:5])]
        + [(h["session"], i + 6, *read) for i, read in enumerate(loop.made[5:])])
    assert h["restarts"] == 1 and h["boot_checks_unanswered"] == 1
    assert h["restart_history"][0]["reason"] == (
        "passing number 5 was not there after a reconnect, and passings went on from 6")


async def test_a_reset_during_the_check_is_the_verdict(redis_server, tmp_path, monkeypatch):
    """The decoder restarted with 3 passings (fewer than the 5 stored), and sends a RESET
    once the link is back, while the check waits for 5: a new session, whose 1..3 are
    asked for and stored, then a live one."""
    monkeypatch.setattr(bootcheck, "CHECK_WAIT_S", 60.0)  # only the RESET decides here
    async with decoder_stack(redis_server, tmp_path) as (st, sim):
        loop = Loop(sim)
        await linked(st, 1)
        old = loop.cross(5)
        await until(st, "the first passings stored", settled(5))
        sim.reboot()
        new = loop.cross(3)
        await until(st, "the reconnect's check", lambda h: h["boot_check"] is not None)
        for w in sim.writers:
            w.write(encode(TOR["RESET"], [(0x81, u(sim.decoder_id, 4))]))
        await until(st, "the new boot's passings stored", settled(8))
        new += loop.cross(1)
        h = await until(st, "every passing stored", settled(9))
        stored = await stored_from(redis_server.url, "finish-p3")

    assert sorted((x.get("session") or "", x["seq"], x["transponder"], x["t"])
                  for x in stored) == sorted(
        [("", i + 1, *read) for i, read in enumerate(old)]
        + [(h["session"], i + 1, *read) for i, read in enumerate(new)])
    assert h["restarts"] == 1 and h["restart_history"][0]["reason"] == "RESET record"


# One down window: the decoder restarted (or the link only dropped), it made some
# passings while the link was down, and some live ones once it was back.
windows = st.lists(st.tuples(st.booleans(), st.integers(0, 9), st.integers(0, 3)),
                   min_size=1, max_size=3)


@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(first=st.integers(1, 6), windows=windows)
async def test_any_down_windows_and_reboots_store_every_passing_once_in_its_boot(
        redis_client, tmp_path, monkeypatch, first, windows):
    """Random down windows, reboot points and passing counts, through a link of the real
    ingest and the simulator: every passing of every boot is stored exactly once, in its
    boot's session, and the restarts counted are the boots that made passings."""
    from services.ingest.server import Ingest

    # Reconnect at once (the link is up too briefly here to be called stable), and do not
    # wait long for an answer a rebooted decoder without passings cannot give.
    monkeypatch.setattr(base_link, "STABLE_LINK_S", 0.0)
    monkeypatch.setattr(bootcheck, "CHECK_WAIT_S", 0.2)
    source = f"p3-{now_us()}"
    sim = DecoderSimulator()
    port = await sim.start()
    settings_ = make_settings(data_dir=str(tmp_path))
    link = link_mod.make_link(Decoder(source, "127.0.0.1", port),
                              Ingest(settings_, redis_client), tmp_path / source)
    assert isinstance(link, link_mod.P3Link)
    stop = asyncio.Event()
    task = asyncio.create_task(link.run(stop))
    loop = Loop(sim)
    boots: list[list[Read]] = [[]]

    async def wait(what: str, cond: Callable[[], bool]) -> None:
        try:
            async with asyncio.timeout(20):
                while not cond():
                    await asyncio.sleep(0.02)
        except TimeoutError:
            raise AssertionError(f"waiting for {what}: {link.state()}") from None

    def all_stored() -> bool:
        return (link.stats["passings"] == len(loop.made) and not link.spool
                and not (link.numbers and link.numbers.missing))

    try:
        await wait("the first connect", lambda: link.stats["connects"] >= 1)
        boots[-1] += loop.cross(first)
        await wait("the first passings stored", all_stored)
        for reboot, down, live in windows:
            checks = link.stats["boot_checks"]
            if reboot:
                sim.reboot()
                boots.append([])
            else:
                sim.drop_link()
            boots[-1] += loop.cross(down)  # while the link is down
            has_probe = any(n in sim.records for n in (link.sessions.now.hi,
                                                       link.sessions.now.lo))

            def decided(has_probe: bool = has_probe, checks: int = checks) -> bool:
                # The reconnect's check asked; a decoder holding a number asked for
                # answers it: wait for the verdict. One that does not leaves the check
                # open until a passing comes.
                return link.stats["boot_checks"] > checks and (
                    link.check is None or (not has_probe and link.check.unanswered))
            await wait("the reconnect's check and its verdict", decided)
            boots[-1] += loop.cross(live)
            await wait("every passing stored", all_stored)
        raw = [bus.unpack_input(f[b"d"]) for _, f in
               await redis_client.xrange(keys.raw_stream(MAIN))]
        stored = [x for x in raw if x["source"] == source]
    finally:
        stop.set()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        with contextlib.suppress(Exception):
            await link.stop_check()
        await sim.stop()

    assert len({(x.get("session"), x["seq"]) for x in stored}) == len(stored)
    assert sorted((x["transponder"], x["t"]) for x in stored) == sorted(loop.made)
    sessions: dict[str | None, set[Read]] = {}
    for x in stored:
        sessions.setdefault(x.get("session"), set()).add((x["transponder"], x["t"]))
    assert sorted(sorted(s) for s in sessions.values()) == sorted(
        sorted(b) for b in boots if b), "each boot's passings in a session of their own"
    assert link.sessions.restarts == sum(1 for b in boots if b) - 1
