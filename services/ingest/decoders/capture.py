"""The capture log: every byte a decoder sent, with its receive time, so a session
can be replayed through the same codec (docs/decoders.md).

Framed as ``u64 receive µs, u32 length, bytes``, appended as it arrives.
"""
from __future__ import annotations

import struct
from pathlib import Path

from icetime.timefmt import now_us


class CaptureLog:
    """Append-only log of every byte a decoder sent, with receive times."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.f = path.open("ab")

    def write(self, data: bytes) -> None:
        self.f.write(struct.pack("<QI", now_us(), len(data)) + data)
        self.f.flush()

    def close(self) -> None:
        self.f.close()


def read_capture(path: Path) -> list[tuple[int, bytes]]:
    data = path.read_bytes()
    out, i = [], 0
    while i + 12 <= len(data):
        t, n = struct.unpack_from("<QI", data, i)
        out.append((t, data[i + 12:i + 12 + n]))
        i += 12 + n
    return out
