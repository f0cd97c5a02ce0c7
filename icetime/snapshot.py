"""A race's view as of now: the stored snapshot plus the events since it, folded.

Scoring stores a race's snapshot (the whole view, and the id of the event it stands
at) at a cadence, not with every input: writing the whole view costs what the field
costs (7.5 MB of JSON at 10,000 skaters), an event costs what changed. So the stored
snapshot is usually a few events behind the stream's end, and every reader of a view
(the results API, the desk, a subscriber's snapshot and catch-up) takes the snapshot
and folds the events after it with :func:`icetime.view.apply_event`, exactly as a
WebSocket client does. docs/delivery.md, "Snapshots at a cadence", says why and when.

The cadence's constants are here, in one place; services/scoring/runner.py applies
them (:class:`Cadence`). Most snapshots are built by a forked child, off the scoring
loop (services/scoring/snapshotter.py; docs/delivery.md, "Snapshots off the passings'
path"); a race's first of a worker's life and a revision's are built in line.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import msgspec
import redis.asyncio as aioredis

from icetime import bus
from icetime.view import apply_event

#: A race's snapshot is stored once this many of its events were published since the
#: last one ...
EVERY_EVENTS = 1000
#: ... or once this long has passed (s) with any event since the last one ...
EVERY_S = 1.0
#: ... but not sooner after the last one than this many times as long as the last
#: one took to build and encode when that was in line (at 10,000 skaters ~0.1 s: in-line
#: snapshots cost the worker at most ~1/20 of its time however busy the race is) ...
SPACING = 20
#: ... or as long as the last child took from fork to store, when a forked child built
#: it (services/scoring/snapshotter.py): it cost the worker a few ms, and the child
#: takes at most ~1/5 of a core.
CHILD_SPACING = 5
#: With no input for this long (ms) scoring stores every race whose snapshot is behind:
#: a quiet race's readers then fold nothing.
IDLE_MS = 500
#: Events read per XRANGE while folding.
CHUNK = 1000


_decode = msgspec.json.Decoder().decode


@dataclass
class Latest:
    """A race's view as of event ``offset`` (the stream's end when it was read)."""

    epoch: str
    #: The id of the last event folded in ("0-0": the race has no event yet).
    offset: str
    #: The view; None while the race has none (no snapshot stored yet).
    view: dict[str, Any] | None
    #: The stored snapshot's own offset, and how many events were folded onto it.
    snapshot_offset: str
    folded: int


async def latest(r: aioredis.Redis, snapshot_key: str, events_key: str, upto: str = "+"
                 ) -> Latest | None:
    """The view of a race as of its last event (or as of event ``upto``, when that is at
    or after the stored snapshot): the snapshot (hash ``snapshot_key``,
    :func:`icetime.keys.snapshot_key`) and the events after it (stream ``events_key``),
    folded. None when the race has no snapshot (unknown race, or nothing published yet).

    Consistent without a transaction: a snapshot stands at an event of the stream it
    was stored with, and a stream is only appended to, so the events after it are all
    there. Raises RedisError."""
    snap = await r.hgetall(snapshot_key)
    if not snap:
        return None
    fields = {bus.text(k): v for k, v in snap.items()}
    base = bus.text(fields.get("offset"))
    # msgspec decodes what json.loads does (dicts, lists, str, int, float), several
    # times faster: a reader may fold hundreds of events.
    view: dict[str, Any] | None = _decode(fields["view"]) if fields.get("view") else None
    offset, folded = base, 0
    start = f"({base}"
    while True:
        got = bus.entries(await r.xrange(events_key, start, upto, count=CHUNK))
        for sid, entry in got:
            if entry is not None and b"e" in entry:
                view = apply_event(view, _decode(entry[b"e"]))
            offset = sid
            folded += 1
        if len(got) < CHUNK:
            break
        start = "(" + got[-1][0]
    return Latest(bus.text(fields.get("epoch")), offset, view, base, folded)


async def end(r: aioredis.Redis, snapshot_key: str, events_key: str
              ) -> tuple[str, str] | None:
    """(epoch, id of the last event) of a race with a stored snapshot: what
    :func:`latest` would stand at now, without folding; None without a snapshot.
    Raises RedisError."""
    async with r.pipeline(transaction=True) as pipe:
        pipe.hget(snapshot_key, "epoch")
        pipe.xrevrange(events_key, "+", "-", count=1)
        epoch, last = await pipe.execute()
    if epoch is None:
        return None
    got = bus.entries(last)
    return bus.text(epoch), got[0][0] if got else "0-0"


class Cadence:
    """When scoring stores each race's snapshot (see the constants above). Kept by the
    scoring worker for its life only: a new worker stores each race's snapshot with
    the first events it publishes for it, and the readers fold meanwhile."""

    def __init__(self) -> None:
        #: Per race: events since its snapshot, when that was stored (monotonic s).
        self.since: dict[str, int] = {}
        self.at: dict[str, float] = {}
        #: Per race: the last event id published and its epoch (for an idle store).
        self.last: dict[str, tuple[str, str]] = {}
        #: How long the last store took (s), and how many times as long the next one
        #: waits (:data:`SPACING` in line, :data:`CHILD_SPACING` in a child).
        self.cost = 0.0
        self.spacing = SPACING

    def due(self, race: str, events: int, revision: bool) -> bool:
        """Whether the snapshot of ``race`` is stored with its next ``events`` events
        (``revision``: one of them is a revision)."""
        if race not in self.at or revision:
            return True  # a new life, or the view came whole anyway
        n = self.since.get(race, 0) + events
        waited = time.monotonic() - self.at[race]
        return (n >= EVERY_EVENTS or waited >= EVERY_S) and waited >= self.spacing * self.cost

    def published(self, race: str, n: int, stored: bool, epoch: str, last: str,
                  cost: float | None = 0.0) -> None:
        """``n`` events of ``race`` were published up to ``last``; with the snapshot
        (which took ``cost`` s to build and encode; None: told later, by whoever builds
        it) when ``stored``."""
        if n:
            self.last[race] = (epoch, last)
        if stored:
            self.since[race] = 0
            self.at[race] = time.monotonic()
            if cost is not None:
                self.cost, self.spacing = cost, SPACING
        else:
            self.since[race] = self.since.get(race, 0) + n

    def stored(self, race: str) -> bool:
        """Whether this worker has stored (or begun to store) a snapshot of ``race``."""
        return race in self.at

    def child_done(self, seconds: float, failed: list[str]) -> None:
        """A child built snapshots in ``seconds`` (fork to store); those of ``failed``
        were not stored (:meth:`failed`)."""
        self.cost, self.spacing = seconds, CHILD_SPACING
        self.failed(failed)

    def failed(self, races: list[str]) -> None:
        """The snapshots of ``races`` counted stored were not: each is due again (by
        its count of events) once the spacing allows."""
        for race in races:
            self.since[race] = self.since.get(race, 0) + EVERY_EVENTS

    def behind(self) -> list[str]:
        """Races with events published after their snapshot."""
        return [race for race, n in self.since.items() if n]
