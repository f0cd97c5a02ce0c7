"""Decoder links under fuzz: real records, mutated, their checksums fixed, through the
real codec and link into ingest on a real redis-server.

``python -m bench.decoder_fuzz [--seconds 60] [--protocol p3|amb_ascii|protime|all]
[--codec-only]`` prints, per protocol: frames/s, how each frame was classified,
exceptions (0 expected: none may leave the link, and none may be caught as a bug inside
it) and the process memory (RSS) at the start and the end. ``--codec-only`` leaves
ingest and Redis out: the codec, the classification and (P3) the passing-number
tracking only, 10 to 25 times faster, for runs of a million frames.

Mutations of the unescaped P3 record (1 to 3 per frame): a byte changed, a field
dropped, duplicated or given a random width (0 to 12 bytes), a random field added,
the record type changed, the RTC time turned into a UTC time, the passing number set
near (a gap) or far (a jump) from the last one, the body cut short, the version or
flags changed. The length field and the CRC are then fixed, so the codec passes the
frame on and the link has to make sense of it. A third of the PASSING frames carry
the next consecutive passing number, so gap tracking sees a live decoder too.
AMB ASCII lines and Protime telegrams get the same treatment (fields and characters
changed, CRC or byte sum fixed).

The base records are the real captures in ``../shared/data`` (PROTOCOLS.md, data
README); without them the project's own records are used, and the output says so.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import random
import resource
import struct
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from icetime import bus
from icetime.redis_embed import EmbeddedRedis
from icetime.settings import Decoder, Settings
from services.ingest.decoders import Damaged, amb_ascii, p3, protime
from services.ingest.decoders.amb_ascii import SOH
from services.ingest.decoders.base_link import DecoderLink
from services.ingest.decoders.link import make_link
from services.ingest.decoders.numbers import PassingNumbers
from services.ingest.server import Ingest

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
PROTOCOLS = ("p3", "amb_ascii", "protime")


# --------------------------------------------------------------------------- P3
def p3_records(data: Path = DATA) -> list[bytes]:
    """Every valid record in the real P3 captures, unescaped (SOR through EOR)."""
    folder = data / "p3"
    if not folder.exists():
        return []
    blobs = []
    hex_file = folder / "vmindru_ambp3client_amb.out.hex"
    if hex_file.exists():
        blobs += [bytes.fromhex(x) for x in hex_file.read_text().split()]
    blobs += [f.read_bytes() for f in folder.glob("*.bin")]
    prochip = folder / "erathe_prochip_bmx_live_2025-10-30.json"
    if prochip.exists():
        import json
        blobs += [bytes.fromhex(x["hex"]) for x in json.loads(prochip.read_text())["frames"]]
    out = []
    for blob in blobs:
        for item in p3.P3Decoder().feed(blob):
            if isinstance(item, p3.P3Record):
                out.append(bytes((p3.SOR,)) + p3.unescape(item.raw[1:-1]) + bytes((p3.EOR,)))
    return out


def own_p3_records() -> list[bytes]:
    """The project's own PASSING and STATUS records (when the captures are absent)."""
    frames = [p3.encode(p3.TOR["PASSING"], [
        (0x01, p3.u(157_000 + i, 4)), (0x03, p3.u(4_100_000 + i, 4)),
        (0x04, p3.u(1_700_000_000_000_000 + i * 39_000_000, 8)), (0x05, p3.u(120, 2)),
        (0x06, p3.u(40, 2)), (0x08, p3.u(0, 2)), (0x81, p3.u(0x20F93, 4))]) for i in range(8)]
    frames += [p3.encode(p3.TOR["STATUS"], [(0x01, p3.u(39, 2)), (0x07, p3.u(22, 2)),
                                            (0x0C, p3.u(118, 1)), (0x06, p3.u(0, 1)),
                                            (0x81, p3.u(0x41813, 4))])] * 8
    return [bytes((p3.SOR,)) + p3.unescape(f[1:-1]) + bytes((p3.EOR,)) for f in frames]


def _tlvs(body: bytes) -> list[tuple[int, bytes]]:
    out, i = [], 0
    while i + 2 <= len(body):
        fid, n = body[i], body[i + 1]
        out.append((fid, body[i + 2:i + 2 + n]))
        i += 2 + n
    return out


def _frame(header: bytes, body: bytes) -> bytes:
    """Length and CRC fixed, escaped, framed: a record the codec will pass on."""
    rec = bytearray(header + body + bytes((p3.EOR,)))
    struct.pack_into("<HH", rec, 2, len(rec), 0)
    struct.pack_into("<H", rec, 4, p3.crc16(rec))
    return bytes((p3.SOR,)) + p3.escape(bytes(rec[1:-1])) + bytes((p3.EOR,))


class P3Mutator:
    """Mutated frames from base records, with a running passing number."""

    def __init__(self, records: list[bytes], rng: random.Random) -> None:
        self.records = records
        self.rng = rng
        self.number = 1_000

    def frame(self) -> bytes:
        rng = self.rng
        rec = rng.choice(self.records)
        header, fields = bytearray(rec[:p3.HEADER]), _tlvs(rec[p3.HEADER:-1])
        tor = struct.unpack_from("<H", header, 8)[0]
        if tor == p3.TOR["PASSING"] and rng.random() < 0.33:
            self.number += 1
            fields = [(f, p3.u(self.number, 4) if f == 0x01 else v) for f, v in fields]
        if rng.random() < 0.8:
            for _ in range(rng.randint(1, 3)):
                fields = self._mutate(header, fields)
        body = b"".join(bytes((f, len(v))) + v for f, v in fields)
        if rng.random() < 0.05:
            body = body[:rng.randrange(len(body) + 1)]  # a field cut short
        return _frame(bytes(header), body)

    # One flat choice among ten mutations of a line or two each, read side by side: split
    # into ten functions (to stay under the complexity limit) it would read worse.
    def _mutate(self, header: bytearray, fields: list[tuple[int, bytes]]  # noqa: C901
                ) -> list[tuple[int, bytes]]:
        rng = self.rng
        what = rng.randrange(10)
        fields = list(fields)
        if what == 0 and fields:  # a byte changed
            k = rng.randrange(len(fields))
            f, v = fields[k]
            if v:
                b = bytearray(v)
                b[rng.randrange(len(b))] = rng.randrange(256)
                fields[k] = (f, bytes(b))
        elif what == 1 and fields:  # a field dropped (the transponder, the RTC time...)
            fields.pop(rng.randrange(len(fields)))
        elif what == 2 and fields:  # a field duplicated
            fields.append(rng.choice(fields))
        elif what == 3 and fields:  # a field of another width
            k = rng.randrange(len(fields))
            fields[k] = (fields[k][0], rng.randbytes(rng.choice((0, 1, 2, 3, 5, 7, 9, 12))))
        elif what == 4:  # a field nobody knows
            fields.append((rng.randrange(256), rng.randbytes(rng.randrange(17))))
        elif what == 5:  # another record type
            tor = rng.choice((*p3.TOR_NAMES, rng.randrange(0x10000)))
            struct.pack_into("<H", header, 8, tor)
        elif what == 6:  # UTC time instead of RTC time
            fields = [(0x10 if f == 0x04 else f, v) for f, v in fields]
        elif what == 7:  # a passing number nearby (a gap, a repeat)
            fields = [(f, p3.u(max(0, self.number + rng.randint(-50, 20_000)), 4)
                       if f == 0x01 else v) for f, v in fields]
        elif what == 8:  # a passing number anywhere (a jump)
            fields = [(f, p3.u(rng.randrange(2**32), 4) if f == 0x01 else v)
                      for f, v in fields]
        else:  # version or flags
            struct.pack_into("<B", header, 1, rng.randrange(256))
            struct.pack_into("<H", header, 6, rng.randrange(0x10000))
        return fields


# ---------------------------------------------------------------- AMB ASCII, Protime
def ascii_lines(data: Path = DATA) -> list[str]:
    path = data / "amb_ascii" / "vostok_ambrc_ascii_lines.txt"
    if not path.exists():
        return ["@\t101\t7\t8110984\t12.345\t40\t120\t0\tx0000", "#\t101\t8\t12\tx0000"]
    return [x for x in path.read_text().splitlines() if x and not x.startswith("# ")]


def protime_telegrams(data: Path = DATA) -> list[str]:
    path = data / "chronelec" / "protime_lines.txt"
    if not path.exists():
        return ["<STA 000255 00:00'31\"957 01 01 1 1555>"]
    return [x for x in path.read_text().splitlines() if x.startswith("<")]


_ODD = ["", "-1", "0", "99999999999999999999999", "1e5", " 7", "1_0", "12.3.4", "x",
        "\x00", "é", "\t", "9" * 400, "4294967296", "abc"]


class AsciiMutator:
    def __init__(self, lines: list[str], rng: random.Random) -> None:
        self.lines, self.rng, self.seq = lines, rng, 1_000

    def frame(self) -> bytes:
        rng = self.rng
        line = rng.choice(self.lines)
        parts = line[:line.rfind("\tx")].split("\t")
        if parts[0] == "@" and len(parts) > 2 and rng.random() < 0.33:
            self.seq += 1
            parts[2] = str(self.seq)
        if rng.random() < 0.8:
            for _ in range(rng.randint(1, 3)):
                what = rng.randrange(5)
                k = rng.randrange(len(parts))
                if what == 0:
                    parts[k] = rng.choice(_ODD)
                elif what == 1 and len(parts) > 1:
                    parts.pop(k)
                elif what == 2:
                    parts.insert(k, rng.choice(_ODD))
                elif what == 3:
                    parts[0] = rng.choice("@#$%")
                else:
                    chars = list(parts[k]) or ["0"]
                    chars[rng.randrange(len(chars))] = chr(rng.randrange(32, 127))
                    parts[k] = "".join(chars)
        body = "\t".join(parts) + "\t"
        raw = body.encode("utf-8")
        return bytes((SOH,)) + raw + f"x{p3.crc16(raw):04X}".encode() + b"\r\n"


class ProtimeMutator:
    def __init__(self, telegrams: list[str], rng: random.Random) -> None:
        self.telegrams, self.rng = telegrams, rng

    def frame(self) -> bytes:
        rng = self.rng
        data = bytearray(rng.choice(self.telegrams)[1:33].encode("latin-1"))
        if rng.random() < 0.8:
            for _ in range(rng.randint(1, 3)):
                k = rng.randrange(len(data))
                data[k] = rng.choice((rng.randrange(256), rng.randrange(0x30, 0x3A)))
        return b"<" + bytes(data) + f"{sum(data):04d}".encode() + b">"


# --------------------------------------------------------------------------- running
def rss_mb() -> float:
    """This process's resident memory now (MB; peak on systems without /proc)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass
class Result:
    protocol: str
    frames: int = 0
    seconds: float = 0.0
    escaped: int = 0  # exceptions out of link.received (must stay 0)
    slowest_ms: float = 0.0  # the longest a single read took to handle
    rss_start_mb: float = 0.0
    rss_end_mb: float = 0.0
    real_data: bool = True
    stats: dict[str, Any] = field(default_factory=dict)


def mutator(protocol: str, rng: random.Random, data: Path = DATA
            ) -> tuple[Callable[[], bytes], bool]:
    """The frame maker for ``protocol``, and whether it starts from real records."""
    if protocol == "p3":
        records = p3_records(data)
        return P3Mutator(records or own_p3_records(), rng).frame, bool(records)
    real = (data / ("amb_ascii" if protocol == "amb_ascii" else "chronelec")).exists()
    if protocol == "amb_ascii":
        return AsciiMutator(ascii_lines(data), rng).frame, real
    return ProtimeMutator(protime_telegrams(data), rng).frame, real


def reads(make: Callable[[], bytes], rng: random.Random) -> Iterator[tuple[int, bytes]]:
    """(frames, bytes) socket reads: 1 to 8 frames, cut at random points."""
    pending = b""
    while True:
        n = rng.randint(1, 8)
        pending += b"".join(make() for _ in range(n))
        cut = rng.randrange(1, len(pending) + 1)
        yield n, pending[:cut]
        pending = pending[cut:]


def paced(res: Result, make: Callable[[], bytes], rng: random.Random, seconds: float,
          max_frames: int | None) -> Iterator[bytes]:
    """The chunks of :func:`reads` for ``seconds`` (or ``max_frames``), one at a time.

    The caller handles each chunk between two steps; the time that takes is measured
    into ``res.slowest_ms``, and ``res.frames``, ``res.seconds`` and ``res.rss_end_mb``
    are filled in when the run ends."""
    t0 = time.perf_counter()
    deadline = t0 + seconds
    for n, chunk in reads(make, rng):
        t = time.perf_counter()
        yield chunk
        done = time.perf_counter()
        res.slowest_ms = max(res.slowest_ms, (done - t) * 1000)
        res.frames += n
        if done > deadline or (max_frames is not None and res.frames >= max_frames):
            break
    res.seconds = time.perf_counter() - t0
    res.rss_end_mb = rss_mb()


async def fuzz(link: DecoderLink, protocol: str, seconds: float, seed: int = 1,
               max_frames: int | None = None, data: Path = DATA) -> Result:
    """Mutated frames through ``link.received`` for ``seconds`` (or ``max_frames``)."""
    rng = random.Random(seed)
    make, real = mutator(protocol, rng, data)
    res = Result(protocol, real_data=real, rss_start_mb=rss_mb())
    for chunk in paced(res, make, rng, seconds, max_frames):
        try:
            await link.received(chunk)
        except Exception:
            res.escaped += 1
            logging.getLogger(__name__).exception("an exception left the %s link", protocol)
    res.stats = link.state()
    return res


def codec_only(protocol: str, seconds: float, seed: int = 1,
               max_frames: int | None = None, data: Path = DATA) -> Result:
    """The same frames through the codec, ``classify`` and PassingNumbers only."""
    rng = random.Random(seed)
    make, real = mutator(protocol, rng, data)
    res = Result(protocol, real_data=real, rss_start_mb=rss_mb())
    counts = dict.fromkeys(("records", "passing_records", "status_records", "other_records",
                            "damaged"), 0)
    numbers = PassingNumbers()
    feed: Callable[[bytes], list[Any]]
    if protocol == "p3":
        feed = p3.P3Decoder().feed
    elif protocol == "amb_ascii":
        feed = amb_ascii.AmbAsciiDecoder().feed
    else:
        decoder = protime.ProtimeDecoder()

        def feed(chunk: bytes) -> list[Any]:
            return decoder.feed(chunk)[0]
    for chunk in paced(res, make, rng, seconds, max_frames):
        try:
            for item in feed(chunk):
                counts["records"] += 1
                kind = p3.classify(item) if isinstance(item, p3.P3Record) else item
                if isinstance(kind, p3.P3Passing):
                    numbers.arrived(kind.number)
                counts[kind_of(kind)] += 1
        except Exception:
            res.escaped += 1
            logging.getLogger(__name__).exception("an exception left the %s codec", protocol)
    res.stats = {**counts, "internal_errors": 0}
    if protocol == "p3":
        res.stats |= {"jumps": numbers.jumps, "tracked_missing": len(numbers.missing)}
    return res


def kind_of(item: Any) -> str:
    """The counter a classified record goes to (as the links count them)."""
    if isinstance(item, Damaged):
        return "damaged"
    if isinstance(item, p3.P3Passing | protime.ProtimeRecord):
        return "passing_records"
    if isinstance(item, p3.P3Record):
        return "status_records" if item.tor == p3.TOR["STATUS"] else "other_records"
    kind: str = item.kind  # AMB ASCII: passing, status or other
    return f"{kind}_records"


def fuzz_link(protocol: str, ingest: Ingest, capture_dir: Path) -> DecoderLink:
    """A link of ``protocol`` with no decoder behind it: frames go in through received()."""
    cfg = msgspec.convert({"id": f"fuzz-{protocol}", "host": "127.0.0.1", "port": 9,
                           "protocol": protocol}, Decoder)  # the protocol name checked
    return make_link(cfg, ingest, capture_dir)


def report(res: Result) -> str:
    s = res.stats
    keys = [k for k in ("records", "passing_records", "status_records", "other_records",
                        "damaged", "passings", "duplicates", "refused", "not_stored",
                        "internal_errors") if k in s]
    extra = {k: s[k] for k in ("utc_only", "jumps", "new_numberings", "missing",
                               "missing_given_up", "tracked_missing") if k in s}
    base = "mutated real captures" if res.real_data else "own records: ../shared/data absent"
    what = "link" if "passings" in s else "codec"
    lines = [f"\n== {res.protocol} decoder fuzz ({what}): {res.frames:,} frames in "
             f"{res.seconds:.1f} s ({base}) ==",
             f"{res.frames / res.seconds:,.0f} frames/s; slowest read {res.slowest_ms:.1f} ms",
             "classified: " + ", ".join(f"{k} {s[k]:,}" for k in keys),
             f"exceptions: {res.escaped + s['internal_errors']} ({res.escaped} out of the "
             f"{what}, {s['internal_errors']} caught inside)",
             f"memory (RSS): {res.rss_start_mb:.1f} MB at start, {res.rss_end_mb:.1f} MB at end"]
    if extra:
        lines.insert(3, "numbers: " + ", ".join(f"{k} {v:,}" for k, v in extra.items()))
    if "damaged_reasons" in s:
        top = sorted(s["damaged_reasons"].items(), key=lambda kv: -kv[1])[:6]
        lines.append("damaged, most frequent: " + "; ".join(f"{k} ({v:,})" for k, v in top))
    return "\n".join(lines)


async def run(seconds: float, protocols: tuple[str, ...]) -> list[Result]:
    # One line per damaged record and per jump is right for a venue, not for a fuzz.
    quiet = logging.getLogger("services.ingest")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    results = []
    with tempfile.TemporaryDirectory() as tmp, EmbeddedRedis(Path(tmp) / "redis") as emb:
        r = bus.connect(emb.url)
        try:
            ingest = Ingest(Settings(redis_url=emb.url, data_dir=tmp), r)
            for protocol in protocols:
                link = fuzz_link(protocol, ingest, Path(tmp) / "captures")
                res = await fuzz(link, protocol, seconds)
                print(report(res), flush=True)
                results.append(res)
        finally:
            quiet.setLevel(level)
            with contextlib.suppress(Exception):
                await r.aclose()
    return results


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.decoder_fuzz", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0, help="per protocol (default 20)")
    ap.add_argument("--protocol", choices=(*PROTOCOLS, "all"), default="all")
    ap.add_argument("--codec-only", action="store_true",
                    help="codec, classification and passing numbers only (no ingest, no Redis)")
    args = ap.parse_args(argv)
    protocols = PROTOCOLS if args.protocol == "all" else (args.protocol,)
    if args.codec_only:
        results = []
        for protocol in protocols:
            results.append(codec_only(protocol, args.seconds))
            print(report(results[-1]), flush=True)
    else:
        results = asyncio.run(run(args.seconds, protocols))
    if any(r.escaped or r.stats["internal_errors"] for r in results):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
