"""A WebSocket client that tries to starve a broadcast node: run as its own process.

``python -m bench.abuse WS_URL SECONDS [REAL_RACE ...]``

Two connections, for SECONDS:

* one subscribes to 10,000 made-up race ids as fast as it can send them, reads
  every answer, closes, and does it again (a *burst*);
* one subscribes to each REAL_RACE in turn, 20 a second (more races than a
  connection may follow, so the last ones are refused), and holds them.

Prints one JSON line at the end: ``{"bursts", "made_up": {answer: count},
"real": {answer: count}}``, where an answer is a frame's ``type``, or its ``code``
for an ``error``. Used by tests/test_fanout.py and bench/fanout.py.
"""
from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections import Counter

import websockets

MADE_UP = 10_000
#: Subscribes per second to the real races: above a page's needs, within the node's
#: default rate, so that the connection's limit on races is what refuses the last ones.
REAL_RATE = 20.0


def answer(frame: str | bytes) -> str:
    msg = json.loads(frame)
    return str(msg.get("code") or msg["type"]) if msg["type"] == "error" else str(msg["type"])


async def made_up_bursts(url: str, until: float, out: Counter[str]) -> int:
    loop = asyncio.get_running_loop()
    bursts = 0
    while loop.time() < until:
        tag = uuid.uuid4().hex[:8]
        async with websockets.connect(url, max_size=None) as ws:
            for i in range(MADE_UP):
                await ws.send(json.dumps({"op": "subscribe", "race": f"made-up-{tag}-{i}",
                                          "protocol": 2}))
            for _ in range(MADE_UP):
                out[answer(await ws.recv())] += 1
        bursts += 1
    return bursts


async def real_races(url: str, races: list[str], until: float, out: Counter[str]) -> None:
    loop = asyncio.get_running_loop()
    async with websockets.connect(url, max_size=None) as ws:
        async def read() -> None:
            async for frame in ws:
                out[answer(frame)] += 1

        reader = asyncio.create_task(read())
        for race in races:
            await ws.send(json.dumps({"op": "subscribe", "race": race, "protocol": 2}))
            await asyncio.sleep(1 / REAL_RATE)
        await asyncio.sleep(max(0.0, until - loop.time()))
        reader.cancel()


async def amain(url: str, seconds: float, races: list[str]) -> None:
    until = asyncio.get_running_loop().time() + seconds
    made_up: Counter[str] = Counter()
    real: Counter[str] = Counter()
    bursts, _ = await asyncio.gather(made_up_bursts(url, until, made_up),
                                     real_races(url, races, until, real))
    print(json.dumps({"bursts": bursts, "made_up": made_up, "real": real}), flush=True)


if __name__ == "__main__":
    asyncio.run(amain(sys.argv[1], float(sys.argv[2]), sys.argv[3:]))
