"""A WebSocket client that tries to starve a broadcast node: run as its own process.

``python -m bench.abuse WS_URL SECONDS [REAL_RACE ...]``

Two connections, for SECONDS:

* one subscribes to 10,000 made-up race ids as fast as it can send them and
  reads the answers (the node answers no faster than its subscribe rate allows);
* one subscribes to each REAL_RACE in turn, 20 a second (more races than a
  connection may follow, so the last ones are refused), and holds them until
  every subscribe is answered and SECONDS are over.

Prints one JSON line at the end: ``{"sent", "made_up": {answer: count},
"real": {answer: count}}``, where an answer is a frame's ``type``, or its ``code``
for an ``error``. Used by tests/test_fanout.py and bench/fanout.py.
"""
from __future__ import annotations

import asyncio
import contextlib
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


async def made_up(url: str, until: float, out: Counter[str]) -> int:
    """Send 10,000 made-up subscribes at once, read answers until ``until``; the number
    sent (the node may hold the rest back, reading no faster than it answers)."""
    loop = asyncio.get_running_loop()
    tag = uuid.uuid4().hex[:8]
    sent = 0
    # The node reads no faster than it answers, so the closing handshake would wait
    # behind the subscribes still unread (for websockets' 10 s): drop the connection
    # after 1 s instead, as an abuser would.
    async with websockets.connect(url, max_size=None, close_timeout=1) as ws:
        async def send() -> None:
            nonlocal sent
            for i in range(MADE_UP):
                await ws.send(json.dumps({"op": "subscribe", "race": f"made-up-{tag}-{i}",
                                          "protocol": 2}))
                sent += 1

        sender = asyncio.create_task(send())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(until - loop.time()):
                async for frame in ws:
                    out[answer(frame)] += 1
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender
    return sent


async def real_races(url: str, races: list[str], until: float, out: Counter[str]) -> None:
    loop = asyncio.get_running_loop()
    async with websockets.connect(url, max_size=None) as ws:
        answered = asyncio.Event()

        async def read() -> None:
            async for frame in ws:
                out[answer(frame)] += 1
                if sum(out.values()) >= len(races):
                    answered.set()

        reader = asyncio.create_task(read())
        for race in races:
            await ws.send(json.dumps({"op": "subscribe", "race": race, "protocol": 2}))
            await asyncio.sleep(1 / REAL_RATE)
        await asyncio.wait_for(answered.wait(), 60)  # every subscribe answered...
        await asyncio.sleep(max(1.0, until - loop.time()))  # ...and held till the end
        reader.cancel()


async def amain(url: str, seconds: float, races: list[str]) -> None:
    until = asyncio.get_running_loop().time() + seconds
    made_up_answers: Counter[str] = Counter()
    real: Counter[str] = Counter()
    sent, _ = await asyncio.gather(made_up(url, until, made_up_answers),
                                   real_races(url, races, until, real))
    print(json.dumps({"sent": sent, "made_up": made_up_answers, "real": real}), flush=True)


if __name__ == "__main__":
    asyncio.run(amain(sys.argv[1], float(sys.argv[2]), sys.argv[3:]))
