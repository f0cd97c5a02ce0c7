"""Legacy AMB ASCII and Chronelec/Protime, against real lines (../shared/data) and our own,
and their links into ingest."""
from __future__ import annotations

import asyncio
import contextlib
import json

import pytest

from icetime import bus, keys
from icetime.keys import DEFAULT_COMPETITION as MAIN
from icetime.settings import Decoder
from icetime.timefmt import now_us
from services.ingest.decoders import Damaged, amb_ascii, protime
from services.ingest.decoders.p3 import crc16
from services.ingest.decoders.timeofday import DAY_US, on_day

from .conftest import SHARED_DATA, Stack, make_settings

needs_data = pytest.mark.skipif(not SHARED_DATA.exists(), reason="../shared/data is absent")


def ascii_line(text: str) -> bytes:
    body = text + "\t"
    return b"\x01" + (body + f"x{crc16(body.encode()):04X}").encode() + b"\r\n"


def test_amb_ascii_own_lines_split_anywhere():
    data = ascii_line("@\t101\t7\t8110984\t12.345\t40\t120\t0") + b"junk" + \
        ascii_line("#\t101\t8\t12")
    dec = amb_ascii.AmbAsciiDecoder()
    out = [r for i in range(len(data)) for r in dec.feed(data[i:i + 1])]
    assert [r.kind for r in out] == ["passing", "status"]
    assert out[0].fields["time_us"] == 12_345_000
    assert amb_ascii.passing_input(out[0]) == {"type": "passing", "seq": 7,
                                               "transponder": "8110984", "t": 12_345_000,
                                               "point": "finish"}
    bad = bytearray(ascii_line("@\t101\t9\t8110984\t12.345\t40\t120\t0"))
    bad[8] ^= 1
    (dmg,) = dec.feed(bytes(bad))
    assert isinstance(dmg, Damaged) and dmg.reason.startswith("CRC mismatch")


@needs_data
def test_amb_ascii_real_lines():
    lines = [x for x in (SHARED_DATA / "amb_ascii" / "vostok_ambrc_ascii_lines.txt")
             .read_text().splitlines() if x and not x.startswith("# ")]
    assert len(lines) == 20
    dec = amb_ascii.AmbAsciiDecoder()
    out = dec.feed(b"".join(b"\x01" + x.encode() + b"\r\n" for x in lines))
    assert len(out) == 20 and all(isinstance(r, amb_ascii.AsciiRecord) for r in out)
    passings = [r for r in out if r.kind == "passing"]
    assert passings and {r.fields["transponder"] for r in passings} == {"8110984"}
    assert {r.fields["decoder"] for r in out} == {101}
    raw = (SHARED_DATA / "amb_ascii" / "vostok_two_records_one_read.bin").read_bytes()
    two = amb_ascii.AmbAsciiDecoder().feed(raw)
    assert [r.kind for r in two] == ["passing", "status"]
    assert two[0].fields == {"decoder": 101, "seq": 9788, "transponder": "8110984",
                             "time_us": 52_083_691_000, "hits": 127, "strength": 40,
                             "status": 2}


@needs_data
def test_protime_real_telegrams_and_the_nonconforming_one():
    text = (SHARED_DATA / "chronelec" / "protime_lines.txt").read_text()
    good = [x.encode() for x in text.splitlines() if x.startswith("<")]
    bad = next(x[2:] for x in text.splitlines() if x.startswith("# <")).encode()
    dec = protime.ProtimeDecoder()
    out, acks = dec.feed(b"\r\n".join(good) + b"\r\n" + bad)
    assert len(out) == 6 and acks == protime.ACK * 5
    assert all(isinstance(r, protime.ProtimeRecord) for r in out[:5])
    assert isinstance(out[5], Damaged)
    assert out[0].fields == {"loop": "STA", "transponder": "000255", "time_of_day_us": 31_957_000,
                             "index": 1, "counter": 1, "battery": 1}
    assert out[3].fields["loop"] == "B01" and out[3].fields["time_of_day_us"] == \
        (3 * 3600 + 45 * 60 + 8) * 1_000_000 + 388_000
    assert protime.passing_input(out[0], seq=1)["point"] == "finish"


def test_protime_checksum_is_checked():
    data = b"STA 000255 00:00'31\"957 01 01 1 "
    assert len(data) == 32
    good = b"<" + data + f"{sum(data):04d}".encode() + b">"
    out, acks = protime.ProtimeDecoder().feed(good[:10])
    assert out == [] and acks == b""
    bad = good.replace(b"957", b"958")
    out, acks = protime.ProtimeDecoder().feed(bad)
    assert isinstance(out[0], Damaged) and acks == b""


def telegram(transponder: int, hh: int, mm: int, ss: int, ms: int, loop: str = "STA") -> bytes:
    data = f"{loop} {transponder:06d} {hh:02d}:{mm:02d}'{ss:02d}\"{ms:03d} 01 07 1 "
    assert len(data) == 32
    return f"<{data}{sum(data.encode()):04d}>".encode()


#: How long a fake decoder listens for the host's answers after its last chunk (s).
QUIET_S = 0.5


class FakeDecoder:
    """A decoder on TCP that plays scripted byte chunks to each connection in turn and
    keeps what the host sends back."""

    def __init__(self, sessions: list[list[bytes]]) -> None:
        self.sessions = sessions
        self.heard = b""
        self.done = asyncio.Event()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader, writer) -> None:
        if not self.sessions:
            writer.close()
            return
        for chunk in self.sessions.pop(0):
            writer.write(chunk)
            await writer.drain()
            await asyncio.sleep(0.05)
            with contextlib.suppress(asyncio.TimeoutError):
                self.heard += await asyncio.wait_for(reader.read(1024), 0.05)
        # What the host still answers to the last chunks (an acknowledgement stored on a
        # busy machine comes later than 50 ms): until it has said nothing for QUIET_S.
        with contextlib.suppress(asyncio.TimeoutError):
            while data := await asyncio.wait_for(reader.read(1024), QUIET_S):
                self.heard += data
        if not self.sessions:
            self.done.set()
        writer.close()  # the link drops; the next connection gets the next session

    async def stop(self) -> None:
        self.server.close()
        await self.server.wait_closed()


async def run_link(redis_server, tmp_path, protocol: str, sessions, **decoder):
    """Ingest with one decoder link of ``protocol`` to a FakeDecoder; returns what was
    stored from it, the rejects, the link's state and what the host sent back."""
    fake = FakeDecoder(sessions)
    port = await fake.start()
    settings = make_settings(redis_server.url, data_dir=str(tmp_path / "data"),
                             decoders=(Decoder("d1", "127.0.0.1", port, protocol=protocol,
                                               **decoder),))
    st = Stack(settings, redis_server.url)
    r = bus.connect(redis_server.url)
    try:
        await st.start("ingest")
        await asyncio.wait_for(fake.done.wait(), 10)
        await asyncio.sleep(0.2)
        raw = [bus.unpack_input(f[b"d"]) for _, f in await r.xrange(keys.raw_stream(MAIN))]
        rejects = [f[b"reason"].decode() for _, f in await r.xrange(keys.rejects_stream(MAIN))]
        state = json.loads(await r.hget(keys.decoders_hash(MAIN), "d1"))
    finally:
        await st.close()
        await fake.stop()
        await r.aclose()
    return [x for x in raw if x["source"] == "d1"], rejects, state, fake.heard


async def test_amb_ascii_link_stores_each_record_once_across_a_reconnect(redis_server,
                                                                         tmp_path):
    p1 = ascii_line("@\t101\t7\t4100051\t12.345\t40\t120\t0")
    p2 = ascii_line("@\t101\t8\t4100052\t12.368\t38\t110\t0")
    bad = bytearray(ascii_line("@\t101\t9\t4100201\t13.001\t40\t120\t0"))
    bad[10] ^= 1
    status = ascii_line("#\t101\t10\t23")
    # First connection: a status, a passing split across reads, a damaged one.
    # Second: the decoder repeats the last passing, then a new one.
    p3 = ascii_line("@\t101\t11\t4100201\t13.002\t40\t120\t0")
    stored, rejects, state, _ = await run_link(
        redis_server, tmp_path, "amb_ascii",
        [[status, p1[:9], p1[9:] + p2, bytes(bad)], [p2, p3]])
    assert [(x["seq"], x["transponder"], x["t"]) for x in stored] == [
        (7, "4100051", 12_345_000), (8, "4100052", 12_368_000), (11, "4100201", 13_002_000)]
    assert len(rejects) == 1 and rejects[0].startswith("AMB ASCII: CRC mismatch")
    assert state["protocol"] == "amb_ascii" and state["status"]["noise"] == 23
    assert (state["passings"], state["duplicates"], state["damaged"]) == (3, 1, 1)
    # Reconnected, and backed off from a decoder that then only hung up (no hot loop).
    assert 2 <= state["connects"] <= 4


async def test_protime_link_acknowledges_and_a_repeat_is_a_duplicate(redis_server, tmp_path):
    t1, t2 = telegram(410005, 14, 2, 31, 957), telegram(410006, 14, 2, 32, 1)
    bad = bytearray(telegram(410007, 14, 2, 33, 500))
    bad[5] = ord("9")  # a digit changed in the line: the checksum no longer adds up
    stored, rejects, state, heard = await run_link(
        redis_server, tmp_path, "protime",
        [[t1[:20], t1[20:] + t2, bytes(bad)], [t2]])  # then t2 again: our ack was lost
    # Times of day, put on today's date (no offset: the days of the Unix epoch).
    assert [(x["transponder"], x["t"] % DAY_US) for x in stored] == [
        ("410005", ((14 * 60 + 2) * 60 + 31) * 1_000_000 + 957_000),
        ("410006", ((14 * 60 + 2) * 60 + 32) * 1_000_000 + 1_000)]
    assert all(abs(x["t"] - now_us()) < DAY_US / 2 for x in stored)
    assert len(rejects) == 1 and rejects[0].startswith("Protime: checksum")
    assert heard == protime.ACK * 3  # t1, t2, and t2's repeat; never the damaged one
    assert (state["passings"], state["duplicates"], state["damaged"]) == (2, 1, 1)


async def test_protime_over_udp_is_acknowledged_back_to_the_sender(redis_server, tmp_path):
    settings = make_settings(redis_server.url, data_dir=str(tmp_path / "data"),
                             decoders=(Decoder("d1", "127.0.0.1", 0, protocol="protime_udp"),))
    st = Stack(settings, redis_server.url)
    loop = asyncio.get_running_loop()
    acks: asyncio.Queue[bytes] = asyncio.Queue()

    class Decoder_(asyncio.DatagramProtocol):
        def datagram_received(self, data, addr):
            acks.put_nowait(data)

    r = bus.connect(redis_server.url)
    transport = None
    try:
        await st.start("ingest")
        async with asyncio.timeout(10):  # port 0: the link tells the port it bound
            while not (health := await r.hget(keys.decoders_hash(MAIN), "d1")):
                await asyncio.sleep(0.02)
        port = json.loads(health)["listen_port"]
        assert port > 0
        transport, _ = await loop.create_datagram_endpoint(
            Decoder_, remote_addr=("127.0.0.1", port))
        t1 = telegram(410005, 9, 0, 1, 250)
        transport.sendto(t1)
        assert await asyncio.wait_for(acks.get(), 5) == protime.ACK
        transport.sendto(b"<garbage>")
        transport.sendto(t1)  # again: our ack was "lost"
        assert await asyncio.wait_for(acks.get(), 5) == protime.ACK
        raw = [bus.unpack_input(f[b"d"]) for _, f in await r.xrange(keys.raw_stream(MAIN))]
        assert [(x["transponder"], x["t"] % DAY_US) for x in raw if x["source"] == "d1"] \
            == [("410005", (9 * 3600 + 1) * 1_000_000 + 250_000)]
        import aiohttp
        async with aiohttp.ClientSession() as s:
            url = f"http://127.0.0.1:{st.settings.ingest_http_port}/api/stats"
            async with s.get(url) as resp:
                stats = (await resp.json())["decoders"]["d1"]
        assert stats["protocol"] == "protime_udp" and stats["passings"] == 1
        assert stats["listen_port"] == port
        assert (stats["duplicates"], stats["damaged"]) == (1, 1)
        assert acks.empty()  # nothing for the garbage
    finally:
        if transport is not None:
            transport.close()
        await st.close()
        await r.aclose()


def tod(hh: int, mm: int, ss: int, ms: int = 0) -> int:
    return ((hh * 60 + mm) * 60 + ss) * 1_000_000 + ms * 1000


def test_a_time_of_day_goes_on_the_day_the_host_clock_is_nearest():
    midnight = 1_700_000_000_000_000  # the decoder's midnight on the host clock
    # 23:59:58.5 read at 00:00:02 the next day (a late telegram): still yesterday.
    assert on_day(tod(23, 59, 58, 500), midnight, midnight + DAY_US + tod(0, 0, 2)) == \
        (tod(23, 59, 58, 500), 0)
    # 00:00:08.4 read at once: the next day.
    assert on_day(tod(0, 0, 8, 400), midnight, midnight + DAY_US + tod(0, 0, 8, 450)) == \
        (DAY_US + tod(0, 0, 8, 400), 1)
    # A host clock behind the offset's day never gives a time before day 0.
    assert on_day(tod(23, 0, 0), midnight, midnight - tod(1, 0, 0)) == (tod(23, 0, 0), 0)


async def test_a_protime_race_over_midnight_is_timed_right(redis_server, tmp_path):
    """A 500 m started at 23:59:40 on the decoder's clock, finished 38.77 s later, past
    midnight; one read before midnight arrives after it. Stored times keep their order
    and spacing: the lap over midnight is 28.53 s, not minus 24 hours."""
    now = now_us()
    start = tod(23, 59, 40)
    midnight = now - start - 200_000  # the host's clock: the gun was 0.2 s ago
    t1 = telegram(410005, 23, 59, 50, 240)   # 100 m at 10.24 s
    t2 = telegram(410005, 0, 0, 18, 770)     # finish at 38.77 s, after midnight
    t_other = telegram(410006, 23, 59, 59, 900)  # another skater's read, sent late
    stored, rejects, state, heard = await run_link(
        redis_server, tmp_path, "protime", [[t1, t2, t_other]], offset_us=midnight)
    times = {(x["transponder"], x["t"]) for x in stored}
    assert times == {("410005", tod(23, 59, 50, 240)), ("410005", DAY_US + tod(0, 0, 18, 770)),
                     ("410006", tod(23, 59, 59, 900))}
    by_tr = sorted(x["t"] for x in stored if x["transponder"] == "410005")
    assert by_tr[1] - start == 38_770_000 and by_tr[1] - by_tr[0] == 28_530_000
    assert {x.get("session") for x in stored} == {None, "day-1"}
    assert not rejects and heard == protime.ACK * 3


async def test_an_amb_ascii_decoder_restarted_is_a_new_session(redis_server, tmp_path):
    """An AMB ASCII decoder restarts: its record numbers and its clock since boot start
    again. The new records are new passings (a new session), not duplicates."""
    before = [ascii_line(f"@\t101\t{n}\t4100051\t{600 + n}.000\t40\t120\t0")
              for n in (1, 2, 3)]
    after = [ascii_line(f"@\t101\t{n}\t4100061\t{5 + n}.500\t40\t120\t0")
             for n in (1, 2)]
    stored, rejects, state, _ = await run_link(
        redis_server, tmp_path, "amb_ascii", [before, after])
    assert [(x.get("session") is None, x["seq"], x["transponder"]) for x in stored] == [
        (True, 1, "4100051"), (True, 2, "4100051"), (True, 3, "4100051"),
        (False, 1, "4100061"), (False, 2, "4100061")]
    assert (state["passings"], state["duplicates"], state["restarts"]) == (5, 0, 1)
    assert state["restart_history"][0]["reason"] == \
        "its clock went back from 603.000 s to 6.500 s since its start"
    assert not rejects
