"""Passing -> WebSocket client latency through the whole chain, with 1, 100, 1,000 clients.

The real system runs as `icetime run` does: embedded redis-server plus the three
service processes. Connected clients live in this process. A timing source
sends passings over the TCP feed at a steady pace, each stamped with `sent_us`;
every client stamps its receipt. Latency = receipt - sent, over every
(client, passing). The per-hop medians come from the hop stamps in each event.
All processes share this machine's 2 cores, clients included.
"""
from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from icetime import settings
from icetime.cli import Supervisor
from icetime.feedclient import FeedClient
from icetime.service import run_loop
from icetime.timefmt import now_us

from .wsclient import RawClient, open_client

TOKENS = {"gun": "b-gun", "finish-loop": "b-loop", "officials": "b-officials"}
ROLES = {"gun": "gun", "finish-loop": "decoder", "officials": "admin"}
PAIRS = 2
PASSAGES = 25  # 10000 m
RATE_HZ = 10.0


def config(tmp: Path) -> str:
    text = "\n".join([
        'host = "127.0.0.1"',
        f'[redis]\nurl = ""\ndata_dir = "{tmp / "data"}"',
        # Port 0: any free port; the supervisor learns the ones bound (Supervisor.cfg).
        "[ingest]\nhttp_port = 0\ntcp_port = 0",
        "[broadcast]\nhttp_port = 0\nws_port = 0\nrmonitor_port = 0\nclient_queue_max = 4096",
    ] + [f'[[sources]]\nid = "{k}"\ntoken = "{v}"\nrole = "{ROLES[k]}"'
         for k, v in TOKENS.items()]) + "\n"
    (tmp / "bench.toml").write_text(text)
    return str(tmp / "bench.toml")


def startlist(race: str) -> dict:
    n = PAIRS * 2
    return {"skaters": [{"bib": f"{race}-{b}", "name": f"Skater {b}",
                         "transponders": [f"{race}-T{b}"]} for b in range(n)],
            "races": [{"id": race, "name": race, "distance": 10000,
                       "pairs": [{"pair": p + 1, "inner": f"{race}-{2 * p}",
                                  "outer": f"{race}-{2 * p + 1}"} for p in range(PAIRS)]}]}


def pct(values: list[int], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] / 1000


async def send_passings(cfg: settings.Settings, race: str, seq: int,
                        limit: int = PAIRS * PASSAGES * 2) -> tuple[int, int]:
    """Guns and passings of ``startlist(race)`` over the TCP feed at RATE_HZ, each stamped
    with ``sent_us``; at most ``limit`` passings. Returns (last seq, passings sent)."""
    gun = FeedClient(cfg.host, cfg.ingest_tcp_port, TOKENS["gun"])
    loop = FeedClient(cfg.host, cfg.ingest_tcp_port, TOKENS["finish-loop"])
    base = now_us()
    sent = 0
    try:
        for pair in range(1, PAIRS + 1):
            zero = base + pair * 10**9
            seq += 1
            await gun.send({"type": "gun", "seq": seq, "race": race, "pair": pair, "t": zero})
            for k in range(PASSAGES):
                for lane in (0, 1):
                    if sent >= limit:
                        return seq, sent
                    seq += 1
                    bib = 2 * (pair - 1) + lane
                    t = zero + (k + 1) * 30_000_000 + lane * 150_000
                    await loop.send({"type": "passing", "seq": seq,
                                     "transponder": f"{race}-T{bib}", "t": t,
                                     "sent_us": now_us()})
                    sent += 1
                    await asyncio.sleep(1 / RATE_HZ)
    finally:
        await gun.close()
        await loop.close()
    return seq, sent


def passages(client: RawClient) -> list[tuple[int, dict[str, Any]]]:
    """(receipt µs, frame) of each passage and finish event a client got."""
    out = []
    for got, payload in client.frames:
        msg = json.loads(payload)
        if msg["type"] == "event" and msg["event"]["type"] in ("passage", "finish"):
            out.append((got, msg))
    return out


def passing_latencies(clients: list[RawClient]) -> list[int]:
    """Passing sent -> client receipt, µs, over every (client, passage)."""
    return [got - msg["event"]["hops"]["source_us"] for c in clients for got, msg in passages(c)]


async def run_level(cfg: settings.Settings, sup: Supervisor, n_clients: int, seq: int) -> int:
    """One level; ``seq`` continues each source's numbering (a repeat would be dropped)."""
    race = f"lat{n_clients}"
    await asyncio.to_thread(sup.load_startlist, startlist(race))
    clients = []
    for i in range(n_clients):
        clients.append(await open_client("127.0.0.1", cfg.broadcast_ws_port,
                                         {"op": "subscribe", "race": race,
                                          "protocol": 2}))
        if i % 50 == 49:
            await asyncio.sleep(0.05)  # do not SYN-flood our own listener
    await asyncio.wait_for(asyncio.gather(*(c.ready.wait() for c in clients)), 120)
    seq, sent = await send_passings(cfg, race, seq)
    await asyncio.sleep(1.0)
    for c in clients:
        c.close()
    total, ingest, scoring, broadcast, client = [], [], [], [], []
    for c in clients:
        for got, msg in passages(c):
            hops, bts = msg["event"]["hops"], msg["broadcast_us"]
            total.append(got - hops["source_us"])
            ingest.append(hops["ingest_us"] - hops["source_us"])
            scoring.append(hops["scoring_us"] - hops["ingest_us"])
            broadcast.append(bts - hops["scoring_us"])
            client.append(got - bts)
    expected = sent * n_clients
    print(f"{n_clients:>7} {len(total):>8}/{expected:<8} {pct(total, .5):>8.2f} "
          f"{pct(total, .99):>8.2f} "
          f"{max(total) / 1000:>8.2f}   {statistics.median(ingest) / 1000:.2f} / "
          f"{statistics.median(scoring) / 1000:.2f} / {statistics.median(broadcast) / 1000:.2f} / "
          f"{statistics.median(client) / 1000:.2f}", flush=True)
    return seq


async def amain(levels: list[int]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = config(Path(tmp))
        sup = Supervisor(path, settings.load(path))
        await asyncio.to_thread(sup.start)
        cfg = sup.cfg  # with the bound ports
        try:
            print(f"\n== latency: passing sent -> WebSocket client receipt, ms "
                  f"({PAIRS * PASSAGES * 2} passings at {RATE_HZ:.0f}/s per level) ==")
            print(f"{'clients':>7} {'samples':>17} {'p50':>8} {'p99':>8} {'max':>8}   "
                  "median hops: source→ingest / →scoring / →broadcast / →client")
            seq = 0
            for n in levels:
                seq = await run_level(cfg, sup, n, seq)
        finally:
            await asyncio.to_thread(sup.stop)


def main(levels: list[int] | None = None) -> None:
    run_loop(amain(levels or [1, 100, 1000]))


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or None)
