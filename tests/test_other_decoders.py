"""Legacy AMB ASCII and Chronelec/Protime, against real lines (../shared/data) and our own."""
from __future__ import annotations

import pytest

from services.ingest.decoders import Damaged, amb_ascii, protime
from services.ingest.decoders.p3 import crc16

from .conftest import SHARED_DATA

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
