"""Events as WebSocket frames, and writing frames to many connections at once.

The fan-out (:mod:`services.broadcast.fanout`) encodes each event once into a frame;
this module makes those frames (an event as stored, already JSON, is wrapped without
being decoded again; a race's stored snapshot) and writes them: to a plain
protocol-2 connection straight to its transport, the same bytes for every client, one
write per connection however many frames (:func:`write_frames`, :func:`direct_writer`),
so one slow client costs the others nothing (docs/delivery.md).

Protocol versions (docs/protocol.md, "Protocol versions"): events are stored in
protocol 2's names (:data:`LATEST`); protocol 1 is served too until the next release.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Protocol

import redis.asyncio as aioredis
from websockets.asyncio.server import broadcast
from websockets.frames import Frame, Opcode
from websockets.protocol import State

from icetime import bus, keys
from icetime.timefmt import now_us

ZERO = (0, 0)
#: The WebSocket protocol versions served: 2, and 1 (old names) until the next release.
PROTOCOLS = (1, 2)
LATEST = 2


class Sender(Protocol):
    async def send(self, message: str) -> None: ...


def write_all(connections: list[Any], payload: bytes) -> None:
    """Send one text message to many connections, serialising the frame once
    (:func:`write_frames` with one payload)."""
    write_frames(connections, [payload])


def write_frames(connections: list[Any], payloads: list[bytes]) -> None:
    """Send text messages, in order, to many connections, serialising each frame once
    and writing them to each connection in ONE call.

    A server's text frame is unmasked, and with no extensions negotiated (the
    server runs with compression off) it is the same bytes for every client, so
    the frames are built once and written to each open connection's transport: one
    system call per client however many frames (the kernel's work per call, not the
    bytes, is most of a fan-out's cost). Anything else goes through
    ``websockets.broadcast``, which frames per connection; a subscriber inside the
    node (no ``protocol``, a ``take`` method, such as the RMonitor feed) gets the
    payloads themselves. The frames are written whole in one call, so they cannot
    interleave with the library's own frames (pings, close).
    """
    wire = wire_frames(payloads)
    others = []
    open_ = State.OPEN
    for ws in connections:
        protocol = getattr(ws, "protocol", None)
        if protocol is None or protocol.extensions or ws.send_in_progress is not None:
            others.append(ws)
        elif protocol.state is open_:
            ws.transport.write(wire)
    takers = [ws for ws in others if getattr(ws, "protocol", None) is None
              and hasattr(ws, "take")]  # subscribers inside this node (the RMonitor feed)
    rest = [ws for ws in others if ws not in takers]
    for payload in payloads:
        for ws in takers:
            ws.take(payload)
        if rest:
            broadcast(rest, payload, text=True)


def wire_frames(payloads: list[bytes]) -> bytes:
    """Text messages as a server sends them without extensions (unmasked frames, the
    same bytes for every such client), in order."""
    return b"".join(Frame(Opcode.TEXT, p).serialize(mask=False, extensions=[])
                    for p in payloads)


#: How the live path writes to a plain connection: its transport's ``write`` and
#: ``get_write_buffer_size`` (bound once) and its sans-I/O protocol (for its state).
Direct = tuple[Callable[[bytes], object], Callable[[], int], Any]


def direct_writer(ws: Sender) -> Direct | None:
    """How the live path may write frames from :func:`wire_frames` straight to ``ws``:
    a ``websockets`` connection with no extension negotiated (fixed at its handshake);
    else None. (This node never sends a fragmented message, so whole frames written
    here cannot land inside one of the library's.)"""
    protocol = getattr(ws, "protocol", None)
    transport = getattr(ws, "transport", None)
    if protocol is None or transport is None or protocol.extensions:
        return None
    return transport.write, transport.get_write_buffer_size, protocol


def event_frame(race: str, epoch: str, sid: str, event_json: str,
                broadcast_us: int | None = None) -> str:
    """Wrap an event as stored (already JSON) without decoding it again; stamped
    ``broadcast_us`` (default: now)."""
    at = now_us() if broadcast_us is None else broadcast_us
    return (f'{{"type":"event","race":{json.dumps(race)},"epoch":{json.dumps(epoch)},'
            f'"offset":"{sid}","broadcast_us":{at},"event":{event_json}}}')


def event_json(fields: bus.Fields | None) -> str:
    """The event an events-stream entry holds (JSON text, field ``e``). Raises
    KeyError for an entry without one: scoring writes none such."""
    return (fields or {})[b"e"].decode()


async def snapshot_frame(r: aioredis.Redis, competition: str, race: str
                         ) -> tuple[str, tuple[int, int], str]:
    """The race's stored snapshot as a frame; (frame, offset, epoch)."""
    snap = await r.hgetall(keys.snapshot_key(competition, race))
    if not snap:
        epoch = bus.text(await r.get(keys.epoch_key(competition, race)))
        frame = bus.dumps({"type": "snapshot", "race": race, "epoch": epoch, "offset": "0-0",
                           "view": None})
        return frame, ZERO, epoch
    offset = bus.text(snap[b"offset"])
    epoch = bus.text(snap[b"epoch"])
    frame = (f'{{"type":"snapshot","race":{json.dumps(race)},"epoch":{json.dumps(epoch)},'
             f'"offset":"{offset}","view":{bus.text(snap[b"view"])}}}')
    return frame, bus.parse_id(offset), epoch


async def stored_view(r: aioredis.Redis, competition: str, race: str
                      ) -> tuple[dict[str, Any] | None, tuple[int, int]]:
    """The race's stored snapshot: its view (None without one) and its offset."""
    snap = await r.hgetall(keys.snapshot_key(competition, race))
    if not snap:
        return None, ZERO
    view: dict[str, Any] | None = json.loads(snap[b"view"])
    return view, bus.parse_id(bus.text(snap[b"offset"]))
