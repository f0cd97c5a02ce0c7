"""A client written from docs/protocol.md alone (raw sockets, no icetime helpers) feeds a
different real race, Vancouver 2010 10000 m (Kramer, Skobrev), and follows it."""
from __future__ import annotations

import asyncio
import json
import re

import pytest
import websockets

from .conftest import SHARED_DATA, TOKENS

LONG_TRACK = SHARED_DATA / "long_track"
PASSAGE = re.compile(r"(\d+)m;((?:\d+:)?\d+\.\d\d)")

pytestmark = pytest.mark.skipif(not LONG_TRACK.exists(),
                                reason="../shared/data is absent (a user's clone has none)")


def passages(name: str) -> list[tuple[int, int]]:
    """(metres, µs) from the messy real files: BOM, CR-only line ends, glued columns."""
    text = (LONG_TRACK / name).read_bytes().decode("utf-8-sig")
    out = []
    for m, t in PASSAGE.findall(text):
        mins, _, rest = t.rpartition(":")
        secs, hund = rest.split(".")
        out.append((int(m), ((int(mins or 0) * 60 + int(secs)) * 100 + int(hund)) * 10_000))
    return out


async def send_lines(port, token, objs):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    replies = []
    for obj in [{"type": "hello", "token": token}, *objs]:
        writer.write(json.dumps(obj).encode() + b"\n")
        await writer.drain()
        replies.append(json.loads(await reader.readline()))
    writer.close()
    await writer.wait_closed()
    return replies


def race_inputs(skobrev, kramer):
    """The guns of pairs 1 and 2 and the finish loop's passings: Skobrev (transponder
    501) in pair 1, Kramer (502) in pair 2, as (guns, passings)."""
    base = 1_266_000_000_000_000  # any clock works: only differences count
    guns, loop = [], []
    for pair, (transponder, times) in enumerate((("501", skobrev), ("502", kramer)), start=1):
        zero = base + pair * 900_000_000
        guns.append({"type": "gun", "seq": pair, "race": "van10-m10000", "pair": pair, "t": zero})
        first_seq = len(loop) + 1
        loop += [{"type": "passing", "seq": first_seq + i, "transponder": transponder,
                  "t": zero + t} for i, (_, t) in enumerate(times)]
    return guns, loop


def fold(view, msg):
    """What a client written from docs/protocol.md does with one WebSocket message: a
    snapshot or a revision replaces the view; a passage or a finish writes its row, a
    finish places the skater in the classification."""
    if msg["type"] == "snapshot":
        return msg["view"]
    if msg["type"] != "event":
        return view
    ev = msg["event"]
    if ev["type"] == "revision":
        return ev["view"]
    if ev["type"] in ("passage", "finish"):
        view["results"][ev["bib"]]["passages"][ev["row"]["k"]] = ev["row"]
        if ev["type"] == "finish":
            view["results"][ev["bib"]]["final"] = ev["final"]
            place(view["classification"], ev)
    return view


def place(cls, ev):
    """A finish's ``ranked``, as docs/protocol.md says: insert at ``at``; behind her, the
    ``tied`` first keep their rank, the others go down one; at the head, ``behind``
    again from her. The whole ``classification`` when the event has it instead."""
    if "ranked" not in ev:
        cls.update(ev["classification"])
        return
    r = ev["ranked"]
    for col in ("rank", "t", "behind"):
        cls[col].insert(r["at"], r[col])
    cls["bib"].insert(r["at"], ev["bib"])
    for j in range(r["at"] + 1 + r["tied"], len(cls["rank"])):
        cls["rank"][j] += 1
    if r["at"] == 0:
        cls["behind"] = [t - r["t"] for t in cls["t"]]


async def test_a_docs_only_client_feeds_and_follows_a_real_10000m(stack):
    kramer = passages("kramer_vancouver2010_10000m_laps.csv")
    skobrev = passages("skobrev_vancouver2010_10000m_laps.csv")
    assert [m for m, _ in kramer] == list(range(400, 10001, 400)) == [m for m, _ in skobrev]
    start_list = {"type": "startlist", "seq": 1,
                  "skaters": [{"bib": "1", "name": "Ivan Skobrev", "nation": "RUS",
                               "transponders": ["501"]},
                              {"bib": "2", "name": "Sven Kramer", "nation": "NED",
                               "transponders": ["502"]}],
                  "races": [{"id": "van10-m10000", "name": "Men 10000 m", "distance": 10000,
                             "pairs": [{"pair": 1, "inner": "1"}, {"pair": 2, "outer": "2"}]}]}
    port = stack.settings.ingest_tcp_port
    replies = await send_lines(port, TOKENS["officials"], [start_list])
    assert replies[0]["ok"] and replies[1]["ok"], replies

    guns, loop = race_inputs(skobrev, kramer)

    async with websockets.connect(f"ws://127.0.0.1:{stack.settings.broadcast_ws_port}/") as ws:
        await ws.send(json.dumps({"op": "subscribe", "race": "van10-m10000", "protocol": 2}))
        first = json.loads(await ws.recv())
        assert first["type"] == "snapshot"
        view = first["view"]
        for gun, passings in ((guns[0], loop[:25]), (guns[1], loop[25:])):
            assert all(r["ok"] for r in await send_lines(port, TOKENS["gun"], [gun]))
            replies = await send_lines(port, TOKENS["finish-loop"], passings)
            assert all(r["ok"] and not r.get("duplicate") for r in replies)
        while not view or len(view["classification"]["bib"]) < 2:
            view = fold(view, json.loads(await asyncio.wait_for(ws.recv(), 10)))

    rows = {(bib, row["m"]): row for bib, res in view["results"].items()
            for row in res["passages"]}
    for m, t in skobrev:
        assert rows[("1", m)]["t"] == t and rows[("1", m)]["rank"] == 1
    for (m, t), (_, ts) in zip(kramer, skobrev, strict=True):
        assert rows[("2", m)]["t"] == t
        assert rows[("2", m)]["rank"] == (1 if t < ts else 2)
        assert rows[("2", m)]["gap_best"] == (0 if t < ts else t - ts)
    assert rows[("2", 10000)]["lap_time"] == kramer[-1][1] - kramer[-2][1]
    cls = view["classification"]
    assert cls["bib"] == ["2", "1"] and cls["rank"] == [1, 2]
    assert cls["t"] == [774_500_000, 782_070_000]  # 12:54.50 and 13:02.07
    assert cls["behind"] == [0, 7_570_000]
