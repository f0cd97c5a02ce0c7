"""The RMonitor scoreboard feed: a TCP listener speaking the RMonitor protocol (the
"Result Monitor" records of AMB/MYLAPS Orbits) for scoreboards and video tools.

Each record is one line of comma-separated fields, text in double quotes, ended by CR
LF: ``$I`` (reset), ``$B`` (the run: the race), ``$C`` (its class), ``$A`` and
``$COMP`` (a competitor), ``$G`` (race position: place, laps, total time), ``$H``
(best lap: place by best lap, its number and time), ``$J`` (a passage: lap time and
total time) and ``$F`` (the heartbeat, every second: laps to go, time of day, race
time, flag). docs/results.md has the field lists and how icetime fills them.

The feed follows one race (``broadcast.rmonitor_race``, else the race whose event
stream moved last) through the fan-out hub, as a WebSocket client does: a snapshot,
then every event in order; it folds them (:func:`icetime.view.apply_event`) into the
view its records come from. A client that connects gets the whole state at once.
Text is sent as ASCII (accents dropped), which every scoreboard reads.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import unicodedata
import zlib
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from icetime import bus, keys
from icetime.timefmt import now_us
from icetime.view import apply_event
from services.scoring.standings import STANDINGS_ID

from .fanout import Hub
from .result_rows import MARATHON, PACK_KINDS, Row, best_lap, has_results, lap_length, rows
from .subscription import Subscription

log = logging.getLogger(__name__)
#: How often the heartbeat goes out and the followed race is chosen again, seconds.
TICK_S = 1.0
#: Unsent bytes a client may have before it is dropped (a scoreboard that stopped reading).
CLIENT_BUFFER_MAX = 1024 * 1024
CLASS_NUMBER = 1


def text(value: Any, limit: int = 40) -> str:
    """A field's text, quoted: ASCII (accents dropped), no quotes or commas inside,
    since scoreboards split records at every comma."""
    plain = unicodedata.normalize("NFKD", str(value))
    ascii_text = plain.encode("ascii", "ignore").decode()
    ascii_text = ascii_text.replace('"', "'").replace(",", " ")[:limit]
    return f'"{ascii_text}"'


def hms(t_us: int | None, millis: bool = True) -> str:
    """``HH:MM:SS.mmm`` (or ``HH:MM:SS``) of a duration in µs, truncated."""
    t = max(0, t_us or 0)
    ms = t // 1000
    s, ms = divmod(ms, 1000)
    m, s = divmod(s, 60)
    h, m = divmod(m, 60)
    return f"{h:02d}:{m:02d}:{s:02d}" + (f".{ms:03d}" if millis else "")


def split_name(name: str, short: str) -> tuple[str, str]:
    """(first, last) from the full name and the short one (the family name)."""
    if short and name.endswith(short) and len(name) > len(short):
        return name[: -len(short)].strip(), short
    first, _, last = name.rpartition(" ")
    return first, last or name


def record(*fields: Any) -> str:
    return ",".join(str(f) for f in fields) + "\r\n"


def competitor_records(r: Row) -> list[str]:
    first, last = split_name(r.name, r.short)
    return [record("$A", text(r.bib, 8), text(r.bib, 8), 0, text(first, 20), text(last, 30),
                   text(r.nation, 3), CLASS_NUMBER),
            record("$COMP", text(r.bib, 8), text(r.bib, 8), CLASS_NUMBER, text(first, 20),
                   text(last, 30), text(r.nation, 3), text(""))]


def positions(view: dict[str, Any], all_rows: list[Row]) -> list[str]:
    """``$G`` records: place, laps made and total time. Long track: the classification;
    a pack race: its order now (finishers by time, then by crossings made)."""
    by_bib = {r.bib: r for r in all_rows}
    if view["race"]["kind"] in PACK_KINDS:
        order = [by_bib[b] for b in (view.get("pack") or {}).get("order", []) if b in by_bib]
    else:
        order = [r for r in all_rows if r.rank is not None]
    out = []
    for place, r in enumerate(order, start=1):
        total = r.t if r.t is not None else (r.laps[-1].t if r.laps else 0)
        out.append(record("$G", place, text(r.bib, 8), len(r.laps), text(hms(total))))
    return out


def best_laps(view: dict[str, Any], all_rows: list[Row]) -> list[str]:
    """``$H`` records: place by best lap, the lap's number and time."""
    lap_m = lap_length(view)
    best = [(*b, r) for r in all_rows if (b := best_lap(r, lap_m)) is not None]
    best.sort(key=lambda x: (x[0], x[2].bib))
    return [record("$H", place, text(r.bib, 8), lap.number, text(hms(lap_time)))
            for place, (lap_time, lap, r) in enumerate(best, start=1)]


def passage_record(view: dict[str, Any], event: dict[str, Any]) -> str:
    """``$J`` for a passage or finish event: the lap time and the race time there."""
    row = event["row"]
    return record("$J", text(event["bib"], 8), text(hms(row["lap_time"])),
                  text(hms(row["t"])))


def course_records(view: dict[str, Any], event: dict[str, Any]) -> str:
    """A marathon's ``course_passage``: ``$J`` (the time since her previous timing point
    passed, none at the first, and the race time) and her ``$G`` (her rank at that
    timing point, the timing points passed, the race time). O(1): no walk of the field."""
    row = event["row"]
    if event["rank"] is None:  # a skater with a status: no place
        return ""
    times = view["results"][event["bib"]]["t"][:row["k"]]
    before = next((t for t in reversed(times) if t is not None), 0)
    return (record("$J", text(event["bib"], 8), text(hms(row["t"] - before)),
                   text(hms(row["t"])))
            + record("$G", event["rank"], text(event["bib"], 8), row["k"] + 1,
                     text(hms(row["t"]))))


def marathon_heartbeat(view: dict[str, Any], now: int, tod: str) -> str:
    """``$F`` of a marathon, from its counts (never a walk of 10,000 skaters): the first
    wave's running clock while skaters are out, ``Finish`` once all are in."""
    counts = view["counts"]
    out = counts["started"] - counts["finished"] - counts["status"]
    runs = [w["run"] for _, w in sorted(view["waves"].items(), key=lambda x: int(x[0]))
            if w.get("run")]
    if runs and (out > 0 or not counts["finished"]):
        first = runs[0]
        race_t = int((now - first["clock_origin_us"]) * float(first.get("rate") or 1.0))
        return record("$F", 0, text("00:00:00"), text(tod), text(hms(race_t, millis=False)),
                      text("Green "))
    flag = "Finish" if counts["finished"] else "      "
    return record("$F", 0, text("00:00:00"), text(tod), text("00:00:00"), text(flag))


def laps_to_go(view: dict[str, Any], all_rows: list[Row]) -> int:
    """Pack: the leader's laps left. Long track: the pair on the ice's passages left."""
    pack = view.get("pack")
    if pack is not None:
        return int(pack.get("laps_to_go") or 0)
    pair = view.get("current_pair")
    if pair is None or str(pair) not in (view.get("on_ice") or {}):
        return 0
    made = max((len(r.laps) for r in all_rows if r.pair == pair), default=0)
    return max(0, len(view["race"].get("passages") or []) - made)


def running(view: dict[str, Any]) -> dict[str, Any] | None:
    """The clock of what is on the ice now (``{clock_origin_us, rate}``), or None."""
    pack = view.get("pack")
    if pack is not None:
        run: dict[str, Any] | None = pack.get("run")
        return run
    on_ice = view.get("on_ice") or {}
    current = on_ice.get(str(view.get("current_pair")))
    return current or (next(iter(on_ice.values())) if on_ice else None)


def finished(view: dict[str, Any], all_rows: list[Row]) -> bool:
    """Nobody is on the ice and the race is over: a pack race has finishers; in a pair
    race every competitor has a final time or a status."""
    if not view["classification"]["bib"]:
        return False
    if view["race"]["kind"] in PACK_KINDS:
        return True
    return all(r.t is not None or r.status for r in all_rows)


def heartbeat(view: dict[str, Any] | None, now: int) -> str:
    """``$F``: laps to go, time to go (none here), time of day, race time, flag."""
    tod = time.strftime("%H:%M:%S", time.localtime(now / 1e6))
    if view is None or not has_results(view):
        return record("$F", 0, text("00:00:00"), text(tod), text("00:00:00"), text("      "))
    if view["race"]["kind"] == MARATHON:
        return marathon_heartbeat(view, now, tod)
    all_rows = rows(view)
    run = running(view)
    if run is not None:
        race_t = int((now - run["clock_origin_us"]) * float(run.get("rate") or 1.0))
        flag = "Green "
    else:
        race_t = 0
        flag = "Finish" if finished(view, all_rows) else "      "
    return record("$F", laps_to_go(view, all_rows), text("00:00:00"), text(tod),
                  text(hms(race_t, millis=False)), text(flag))


def run_number(race: str) -> int:
    """The ``$B`` run number of a race: stable for its id (1..9999)."""
    return zlib.crc32(race.encode()) % 9999 + 1


def full_state(view: dict[str, Any], now: int) -> str:
    """Everything a scoreboard needs from scratch: reset, run, class, competitors,
    positions, best laps and a heartbeat."""
    race = view["race"]
    when = time.localtime(now / 1e6)
    all_rows = rows(view)
    out = [record("$I", text(time.strftime("%H:%M:%S.000", when)),
                  text(time.strftime("%d %b %y", when))),
           record("$B", run_number(race["id"]), text(race["name"])),
           record("$C", CLASS_NUMBER, text(race["name"]))]
    for r in all_rows:
        out += competitor_records(r)
    out += positions(view, all_rows) + best_laps(view, all_rows)
    out.append(heartbeat(view, now))
    return "".join(out)


class Sink:
    """The feed's place in the hub: a subscriber that takes frames (JSON text) and
    folds them into the view its records come from."""

    def __init__(self, feed: RMonitorFeed, race: str) -> None:
        self.feed = feed
        self.race = race
        self.view: dict[str, Any] | None = None

    async def send(self, message: str) -> None:
        """A frame sent to this subscriber while it catches up (snapshot, missed events)."""
        self.take(message)

    def take(self, payload: bytes | str) -> None:
        """A frame, on the live path or while catching up."""
        frame = json.loads(payload)
        if frame.get("type") == "snapshot":
            self.view = frame["view"]
            if has_results(self.view):
                self.feed.broadcast(full_state(self.view, now_us()))
        elif frame.get("type") == "event":
            self.on_event(frame["event"])

    def on_event(self, event: dict[str, Any]) -> None:
        self.view = apply_event(self.view, event)
        view = self.view
        if not has_results(view):
            return
        assert view is not None
        kind = event["type"]
        if kind == "revision":
            self.feed.broadcast(full_state(view, now_us()))
        elif kind in ("passage", "finish"):
            all_rows = rows(view)
            lap_m = lap_length(view)
            mine = [r for r in all_rows if r.bib == event["bib"]]
            lines = [passage_record(view, event), *positions(view, all_rows)]
            best = {r.bib for r in mine if best_lap(r, lap_m) is not None}
            lines += [h for h in best_laps(view, all_rows) if any(f'"{b}"' in h for b in best)]
            self.feed.broadcast("".join(lines))
        elif kind == "course_passage":
            self.feed.broadcast(course_records(view, event))
        elif kind in ("pair_start", "start", "wave_start"):
            self.feed.broadcast(heartbeat(view, now_us()))


class RMonitorFeed:
    """The RMonitor listener and the race it follows."""

    def __init__(self, hub: Hub, r: aioredis.Redis, pinned: str = "") -> None:
        self.hub = hub
        self.r = r
        self.pinned = pinned
        self.clients: set[asyncio.StreamWriter] = set()
        self.sink: Sink | None = None
        self.sub: Subscription | None = None
        self.sent_lines = 0
        self.task: asyncio.Task[None] | None = None
        self.lock = asyncio.Lock()

    # ------------------------------------------------------------ clients
    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One scoreboard: the whole state now, then every record; what it sends is read
        and ignored (the protocol is one-way)."""
        self.clients.add(writer)
        try:
            view = self.sink.view if self.sink else None
            if view is not None and has_results(view):
                self._write(writer, full_state(view, now_us()))
            else:
                # Follow a race now: its snapshot reaches this client as the whole state.
                await self.tick()
            while await reader.read(4096):
                pass
        except (ConnectionError, OSError):
            pass
        finally:
            self.clients.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    def _write(self, writer: asyncio.StreamWriter, lines: str) -> None:
        if writer.transport.get_write_buffer_size() > CLIENT_BUFFER_MAX:
            log.info("rmonitor: dropping a client that stopped reading")
            self.clients.discard(writer)
            writer.transport.abort()
            return
        writer.write(lines.encode("ascii", "replace"))
        self.sent_lines += lines.count("\n")

    def broadcast(self, lines: str) -> None:
        for writer in list(self.clients):
            if not writer.is_closing():
                self._write(writer, lines)

    # ------------------------------------------------------------ the race
    async def pick(self) -> str | None:
        """The race to show: the pinned one, else the race (with results) whose event
        stream moved last. Raises RedisError."""
        if self.pinned:
            return self.pinned
        races = [bus.text(m) for m in await self.r.smembers(keys.races_set(self.hub.competition))]
        races = [r for r in races if r != STANDINGS_ID and not r.startswith("event-")]
        if not races:
            return None
        async with self.r.pipeline(transaction=False) as pipe:
            for race in races:
                pipe.xrevrange(keys.events_stream(self.hub.competition, race), "+", "-", count=1)
            lasts = await pipe.execute()
        newest = [(bus.parse_id(bus.entries(last)[0][0]), race)
                  for race, last in zip(races, lasts, strict=True) if last]
        return max(newest)[1] if newest else None

    async def follow(self, race: str) -> None:
        """Follow ``race`` (leaving the one followed before). Raises RedisError."""
        if self.sink is not None and self.sink.race == race:
            return
        await self.leave()
        self.sink = Sink(self, race)
        self.sub, _ = await self.hub.subscribe(self.sink, race)

    async def leave(self) -> None:
        if self.sub is not None:
            await self.hub.unsubscribe(self.sub)
        self.sub = None
        self.sink = None

    async def tick(self) -> None:
        async with self.lock:
            await self._tick()

    async def _tick(self) -> None:
        if not self.clients:
            await self.leave()  # nobody watches: the race need not be read
            return
        try:
            race = await self.pick()
            if race is not None and await self.hub.exists(self.hub.competition, race):
                await self.follow(race)
        except RedisError as exc:
            log.debug("rmonitor: cannot choose the race now: %s", exc)
        self.broadcast(heartbeat(self.sink.view if self.sink else None, now_us()))

    async def run(self) -> None:
        while True:
            await self.tick()
            await asyncio.sleep(TICK_S)

    def start(self) -> None:
        self.task = asyncio.create_task(self.run(), name="rmonitor")

    async def close(self) -> None:
        if self.task:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        await self.leave()
        for writer in list(self.clients):
            writer.transport.abort()
        self.clients.clear()
