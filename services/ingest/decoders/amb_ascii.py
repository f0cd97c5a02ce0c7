"""The legacy AMB ASCII protocol (AMBrc/TranX2 era; Vostok decoders emulate it), sans-I/O.

Each record is SOH (0x01), a TAB-separated line, CR LF (PROTOCOLS.md §2):
``@ dec seq transponder seconds hits strength status xCRC`` (passing) or
``# dec seq noise xCRC`` (status). The CRC is P3's routine over the text from
the type character through the TAB before ``x``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from icetime.messages import MAX_SEQ, MAX_TIME_US

from . import Damaged
from .p3 import MAX_NAME, crc16

SOH = 0x01
MAX_LINE = 512


@dataclass(slots=True)
class AsciiRecord:
    kind: str  # "passing", "status" or "other"
    fields: dict[str, Any]
    raw: bytes



def _seconds_to_us(text: str) -> int:
    whole, _, frac = text.partition(".")
    return (_int(whole, "seconds") * 1_000_000
            + (_int((frac + "000000")[:6], "seconds") if frac else 0))


def parse_line(line: bytes) -> AsciiRecord | Damaged:
    try:
        text = line.decode("ascii")
    except UnicodeDecodeError:
        return Damaged("not ASCII", line)
    cut = text.rfind("\tx")
    if cut < 0:
        return Damaged("no CRC field", line)
    try:
        crc = int(text[cut + 2:], 16)
    except ValueError:
        return Damaged("CRC is not hexadecimal", line)
    got = crc16(text[:cut + 1].encode())
    if got != crc:
        return Damaged(f"CRC mismatch: line says 0x{crc:04X}, text gives 0x{got:04X}", line)
    parts = text[:cut].split("\t")
    try:
        if parts[0] == "@" and len(parts) == 8:
            rec = AsciiRecord("passing", {
                "decoder": _int(parts[1], "decoder"), "seq": _int(parts[2], "seq"),
                "transponder": parts[3], "time_us": _seconds_to_us(parts[4]),
                "hits": _int(parts[5], "hits"), "strength": _int(parts[6], "strength"),
                "status": _int(parts[7], "status")}, line)
            return _check_passing(rec)
        if parts[0] == "#" and len(parts) == 4:
            return AsciiRecord("status", {"decoder": _int(parts[1], "decoder"),
                                          "seq": _int(parts[2], "seq"),
                                          "noise": _int(parts[3], "noise")}, line)
    except ValueError as exc:
        return Damaged(f"bad number: {exc}", line)
    return AsciiRecord("other", {"type": parts[0], "values": parts[1:]}, line)


def _int(text: str, name: str) -> int:
    """Plain decimal digits only (int() would also take signs, spaces and ``1_0``);
    ValueError naming the field otherwise."""
    if not (text.isascii() and text.isdigit()):
        raise ValueError(f"{name} is not a decimal number")
    return int(text)


def _check_passing(rec: AsciiRecord) -> AsciiRecord | Damaged:
    """A passing the feed can take: seq and time in range, a printable transponder."""
    f = rec.fields
    if f["seq"] > MAX_SEQ:
        return Damaged(f"record number {f['seq']} out of range", rec.raw)
    if f["time_us"] > MAX_TIME_US:
        return Damaged(f"time {f['time_us']} µs out of range", rec.raw)
    tr = f["transponder"]
    if not (tr and len(tr) <= MAX_NAME and tr.isprintable() and tr.strip() == tr):
        return Damaged("transponder is empty, too long or not printable", rec.raw)
    return rec


class AmbAsciiDecoder:
    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[AsciiRecord | Damaged]:
        self.buf += data
        out: list[AsciiRecord | Damaged] = []
        while True:
            start = self.buf.find(SOH)
            if start < 0:
                self.buf.clear()
                return out
            end = self.buf.find(b"\r\n", start)
            nxt = self.buf.find(SOH, start + 1, end if end >= 0 else len(self.buf))
            if nxt >= 0:
                out.append(Damaged("record cut short", bytes(self.buf[start:nxt])))
                del self.buf[:nxt]
                continue
            if end < 0:
                if len(self.buf) - start > MAX_LINE:
                    out.append(Damaged("no line end", bytes(self.buf[start:])))
                    self.buf.clear()
                else:
                    del self.buf[:start]
                return out
            out.append(parse_line(bytes(self.buf[start + 1:end])))
            del self.buf[:end + 2]


def passing_input(rec: AsciiRecord, point: str = "finish") -> dict[str, Any]:
    """A feed input for a passing; ``t`` is the decoder's seconds since its start, in µs."""
    f = rec.fields
    return {"type": "passing", "seq": f["seq"], "transponder": f["transponder"],
            "t": f["time_us"], "point": point}
