"""P3 decoding throughput on one core: records per second, escapes and CRC checked.

The stream is the project's own: passings (with escapes) and status records in
the proportions of a real capture, fed in 4 KiB reads as a socket delivers them.
"""
from __future__ import annotations

import time

from services.ingest.decoders.p3 import TOR, P3Decoder, encode, u

N = 200_000


def stream(n: int) -> bytes:
    out = []
    for i in range(n):
        if i % 16 == 0:
            out.append(encode(TOR["PASSING"], [
                (0x01, u(157_000 + i, 4)), (0x03, u(4_100_000 + i % 40, 4)),
                (0x04, u(1_700_000_000_000_000 + i * 1_000_003, 8)), (0x05, u(120, 2)),
                (0x06, u(40, 2)), (0x08, u(0, 2)), (0x81, u(0x20F93, 4))]))
        else:
            out.append(encode(TOR["STATUS"], [(0x01, u(39, 2)), (0x07, u(22, 2)),
                                              (0x0C, u(118, 1)), (0x06, u(0, 1)),
                                              (0x81, u(0x41813, 4))]))
    return b"".join(out)


def main() -> None:
    data = stream(N)
    d = P3Decoder()
    t0 = time.perf_counter()
    n = 0
    for i in range(0, len(data), 4096):
        n += len(d.feed(data[i:i + 4096]))
    dt = time.perf_counter() - t0
    assert n == N and d.stats.damaged == 0
    print(f"\n== P3 decoding: {N} records ({len(data) / N:.0f} B avg) in 4 KiB reads ==")
    print(f"{N / dt:,.0f} records/s on one core ({dt / N * 1e6:.2f} µs per record)")


if __name__ == "__main__":
    main()
