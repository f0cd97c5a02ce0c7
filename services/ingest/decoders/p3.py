"""MYLAPS/AMB P3, sans-I/O: bytes from a decoder in, records (or reasons) out.

The wire format (PROTOCOLS.md §1): a record runs from SOR 0x8E to EOR 0x8F;
inside it 0x8D, 0x8E and 0x8F travel as 0x8D, byte + 0x20, including within the
length and CRC. The unescaped record has a little-endian header (version,
length of the whole unescaped record, CRC-16, flags, type of record) and then
TLV fields ``id:u8 len:u8 value``. The CRC is AMB's variant of CRC-16 (poly
0x1021, init 0xFFFF, table MSB-first, the byte XORed in after the table step)
over the unescaped record with the CRC bytes zeroed: "123456789" gives 0xA69D.

:class:`P3Decoder` takes bytes in any chunking (several records in one read, a
record split across reads, garbage before a SOR) and returns a
:class:`P3Record` for each valid record and a :class:`Damaged` with a reason
for each damaged one; it always carries on at the next SOR.

A valid CRC says the bytes came as the decoder sent them, not that they make
sense: :func:`classify` turns each record into a :class:`P3Passing` (a PASSING
with a number, a transponder and a time), the record itself (a STATUS, GET_TIME
or another known type) or a :class:`Damaged` with the reason (an unknown type,
an integer field of 0 or more than 8 bytes, a PASSING without what it needs).
"""
from __future__ import annotations

import binascii
import struct
from dataclasses import dataclass, field
from typing import Any

from icetime.messages import MAX_TIME_US

from . import Damaged

SOR, EOR, ESC = 0x8E, 0x8F, 0x8D
#: No real record comes near this; a SOR with no EOR within it is a lost record.
MAX_RECORD = 1024
HEADER = 10

TOR_NAMES = {
    0x00: "RESET", 0x01: "PASSING", 0x02: "STATUS", 0x03: "VERSION", 0x04: "RESEND",
    0x05: "CLEAR_PASSING", 0x13: "SERVER_SETTINGS", 0x15: "SESSION",
    0x16: "NETWORK_SETTINGS", 0x18: "WATCHDOG", 0x20: "PING", 0x24: "GET_TIME",
    0x28: "GENERAL_SETTINGS", 0x2D: "SIGNALS", 0x2F: "LOOP_TRIGGER", 0x30: "GPS_INFO",
    0x45: "FIRST_CONTACT", 0x4A: "TIMELINE", 0xFFFF: "ERROR",
}
TOR = {name: code for code, name in TOR_NAMES.items()}

#: Field ids present in every record type.
COMMON_FIELDS = {0x81: "decoder_id", 0x83: "controller_id", 0x85: "request_id"}
#: Field ids by record type; a field's meaning depends on the type (0x0A is a
#: transponder string in a PASSING and satellites in use in a STATUS).
FIELDS: dict[int, dict[int, str]] = {
    TOR["PASSING"]: {0x01: "passing_number", 0x03: "transponder", 0x04: "rtc_time",
                     0x05: "strength", 0x06: "hits", 0x08: "flags", 0x0A: "tran_code",
                     0x0E: "user_flag", 0x0F: "driver_id", 0x10: "utc_time", 0x13: "rtc_id",
                     0x14: "sport", 0x30: "voltage", 0x31: "temperature"},
    TOR["STATUS"]: {0x01: "noise", 0x06: "gps", 0x07: "temperature", 0x0A: "satinuse",
                    0x0B: "loop_triggers", 0x0C: "input_voltage"},
    TOR["RESEND"]: {0x01: "from", 0x02: "until"},
    TOR["GET_TIME"]: {0x01: "rtc_time", 0x04: "utc_time"},
    TOR["ERROR"]: {0x01: "code", 0x02: "description"},
}
#: Fields that are text, not little-endian integers.
TEXT_FIELDS = {(TOR["PASSING"], 0x0A), (TOR["ERROR"], 0x02)}
#: Fields kept as raw bytes (ids, not numbers).
BYTES_FIELDS = {0x83, 0x85}
INT, TEXT, HEX = 0, 1, 2


def _decode_table(tor: int) -> dict[int, tuple[str, int]]:
    """fid -> (name, kind) for one record type, common fields included."""
    names = {**FIELDS.get(tor, {}), **COMMON_FIELDS}
    return {fid: (name, TEXT if (tor, fid) in TEXT_FIELDS else HEX if fid in BYTES_FIELDS
                  else INT) for fid, name in names.items()}


DECODE = {tor: _decode_table(tor) for tor in TOR_NAMES}


def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
        table.append(crc & 0xFFFF)
    return table


CRC_TABLE = _crc_table()


def crc16_reference(data: bytes | bytearray) -> int:
    """AMB's CRC-16, byte by byte, exactly as the decoder source computes it."""
    crc = 0xFFFF
    table = CRC_TABLE
    for b in data:
        crc = table[(crc >> 8) & 0xFF] ^ ((crc << 8) & 0xFFFF) ^ b
    return crc


# AMB's loop XORs each byte in after the table step: the "augmented" CRC, which
# equals the standard (direct) CRC-CCITT of all but the last two bytes, started
# from the initial register shifted 16 bits, XORed with those two bytes. The
# direct one is binascii.crc_hqx, in C: about 20 times faster than the loop.
_DIRECT_INIT = crc16_reference(b"\x00\x00")


def crc16(data: bytes | bytearray) -> int:
    """AMB's CRC-16 over ``data`` (the unescaped record with its CRC bytes zeroed)."""
    if len(data) < 2:
        return crc16_reference(data)
    return binascii.crc_hqx(data[:-2], _DIRECT_INIT) ^ int.from_bytes(data[-2:], "big")


def escape(body: bytes) -> bytes:
    """Escape the bytes between SOR and EOR."""
    out = bytearray()
    for b in body:
        if b in (ESC, SOR, EOR):
            out += bytes((ESC, b + 0x20))
        else:
            out.append(b)
    return bytes(out)


def unescape(data: bytes) -> bytes:
    """Undo :func:`escape`; raises ValueError on an escape byte with nothing valid after it."""
    if ESC not in data:
        return data
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        b = data[i]
        if b == ESC:
            if i + 1 >= n or data[i + 1] - 0x20 not in (ESC, SOR, EOR):
                raise ValueError(f"bad escape at byte {i}")
            out.append(data[i + 1] - 0x20)
            i += 2
        else:
            out.append(b)
            i += 1
    return bytes(out)


@dataclass(slots=True)
class P3Record:
    tor: int
    fields: dict[str, Any]
    version: int = 2
    length: int = 0
    crc: int = 0
    flags: int = 0
    raw: bytes = b""

    @property
    def tor_name(self) -> str:
        return TOR_NAMES.get(self.tor, f"0x{self.tor:04x}")



@dataclass
class P3Stats:
    records: int = 0
    damaged: int = 0
    skipped_bytes: int = 0
    by_type: dict[str, int] = field(default_factory=dict)


def encode(tor: int, fields: list[tuple[int, bytes]], version: int = 2, flags: int = 0) -> bytes:
    """Build a record as a decoder sends it (for the simulator and tests)."""
    body = b"".join(bytes((fid, len(v))) + v for fid, v in fields)
    length = HEADER + len(body) + 1
    rec = bytearray(struct.pack("<BBHHHH", SOR, version, length, 0, flags, tor) + body + b"\x8f")
    struct.pack_into("<H", rec, 4, crc16(rec))
    return bytes((SOR,)) + escape(bytes(rec[1:-1])) + bytes((EOR,))


def u(n: int, size: int) -> bytes:
    """A little-endian unsigned field value."""
    return n.to_bytes(size, "little")


def parse_record(frame: bytes) -> P3Record | Damaged:
    """Decode one escaped frame from SOR through EOR."""
    if ESC in frame:
        try:
            rec = bytes((SOR,)) + unescape(frame[1:-1]) + bytes((EOR,))
        except ValueError as exc:
            return Damaged(str(exc), frame)
    else:
        rec = frame
    if len(rec) < HEADER + 1:
        return Damaged(f"record too short ({len(rec)} bytes)", frame)
    version, length, crc, flags, tor = struct.unpack_from("<BHHHH", rec, 1)
    if length != len(rec):
        return Damaged(f"length field says {length} bytes, record has {len(rec)}", frame)
    got = crc16(rec[:4] + b"\x00\x00" + rec[6:])
    if got != crc:
        return Damaged(f"CRC mismatch: record says 0x{crc:04x}, bytes give 0x{got:04x}", frame)
    fields = _fields(rec, DECODE.get(tor) or _decode_table(tor), frame)
    if isinstance(fields, Damaged):
        return fields
    return P3Record(tor, fields, version, length, crc, flags, frame)


def _fields(rec: bytes, table: dict[int, tuple[str, int]], frame: bytes
            ) -> dict[str, Any] | Damaged:
    """A CRC-checked record's fields (TLV, after the header) by name, per ``table``
    (field id -> (name, kind)); an unknown field as ``field_0x..``."""
    fields: dict[str, Any] = {}
    i, end = HEADER, len(rec) - 1
    from_bytes = int.from_bytes
    while i < end:
        if i + 2 > end:
            return Damaged(f"field header cut at byte {i}", frame)
        fid, flen = rec[i], rec[i + 1]
        j = i + 2 + flen
        if j > end:
            return Damaged(f"field 0x{fid:02x} runs past the record end", frame)
        name, kind = table.get(fid) or (f"field_0x{fid:02x}", INT)
        value = rec[i + 2:j]
        if kind == INT and 0 < flen <= 8:
            fields[name] = from_bytes(value, "little")
        elif kind == TEXT:
            fields[name] = value.decode("ascii", errors="replace").rstrip("\x00")
        else:
            # Raw bytes, or an integer field of a width no integer has (0, or more
            # than 8 bytes): kept as hex, which classify() refuses for a known field.
            fields[name] = value.hex()
        i = j
    return fields


class P3Decoder:
    """Feed it bytes as they arrive; it returns what they complete."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.stats = P3Stats()

    def feed(self, data: bytes) -> list[P3Record | Damaged]:
        self.buf += data
        out: list[P3Record | Damaged] = []
        buf = self.buf
        while True:
            start = buf.find(SOR)
            if start < 0:
                self.stats.skipped_bytes += len(buf)
                buf.clear()
                break
            if start:
                self.stats.skipped_bytes += start
                del buf[:start]
            end = buf.find(EOR, 1)
            nxt = buf.find(SOR, 1, end if end >= 0 else len(buf))
            if nxt >= 0:
                # A new record began before this one ended: this one was cut short.
                out.append(self._damaged("record cut short: a new record began before "
                                         "its end", bytes(buf[:nxt])))
                del buf[:nxt]
                continue
            if end < 0:
                if len(buf) > MAX_RECORD:
                    out.append(self._damaged(f"no record end within {MAX_RECORD} bytes",
                                             bytes(buf)))
                    buf.clear()
                break
            frame = bytes(buf[:end + 1])
            del buf[:end + 1]
            item = parse_record(frame)
            if isinstance(item, Damaged):
                self.stats.damaged += 1
            else:
                stats = self.stats
                stats.records += 1
                name = TOR_NAMES.get(item.tor) or item.tor_name
                stats.by_type[name] = stats.by_type.get(name, 0) + 1
            out.append(item)
        return out

    def _damaged(self, reason: str, raw: bytes) -> Damaged:
        self.stats.damaged += 1
        return Damaged(reason, raw)


#: Per record type, the named fields that must be integers (1 to 8 bytes on the wire).
INT_FIELDS: dict[int, tuple[str, ...]] = {
    tor: tuple(name for name, kind in DECODE[tor].values() if kind == INT) for tor in TOR_NAMES}
#: Passing numbers and transponder ids are u32 on the wire.
U32 = 0xFFFF_FFFF
#: The longest transponder name the feed takes (messages.Name).
MAX_NAME = 64


@dataclass(frozen=True, slots=True)
class P3Passing:
    """A PASSING that can be stored: ``number`` (u32, consecutive per decoder),
    ``transponder`` (the ProChip string, else the u32 id, as text), ``t_us`` (µs on the
    decoder's clock) and ``clock``, the field it came from: ``"rtc"`` or ``"utc"``;
    ``alias``: the u32 id as text when the chip also gave a string (a start list may name
    the chip either way), else None."""

    number: int
    transponder: str
    t_us: int
    clock: str
    raw: bytes
    alias: str | None = None


def classify(rec: P3Record) -> P3Passing | P3Record | Damaged:
    """What a CRC-valid record is: a passing, a record of another known type (returned
    as it is), or damaged with the reason. Never raises.

    A PASSING needs a passing number, a transponder (field 0x0A's text or 0x03) and a
    time: the RTC time (0x04) when it has one, else the UTC time (0x10). RTC wins
    because the decoder's other passings, its gun beacons and GET_TIME are all on
    the RTC: taking UTC for some passings would put two clocks in one race.
    """
    name = TOR_NAMES.get(rec.tor)
    if name is None:
        return Damaged(f"unknown record type 0x{rec.tor:04x}", rec.raw)
    f = rec.fields
    for field_name in INT_FIELDS[rec.tor]:
        v = f.get(field_name)
        if v is not None and not isinstance(v, int):
            return Damaged(f"{name} field {field_name} is {len(v) // 2} bytes: not an "
                           "integer (one to eight bytes)", rec.raw)
    if rec.tor != TOR["PASSING"]:
        return rec
    return _passing(rec)


def _passing(rec: P3Record) -> P3Passing | Damaged:
    """A PASSING record whose integer fields are integers, as :func:`classify` says."""
    f = rec.fields
    n = f.get("passing_number")
    if n is None:
        return Damaged("PASSING without a passing number", rec.raw)
    if n > U32:
        return Damaged(f"PASSING number {n} is wider than 32 bits", rec.raw)
    transponder, alias = _transponder(f)
    if transponder is None:
        return Damaged("PASSING without a usable transponder (no 0x03 id, no printable "
                       "0x0A string)", rec.raw)
    if "rtc_time" in f:
        t, clock = f["rtc_time"], "rtc"
    elif "utc_time" in f:
        t, clock = f["utc_time"], "utc"
    else:
        return Damaged("PASSING without a time (no RTC or UTC time field)", rec.raw)
    if t > MAX_TIME_US:
        return Damaged(f"PASSING {clock.upper()} time {t} µs is past the year 2200", rec.raw)
    return P3Passing(n, transponder, t, clock, rec.raw, alias)


def _transponder(f: dict[str, Any]) -> tuple[str | None, str | None]:
    """(ProChip's string when it is printable text, else the numeric id; the numeric id
    beside a string, else None)."""
    num = f.get("transponder")
    number = str(num) if isinstance(num, int) and num <= U32 else None
    code = f.get("tran_code")
    if isinstance(code, str):
        code = code.strip()
        if code and len(code) <= MAX_NAME and code.isascii() and code.isprintable():
            return code, number
    return number, None
