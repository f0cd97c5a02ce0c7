"""The WebSocket endpoint's side of a broadcast node: a client's messages (``time``,
``subscribe``, ``unsubscribe``), their limits and refusals, and the stale-data status
(docs/protocol.md: "Limits", "Stale data").

Every refusal of a subscribe is an ``error`` frame with a machine-readable ``code``;
a client that subscribes faster than its allowance (:class:`TokenBucket`) is read no
further until it may subscribe again. :class:`WsEndpoint` is the part of
:class:`services.broadcast.server.Broadcast` that does this.
"""
from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from typing import Any

from redis.exceptions import RedisError
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from icetime import bus, keys
from icetime.settings import Settings
from icetime.timefmt import now_us

from .fanout import AmbiguousRace, Hub
from .frames import LATEST, PROTOCOLS, write_all
from .keepalive import Keepalive
from .subscription import Subscription

log = logging.getLogger(__name__)
#: Kernel send buffer per client: ample for live frames (~1 KB each), small enough
#: that a client that stops reading is noticed within a few dozen frames.
SOCKET_SNDBUF = 64 * 1024
#: The longest race id a subscribe may name (ids are short slugs such as "bj23-w1000a").
RACE_ID_MAX = 128


class TokenBucket:
    """``burst`` tokens, refilled at ``rate`` per second; a subscribe takes one."""

    def __init__(self, burst: int, rate: float) -> None:
        self.burst = float(burst)
        self.rate = rate
        self.tokens = float(burst)
        self.at = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True

    def wait(self) -> float:
        """Seconds until a token is back (0 when there is one)."""
        return max(0.0, (1 - self.tokens) / self.rate)


def refusal(race: Any, code: str, error: str) -> str:
    """An ``error`` frame refusing a subscribe, with its machine-readable ``code``."""
    frame: dict[str, Any] = {"type": "error", "code": code, "error": error}
    if isinstance(race, str) and len(race) <= RACE_ID_MAX:
        frame["race"] = race
    return bus.dumps(frame)

class WsEndpoint:
    """A node's WebSocket clients. A mixin of :class:`services.broadcast.server.Broadcast`,
    which sets what is declared here."""

    settings: Settings
    hub: Hub
    #: Pings every WebSocket client (one task for all; the library's own is off).
    keepalive: Keepalive
    #: Connections told when the data goes stale (docs/protocol.md, "Stale data"):
    #: those that subscribed in protocol 2 (protocol-1 clients predate the message).
    status_clients: set[ServerConnection]
    #: When this node lost Redis (µs), while it is away; None while it answers.
    stale_since_us: int | None

    def status_frame(self) -> str:
        """The ``status`` message: whether the data is stale (Redis away) and since when."""
        if self.stale_since_us is None:
            return bus.dumps({"type": "status", "stale": False})
        return bus.dumps({"type": "status", "stale": True, "since_us": self.stale_since_us,
                          "reason": "storage unavailable; reconnecting"})

    def stale_changed(self, stale: bool) -> None:
        """Redis went away (``stale``) or answers again: tell every protocol-2 client."""
        self.stale_since_us = now_us() if stale else None
        log.info("telling %d clients the data is %s", len(self.status_clients),
                 "stale" if stale else "fresh again")
        write_all(list(self.status_clients), self.status_frame().encode())

    def wants_status(self, ws: ServerConnection, protocol: int) -> bool:
        """A protocol-2 subscribe: this connection is told of stale data from now on.
        True when it was not before (it is told the current state after its reply)."""
        if protocol < LATEST or ws in self.status_clients:
            return False
        self.status_clients.add(ws)
        return True

    async def unavailable(self, ws: ServerConnection, race: str, exc: RedisError,
                          told: bool) -> None:
        """A subscribe failed for Redis: the reply first, then (protocol 2) the stale
        status, to everyone if this is news, else to this connection if it is new
        (``told`` False)."""
        log.debug("subscribe to %s failed: %s", race, exc)
        await ws.send(bus.dumps({"type": "error", "race": race, "retry": True,
                                 "code": "unavailable",
                                 "error": "storage unavailable; subscribe again"}))
        was_stale = self.stale_since_us is not None
        self.hub.outage.failed(exc, "subscribing clients (they are told to retry)")
        if was_stale and not told:
            await ws.send(self.status_frame())

    async def handle_ws(self, ws: ServerConnection) -> None:
        sock = ws.transport.get_extra_info("socket")
        if sock is not None:
            # A bounded kernel buffer, so a stalled client shows up in the
            # transport's own buffer (where the fan-out watches) instead of
            # hoarding megabytes of stale frames in the kernel.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_SNDBUF)
        log.debug("client %s connected", ws.remote_address)
        self.keepalive.add(ws)
        subs: dict[str, Subscription] = {}
        bucket = TokenBucket(self.settings.client_subscriptions_max,
                             self.settings.client_subscribe_rate)
        try:
            async for message in ws:
                await self.on_message(ws, message, subs, bucket)
                # A burst of messages already read must not hold the loop: the fan-out
                # and every other client get their turn between two of them.
                await asyncio.sleep(0)
        except ConnectionClosed:
            pass
        finally:
            log.debug("client %s disconnected (following %s)", ws.remote_address,
                      ", ".join(subs) or "no race")
            self.status_clients.discard(ws)
            self.keepalive.discard(ws)
            for sub in subs.values():
                await self.hub.unsubscribe(sub)

    async def subscribe(self, ws: ServerConnection, msg: dict[str, Any],
                        subs: dict[str, Subscription], bucket: TokenBucket) -> None:
        """One ``subscribe``: checked (rate, race, protocol, the connection's limit, the
        race exists), then followed; every refusal is an ``error`` frame with a ``code``."""
        race = msg.get("race")
        if not bucket.take():
            self.hub.refused["rate_limited"] += 1
            await ws.send(refusal(race, "rate_limited", (
                f"more than {self.settings.client_subscribe_rate:g} subscribes per second; "
                "wait and subscribe again")))
            # Read nothing more from this client until a token is back: a flood then
            # waits in its own socket (TCP backpressure) instead of costing the node
            # an answer per message. Its later messages are answered in turn.
            await asyncio.sleep(bucket.wait())
            return
        if not isinstance(race, str) or not race or len(race) > RACE_ID_MAX:
            await ws.send(bus.dumps({"type": "error", "code": "bad_request",
                                     "error": f"subscribe needs a race (at most "
                                              f"{RACE_ID_MAX} characters)"}))
            return
        # No "protocol": a client written before protocol 2 (the old names).
        protocol = msg.get("protocol", 1)
        if type(protocol) is not int or protocol not in PROTOCOLS:
            await ws.send(bus.dumps({"type": "error", "race": race, "code": "bad_request",
                                     "error": f"protocol must be one of {list(PROTOCOLS)}"}))
            return
        named = msg.get("competition")
        if named is not None and (not isinstance(named, str)
                                  or not keys.COMPETITION_ID.fullmatch(named)):
            await ws.send(bus.dumps({"type": "error", "race": race, "code": "bad_request",
                                     "error": "competition must be a competition id"}))
            return
        told = not self.wants_status(ws, protocol)
        if race in subs:
            await self.hub.unsubscribe(subs.pop(race))
        elif len(subs) >= self.settings.client_subscriptions_max:
            self.hub.refused["too_many_subscriptions"] += 1
            await ws.send(refusal(race, "too_many_subscriptions", (
                f"a connection follows at most {self.settings.client_subscriptions_max} "
                "races; unsubscribe from one first")))
            return
        try:
            competition = await self.hub.locate(race, named)
            self.hub.outage.ok()  # Redis answered: clients told "stale" hear it is back
            if competition is None:
                self.hub.refused["unknown_race"] += 1
                await ws.send(refusal(race, "unknown_race",
                                      f"no race {race!r}: no start list has it"))
                return
            sub, _ = await self.hub.subscribe(ws, race, msg.get("epoch"), msg.get("offset"),
                                              protocol, competition)
        except AmbiguousRace as exc:
            self.hub.refused["ambiguous_race"] += 1
            await ws.send(refusal(race, "ambiguous_race", str(exc)))
            return
        except RedisError as exc:
            await self.unavailable(ws, race, exc, told)
            return
        self.hub.outage.ok()
        subs[race] = sub

    async def on_message(self, ws: ServerConnection, message: str | bytes,
                         subs: dict[str, Subscription], bucket: TokenBucket) -> None:
        """One client message (docs/protocol.md): ``time``, ``subscribe`` or
        ``unsubscribe``; anything else gets an error frame. ``subs``: the client's
        subscriptions by race id, updated here; ``bucket``: its subscribe allowance."""
        try:
            msg = json.loads(message)
            op = msg.get("op")
        except (ValueError, AttributeError):
            await ws.send(bus.dumps({"type": "error", "error": "messages are JSON objects"}))
            return
        if op == "time":
            await ws.send(bus.dumps({"type": "time", "c": msg.get("c"), "s": now_us()}))
        elif op == "subscribe":
            await self.subscribe(ws, msg, subs, bucket)
        elif op == "unsubscribe" and msg.get("race") in subs:
            await self.hub.unsubscribe(subs.pop(msg["race"]))
        else:
            await ws.send(bus.dumps({"type": "error", "error": f"unknown op {op!r}"}))
