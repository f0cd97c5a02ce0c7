"""Reads out of order through the whole chain: passing-to-client latency and revisions
at 0, 50 and 200 ms of arrival jitter, for a 20-skater 1000 m and a 24-skater mass start.

The real system runs as ``icetime run`` does (embedded redis-server, the three service
processes); one WebSocket client in this process follows each race. The races' reads
arrive in the order jitter makes (each passing up to J ms late in race time, uniform,
as in ``bench.jitter``), sent over the TCP feed at their arrival times compressed ``SPEED``
times (race time runs faster, the order is the jittered one). Latency = the client's
receipt - the ``sent_us`` of the input that caused the event, over every passage, finish
and revision the client got; a late read's cost shows as its revision's latency.

    python -m bench.chain_jitter
"""
from __future__ import annotations

import asyncio
import itertools
import json
import random
import tempfile
from pathlib import Path
from typing import Any

import aiohttp

from icetime import settings
from icetime.cli import Supervisor
from icetime.feedclient import FeedClient
from icetime.service import run_loop
from icetime.timefmt import now_us

from .engine import race_inputs
from .jitter import JITTERS_MS
from .latency import pct
from .pack import pack_inputs
from .wsclient import RawClient, open_client

SPEED = 25.0
SEQ = itertools.count(1)
TOKENS = {"gun": ("j-gun", "gun"), "loop": ("j-loop", "decoder"),
          "officials": ("j-officials", "admin")}


def config(tmp: Path) -> str:
    text = "\n".join([
        'host = "127.0.0.1"',
        f'[redis]\nurl = ""\ndata_dir = "{tmp / "data"}"',
        "[ingest]\nhttp_port = 0\ntcp_port = 0",
        "[broadcast]\nhttp_port = 0\nws_port = 0\nrmonitor_port = 0",
    ] + [f'[[sources]]\nid = "{k}"\ntoken = "{tok}"\nrole = "{role}"'
         for k, (tok, role) in TOKENS.items()]) + "\n"
    (tmp / "bench.toml").write_text(text)
    return str(tmp / "bench.toml")


def renamed(startlist: dict[str, Any], inputs: list[dict[str, Any]], prefix: str
            ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The race with its id, bibs and transponders made unique by ``prefix``."""
    p = prefix + "-"
    skaters = [{**s, "bib": p + s["bib"], "transponders": [p + t for t in s["transponders"]]}
               for s in startlist["skaters"]]
    races = []
    for race in startlist["races"]:
        race = {**race, "id": prefix}
        if "pairs" in race:
            race["pairs"] = [{**q, "inner": p + q["inner"], "outer": p + q["outer"]}
                             for q in race["pairs"]]
        if "skaters" in race:
            race["skaters"] = [p + b for b in race["skaters"]]
        races.append(race)
    moved = [{**x, "race": prefix} if x["type"] == "gun"
             else {**x, "transponder": p + x["transponder"]} for x in inputs]
    return {"skaters": skaters, "races": races}, moved


async def send(cfg: settings.Settings, order: list[dict[str, Any]]) -> None:
    """Send ``order`` (already in arrival order) paced at arrival time / SPEED."""
    clients = {k: FeedClient(cfg.host, cfg.ingest_tcp_port, TOKENS[k][0])
               for k in ("gun", "loop")}
    loop = asyncio.get_running_loop()
    start = loop.time()
    first = order[0]["t"]
    try:
        for x in order:
            seq = next(SEQ)  # one numbering across the levels: a repeat is a conflict
            due = (x.get("_arrival", x["t"]) - first) / 1e6 / SPEED
            await asyncio.sleep(max(0.0, start + due - loop.time()))
            body = {k: v for k, v in x.items() if k != "_arrival"}
            who = "gun" if x["type"] == "gun" else "loop"
            reply = await clients[who].send({**body, "seq": seq, "sent_us": now_us()})
            if not reply.get("ok"):
                raise RuntimeError(f"refused: {reply}")
    finally:
        for c in clients.values():
            await c.close()


def with_arrival(inputs: list[dict[str, Any]], jitter_us: int, rnd: random.Random
                 ) -> list[dict[str, Any]]:
    """``inputs`` in arrival order, each stamped with its arrival time (``_arrival``)."""
    late = [{**x, "_arrival": x["t"] + (rnd.randint(0, jitter_us)
                                         if x["type"] == "passing" else 0)} for x in inputs]
    return sorted(late, key=lambda x: x["_arrival"])  # stable: ties keep their order


async def scored(cfg: settings.Settings, race: str, t0: int) -> None:
    """Wait until the race is published (a busy scorer may take longer than a
    subscriber's wait for a start list just accepted)."""
    url = f"http://127.0.0.1:{cfg.broadcast_http_port}/api/races"
    async with aiohttp.ClientSession() as http:
        for _ in range(600):
            async with http.get(url) as resp:
                if race in json.dumps(await resp.json()):
                    return
            await asyncio.sleep(0.05)
    raise RuntimeError(f"race {race} not published {(now_us() - t0) / 1e6:.0f} s after "
                       "its start list")


async def level(cfg: settings.Settings, sup: Supervisor, label: str, race: str,
                startlist: dict[str, Any], inputs: list[dict[str, Any]], jitter_ms: int
                ) -> None:
    sl, moved = renamed(startlist, inputs, race)
    t0 = now_us()
    await asyncio.to_thread(sup.load_startlist, sl)
    await scored(cfg, race, t0)
    client: RawClient = await open_client("127.0.0.1", cfg.broadcast_ws_port,
                                          {"op": "subscribe", "race": race, "protocol": 2})
    try:
        await asyncio.wait_for(client.ready.wait(), 30)
    except TimeoutError:
        raise RuntimeError(f"no snapshot of {race}: {client.frames[:3]}") from None
    rnd = random.Random(jitter_ms)
    await send(cfg, with_arrival(moved, jitter_ms * 1000, rnd))
    await asyncio.sleep(1.0)
    client.close()
    lat, revisions = [], 0
    for got, payload in client.frames:
        msg = json.loads(payload)
        if msg["type"] != "event" or msg["event"]["type"] not in ("passage", "finish",
                                                                  "revision"):
            continue
        source = msg["event"].get("hops", {}).get("source_us")
        if source:
            lat.append(got - source)
        revisions += msg["event"]["type"] == "revision"
    print(f"{label:>24} {jitter_ms:>4} ms {revisions:>10} {len(lat):>8} {pct(lat, .5):>8.2f} "
          f"{pct(lat, .99):>8.2f} {max(lat) / 1000:>8.2f}", flush=True)


async def amain() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = config(Path(tmp))
        sup = Supervisor(path, settings.load(path))
        await asyncio.to_thread(sup.start)
        cfg = sup.cfg
        try:
            print(f"\n== arrival jitter through the whole chain: passing sent -> client, ms "
                  f"(race time at {SPEED:g}x) ==")
            print(f"{'race':>24} {'jitter':>7} {'revisions':>10} {'events':>8} {'p50':>8} "
                  f"{'p99':>8} {'max':>8}")
            sl_1000, in_1000 = race_inputs(20)
            sl_ms, in_ms = pack_inputs("mass_start", 24, 16, 31.0)
            for label, sl, inputs, tag in (("1000 m, 20 skaters", sl_1000, in_1000, "c1000"),
                                           ("mass start, 24 skaters", sl_ms, in_ms, "cms")):
                for jitter in JITTERS_MS:
                    await level(cfg, sup, label, f"{tag}-{jitter}", sl, inputs, jitter)
        finally:
            await asyncio.to_thread(sup.stop)


def main() -> None:
    run_loop(amain())


if __name__ == "__main__":
    main()
