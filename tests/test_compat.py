"""Protocol 1 (the old field names) served beside protocol 2 for one version.

The renames are checked against the test's own reading of docs/protocol.md ("Protocol
versions"), not against services/broadcast/compat.py: every event and view of every
fixture, translated to protocol 1 and read back with :func:`from_v1`, is unchanged; and
a protocol-1 and a protocol-2 client following the same race over real WebSockets
(one of them resuming) end with the same results, each in its own names.
"""
from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import websockets

from icetime import bus, keys
from icetime.cli import replay
from icetime.keys import DEFAULT_COMPETITION as MAIN
from icetime.replay import load_fixture, script_inputs
from services.broadcast.compat import Legacy, to_v1
from services.scoring.competition import Competition

from .conftest import feed, race_view
from .test_pipeline import Follower, load_startlist

FIXTURES = Path(__file__).parents[1] / "fixtures"
#: Names only protocol 2 has: none may reach a protocol-1 client.
NEW_NAMES = ("lap_time", "lap_number", "crossings", "sprint_points", "sprint_points_table")


def renamed(d: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    return {names.get(k, k): v for k, v in d.items()}


def from_v1(x: Any) -> Any:
    """Protocol 1 back to protocol 2, by the shape of each object (docs/protocol.md)."""
    if isinstance(x, list):
        return [from_v1(v) for v in x]
    if not isinstance(x, dict):
        return x
    out = {k: from_v1(v) for k, v in x.items()}
    if {"k", "m", "t", "lap"} <= x.keys():  # a passage row
        pack = "lap_t" in x
        return renamed(out, {"lap": "lap_number", "lap_t": "lap_time"} if pack
                       else {"lap": "lap_time"})
    if "laps_to_go" in x:  # a pack race's state
        return renamed(out, {"laps": "crossings", "points": "sprint_points"})
    if {"sprint", "bibs"} <= x.keys():
        return renamed(out, {"lap": "lap_number", "points": "sprint_points"})
    if {"bibs", "gap_us"} <= x.keys():  # a breakaway
        return renamed(out, {"lap": "lap_number"})
    if {"rank", "t", "behind"} <= x.keys():  # a classification, or a finisher's place in it
        return renamed(out, {"points": "sprint_points"})
    if "sprint_laps" in x:  # a pack race's race entry
        return renamed(out, {"points": "sprint_points_table"})
    if {"attempt", "reason", "order"} <= x.keys():  # a voided attempt
        return renamed(out, {"laps": "crossings"})
    return out


def v1_fold(view: dict[str, Any] | None, ev: dict[str, Any]) -> dict[str, Any] | None:
    """A protocol-1 client's fold (the pages before protocol 2), for pair and pack races:
    the pack state and the classification replaced wholesale from each event."""
    if ev["type"] == "revision":
        return copy.deepcopy(ev["view"])
    if view is None or ev["type"] == "refused":
        return view
    if "pack" in ev:
        view["pack"] = ev["pack"]
    if ev["type"] == "pair_start":
        view["current_pair"] = ev["pair"]
        view["on_ice"][str(ev["pair"])] = {k: ev[k] for k in
                                           ("pair", "attempt", "clock_origin_us", "rate")}
    elif ev["type"] == "split":
        result = view["results"][ev["bib"]]
        result["splits"] = sorted([s for s in result["splits"] if s["m"] != ev["split"]["m"]]
                                  + [ev["split"]], key=lambda s: s["m"])
    elif ev["type"] in ("passage", "finish"):
        view["stories"] = (view["stories"] + ev["stories"])[-50:]
        result = view["results"][ev["bib"]]
        result["passages"][ev["row"]["k"]] = ev["row"]
        if ev["type"] == "finish":
            result["final"] = ev["final"]
            view["classification"] = ev["classification"]
            if ev.get("pair_done"):
                view["on_ice"].pop(str(ev["pair"]), None)
    return view


def old_names_only(text: str) -> bool:
    return not any(f'"{name}"' in text for name in NEW_NAMES)


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.json")), ids=lambda p: p.stem)
def test_every_event_and_view_of_every_fixture_in_protocol_1(path):
    doc = load_fixture(path)
    comp = Competition()
    streams: dict[str, list[dict[str, Any]]] = {}
    for n, item in enumerate([None, *script_inputs(doc)]):
        inp = {"type": "startlist", **doc["startlist"]} if item is None else \
            {**item.inp, "source": item.source, "rx_us": item.at_us}
        for race, events in feed(comp, f"in-{n}", inp).items():
            streams.setdefault(race, []).extend(json.loads(json.dumps(events)))
    assert streams
    for race, events in streams.items():
        for ev in events:
            frame = {"type": "event", "race": race, "epoch": "e", "offset": "1-0",
                     "broadcast_us": 1, "event": ev}
            before = copy.deepcopy(frame)
            v1 = to_v1(frame)
            assert frame == before, "to_v1 changed its input"
            assert old_names_only(json.dumps(v1)), (race, ev["type"])
            assert from_v1(v1) == frame
        snap = {"type": "snapshot", "race": race, "epoch": "e", "offset": "1-0",
                "view": json.loads(json.dumps(comp.view(race)))}
        v1 = to_v1(snap)
        assert old_names_only(json.dumps(v1)) and from_v1(v1) == snap
    for other in ({"type": "time", "c": 1, "s": 2}, {"type": "error", "error": "x"},
                  {"type": "snapshot", "race": "r", "epoch": "", "offset": "0-0", "view": None},
                  {"type": "resumed", "race": "r", "epoch": "e", "offset": "1-0"}):
        assert to_v1(other) == other


def assert_whole(old: dict[str, Any]) -> None:
    """A protocol-1 event: old names, a pack crossing with the whole pack state, a
    finish with the whole classification."""
    assert old_names_only(json.dumps(old)), old["type"]
    if old["type"] in ("passage", "finish") and "pack" in old:
        assert len(old["pack"]["order"]) == len(old["pack"]["laps"])
    assert old["type"] != "finish" or ("classification" in old and "ranked" not in old)


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.json")), ids=lambda p: p.stem)
def test_a_protocol_1_fold_of_the_race_fold_is_the_engine_view(path):
    """Events carry what changed; protocol 1 took the pack state and the classification
    whole from each event. The race's fold (one per race on a node) gives them whole,
    and a protocol-1 client replacing them wholesale ends with the engine's view, at the
    midpoint and at the end, also when it joined from the fold's snapshot midway."""
    doc = load_fixture(path)
    if doc["script"].get("format") == "marathon":
        pytest.skip("a kind protocol 1 never had")
    comp = Competition()
    items = [None, *script_inputs(doc)]
    folds: dict[str, Legacy] = {}
    clients: dict[str, Any] = {}
    late: dict[str, Any] = {}
    n_events = 0
    for n, item in enumerate(items):
        inp = {"type": "startlist", **doc["startlist"]} if item is None else \
            {**item.inp, "source": item.source, "rx_us": item.at_us}
        for race, events in feed(comp, f"in-{n}", inp).items():
            fold = folds.setdefault(race, Legacy(None, (0, 0)))
            for ev in json.loads(json.dumps(events)):
                n_events += 1
                old = json.loads(json.dumps(fold.event((n_events, 0), ev)))
                assert_whole(old)
                clients[race] = v1_fold(clients.get(race), old)
                if race in late:
                    late[race] = v1_fold(late[race], old)
        if n == len(items) // 2:
            for race, fold in folds.items():
                assert from_v1(clients[race]) == json.loads(json.dumps(comp.view(race)))
                snap = json.loads(fold.snapshot(race, "e"))
                assert snap["offset"] == f"{fold.offset[0]}-{fold.offset[1]}"
                late[race] = snap["view"]
    assert folds
    for race in folds:
        assert from_v1(clients[race]) == json.loads(json.dumps(comp.view(race))), race
        if race in late:
            assert from_v1(late[race]) == json.loads(json.dumps(comp.view(race))), race


def test_protocol_1_names_are_the_old_ones():
    """A mass start's first sprint and its rows as protocol 1 named them."""
    doc = load_fixture(FIXTURES / "beijing2023_w_massstart.json")
    comp = Competition()
    feed(comp, "sl", {"type": "startlist", **doc["startlist"]})
    for n, item in enumerate(script_inputs(doc)):
        feed(comp, f"in-{n}", {**item.inp, "source": item.source, "rx_us": item.at_us})
    view = comp.view("bj23-wms")
    old = to_v1({"type": "snapshot", "race": "bj23-wms", "view": view})["view"]
    row, new_row = old["results"]["1"]["passages"][4], view["results"]["1"]["passages"][4]
    assert (row["lap"], row["lap_t"]) == (new_row["lap_number"], new_row["lap_time"]) == \
        (5, new_row["t"] - view["results"]["1"]["passages"][3]["t"])
    bibs = view["pack"]["sprints"][0]["bibs"]
    assert old["pack"]["sprints"][0] == {"sprint": 1, "lap": 4, "bibs": bibs,
                                         "points": [3, 2, 1]}
    assert old["pack"]["laps"] == view["pack"]["crossings"]
    assert old["pack"]["points"] == view["pack"]["sprint_points"]
    assert old["classification"]["points"] == view["classification"]["sprint_points"]
    assert old["race"]["points"] == view["race"]["sprint_points_table"]


async def health(stack) -> dict[str, Any]:
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{stack.http}/api/health") as resp:
            body: dict[str, Any] = await resp.json()
            return body


def pack_done(f):
    return bool(f.view) and f.view["pack"]["laps_to_go"] == 0 and f.view["pack"]["run"] is None


def pairs_done(f):
    return bool(f.view) and len(f.view["classification"]["bib"]) >= 20


@pytest.mark.parametrize(("fixture", "race", "done", "speed"), [
    ("beijing2023_w1000a", "bj23-w1000a", pairs_done, 400.0),
    ("beijing2023_w_massstart", "bj23-wms", pack_done, 300.0),
], ids=["pairs", "mass-start"])
async def test_a_v1_and_a_v2_client_get_the_same_race_in_their_own_names(
        stack, redis_client, fixture, race, done, speed):
    doc = load_fixture(FIXTURES / f"{fixture}.json")
    await load_startlist(stack, doc)
    new = Follower(stack.ws_url, race=race)
    following = asyncio.create_task(new.run(done, timeout=60))
    await asyncio.sleep(0.2)
    racing = asyncio.create_task(replay(doc, stack.settings, speed=speed, announce=False))
    while len(new.events) < 10:
        await asyncio.sleep(0.02)
    # Only protocol-2 clients so far: nothing is translated.
    assert (await health(stack))["broadcast"]["races"][race]["frames_v1"] == 0
    # A client from the old docs joins mid-race, follows a while, loses the network...
    old = Follower(stack.ws_url, race=race, protocol=None, fold=v1_fold)
    # Ten events published after it joined (the stored snapshot may stand behind the
    # stream's end: what came before reaches it as catch-up, not on the live path, and
    # so may an event published while its subscribe is under way).
    end = bus.entries(await redis_client.xrevrange(keys.events_stream(MAIN, race), count=1))
    joined = bus.parse_id(end[0][0]) if end else (0, 0)
    await old.run(lambda s: sum(bus.parse_id(e["offset"]) > joined for e in s.events) >= 10)
    await racing
    await following
    # ...and resumes where it was once the race is over. Its missed events carry the
    # pack state and classification as they are now (latest state wins): it is done
    # once it has the stream's last event.
    end = bus.entries(await redis_client.xrevrange(keys.events_stream(MAIN, race), count=1))
    await old.run(lambda s: s.offset == end[0][0], resume=True)
    kinds = [m["type"] for m in old.frames]
    assert kinds.count("snapshot") == 1 and "resumed" in kinds
    offsets = [e["offset"] for e in old.events]
    assert len(offsets) == len(set(offsets))
    stream = [i.decode() for i, _ in await redis_client.xrange(keys.events_stream(MAIN, race))]
    assert offsets == stream[stream.index(offsets[0]):], "a gap or a duplicate"
    # Each in its own names, the same results: the v2 fold is the engine's view.
    assert new.view == await race_view(redis_client, race)
    assert all(old_names_only(json.dumps(m)) for m in old.frames)
    assert not any(old_names_only(json.dumps(m)) for m in new.frames if m["type"] == "event"
                   and m["event"]["type"] in ("passage", "finish"))
    assert from_v1(old.view) == new.view
    stats = (await health(stack))["broadcast"]["races"][race]
    assert 5 <= stats["frames_v1"] < stats["frames"]


async def test_a_subscribe_with_an_unknown_protocol_is_refused(stack):
    async with websockets.connect(stack.ws_url) as ws:
        for bad in (3, "2", True, 2.0):
            await ws.send(json.dumps({"op": "subscribe", "race": "r", "protocol": bad}))
            reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert reply["type"] == "error" and "protocol" in reply["error"], bad
