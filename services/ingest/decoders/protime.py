"""Chronelec / TAG Heuer Protime passing telegrams, sans-I/O.

``<`` + 32 data characters + a 4-digit checksum + ``>``. The data is
``LOOP TRANSP HH:MM'SS"mmm II CC B`` (loop STA/BOX/MAN/Bnn, 6-digit transponder,
time of day, index, counter, battery 0-3). The checksum is the decimal byte sum
of the 32 data characters. The host must answer every valid telegram with
ESC 0x11 or the decoder sends it again: :meth:`ProtimeDecoder.feed` returns the
bytes to write back.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from . import Damaged

ACK = b"\x1b\x11"
TELEGRAM = re.compile(rb"<([^<>]{32})(\d{4})>")
#: The 32 data characters; the last is a space before the checksum.
DATA = re.compile(r"(STA|BOX|MAN|B\d\d) (\d{6}) "
                  r"(\d\d):(\d\d)'(\d\d)\"(\d{3}) (\d\d) (\d\d) (\d) ?$")


@dataclass(slots=True)
class ProtimeRecord:
    fields: dict[str, Any]
    raw: bytes



def parse_telegram(raw: bytes) -> ProtimeRecord | Damaged:
    m = TELEGRAM.fullmatch(raw)
    if not m:
        return Damaged("not a 38-character <...> telegram", raw)
    data, checksum = m.group(1), int(m.group(2))
    if sum(data) != checksum:
        return Damaged(f"checksum {checksum:04d} does not match {sum(data):04d}", raw)
    d = DATA.match(data.decode("ascii", errors="replace"))
    if not d:
        return Damaged("data fields do not parse", raw)
    loop, tr, hh, mm, ss, ms, index, counter, battery = d.groups()
    t = ((int(hh) * 60 + int(mm)) * 60 + int(ss)) * 1_000_000 + int(ms) * 1000
    return ProtimeRecord({"loop": loop, "transponder": tr, "time_of_day_us": t,
                          "index": int(index), "counter": int(counter),
                          "battery": int(battery)}, raw)


class ProtimeDecoder:
    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes) -> tuple[list[ProtimeRecord | Damaged], bytes]:
        """Returns what the bytes complete, and the acknowledgements to send back."""
        self.buf += data
        out: list[ProtimeRecord | Damaged] = []
        acks = b""
        while True:
            start = self.buf.find(b"<")
            if start < 0:
                self.buf.clear()
                break
            end = self.buf.find(b">", start)
            if end < 0:
                if len(self.buf) - start > 64:
                    out.append(Damaged("no telegram end", bytes(self.buf[start:])))
                    self.buf.clear()
                else:
                    del self.buf[:start]
                break
            item = parse_telegram(bytes(self.buf[start:end + 1]))
            del self.buf[:end + 1]
            out.append(item)
            if isinstance(item, ProtimeRecord):
                acks += ACK
        return out, acks


def passing_input(rec: ProtimeRecord, seq: int, point: str = "finish") -> dict[str, Any]:
    """A feed input. Protime numbers nothing, so the link counts telegrams for ``seq``;
    ``t`` is the time of day in µs (map it with the source's offset)."""
    f = rec.fields
    return {"type": "passing", "seq": seq, "transponder": f["transponder"],
            "t": f["time_of_day_us"], "point": f["loop"] if f["loop"] != "STA" else point}
