"""A decoder link that cannot be knocked over: odd records after a valid checksum, a UTC-only
PASSING, passing numbers that jump, a link task that fails; and a fuzz of mutated real
records (../shared/data, the project's own records when it is absent) through the real
codec and link into ingest on a real redis-server."""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time

import aiohttp
import pytest

from bench import decoder_fuzz
from icetime import bus, keys
from icetime.keys import DEFAULT_COMPETITION as MAIN
from icetime.settings import Decoder
from services.ingest import server as ingest_server
from services.ingest.decoders import Damaged, numbers
from services.ingest.decoders.base_link import MAX_ANOMALIES, MAX_REASONS
from services.ingest.decoders.numbers import Anomaly, PassingNumbers
from services.ingest.decoders.p3 import (
    TOR,
    P3Decoder,
    P3Passing,
    P3Record,
    classify,
    encode,
    u,
)
from services.ingest.server import Ingest

from .conftest import SHARED_DATA, Stack, make_settings

RTC = 1_700_000_000_000_000


def passing(n: int, transponder: int = 4100201, t: int = RTC, *, clock: int = 0x04,
            extra: tuple[tuple[int, bytes], ...] = ()) -> bytes:
    """A PASSING as a decoder sends it; ``clock`` 0x10 carries a UTC time instead of RTC."""
    return encode(TOR["PASSING"], [(0x01, u(n, 4)), (0x03, u(transponder, 4)),
                                   (clock, u(t, 8)), (0x05, u(120, 2)), (0x06, u(40, 2)),
                                   (0x81, u(0x20F93, 4)), *extra])


def one(frame: bytes):
    (rec,) = P3Decoder().feed(frame)
    assert isinstance(rec, P3Record), rec
    return classify(rec)


# ------------------------------------------------------------------ classification
def test_a_utc_only_passing_uses_its_utc_time_and_rtc_wins_when_both_are_there():
    p = one(passing(7, clock=0x10, t=RTC + 5))
    assert isinstance(p, P3Passing) and (p.number, p.t_us, p.clock) == (7, RTC + 5, "utc")
    both = one(passing(8, extra=((0x10, u(RTC + 999_000, 8)),)))
    assert isinstance(both, P3Passing) and (both.t_us, both.clock) == (RTC, "rtc")


def test_odd_records_are_damaged_with_their_reason():
    cases = {
        "without a usable transponder": encode(TOR["PASSING"], [
            (0x01, u(1, 4)), (0x04, u(RTC, 8))]),
        "without a passing number": encode(TOR["PASSING"], [
            (0x03, u(5, 4)), (0x04, u(RTC, 8))]),
        "without a time": encode(TOR["PASSING"], [(0x01, u(1, 4)), (0x03, u(5, 4))]),
        "passing_number is 9 bytes": encode(TOR["PASSING"], [
            (0x01, u(1, 9)), (0x03, u(5, 4)), (0x04, u(RTC, 8))]),
        "rtc_time is 0 bytes": encode(TOR["PASSING"], [
            (0x01, u(1, 4)), (0x03, u(5, 4)), (0x04, b"")]),
        "wider than 32 bits": encode(TOR["PASSING"], [
            (0x01, u(2**40, 8)), (0x03, u(5, 4)), (0x04, u(RTC, 8))]),
        "past the year 2200": passing(1, t=2**63),
        "STATUS field noise is 12 bytes": encode(TOR["STATUS"], [(0x01, bytes(12))]),
        "unknown record type 0x7777": encode(0x7777, [(0x01, u(1, 4))]),
    }
    for reason, frame in cases.items():
        got = one(frame)
        assert isinstance(got, Damaged) and reason in got.reason, (reason, got)
    # The ProChip string wins over the numeric id when it is printable text; a garbled
    # one falls back to the id.
    prochip = one(passing(3, transponder=9, extra=((0x0A, b"FL-94890"),)))
    assert isinstance(prochip, P3Passing) and prochip.transponder == "FL-94890"
    garbled = one(passing(3, transponder=9, extra=((0x0A, b"\x01\x02"),)))
    assert isinstance(garbled, P3Passing) and garbled.transponder == "9"
    status = one(encode(TOR["STATUS"], [(0x01, u(30, 2)), (0x77, bytes(20))]))
    assert isinstance(status, P3Record) and status.fields["noise"] == 30


# ------------------------------------------------------------------ passing numbers
def test_gaps_are_asked_for_in_bounded_requests():
    nb = PassingNumbers(100)
    assert nb.arrived(101).requests == []
    v = nb.arrived(2_600)  # 2,498 missing: three requests of at most MAX_RANGE
    assert v.requests == [(102, 1_101), (1_102, 2_101), (2_102, 2_599)]
    assert len(nb.missing) == 2_498 and v.anomaly is None
    assert nb.arrived(500).requests == [] and 500 not in nb.missing  # an answer
    nb.failed(2_600)  # could not be stored: asked for with the next passing
    assert nb.arrived(2_601).requests == [(2_600, 2_600)]
    assert nb.reconnect_requests()[-1] == (2_602, 2_601 + numbers.MAX_RANGE)


def test_a_jump_is_reported_not_asked_for_and_a_new_numbering_is_adopted():
    nb = PassingNumbers(10)
    v = nb.arrived(1_200_000_000)  # a corrupted number
    assert v == numbers.Verdict([], Anomaly("jump", 10, 1_200_000_000))
    assert nb.arrived(11).requests == [] and nb.highest == 11  # the old series goes on
    assert nb.arrived(2_000_000_000).anomaly == Anomaly("jump", 11, 2_000_000_000)
    # A replaced decoder: its numbers go on from the jumped one.
    v = nb.arrived(2_000_000_003)
    assert v.anomaly == Anomaly("new_numbering", 11, 2_000_000_000)
    assert v.requests == [(2_000_000_001, 2_000_000_002)]
    assert (nb.highest, nb.jumps, nb.new_numberings) == (2_000_000_003, 2, 1)
    # Backwards too: a decoder reset to 1.
    assert nb.arrived(1).anomaly == Anomaly("jump", 2_000_000_003, 1)
    assert nb.arrived(2).anomaly == Anomaly("new_numbering", 2_000_000_003, 1)


@pytest.mark.alone
def test_passing_numbers_stay_bounded_in_memory_and_time_whatever_arrives():
    """Consecutive numbers, random 32-bit ones and gaps up to past the jump limit: 10,000
    numbers, some 3,000 of them jumps, are handled in well under 10 s in all (a single jump
    to 1.2 billion used to take seconds and gigabytes), and requests and tracked numbers
    stay within their bounds. The bound is on the total, not on the slowest call, which a
    loaded machine can stretch by any amount."""
    nb = PassingNumbers(0)
    rng = random.Random(3)
    n, asked = 0, 0
    t0 = time.perf_counter()
    for _ in range(10_000):
        pick = rng.random()
        n = (n + 1 if pick < 0.5 else rng.randrange(2**32) if pick < 0.8
             else max(0, n + rng.randint(-100, 15_000)))
        v = nb.arrived(n)
        assert all(0 <= last - first < numbers.MAX_RANGE for first, last in v.requests)
        assert len(v.requests) <= numbers.JUMP_LIMIT // numbers.MAX_RANGE + 1
        asked += sum(last - first + 1 for first, last in v.requests)
        if rng.random() < 0.01:
            nb.failed(n)
        assert len(nb.missing) <= numbers.MAX_MISSING
        if rng.random() < 0.01:  # a reconnect
            assert len(nb.reconnect_requests()) <= numbers.MAX_RECONNECT_REQUESTS + 1
    assert time.perf_counter() - t0 < 10
    assert nb.jumps > 1000 and asked > 0 and nb.given_up > 0


# ------------------------------------------------------------------ fuzz
@pytest.mark.alone
async def test_fuzz_mutated_records_through_the_real_links_raise_nothing(redis_client,
                                                                         tmp_path, caplog):
    """2,000 mutated records (checksums fixed) through each link into ingest: no
    exception leaves a link or is caught inside it, every record is classified, the
    damaged ones are counted by reason and kept, and memory stays flat."""
    caplog.set_level(logging.ERROR)
    ingest = Ingest(make_settings(data_dir=str(tmp_path)), redis_client)
    real = SHARED_DATA.exists()
    results = {}
    # A fixed count of frames from a fixed seed, so the run is the same however loaded
    # the machine is; the time is only a cap.
    for protocol, frames in (("p3", 1200), ("amb_ascii", 400), ("protime", 400)):
        link = decoder_fuzz.fuzz_link(protocol, ingest, tmp_path / "captures")
        res = await decoder_fuzz.fuzz(link, protocol, 120.0, seed=7, max_frames=frames)
        results[protocol] = res
        s = res.stats
        assert res.real_data == real
        assert res.escaped == 0 and s["internal_errors"] == 0, decoder_fuzz.report(res)
        assert res.frames >= frames
        # Every record is a passing, a status, another known record, or damaged...
        assert s["records"] == (s["passing_records"] + s["status_records"]
                                + s["other_records"] + s["damaged"])
        # ...and every passing is stored, a duplicate, or refused (none here).
        assert s["passing_records"] == s["passings"] + s["duplicates"]
        assert s["refused"] == s["not_stored"] == 0
        assert s["passing_records"] > 0 and s["damaged"] > 0
        assert sum(s["damaged_reasons"].values()) == s["damaged"]
        assert len(s["damaged_reasons"]) <= MAX_REASONS + 1
        assert res.slowest_ms < 2500, res.slowest_ms  # no stall (a shared 2-core machine)
        assert res.rss_end_mb - res.rss_start_mb < 30
        json.dumps(s)  # health stays publishable
    p3 = results["p3"].stats
    assert p3["status_records"] > 0 and p3["utc_only"] > 0 and p3["jumps"] > 0
    assert p3["missing"] <= numbers.MAX_MISSING and len(p3["anomalies"]) <= MAX_ANOMALIES
    assert any("without a usable transponder" in k for k in p3["damaged_reasons"])
    # The damaged records are in the rejects stream, with their reasons.
    kept = await redis_client.xlen(keys.rejects_stream(MAIN))
    assert kept == sum(r.stats["damaged"] for r in results.values())
    # The bench's codec-only mode counts the same way.
    fast = decoder_fuzz.codec_only("p3", 0.3, seed=9)
    c = fast.stats
    assert fast.escaped == 0 and c["records"] == (c["passing_records"] + c["status_records"]
                                                  + c["other_records"] + c["damaged"]) > 0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


# ------------------------------------------------------------------ over TCP
class ScriptedP3Decoder:
    """A P3 decoder on TCP that sends ``script`` (frames, or a float: a pause in seconds)
    to the first connection, keeps it open, and decodes what the host sends back."""

    def __init__(self, script: list[bytes | float]) -> None:
        self.script = script
        self.heard: list[P3Record] = []
        self.sent = asyncio.Event()
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader, writer) -> None:
        self.writers.append(writer)
        listen = asyncio.create_task(self._listen(reader))
        try:
            for step in self.script:
                if isinstance(step, float):
                    await asyncio.sleep(step)
                else:
                    writer.write(step)
                    await writer.drain()
            self.script = []
            self.sent.set()
            await listen
        finally:
            listen.cancel()
            writer.close()

    async def _listen(self, reader) -> None:
        codec = P3Decoder()
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(4096):
                self.heard += [r for r in codec.feed(data) if isinstance(r, P3Record)]

    async def stop(self) -> None:
        for w in self.writers:
            w.close()
        self.server.close()
        await self.server.wait_closed()


@contextlib.asynccontextmanager
async def ingest_with(redis_server, tmp_path, fake: ScriptedP3Decoder):
    port = await fake.start()
    settings = make_settings(redis_server.url, data_dir=str(tmp_path / "data"),
                             decoders=(Decoder("d1", "127.0.0.1", port),))
    st = Stack(settings, redis_server.url)
    r = bus.connect(redis_server.url)
    try:
        yield st, r
    finally:
        await st.close()
        await fake.stop()
        await r.aclose()


async def stored_from(r, source: str, count: int, timeout: float = 10) -> list[dict]:
    async with asyncio.timeout(timeout):
        while True:
            raw = [bus.unpack_input(f[b"d"]) for _, f in await r.xrange(keys.raw_stream(MAIN))]
            mine = [x for x in raw if x["source"] == source]
            if len(mine) >= count:
                return mine
            await asyncio.sleep(0.05)


async def ingest_stats(st) -> dict:
    async with aiohttp.ClientSession() as s, s.get(
            f"http://127.0.0.1:{st.settings.ingest_http_port}/api/stats") as resp:
        return (await resp.json())["decoders"]["d1"]


async def health(r) -> dict:
    return json.loads(await r.hget(keys.decoders_hash(MAIN), "d1"))


async def test_a_utc_only_passing_is_stored_and_every_later_one_too(redis_server, tmp_path):
    """The PASSING that used to end the link's task (no RTC time, a UTC time instead)."""
    fake = ScriptedP3Decoder([passing(1, t=RTC), passing(2, 4100202, clock=0x10, t=RTC + 10),
                              passing(3, t=RTC + 20), 0.05, passing(4, t=RTC + 30)])
    async with ingest_with(redis_server, tmp_path, fake) as (st, r):
        await st.start("ingest")
        got = await stored_from(r, "d1", 4)
        assert [(x["seq"], x["t"]) for x in got] == [
            (1, RTC), (2, RTC + 10), (3, RTC + 20), (4, RTC + 30)]
        await asyncio.sleep(1.1)  # health after passings is published at most 1/s
        fake.writers[0].write(passing(5, t=RTC + 40))
        await stored_from(r, "d1", 5)
        await asyncio.sleep(0.1)
        h = await health(r)
        assert h["connected"] and h["utc_only"] == 1 and h["failures"] == 0
        assert h["passings"] == 5 and h["internal_errors"] == 0 and h["damaged"] == 0


@pytest.mark.alone
async def test_a_jumping_passing_number_costs_no_resend_storm_nor_memory(redis_server,
                                                                          tmp_path):
    """A corrupted number (1.2 billion) amid a live series, then a decoder that comes back
    numbering from 2 billion: nothing huge is asked for, every passing is stored, the
    jumps are in health with their numbers, and time and memory stay small."""
    script: list[bytes | float] = [passing(n, t=RTC + n) for n in (1, 2, 3)]
    script += [passing(1_200_000_000, t=RTC + 4), passing(4, t=RTC + 5),
               passing(8, t=RTC + 8)]  # 5..7 missing: one small request
    script += [passing(2_000_000_000 + i, t=RTC + 100 + i) for i in range(5)]
    fake = ScriptedP3Decoder(script)
    rss0 = decoder_fuzz.rss_mb()
    t0 = time.perf_counter()
    async with ingest_with(redis_server, tmp_path, fake) as (st, r):
        await st.start("ingest")
        got = await stored_from(r, "d1", len(script))
        assert time.perf_counter() - t0 < 10
        assert decoder_fuzz.rss_mb() - rss0 < 50
        assert sorted(x["seq"] for x in got) == sorted(
            [1, 2, 3, 1_200_000_000, 4, 8] + [2_000_000_000 + i for i in range(5)])
        await asyncio.sleep(0.3)
        resends = [(x.fields["from"], x.fields["until"]) for x in fake.heard
                   if x.tor == TOR["RESEND"]]
        assert (5, 7) in resends
        assert all(0 <= b - a < numbers.MAX_RANGE for a, b in resends), resends
        kinds = [(a["kind"], a["from"], a["to"]) for a in (await health(r))["anomalies"]]
        assert kinds == [("jump", 3, 1_200_000_000), ("jump", 8, 2_000_000_000),
                         ("new_numbering", 8, 2_000_000_000)]
        h = await ingest_stats(st)  # the latest counters (the hash is at most 1 s behind)
        assert (h["jumps"], h["new_numberings"], h["highest_passing"]) == (
            2, 1, 2_000_000_004)
        assert h["missing"] == 0 and h["connected"]  # 5..7 were given up with the old series


async def test_a_link_task_that_fails_is_logged_shown_down_and_restarted(redis_server,
                                                                          tmp_path, caplog):
    """The captures folder cannot be made (a file is in the way): the link task fails on
    start. Ingest logs the traceback, health says down with the reason, and it restarts
    the link, which works once the file is gone."""
    caplog.set_level(logging.INFO, logger=ingest_server.__name__)
    fake = ScriptedP3Decoder([passing(1), passing(2)])
    async with ingest_with(redis_server, tmp_path, fake) as (st, r):
        data = tmp_path / "data"
        data.mkdir()
        (data / "captures").write_text("in the way")
        await st.start("ingest")
        async with asyncio.timeout(5):
            while not (raw := await r.hget(keys.decoders_hash(MAIN), "d1")):
                await asyncio.sleep(0.05)
        h = json.loads(raw)
        assert not h["connected"] and h["failures"] >= 1
        assert h["last_failure"].startswith(("FileExistsError", "NotADirectoryError"))
        events = [json.loads(f[b"d"])["event"] for _, f in
                  await r.xrange(keys.decoder_health_stream(MAIN))]
        assert events[0] == "failed"
        failed = [x for x in caplog.records if "link task failed" in x.getMessage()]
        assert failed and failed[0].exc_info is not None  # with its traceback
        (data / "captures").unlink()
        got = await stored_from(r, "d1", 2)
        assert [x["seq"] for x in got] == [1, 2]
        assert (await health(r))["connected"]
        # Ingest itself never stopped serving.
        assert not st.tasks["ingest"].done()
