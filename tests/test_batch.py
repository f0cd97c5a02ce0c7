"""Scoring publishes the inputs of one read together: each keeps its own verdict and
events, and a refused one in the middle holds back none of those after it."""
from __future__ import annotations

import json

from icetime import bus, keys
from icetime.keys import DEFAULT_COMPETITION as MAIN
from services.ingest.server import Ingest
from services.scoring.runner import ScoringRunner

from .conftest import make_settings

RACE = "ms"
STARTLIST = {"type": "startlist", "source": "officials", "rx_us": 1,
             "skaters": [{"bib": str(b), "name": f"Skater {b}", "transponders": [f"T{b}"]}
                         for b in (1, 2, 3)],
             "races": [{"id": RACE, "name": "Mass start", "kind": "mass_start", "laps": 4,
                        "skaters": ["1", "2", "3"]}]}


def passing(seq: int, transponder: str, t_s: float) -> dict:
    return {"type": "passing", "transponder": transponder, "t": int(t_s * 1e6),
            "source": "finish-loop", "seq": seq, "rx_us": 1}


async def script_calls(r) -> int:
    """Lua script calls Redis has run so far (the publish is one)."""
    stats = await r.info("commandstats")
    return sum(stats.get(f"cmdstat_{c}", {}).get("calls", 0) for c in ("evalsha", "eval"))


async def test_a_batch_with_refused_inputs_between_good_ones(redis_server, redis_client):
    raw = keys.raw_stream(MAIN)
    writer = bus.Bus(redis_client, MAIN)
    head = [await writer.append_input(STARTLIST),
            await writer.append_input({"type": "gun", "race": RACE, "t": 0,
                                       "source": "gun", "seq": 1, "rx_us": 1})]
    # One read of the raw log, in this order:
    inputs = [("A", passing(1, "T1", 60.0)),
              ("unknown chip", passing(2, "T99", 60.5)),
              ("no input", None),
              ("B", passing(3, "T2", 61.0)),
              ("dns of no bib", {"type": "decision", "race": RACE, "action": "dns",
                                 "bib": "404", "source": "officials", "seq": 1, "rx_us": 1}),
              ("C", passing(4, "T3", 61.5))]
    ids = {}
    for name, inp in inputs:
        if inp is None:  # what ingest never stores: refused by scoring, acknowledged
            ids[name] = bus.text(await redis_client.xadd(raw, {"x": b"no input here"}))
        else:
            ids[name] = (await writer.append_input(inp))[0]

    runner = ScoringRunner(make_settings(redis_server.url), redis_client)
    runner.flush_s = 60.0  # however slow the machine, only a judged input cuts a batch
    assert await runner.lease.take()
    await runner.ensure_group()
    await runner.rebuild()
    await redis_client.script_load(bus.PUBLISH)  # no NOSCRIPT-then-EVAL in the count
    before = await script_calls(redis_client)
    assert await runner.consume(">", None) == len(head) + len(inputs)
    # The start list and the gun, each judged, are published at once; then the three
    # passings and the raw entry up to the refused decision (judged) in one call, then C.
    assert await script_calls(redis_client) - before == 4

    ingest = Ingest(make_settings(redis_server.url), redis_client)
    verdicts = {name: await ingest.verdict(sid) for name, sid in ids.items()}
    assert {n: v["verdict"] for n, v in verdicts.items()} == {
        "A": "applied", "unknown chip": "refused", "no input": "refused", "B": "applied",
        "dns of no bib": "refused", "C": "applied"}
    assert "T99" in verdicts["unknown chip"]["reason"]
    assert "without its input" in verdicts["no input"]["reason"]
    assert "no bib '404'" in verdicts["dns of no bib"]["reason"]
    officials = [json.loads(f[b"v"]) for _, f in bus.entries(
        await redis_client.xrange(keys.officials_stream(MAIN)))]
    refused = [v["input"] for v in officials if v["verdict"] == "refused"]
    assert refused == [ids["unknown chip"], ids["no input"], ids["dns of no bib"]]

    events = [json.loads(f[b"e"]) for _, f in bus.entries(
        await redis_client.xrange(keys.events_stream(MAIN, RACE)))]
    after_gun = [(e["type"], e.get("input")) for e in events
                 if e["type"] in ("passage", "refused")]
    assert after_gun == [("passage", ids["A"]), ("passage", ids["B"]),
                         ("refused", ids["dns of no bib"]), ("passage", ids["C"])]
    assert bus.text(await redis_client.get(keys.scoring_progress(MAIN))) == ids["C"]
    pending = await redis_client.xpending(raw, keys.SCORING_GROUP)
    assert pending["pending"] == 0
