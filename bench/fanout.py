"""A normal client's latency with and without an abuser on the same broadcast node.

The real system runs as `icetime run` does (embedded redis-server, three service
processes). One normal client follows a race fed at 10 passings a second, first
alone, then beside bench/abuse.py in its own process (10,000 made-up race ids at
once, and more real races than a connection may follow). Latency = the client's
receipt - the passing's `sent_us`. Prints p50/p99 for both, and the abuser's answers.
"""
from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from pathlib import Path

from icetime import settings
from icetime.cli import Supervisor
from icetime.service import run_loop

from . import latency
from .wsclient import open_client

EXTRA_RACES = 80
PASSINGS = 100


async def phase(cfg: settings.Settings, sup: Supervisor, name: str, seq: int,
                abuse: bool) -> int:
    race = f"fan-{name}"
    await asyncio.to_thread(sup.load_startlist, latency.startlist(race))
    client = await open_client("127.0.0.1", cfg.broadcast_ws_port,
                               {"op": "subscribe", "race": race, "protocol": 2})
    await asyncio.wait_for(client.ready.wait(), 30)
    abuser = None
    if abuse:
        abuser = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.abuse", f"ws://127.0.0.1:{cfg.broadcast_ws_port}/",
            str(PASSINGS / latency.RATE_HZ + 2), *[f"extra-{i}" for i in range(EXTRA_RACES)],
            cwd=Path(__file__).resolve().parents[1], stdout=asyncio.subprocess.PIPE)
        await asyncio.sleep(0.5)  # its 10,000 subscribes are in
    seq, sent = await latency.send_passings(cfg, race, seq, PASSINGS)
    await asyncio.sleep(1.0)
    client.close()
    total = latency.passing_latencies([client])
    line = (f"{name:>14} {len(total):>5}/{sent:<5} p50 {latency.pct(total, .5):7.2f} ms  "
            f"p99 {latency.pct(total, .99):7.2f} ms  max {max(total) / 1000:7.2f} ms")
    if abuser:
        out, _ = await abuser.communicate()
        report = json.loads(out)
        line += f"   abuser: made-up {dict(report['made_up'])}, real {dict(report['real'])}"
    print(line, flush=True)
    return seq


async def amain() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = latency.config(Path(tmp))
        sup = Supervisor(path, settings.load(path))
        await asyncio.to_thread(sup.start)
        cfg = sup.cfg
        try:
            extra = {"skaters": [{"bib": f"x{b}", "name": f"Skater {b}", "transponders": [f"xT{b}"]}
                                 for b in range(2)],
                     "races": [{"id": f"extra-{i}", "name": f"Extra {i}", "distance": 500,
                                "pairs": [{"pair": 1, "inner": "x0", "outer": "x1"}]}
                               for i in range(EXTRA_RACES)]}
            await asyncio.to_thread(sup.load_startlist, extra)
            print(f"\n== fan-out: one normal client, passing sent -> receipt ({PASSINGS} "
                  f"passings at {latency.RATE_HZ:.0f}/s), alone and beside an abuser ==")
            seq = await phase(cfg, sup, "alone", 0, abuse=False)
            await phase(cfg, sup, "beside abuser", seq, abuse=True)
        finally:
            await asyncio.to_thread(sup.stop)


def main() -> None:
    run_loop(amain())


if __name__ == "__main__":
    main()
