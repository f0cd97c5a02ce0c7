"""A fan's phone for the outage tests: follows one race over WebSocket and, on every drop,
reconnects and resumes with the (epoch, offset) it last had (docs/delivery.md)."""
from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import websockets

from icetime.view import apply_event

#: ("snapshot", offset), ("resumed", offset), ("event", offset, loop time), ("dropped",),
#: ("error", code)
Log = list[tuple[Any, ...]]


def subscribe(race: str, competition: str | None, epoch: str | None,
              offset: str | None) -> dict[str, Any]:
    """The subscribe message: from a snapshot, or resuming after (epoch, offset)."""
    sub: dict[str, Any] = {"op": "subscribe", "race": race, "protocol": 2}
    if competition:
        sub["competition"] = competition
    if epoch:
        sub.update(epoch=epoch, offset=offset)
    return sub


async def follow_race(url: str, race: str, done: asyncio.Event, log: Log,
                      finished: Callable[[dict[str, Any]], bool],
                      competition: str | None = None) -> dict[str, Any] | None:
    """Follow ``race`` (of ``competition``, when named) at ``url`` until ``finished(view)``;
    then set ``done`` and return the view. An ``error`` frame ends the follow: its message is
    returned. Every frame that matters is appended to ``log`` (see :data:`Log`)."""
    loop = asyncio.get_running_loop()
    view: dict[str, Any] | None = None
    epoch = offset = None
    while not done.is_set():
        try:
            async with websockets.connect(url, open_timeout=2) as ws:
                await ws.send(json.dumps(subscribe(race, competition, epoch, offset)))
                while True:
                    msg = json.loads(await ws.recv())
                    if msg["type"] == "snapshot":
                        view, epoch, offset = msg["view"], msg["epoch"], msg["offset"]
                        log.append(("snapshot", offset))
                    elif msg["type"] == "error":
                        log.append(("error", msg.get("code")))
                        return dict(msg)
                    elif msg["type"] == "resumed":
                        log.append(("resumed", msg["offset"]))
                    elif msg["type"] == "event":
                        log.append(("event", msg["offset"], loop.time()))
                        view = apply_event(view, msg["event"])
                        offset = msg["offset"]
                    if view and finished(view):  # a snapshot may already be the end
                        done.set()
                        return view
        except (OSError, websockets.ConnectionClosed, TimeoutError):
            log.append(("dropped",))
            await asyncio.sleep(0.2)
    return view
