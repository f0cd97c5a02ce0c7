"""The P3 codec against real decoder captures (../shared/data/p3) and its own fixtures."""
from __future__ import annotations

import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.ingest.decoders.p3 import (
    TOR,
    Damaged,
    P3Decoder,
    P3Record,
    crc16,
    encode,
    escape,
    u,
    unescape,
)

from .conftest import SHARED_DATA

P3 = SHARED_DATA / "p3"
needs_data = pytest.mark.skipif(not P3.exists(), reason="../shared/data is absent")


def decode_all(data: bytes, chunk: int | None = None):
    d = P3Decoder()
    out = []
    step = chunk or len(data) or 1
    for i in range(0, len(data), step):
        out += d.feed(data[i:i + step])
    return d, out


def passing(n: int, transponder: int = 4100201, rtc: int = 1_700_000_000_000_000) -> bytes:
    return encode(TOR["PASSING"], [(0x01, u(n, 4)), (0x03, u(transponder, 4)),
                                   (0x04, u(rtc, 8)), (0x05, u(120, 2)), (0x06, u(40, 2)),
                                   (0x08, u(0, 2)), (0x81, u(0x20F93, 4))])


def test_crc_check_value_and_escapes():
    assert crc16(b"123456789") == 0xA69D
    body = bytes(range(0x80, 0x95))
    assert unescape(escape(body)) == body
    assert escape(b"\x8d\x8e\x8f") == b"\x8d\xad\x8d\xae\x8d\xaf"


def test_own_records_roundtrip_with_escapes_everywhere():
    # 0x8E8F8D in the passing number and the RTC time, so escapes land in the body,
    # and across numbers the CRC itself takes escaped values.
    frames = [passing(0x8E8F8D00 + i, rtc=0x8D8E8F0000000000 + i) for i in range(200)]
    assert any(b"\x8d" in f[1:6] for f in frames), "no escaped length/CRC byte exercised"
    d, out = decode_all(b"".join(frames), chunk=7)
    assert [r.fields["passing_number"] for r in out] == [0x8E8F8D00 + i for i in range(200)]
    assert all(isinstance(r, P3Record) and r.tor_name == "PASSING" for r in out)
    assert d.stats.records == 200 and d.stats.damaged == 0


@needs_data
def test_every_curated_vector():
    vectors = json.loads((P3 / "p3_test_vectors.json").read_text())["vectors"]
    for v in vectors:
        raw = v["hex"][: len(v["hex"]) // 2 * 2]
        d, out = decode_all(bytes.fromhex(raw))
        exp = v.get("expected") or {}
        name = v["name"]
        if exp.get("fields"):
            (rec,) = out
            assert rec.fields == exp["fields"], name
            assert (rec.tor, rec.crc, rec.length, rec.version) == (
                exp["tor"], exp["crc"], exp["length"], exp["version"]), name
        elif name == "ten_concatenated_records":
            assert len(out) == 10 and all(isinstance(r, P3Record) for r in out)
        elif name == "garbage_prefix_resync":
            assert len(out) == 1 and isinstance(out[0], P3Record)
            assert d.stats.skipped_bytes == 9
        elif name == "corrupted_dropped_byte_putty":
            (bad,) = out
            assert isinstance(bad, Damaged) and bad.reason == \
                "length field says 51 bytes, record has 50"
        elif name == "crc_mismatch_synthetic_bitflip":
            (bad,) = out
            assert isinstance(bad, Damaged) and bad.reason.startswith("CRC mismatch")
        elif name == "truncated_frame":
            assert out == [] and d.buf, "a record without its end waits for more bytes"
            more = d.feed(passing(1))
            assert isinstance(more[0], Damaged) and "cut short" in more[0].reason
            assert isinstance(more[1], P3Record)


@needs_data
def test_real_kart_capture_decodes_completely():
    lines = (P3 / "vmindru_ambp3client_amb.out.hex").read_text().split()
    expected = [json.loads(x) for x in
                (P3 / "vmindru_ambp3client_amb.out.decoded.jsonl").read_text().splitlines()]
    d, out = decode_all(bytes.fromhex("".join(lines)), chunk=997)
    assert len(out) == len(expected) == 1388
    for rec, exp in zip(out, expected, strict=True):
        assert isinstance(rec, P3Record)
        assert (rec.tor, rec.crc, rec.fields) == (exp["tor"], exp["crc"], exp["fields"])
    numbers = [r.fields["passing_number"] for r in out if r.tor_name == "PASSING"]
    assert numbers == list(range(157777, 157861))
    assert d.stats.by_type == {"STATUS": 1304, "PASSING": 84}


@needs_data
def test_real_putty_capture_rejects_the_damaged_record_and_carries_on():
    data = (P3 / "datagutten_putty_2022-05-01_decoder_20f93.bin").read_bytes()
    expected = [json.loads(x) for x in (P3 / "datagutten_putty_2022-05-01_decoder_20f93"
                                             ".decoded.jsonl").read_text().splitlines()]
    _, out = decode_all(data, chunk=64)
    assert len(out) == len(expected) == 67
    damaged = [i for i, r in enumerate(out) if isinstance(r, Damaged)]
    assert damaged == [i for i, e in enumerate(expected) if not e["crc_ok"]]
    assert len(damaged) == 1 and "length field says 51" in out[damaged[0]].reason
    for rec, exp in zip(out, expected, strict=True):
        if exp["crc_ok"]:
            assert rec.fields == exp["fields"]
    assert damaged[0] < len(out) - 1, "records after the damaged one must still decode"


@needs_data
def test_upstream_unit_records():
    for rec in json.loads((P3 / "datagutten_unit_records.json").read_text()):
        _, out = decode_all(bytes.fromhex(rec["raw_hex"]))
        frames = rec["frames"]
        assert len(out) == len(frames), rec["name"]
        for got, exp in zip(out, frames, strict=True):
            assert got.fields == exp["fields"], rec["name"]
    good = next(r for r in json.loads((P3 / "datagutten_unit_records.json").read_text())
                if r["name"] == "good_passing")
    (rec,) = decode_all(bytes.fromhex(good["raw_hex"]))[1]
    assert rec.fields["rtc_time"] == 1437769372993000 and rec.fields["transponder"] == 2906141


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=3000), cuts=st.integers(1, 200))
def test_arbitrary_bytes_never_crash_or_hold_more_than_one_record(data, cuts):
    d = P3Decoder()
    for i in range(0, len(data), cuts):
        for item in d.feed(data[i:i + cuts]):
            assert isinstance(item, P3Record | Damaged)
            if isinstance(item, Damaged):
                assert item.reason
    assert len(d.buf) <= 1024 + cuts


@settings(max_examples=300, deadline=None)
@given(garbage=st.binary(max_size=200), seed=st.integers(0, 2**32), cuts=st.integers(1, 60))
def test_valid_records_after_garbage_and_a_mutated_record_are_found(garbage, seed, cuts):
    rnd = random.Random(seed)
    victim = bytearray(passing(1))
    victim[rnd.randrange(1, len(victim) - 1)] ^= 1 << rnd.randrange(8)  # one bit flipped
    good = [passing(n) for n in (2, 3, 4)]
    d, out = decode_all(garbage + bytes(victim) + b"".join(good), chunk=cuts)
    found = [r.fields["passing_number"] for r in out if isinstance(r, P3Record)]
    assert found[-3:] == [2, 3, 4]


@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=300))
def test_fast_crc_equals_the_decoders_own_loop(data):
    from services.ingest.decoders.p3 import crc16_reference
    assert crc16(data) == crc16_reference(data)
