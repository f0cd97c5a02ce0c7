"""A (simulated) P3 decoder on TCP feeding ingest: the link is cut mid-race, nothing is lost."""
from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import socket
from pathlib import Path

import aiohttp
import websockets

from icetime import bus, keys
from icetime.feedclient import FeedClient
from icetime.keys import DEFAULT_COMPETITION as MAIN
from icetime.replay import GUN_SOURCE, load_fixture, script_inputs
from icetime.settings import Decoder
from icetime.timefmt import format_time, now_us
from icetime.view import apply_event
from services.ingest.decoders import base_link
from services.ingest.decoders import link as link_mod
from services.ingest.decoders.capture import read_capture
from services.ingest.decoders.p3 import P3Decoder, P3Record
from services.ingest.decoders.simulator import DecoderSimulator

from .conftest import TOKENS, make_settings, start_stack

FIXTURE = load_fixture(Path(__file__).parents[1] / "fixtures" / "beijing2023_w1000a.json")
RACE = "bj23-w1000a"
SPEED = 50.0  # the three pairs in under 2 s; the link is down for 30 s of race time


@contextlib.asynccontextmanager
async def decoder_stack(redis_server, tmp_path, skew_us=0, **decoder):
    """The three services, with ingest linked to a P3 decoder simulator (whose RTC runs
    ``skew_us`` off the host clock)."""
    sim = DecoderSimulator(skew_us=skew_us)
    port = await sim.start()
    settings = make_settings(redis_server.url, data_dir=str(tmp_path / "data"),
                             decoders=(Decoder("finish-p3", "127.0.0.1", port, **decoder),))
    try:
        st = await start_stack(settings, redis_server.url)
    except BaseException:
        await sim.stop()
        raise
    try:
        yield st, sim
    finally:
        await st.close()
        await sim.stop()


async def post(st, path, body):
    async with aiohttp.ClientSession() as s:
        async with s.post(f"http://127.0.0.1:{st.settings.ingest_http_port}{path}", json=body,
                          headers={"Authorization": f"Bearer {TOKENS['officials']}"}) as r:
            assert r.status == 200, await r.text()
            return await r.json()


async def follow(st, until):
    """Subscribe and fold the race until ``until(view)`` holds; returns the view."""
    async with websockets.connect(st.ws_url) as ws:
        await ws.send(json.dumps({"op": "subscribe", "race": RACE, "protocol": 2}))
        async with asyncio.timeout(10):
            view = None
            while not view or not until(view):
                msg = json.loads(await ws.recv())
                if msg["type"] == "snapshot":
                    view = msg["view"]
                elif msg["type"] == "event":
                    view = apply_event(view, msg["event"])
    return view


def six_finished(view):
    return len(view["classification"]["bib"]) >= 6


async def test_cutting_the_decoder_link_mid_race_loses_no_passing(redis_server, redis_client,
                                                                 tmp_path):
    async with decoder_stack(redis_server, tmp_path) as (st, sim):
        settings = st.settings
        doc = copy.deepcopy(FIXTURE)
        doc["script"]["pairs"] = [p for p in doc["script"]["pairs"] if p["pair"] in (3, 9, 10)]
        doc["script"]["pair_interval_s"] = 3
        await post(st, "/api/startlist", doc["startlist"])
        gun = FeedClient("127.0.0.1", settings.ingest_tcp_port, TOKENS["gun"])
        base = now_us()
        items = script_inputs(doc, clock_base_us=base)
        loop = asyncio.get_running_loop()
        start = loop.time()
        generated = 0
        cut_at = items[len(items) // 2].at_us
        cut = False
        for item in items:
            await asyncio.sleep(max(0.0, start + item.at_us / 1e6 / SPEED - loop.time()))
            if not cut and item.at_us >= cut_at:
                sim.drop_link(down_for_s=0.6)  # the cable is pulled for a while
                cut = True
            if item.source == GUN_SOURCE:
                assert (await gun.send(item.inp))["ok"]
            else:
                sim.passing(int(item.inp["transponder"]), item.inp["t"])
                generated += 1
        await gun.close()

        r = redis_client
        async with asyncio.timeout(20):
            while True:
                raw = [bus.unpack_input(f[b"d"]) for _, f in await r.xrange(keys.raw_stream(MAIN))]
                from_decoder = [x for x in raw if x["source"] == "finish-p3"]
                if len(from_decoder) >= generated:
                    break
                await asyncio.sleep(0.1)
        assert sorted(x["seq"] for x in from_decoder) == list(range(1, generated + 1))
        assert sim.resends_answered >= 1
        assert sim.resent_passings >= 1, "no passing happened while the link was down"
        async with aiohttp.ClientSession() as s:
            async with s.get(f"http://127.0.0.1:{settings.ingest_http_port}/api/stats") as resp:
                stats = (await resp.json())["decoders"]["finish-p3"]
        assert stats["connects"] >= 2 and stats["resend_requests"] >= 1
        assert stats["passings"] == generated
        # Health is published: every link change and STATUS as an event, the latest in a hash.
        health = [json.loads(f[b"d"]) for _, f in await r.xrange(keys.decoder_health_stream(MAIN))]
        kinds = [h["event"] for h in health if h["id"] == "finish-p3"]
        assert kinds[0] == "connected" and "disconnected" in kinds and "status" in kinds
        assert kinds.index("connected", kinds.index("disconnected")) > 0, "no reconnect event"
        latest = json.loads(await r.hget(keys.decoders_hash(MAIN), "finish-p3"))
        assert latest["connected"] and latest["status"]["noise"] >= 0
        assert latest["last_passing_us"] is not None

        view = await follow(st, six_finished)
        cls = view["classification"]
        assert [view["skaters"][b]["short"] for b in cls["bib"][:3]] == [
            "Takagi", "Goetz", "Leerdam"]
        assert [format_time(t) for t in cls["t"][:3]] == ["1:14.44", "1:14.45", "1:14.88"]

        # The capture log holds every byte received: replayed through the decoder it
        # gives every passing the link stored.
        capture = read_capture(Path(settings.data_dir) / "captures" / "finish-p3.p3log")
        d = P3Decoder()
        numbers = set()
        for _, chunk in capture:
            for rec in d.feed(chunk):
                if isinstance(rec, P3Record) and rec.tor_name == "PASSING":
                    numbers.add(rec.fields["passing_number"])
        assert numbers == set(range(1, generated + 1))


async def test_the_demo_path_replays_through_the_p3_simulator(redis_server, tmp_path):
    """What `make demo` does: the gun over the JSON feed, the loop as P3 from a decoder."""
    from icetime.cli import replay

    async with decoder_stack(redis_server, tmp_path) as (st, sim):
        doc = copy.deepcopy(FIXTURE)
        doc["script"]["pairs"] = [p for p in doc["script"]["pairs"] if p["pair"] in (3, 9, 10)]
        await post(st, "/api/startlist", doc["startlist"])
        await replay(doc, st.settings, speed=200.0, announce=False, decoder=sim)
        view = await follow(st, six_finished)
        cls = view["classification"]
        assert [format_time(t) for t in cls["t"][:3]] == ["1:14.44", "1:14.45", "1:14.88"]
        assert sim.next_number - 1 == 6 * 3 * 2  # 6 skaters x 3 passages x 2 ankles, as P3


async def test_a_beacon_transponder_is_the_gun_for_the_called_pair(redis_server, tmp_path):
    """ProChip's gate beacon (9992) as the start: a pair is called, the beacon starts it."""
    async with decoder_stack(redis_server, tmp_path, gun_transponders=("9992",)) as (st, sim):
        await post(st, "/api/startlist", FIXTURE["startlist"])
        assert (await post(st, "/feed", {"type": "call", "race": RACE, "pair": 3,
                                         "seq": 1}))["ok"]
        zero = now_us()
        await asyncio.sleep(0.3)  # the link connects (it retries from 0.1 s)
        sim.passing(9992, zero)
        sim.passing(4100051, zero + 17_980_000)
        view = await follow(st, lambda v: v["results"]["5"]["passages"][0] is not None)
        assert view["current_pair"] == 3
        assert view["results"]["5"]["passages"][0]["t"] == 17_980_000


async def test_a_decoder_clock_set_wrong_is_measured_and_corrected(redis_server, tmp_path):
    """The decoder's RTC runs 2.5 s slow, the gun comes from the host's clock: GET_TIME
    measures the offset, a `clock` input enters the log, and the times come out right."""
    from icetime.cli import replay

    skew = -2_500_000
    async with decoder_stack(redis_server, tmp_path, skew_us=skew, sync_clock=True) as (st, sim):
        doc = copy.deepcopy(FIXTURE)
        doc["script"]["pairs"] = [p for p in doc["script"]["pairs"] if p["pair"] in (3, 10)]
        await post(st, "/api/startlist", doc["startlist"])
        r = bus.connect(redis_server.url)
        try:
            async with asyncio.timeout(10):
                while not (raw := await r.hget(keys.decoders_hash(MAIN), "finish-p3")) or \
                        json.loads(raw)["clock_offset_us"] == 0:
                    await asyncio.sleep(0.05)
            health = json.loads(raw)
            # The measurement is right within its half round trip (on a loaded machine
            # that can be milliseconds).
            assert abs(health["clock_offset_us"] + skew) <= health["clock_rtt_us"]
            clock = [x for x in (bus.unpack_input(f[b"d"]) for _, f in
                                 await r.xrange(keys.raw_stream(MAIN))) if x["type"] == "clock"]
            assert len(clock) == 1 and clock[0]["source"] == "finish-p3"
            await replay(doc, st.settings, speed=200.0, announce=False, decoder=sim)
            view = await follow(st, lambda v: len(v["classification"]["bib"]) >= 4)
            health = json.loads(await r.hget(keys.decoders_hash(MAIN), "finish-p3"))
        finally:
            await r.aclose()
        finals = {view["skaters"][b]["short"]: t for b, t in
                  zip(view["classification"]["bib"], view["classification"]["t"], strict=True)}
        # The times are the true ones moved by exactly the measurement's error, then
        # truncated to the thousandth (which can move them by one more).
        error = health["clock_offset_us"] + skew
        assert abs(finals["Takagi"] - 74_446_000 - error) < 1000
        assert abs(finals["Goetz"] - 74_452_000 - error) < 1000


async def test_a_decoder_that_is_not_there_is_warned_about_once(redis_client, tmp_path,
                                                                 monkeypatch, caplog):
    """Nothing listens at the decoder's address: one WARNING, the retries at DEBUG, with
    backoff; when the decoder appears, the link connects and says it is back, once."""
    from services.ingest.server import Ingest

    monkeypatch.setattr(base_link, "MAX_BACKOFF_S", 0.4)  # the cap, made short for the test
    caplog.set_level(logging.DEBUG, logger=base_link.__name__)
    # A port bound but not listening: connections are refused until the decoder appears.
    reserved = socket.socket()
    reserved.bind(("127.0.0.1", 0))
    port = reserved.getsockname()[1]
    settings = make_settings(data_dir=str(tmp_path))
    link = link_mod.make_link(Decoder("finish-p3", "127.0.0.1", port), Ingest(settings,
                              redis_client), tmp_path / "captures")
    stop = asyncio.Event()
    task = asyncio.create_task(link.run(stop))
    sim = DecoderSimulator()
    try:
        await asyncio.sleep(2.0)

        def lines(level):
            return [r.getMessage() for r in caplog.records
                    if r.name == base_link.__name__ and r.levelno == level]

        warnings = lines(logging.WARNING)
        assert len(warnings) == 1 and "unreachable" in warnings[0], warnings
        retries = lines(logging.DEBUG)
        # 0.1 + 0.2 + 0.4 + 0.4 ... s apart: a handful in 2 s, not one per 0.1 s.
        assert 3 <= len(retries) <= 8, retries
        reserved.close()
        await sim.start("127.0.0.1", port)
        async with asyncio.timeout(5):
            while not any("is back after" in m for m in lines(logging.INFO)):
                await asyncio.sleep(0.1)
        assert link.connected
        assert len(lines(logging.WARNING)) == 1
        assert len([m for m in lines(logging.INFO) if "is back" in m]) == 1
    finally:
        reserved.close()
        stop.set()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await sim.stop()


async def linked(st, connects: int) -> None:
    """Wait until the finish decoder's link has connected ``connects`` times in all."""
    url = f"http://127.0.0.1:{st.settings.ingest_http_port}/api/stats"
    async with aiohttp.ClientSession() as s, asyncio.timeout(15):
        while True:
            async with s.get(url, headers={"Authorization": f"Bearer {TOKENS['officials']}"}
                             ) as resp:
                if resp.status == 200 and \
                        (await resp.json())["decoders"]["finish-p3"]["connects"] >= connects:
                    return
            await asyncio.sleep(0.05)


async def decoder_health(st) -> dict:
    """The finish decoder's entry in ingest's /api/stats (link, counters, sessions)."""
    url = f"http://127.0.0.1:{st.settings.ingest_http_port}/api/stats"
    async with aiohttp.ClientSession() as s, s.get(
            url, headers={"Authorization": f"Bearer {TOKENS['officials']}"}) as resp:
        return (await resp.json())["decoders"]["finish-p3"]


async def test_a_decoder_power_cycled_loses_no_passing_and_drops_none(redis_server, tmp_path):
    """The finish decoder reboots twice and numbers its passings from 1 each time: after
    pair 3 (between pairs), and during pair 10 (its first reads are made while the link
    is down, and come on RESEND). Every passing is stored once, in the session of its
    boot, none is taken for a duplicate; the health says the decoder restarted twice."""
    from icetime.cli import replay

    async with decoder_stack(redis_server, tmp_path) as (st, sim):
        doc = copy.deepcopy(FIXTURE)
        doc["script"]["pairs"] = [p for p in doc["script"]["pairs"] if p["pair"] in (3, 9, 10)]
        doc["script"]["pair_interval_s"] = 3
        await post(st, "/api/startlist", doc["startlist"])
        reads: list[tuple[str, int]] = []

        after_second: list[int] = []

        # Connects are counted from each reboot: a link that reconnected on its own on a
        # busy machine (fresh-clone CI run s7) must not pass for one back after it.
        connects_before: list[int] = []

        async def hold(item):
            if item.inp["type"] == "gun" and item.inp["pair"] == 9:
                before = (await decoder_health(st))["connects"]
                sim.reboot()
                await linked(st, before + 1)  # the script waits: the link is back
            if item.inp["type"] == "gun" and item.inp["pair"] == 10:
                connects_before.append((await decoder_health(st))["connects"])
                sim.reboot(down_for_s=0.3)  # pair 10's 200 m reads are made while down
                after_second.append(0)
            if item.inp["type"] == "passing":
                if after_second:
                    after_second[0] += 1
                    if after_second[0] == 5:
                        # The 600 m reads come once the link is back (however slowly the
                        # machine runs): the first of them shows the decoder restarted.
                        await linked(st, connects_before[0] + 1)
                reads.append((item.inp["transponder"], item.inp["t"]))

        await replay(doc, st.settings, speed=100.0, announce=False, decoder=sim, hold=hold)
        r = bus.connect(redis_server.url)
        stored: list[dict] = []
        try:
            for _ in range(400):  # 20 s
                stored = [x for x in (bus.unpack_input(f[b"d"]) for _, f in
                                      await r.xrange(keys.raw_stream(MAIN)))
                          if x["source"] == "finish-p3"]
                if len(stored) >= len(reads):
                    break
                await asyncio.sleep(0.05)
        finally:
            await r.aclose()
        got = {(x["transponder"], x["t"]) for x in stored}
        missing = [(i, read) for i, read in enumerate(reads) if read not in got]
        assert not missing, (f"{len(missing)} of {len(reads)} passings never stored "
                             f"(index in the script, read): {missing}; "
                             f"decoder: {await decoder_health(st)}")
        assert sorted((x["transponder"], x["t"]) for x in stored) == sorted(reads)
        keys_ = [(x.get("session"), x["seq"]) for x in stored]
        assert len(set(keys_)) == len(keys_) == 36
        assert len({x.get("session") for x in stored}) == 3  # one per boot
        view = await follow(st, lambda v: all(v["results"][b]["final"] for b in
                                              ("5", "6", "17", "18")))
        assert {b: format_time(view["results"][b]["final"]["t"]) for b in
                ("5", "6", "17", "18")} == {"5": "1:14.45", "6": "1:15.87",
                                            "17": "1:14.88", "18": "1:15.01"}
        async with aiohttp.ClientSession() as s:
            async with s.get(f"http://127.0.0.1:{st.settings.ingest_http_port}/api/stats") \
                    as resp:
                stats = await resp.json()
            async with s.get(f"{st.http}/api/health") as resp:
                health = await resp.json()
        link = stats["decoders"]["finish-p3"]
        assert (link["passings"], link["duplicates"], link["refused"]) == (36, 0, 0)
        assert stats["duplicate"] == 0 and stats["conflict"] == 0
        assert link["restarts"] == 2 and link["session"] is not None
        first, second = link["restart_history"][::-1]
        # Its first live passing, 1, is below the highest stored: only a new boot sends it.
        assert first["reason"] == ("passing number 1 came after a reconnect, below the "
                                   "highest stored (12)")
        assert first["ended_at"] == 12  # pair 3: 2 skaters x 3 passages x 2 ankles
        assert second["reason"].startswith("passing number ")
        [shown] = [d for d in health["decoders"] if d["id"] == "finish-p3"]
        assert shown["restarts"] == 2 and shown["session"] == link["session"]
        assert [a["kind"] for a in shown["anomalies"]].count("restart") == 2
