"""The whole chain against the size of the field: 20, 1,000 and 10,000 skaters.

One synthetic mass start per field size (every skater on one transponder, the field
spread over ``SPREAD_US`` behind its head, so that every read is a crossing: a passage,
or a finish), generated from a fixed seed, run through the real processes as
``icetime run`` does: ingest (TCP feed) -> scoring -> broadcast -> one WebSocket client
in this process. Per field size:

* **latency**: ``PACED`` passings sent at ``RATE_HZ``, each stamped ``sent_us``, with
  ``CLIENTS`` WebSocket clients subscribed to the field's races (issue 12's target:
  p99 <= 50 ms at 200 passings/s with 100 clients); passing sent -> client receipt
  over every (client, passage), p50 and p99 (ms). All but one client leave before the
  flood, so the sustained rate is the chain's, not the fan-out's.
* **sustained**: the next ``FLOOD`` passings sent as fast as ingest takes them (a
  window of ``WINDOW`` unanswered inputs on one connection); passings/s is passages
  delivered to the client over the time from the first send to the last receipt.
  A field that cannot keep up is cut off after ``FLOOD_CAP_S``: the rate is what got
  through by then.
* **cost**: CPU seconds each process (ingest, scoring, broadcast, redis-server, and
  this one: the feed and the client) used during the flood, with the children each
  waited for (scoring's snapshot children), per read scoring took
  (the raw inputs up to its progress mark) and per passage delivered (equal when every
  read is a passage, as here; both are printed so a field where they differ shows
  it); and the median size of a passage
  frame as the client got it.

Each row ends with the load average (1 min) when it was measured: the machine is
shared, and rates under load are not rates on an idle machine. The last line is each
figure at 10,000 skaters over the same at 20 (issue 12's targets: cost per passage
within 2x, at least 2,000 passings/s). Figures are printed, not asserted.

The **engine alone** is measured too, in this process, on the same fields: CPU per
passing of the scoring engine and of encoding its events, and the mean bytes of the
events per passing. ``python -m bench.field 20 1000`` runs chosen field sizes only.
"""
from __future__ import annotations

import asyncio
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

from icetime import bus, keys, settings
from icetime.cli import Supervisor
from icetime.feedclient import FeedClient
from icetime.messages import convert_input
from icetime.service import run_loop
from icetime.timefmt import now_us
from services.scoring.competition import Competition

from .latency import TOKENS, config, pct
from .wsclient import RawClient, open_client

FIELDS = (20, 1_000, 10_000)
PACED = 400
RATE_HZ = 200.0
#: WebSocket clients during the paced phase.
CLIENTS = 100
FLOOD = 6_000
WINDOW = 256
FLOOD_CAP_S = 40.0
#: The most laps a mass start may have (the start list's limit).
MAX_LAPS = 40
#: A phase ends when nothing more came for this long (s).
IDLE_S = 3.0
#: Race time of a lap for the head of the field, and how far behind it the last
#: skater crosses (µs): small enough that the engine takes every read as a crossing
#: (spread over most of a lap, early reads look like missed laps and most later ones
#: are cool-down: the cost per passage of the smaller fields was then inflated).
LAP_US = 60_000_000
SPREAD_US = 10_000_000
TICK_S = os.sysconf("SC_CLK_TCK")
#: The processes whose CPU a passage costs.
PROCESSES = ("ingest", "scoring", "broadcast", "redis")


def field_races(n: int, seed: int = 12, spread_us: int = SPREAD_US
                ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A start list of mass starts of ``n`` skaters each, and their passings in race-time
    order, enough for the latency and flood phases (``PACED + FLOOD``). A race has at
    most ``MAX_LAPS`` laps, so a small field runs several races side by side."""
    rnd = random.Random(seed)
    wanted = PACED + FLOOD
    laps = min(MAX_LAPS, max(2, -(-wanted // n) + 1))
    n_races = -(-wanted // (n * laps))
    skaters, races, reads = [], [], []
    for r in range(n_races):
        race = f"field{n}-{r}"
        # Bibs of their own per field: a skater of one field in the races of another
        # would be routed to both (each read a late one for the race that ended).
        bibs = [f"{n}-{r}-{b}" for b in range(1, n + 1)]
        skaters += [{"bib": b, "name": f"Skater {b}", "transponders": [f"F{n}-{b}"]}
                    for b in bibs]
        races.append({"id": race, "name": f"Field of {n} ({r + 1})", "kind": "mass_start",
                      "laps": laps, "skaters": bibs})
        # Each skater keeps a place in the field, with a little noise per lap.
        place = {b: rnd.uniform(0, spread_us) for b in bibs}
        for k in range(laps):
            for b in bibs:
                reads.append(((k + 1) * LAP_US + int(place[b] + rnd.uniform(0, 400_000)), b))
            if len(reads) >= wanted * 2:
                break
    reads.sort()
    passings = [{"type": "passing", "transponder": f"F{n}-{b}", "t": t}
                for t, b in reads[:wanted]]
    return {"skaters": skaters, "races": races}, passings


def engine_alone(n: int) -> tuple[float, float, int]:
    """The scoring engine and event encoding alone on a field of ``n`` (every read a
    crossing): (CPU ms per passing, event bytes per passing, passings that made an
    event)."""
    startlist, passings = field_races(n)
    comp = Competition()
    comp.feed("sl", convert_input({"type": "startlist", **startlist, "source": "bench"}))
    for i, race in enumerate(startlist["races"]):
        comp.feed(f"g{i}", convert_input({"type": "gun", "race": race["id"], "t": 0,
                                          "source": "bench"}))
    size = made = 0
    t0 = time.process_time()
    for i, p in enumerate(passings):
        out = comp.feed(f"p{i}", convert_input({**p, "source": "bench"}))
        made += bool(out)
        size += sum(len(bus.dumps(e)) for evs in out.values() for e in evs)
    cpu = time.process_time() - t0
    return cpu / len(passings) * 1000, size / len(passings), made


def print_engine_alone(fields: tuple[int, ...]) -> None:
    print(f"\n== engine alone (every read a crossing), {PACED + FLOOD} passings ==")
    print(f"{'skaters':>7} {'ms/passing':>11} {'B/passing':>10} {'made':>6}")
    rows = []
    for n in fields:
        ms, b, made = engine_alone(n)
        rows.append((n, ms, b))
        print(f"{n:>7} {ms:>11.3f} {b:>10.0f} {made:>6}", flush=True)
    if len(rows) > 1:
        (n0, ms0, b0), (n1, ms1, b1) = rows[0], rows[-1]
        print(f"engine alone, {n1} vs {n0} skaters: CPU per passing {ms1 / ms0:.2f}x, "
              f"event bytes {b1 / b0:.2f}x ({1000 / ms1:.0f} passings/s on one core)")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds process ``pid`` has used, with those of its children
    it has waited for (scoring's snapshot children: services/scoring/snapshotter.py)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / TICK_S


class Pipelined:
    """One feed connection that keeps up to ``WINDOW`` inputs unanswered."""

    def __init__(self, feed: FeedClient) -> None:
        self.feed = feed
        self.slots = asyncio.Semaphore(WINDOW)
        self.refused = 0
        self.reader_task: asyncio.Task[None] | None = None
        self.pending = 0

    async def start(self) -> None:
        await self.feed.connect()
        self.reader_task = asyncio.create_task(self._replies())

    async def _replies(self) -> None:
        assert self.feed.reader
        while True:
            line = await self.feed.reader.readline()
            if not line:
                return
            if not json.loads(line).get("ok"):
                self.refused += 1
            self.pending -= 1
            self.slots.release()

    async def send(self, obj: dict[str, Any]) -> None:
        await self.slots.acquire()
        self.pending += 1
        assert self.feed.writer
        self.feed.writer.write(json.dumps(obj, separators=(",", ":")).encode() + b"\n")
        await self.feed.writer.drain()

    async def close(self) -> None:
        while self.pending:
            await asyncio.sleep(0.01)
        if self.reader_task:
            self.reader_task.cancel()
        await self.feed.close()


def received(client: RawClient) -> list[tuple[int, int, dict[str, Any]]]:
    """(receipt µs, frame bytes, event) of each passage or finish."""
    out = []
    for got, payload in client.frames:
        if b'"type":"event"' not in payload[:40]:
            continue
        msg = json.loads(payload)
        ev = msg["event"]
        if ev["type"] in ("passage", "finish"):
            out.append((got, len(payload), ev))
    return out


async def wait_for(client: RawClient, count: int, cap_s: float) -> None:
    """Until the client has ``count`` passage and finish frames, none came for
    ``IDLE_S`` (a read the engine takes as a re-read makes none), or ``cap_s`` passed."""
    deadline = time.monotonic() + cap_s
    seen, counted, quiet_since = 0, 0, time.monotonic()
    while time.monotonic() < deadline and counted < count \
            and time.monotonic() - quiet_since < IDLE_S:
        await asyncio.sleep(0.1)
        fresh = client.frames[seen:]
        seen += len(fresh)
        if fresh:
            quiet_since = time.monotonic()
        counted += sum(1 for _, p in fresh if b'"type":"passage"' in p or b'"type":"finish"' in p)


def pids(sup: Supervisor) -> dict[str, int]:
    """The pid of each process in :data:`PROCESSES`."""
    out = {name: sup.procs[name].pid for name in PROCESSES if name in sup.procs}
    if sup.redis is not None and sup.redis.proc is not None:
        out["redis"] = sup.redis.proc.pid
    return out


async def raw_end(r: aioredis.Redis, competition: str) -> str:
    """The id of the raw log's last input ("0-0": none)."""
    got = bus.entries(await r.xrevrange(keys.raw_stream(competition), "+", "-", count=1))
    return got[0][0] if got else "0-0"


async def scored_since(r: aioredis.Redis, competition: str, after: str) -> int:
    """How many raw inputs after ``after`` scoring has taken (up to its progress mark)."""
    mark = bus.text(await r.get(keys.scoring_progress(competition)))
    n, start = 0, f"({after}"
    while mark:
        got = bus.entries(await r.xrange(keys.raw_stream(competition), start, mark,
                                         count=1000))
        n += len(got)
        if len(got) < 1000:
            break
        start = "(" + got[-1][0]
    return n


async def start_field(sup: Supervisor, n: int, seq: int
                      ) -> tuple[list[dict[str, Any]], RawClient, int]:
    """Load a field of ``n``, subscribe a client to its races and fire their guns:
    (the passings to send, the client, the last seq used)."""
    cfg = sup.cfg
    startlist, passings = field_races(n)
    races = [r["id"] for r in startlist["races"]]
    await asyncio.to_thread(sup.load_startlist, startlist)
    r = aioredis.Redis.from_url(sup.url)
    try:  # a big start list takes scoring a while: subscribe once its races are listed
        while not await r.sismember(keys.races_set(cfg.competition_id), races[-1]):
            await asyncio.sleep(0.1)
    finally:
        await r.aclose()
    client = await open_client("127.0.0.1", cfg.broadcast_ws_port,
                               {"op": "subscribe", "race": races[0], "protocol": 2})
    await asyncio.wait_for(client.ready.wait(), 120)
    for race in races[1:]:
        client.send_text(json.dumps({"op": "subscribe", "race": race, "protocol": 2}))
    gun = FeedClient(cfg.host, cfg.ingest_tcp_port, TOKENS["gun"])
    for race in races:
        seq += 1
        await gun.send({"type": "gun", "seq": seq, "race": race, "t": 0})
    await gun.close()
    await asyncio.wait_for(all_snapshots(client, len(races)), 120)
    return passings, client, seq


async def more_clients(sup: Supervisor, n: int, races: list[str]) -> list[RawClient]:
    """``n`` more WebSocket clients, each subscribed to every race of ``races``."""
    clients = []
    for i in range(n):
        c = await open_client("127.0.0.1", sup.cfg.broadcast_ws_port,
                              {"op": "subscribe", "race": races[0], "protocol": 2})
        for race in races[1:]:
            c.send_text(json.dumps({"op": "subscribe", "race": race, "protocol": 2}))
        clients.append(c)
        if i % 50 == 49:
            await asyncio.sleep(0.05)  # do not SYN-flood our own listener
    await asyncio.wait_for(asyncio.gather(*(all_snapshots(c, len(races)) for c in clients)),
                           120)
    return clients


async def all_snapshots(client: RawClient, n: int) -> None:
    """Until ``client`` has the snapshots of the ``n`` races it subscribed to: a
    subscribe still being answered is not what a passing costs."""
    while sum(p.startswith(b'{"type":"snapshot"') for _, p in client.frames) < n:
        await asyncio.sleep(0.05)


async def run_field(sup: Supervisor, n: int, seq: int) -> tuple[dict[str, float], int]:
    cfg = sup.cfg
    passings, client, seq = await start_field(sup, n, seq)
    others = await more_clients(sup, CLIENTS - 1, [r["id"] for r in field_races(n)[0]["races"]])
    loop = Pipelined(FeedClient(cfg.host, cfg.ingest_tcp_port, TOKENS["finish-loop"]))
    await loop.start()
    r = aioredis.Redis.from_url(sup.url)
    try:
        for p in passings[:PACED]:  # paced: the latency
            seq += 1
            await loop.send({**p, "seq": seq, "sent_us": now_us()})
            await asyncio.sleep(1 / RATE_HZ)
        await wait_for(client, PACED, FLOOD_CAP_S)
        await asyncio.sleep(0.5)  # the other clients' last frames
        for other in others:
            other.close()
        paced = received(client)
        lat = [got - ev["hops"]["source_us"] for c in (client, *others)
               for got, _, ev in received(c)]
        procs = pids(sup)
        before = await raw_end(r, cfg.competition_id)
        procs["client"] = os.getpid()  # this process: the feed and the WebSocket client
        cpu0 = {name: cpu_s(pid) for name, pid in procs.items()}
        t0 = now_us()
        for p in passings[PACED:]:  # flood: the sustained rate
            seq += 1
            await loop.send({**p, "seq": seq, "sent_us": now_us()})
        await wait_for(client, PACED + FLOOD, FLOOD_CAP_S)
        cpu1 = {name: cpu_s(pid) for name, pid in procs.items()}
        reads = await scored_since(r, cfg.competition_id, before)
    finally:
        await r.aclose()
        await loop.close()
        client.close()
    got = received(client)
    flood = got[len(paced):]
    done = max(1, len(flood))
    span_s = (flood[-1][0] - t0) / 1e6 if flood else FLOOD_CAP_S
    row = {"n": n, "p50": pct(lat, .5) if lat else float("nan"),
           "p99": pct(lat, .99) if lat else float("nan"),
           "delivered": len(flood), "reads": reads, "rate": len(flood) / span_s,
           "frame_b": statistics.median(b for _, b, _ in got) if got else 0,
           "load": os.getloadavg()[0]}
    for name in procs:
        row[f"{name}_ms"] = (cpu1[name] - cpu0[name]) / done * 1000
    row["scoring_read_ms"] = (cpu1["scoring"] - cpu0["scoring"]) / max(1, reads) * 1000
    row["chain_ms"] = sum(row[f"{name}_ms"] for name in procs if name != "client")
    print(f"{n:>7} {row['p50']:>7.2f} {row['p99']:>8.2f} {reads:>6} {len(flood):>6}"
          f"{row['rate']:>8.0f} {row['scoring_read_ms']:>9.3f} {row['scoring_ms']:>9.3f}"
          f"{row['ingest_ms']:>8.3f} {row['broadcast_ms']:>8.3f} {row['redis_ms']:>8.3f}"
          f"{row['chain_ms']:>8.3f}{row['client_ms']:>8.3f} {row['frame_b']:>7.0f}"
          f" {row['load']:>5.1f}", flush=True)
    return row, seq


async def amain(fields: tuple[int, ...]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = config(Path(tmp))
        sup = Supervisor(path, settings.load(path))
        await asyncio.to_thread(sup.start)
        try:
            print(f"\n== field size: whole chain, one mass start per field "
                  f"({PACED} passings at {RATE_HZ:.0f}/s to {CLIENTS} clients, then {FLOOD} "
                  "as fast as taken to one; every read a crossing) ==")
            print("CPU ms per passage delivered (scoring also per read taken); chain: the "
                  "four processes; client: this one (feed, WebSocket client); load: 1 min "
                  "load average")
            print(f"{'skaters':>7} {'p50 ms':>7} {'p99 ms':>8} {'reads':>6} {'passed':>6}"
                  f"{'pass/s':>8} {'score/rd':>9} {'scoring':>9}{'ingest':>8} {'bcast':>8}"
                  f" {'redis':>8}{'chain':>8}{'client':>8} {'frame B':>7} {'load':>5}")
            rows, seq = [], 0
            for n in fields:
                row, seq = await run_field(sup, n, seq)
                rows.append(row)
        finally:
            await asyncio.to_thread(sup.stop)
    small, big = rows[0], rows[-1]
    if big["n"] != small["n"]:
        print(f"{big['n']} vs {small['n']} skaters, per passage: scoring CPU "
              f"{big['scoring_ms'] / small['scoring_ms']:.2f}x, whole chain CPU "
              f"{big['chain_ms'] / small['chain_ms']:.2f}x (target <= 2x); sustained "
              f"{big['rate']:.0f} passings/s (target >= 2000); p99 "
              f"{big['p99'] / small['p99']:.2f}x, frame {big['frame_b'] / small['frame_b']:.1f}x")


def main(fields: list[int] | None = None) -> None:
    run_loop(amain(tuple(fields or FIELDS)))
    print_engine_alone(tuple(fields or FIELDS))


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or None)
