"""What Redis's ``appendfsync always`` costs next to ``everysec``: ingest -> Redis -> scoring.

One chain as ``icetime run`` starts it (the embedded redis-server, ingest, scoring,
broadcast), its data dir on this machine's disk. Rounds alternate between the two
policies, switched on the running redis-server with ``CONFIG SET appendfsync`` (what
``redis.appendfsync`` sets at its start), so that both see the same processes and the
same load on a shared machine. Each round loads mass starts of ``SKATERS`` of its own,
then:

* **paced**: ``PACED`` passings at ``RATE_HZ`` (a World Cup's reads come at a few hundred
  per second at most), sent on schedule on one feed connection. *ack*: passing sent ->
  ingest's reply (the raw input is stored, written to the AOF; under ``always``
  fsynced); *event*: passing sent -> its passage readable on the race's event stream
  (scoring's write stored too), read here with XREAD. p50 and p99, ms.
* **sustained**: ``FLOOD`` passings as fast as ingest takes them (a window of
  ``WINDOW`` unanswered inputs); passings/s is passages read over the time from the
  first send to the last passage read.

Printed, not asserted: a row per round, then each policy's figures (the median of its
rounds) and ``always`` over ``everysec``. ``python -m bench.fsync [ROUNDS]`` runs
``ROUNDS`` rounds of each (2).
"""
from __future__ import annotations

import asyncio
import collections
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from icetime import keys, settings
from icetime.cli import Supervisor
from icetime.feedclient import FeedClient
from icetime.service import run_loop
from icetime.timefmt import now_us

from .field import WINDOW
from .latency import TOKENS, config, pct

POLICIES = ("everysec", "always")
SKATERS = 20
#: Laps of each mass start (the start list's limit): 800 passings a race.
LAPS = 40
PACED = 900
RATE_HZ = 300.0
FLOOD = 3_000
LAP_US = 60_000_000
SPREAD_US = 10_000_000
#: A phase ends when no passage came for this long (s), or after CAP_S.
IDLE_S = 2.0
CAP_S = 30.0
ROOT = Path(__file__).resolve().parents[1]


def mass_starts(tag: str, seed: int = 7) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A start list of mass starts of SKATERS each, ids starting with ``tag``, and
    ``PACED + FLOOD`` of their passings in race-time order, each a lap crossing (the
    field within SPREAD_US of its head)."""
    rnd = random.Random(seed)
    n_races = -(-(PACED + FLOOD) // (SKATERS * LAPS))
    skaters, races, reads = [], [], []
    for r in range(n_races):
        bibs = [f"{tag}{r}-{b}" for b in range(1, SKATERS + 1)]
        skaters += [{"bib": b, "name": f"Skater {b}", "transponders": [f"T{b}"]} for b in bibs]
        races.append({"id": f"{tag}{r}", "name": f"Mass start {tag}{r}", "kind": "mass_start",
                      "laps": LAPS, "skaters": bibs})
        place = {b: rnd.uniform(0, SPREAD_US) for b in bibs}
        reads += [((k + 1) * LAP_US + int(place[b] + rnd.uniform(0, 400_000)), b)
                  for k in range(LAPS) for b in bibs]
    reads.sort()
    passings = [{"type": "passing", "transponder": f"T{b}", "t": t}
                for t, b in reads[:PACED + FLOOD]]
    return {"skaters": skaters, "races": races}, passings


class Feed:
    """One feed connection with up to WINDOW inputs unanswered; ``acks`` holds each
    input's sent -> reply time (µs), replies coming in the order sent."""

    def __init__(self, feed: FeedClient) -> None:
        self.feed = feed
        self.slots = asyncio.Semaphore(WINDOW)
        self.sent: collections.deque[int] = collections.deque()
        self.acks: list[int] = []
        self.refused = 0
        self.reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.feed.connect()
        self.reader = asyncio.create_task(self._replies())

    async def _replies(self) -> None:
        assert self.feed.reader
        while line := await self.feed.reader.readline():
            self.acks.append(now_us() - self.sent.popleft())
            self.refused += not json.loads(line).get("ok")
            self.slots.release()

    async def send(self, obj: dict[str, Any]) -> None:
        await self.slots.acquire()
        assert self.feed.writer
        self.sent.append(now_us())
        self.feed.writer.write(json.dumps({**obj, "sent_us": self.sent[-1]},
                                          separators=(",", ":")).encode() + b"\n")
        await self.feed.writer.drain()

    async def close(self) -> None:
        while self.sent:
            await asyncio.sleep(0.01)
        if self.reader:
            self.reader.cancel()
        await self.feed.close()


class Events:
    """Every passage and finish on the races' event streams, as (read µs, sent µs),
    read with XREAD from the streams' ends when started."""

    def __init__(self, url: str, streams: list[str]) -> None:
        self.r = aioredis.Redis.from_url(url)
        self.streams = streams
        self.got: list[tuple[int, int]] = []
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        last: dict[str, str] = {}
        for s in self.streams:
            top = await self.r.xrevrange(s, count=1)
            last[s] = top[0][0].decode() if top else "0-0"
        self.task = asyncio.create_task(self._read(last))

    async def _read(self, last: dict[str, str]) -> None:
        while True:
            reply = await self.r.xread(last, block=100, count=1000)
            at = now_us()
            for stream, entries in reply or ():
                for sid, fields in entries:
                    last[stream.decode()] = sid.decode()
                    ev = json.loads(fields[b"e"])
                    if ev["type"] in ("passage", "finish"):
                        self.got.append((at, ev["hops"]["source_us"]))

    async def wait(self, count: int) -> None:
        """Until ``count`` passages were read, none came for IDLE_S, or CAP_S passed."""
        deadline = time.monotonic() + CAP_S
        seen, quiet_since = len(self.got), time.monotonic()
        while len(self.got) < count and time.monotonic() < deadline \
                and time.monotonic() - quiet_since < IDLE_S:
            await asyncio.sleep(0.05)
            if len(self.got) > seen:
                seen, quiet_since = len(self.got), time.monotonic()

    async def close(self) -> None:
        if self.task:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await self.r.aclose()


async def prepare(sup: Supervisor, tag: str, seq: int
                  ) -> tuple[list[dict[str, Any]], list[str], int]:
    """Load the round's mass starts and fire their guns: (the passings, the races'
    event streams, the last seq used)."""
    cfg = sup.cfg
    startlist, passings = mass_starts(tag)
    races = [race["id"] for race in startlist["races"]]
    await asyncio.to_thread(sup.load_startlist, startlist)
    r = aioredis.Redis.from_url(sup.url)
    gun = FeedClient(cfg.host, cfg.ingest_tcp_port, TOKENS["gun"])
    try:
        while not await r.sismember(keys.races_set(cfg.competition_id), races[-1]):
            await asyncio.sleep(0.05)
        for race in races:
            seq += 1
            await gun.send({"type": "gun", "seq": seq, "race": race, "t": 0})
        streams = [keys.events_stream(cfg.competition_id, race) for race in races]
        while not all([await r.exists(s) for s in streams]):
            await asyncio.sleep(0.05)
    finally:
        await gun.close()
        await r.aclose()
    return passings, streams, seq


async def run_round(sup: Supervisor, policy: str, tag: str, seq: int
                    ) -> tuple[dict[str, Any], int]:
    """One round under ``policy``: its figures (ms, passings/s) and the last seq used."""
    r = aioredis.Redis.from_url(sup.url)
    try:
        await r.config_set("appendfsync", policy)
    finally:
        await r.aclose()
    passings, streams, seq = await prepare(sup, tag, seq)
    events = Events(sup.url, streams)
    await events.start()
    feed = Feed(FeedClient(sup.cfg.host, sup.cfg.ingest_tcp_port, TOKENS["finish-loop"]))
    await feed.start()
    try:
        t0 = time.monotonic()
        for i, p in enumerate(passings[:PACED]):  # on schedule: a slow reply delays none
            await asyncio.sleep(max(0.0, t0 + i / RATE_HZ - time.monotonic()))
            seq += 1
            await feed.send({**p, "seq": seq})
        await events.wait(PACED)
        paced, acks = list(events.got), list(feed.acks)
        start = now_us()
        for p in passings[PACED:]:
            seq += 1
            await feed.send({**p, "seq": seq})
        await events.wait(PACED + FLOOD)
        flood = events.got[len(paced):]
    finally:
        await feed.close()
        await events.close()
    lat = [got - sent for got, sent in paced]
    span_s = (flood[-1][0] - start) / 1e6 if flood else CAP_S
    row = {"policy": policy, "ack50": pct(acks, .5), "ack99": pct(acks, .99),
           "ev50": pct(lat, .5), "ev99": pct(lat, .99), "paced": len(paced),
           "flood": len(flood), "rate": len(flood) / span_s, "refused": feed.refused,
           "load": os.getloadavg()[0]}
    print(f"{policy:>9} {row['ack50']:>7.2f} {row['ack99']:>7.2f} {row['ev50']:>8.2f} "
          f"{row['ev99']:>8.2f} {len(paced):>6} {len(flood):>6} {row['rate']:>9.0f} "
          f"{feed.refused:>7} {row['load']:>5.1f}", flush=True)
    return row, seq


def filesystem(path: Path) -> str:
    """The type of the filesystem ``path`` is on (``ext4``, ``tmpfs``...), from /proc/mounts."""
    best, kind = "", "?"
    with open("/proc/mounts") as mounts:
        for line in mounts:
            _, mount, fstype, *_ = line.split()
            if str(path).startswith(mount) and len(mount) > len(best):
                best, kind = mount, fstype
    return kind


def disk_fsync_ms(folder: Path, n: int = 200) -> tuple[float, float]:
    """p50 and p99 (ms) of an fdatasync after a 200-byte append in ``folder``: what each
    AOF write costs Redis under ``always``, on this disk at this moment."""
    path = folder / "fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    times = []
    try:
        for _ in range(n):
            os.write(fd, b"x" * 200)
            t = time.perf_counter_ns()
            os.fdatasync(fd)
            times.append((time.perf_counter_ns() - t) // 1000)
    finally:
        os.close(fd)
        path.unlink()
    return pct(times, .5), pct(times, .99)


def summary(rows: list[dict[str, Any]]) -> None:
    """Each policy's median over its rounds, and ``always`` over ``everysec``."""
    med = {p: {k: statistics.median(row[k] for row in rows if row["policy"] == p)
               for k in ("ack50", "ack99", "ev50", "ev99", "rate")} for p in POLICIES}
    for p in POLICIES:
        m = med[p]
        print(f"{p:>9}: ack p50/p99 {m['ack50']:.2f}/{m['ack99']:.2f} ms, event p50/p99 "
              f"{m['ev50']:.2f}/{m['ev99']:.2f} ms, sustained {m['rate']:.0f} passings/s")
    a, e = med["always"], med["everysec"]
    print(f"always vs everysec: sustained {a['rate'] / e['rate'] - 1:+.0%}, event p50 "
          f"{a['ev50'] - e['ev50']:+.2f} ms, p99 {a['ev99'] - e['ev99']:+.2f} ms, ack p50 "
          f"{a['ack50'] - e['ack50']:+.2f} ms")


async def amain(rounds: int) -> None:
    # The data dir on the disk a venue's would be on (/tmp may be a tmpfs, where an
    # fsync costs nothing).
    base = ROOT / ".icetime"
    base.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=base, prefix="bench-fsync-") as tmp:
        path = config(Path(tmp))
        sup = Supervisor(path, settings.load(path))
        await asyncio.to_thread(sup.start)
        fs50, fs99 = disk_fsync_ms(Path(tmp))
        print(f"\n== appendfsync: ingest -> Redis -> scoring, AOF on {filesystem(Path(tmp))} "
              f"(fdatasync p50 {fs50:.2f} ms, p99 {fs99:.2f} ms; {PACED} passings at "
              f"{RATE_HZ:.0f}/s, then {FLOOD} as fast as taken; {rounds} rounds each, "
              "alternating) ==")
        print(f"{'policy':>9} {'ack p50':>7} {'ack p99':>7} {'event50':>8} {'event99':>8} "
              f"{'paced':>6} {'flood':>6} {'passings/s':>9} {'refused':>7} {'load':>5}")
        rows, seq = [], 0
        try:
            for k in range(rounds):
                for policy in POLICIES if k % 2 == 0 else POLICIES[::-1]:
                    row, seq = await run_round(sup, policy, f"fs{k}{policy[:2]}-", seq)
                    rows.append(row)
        finally:
            await asyncio.to_thread(sup.stop)
    summary(rows)


def main(rounds: int = 2) -> None:
    run_loop(amain(rounds))


if __name__ == "__main__":
    main(*[int(a) for a in sys.argv[1:2]])
