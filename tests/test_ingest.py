"""Ingest over real sockets with a real Redis: auth, validation, idempotency, rejects."""
from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from icetime import bus, keys
from icetime.feedclient import FeedClient, FeedRefused
from icetime.keys import DEFAULT_COMPETITION as MAIN

from .conftest import TOKENS, Stack, make_settings


async def tcp_lines(port, lines, read=None):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    out = []
    for line in lines:
        w.write(line if isinstance(line, bytes) else line.encode())
        await w.drain()
    for _ in range(read if read is not None else len(lines)):
        out.append(json.loads(await asyncio.wait_for(r.readline(), 5)))
    w.close()
    return out


async def raw_inputs(r):
    return [bus.unpack_input(f[b"d"]) for _, f in await r.xrange(keys.raw_stream(MAIN))]


async def test_tcp_feed_accepts_stores_and_dedupes(stack, redis_client):
    c = FeedClient("127.0.0.1", stack.settings.ingest_tcp_port, TOKENS["finish-loop"])
    hello = await c.connect()
    assert hello["source"] == "finish-loop" and hello["last_seq"] is None
    p = {"type": "passing", "seq": 1, "transponder": "4100051", "t": 1_700_000_000_000_000}
    first = await c.send(p)
    assert first["ok"] and "duplicate" not in first
    again = await c.send(p)
    assert again == {**first, "duplicate": True}
    await c.close()
    stored = await raw_inputs(redis_client)
    assert len(stored) == 1
    assert stored[0]["source"] == "finish-loop" and stored[0]["transponder"] == "4100051"
    assert stored[0]["rx_us"] > 0
    # A reconnecting source learns where it was.
    c2 = FeedClient("127.0.0.1", stack.settings.ingest_tcp_port, TOKENS["finish-loop"])
    assert (await c2.connect())["last_seq"] == 1
    await c2.close()
    stats = await redis_client.hgetall(keys.ingest_stats(MAIN))
    assert int(stats[b"accepted"]) == 1 and int(stats[b"duplicate"]) == 1


async def test_ingest_registers_its_competition_with_the_first_input(redis_server,
                                                                     redis_client):
    """Workers that score any competition find it in the registry (no scoring here: it
    would register the competition itself)."""
    st = Stack(make_settings(redis_server.url, competition_id="rink9"), redis_server.url)
    try:
        await st.start("ingest")
        assert await redis_client.smembers(keys.COMPETITIONS) == set()  # nothing written
        c = FeedClient("127.0.0.1", st.settings.ingest_tcp_port, TOKENS["finish-loop"])
        await c.connect()
        assert (await c.send({"type": "passing", "seq": 1, "transponder": "41",
                              "t": 1_700_000_000_000_000}))["ok"]
        await c.close()
        assert await redis_client.smembers(keys.COMPETITIONS) == {b"rink9"}
        assert await redis_client.xlen(keys.raw_stream("rink9")) == 1
    finally:
        await st.close()


async def test_a_reused_seq_with_other_content_is_refused_and_a_session_numbers_anew(
        stack, redis_client):
    """A gun sent again (its reply was lost) is a duplicate; another gun under the same seq
    is refused as a conflict, never acknowledged as a duplicate; the same seq in a new
    session is a new input, and a hello naming the session learns its own last seq."""
    c = FeedClient("127.0.0.1", stack.settings.ingest_tcp_port, TOKENS["gun"])
    await c.connect()
    gun = {"type": "gun", "seq": 1, "race": "r", "pair": 1, "t": 1_700_000_000_000_000}
    first = await c.send({**gun, "sent_us": 1})
    assert (await c.send({**gun, "sent_us": 2})) == {**first, "duplicate": True}
    other = await c.send({**gun, "pair": 2, "t": 1_700_000_090_000_000})
    assert other == {
        "ok": False, "seq": 1, "conflict": True,
        "error": f"seq 1 was already used by source 'gun' for another input (stored as "
                 f"{first['id']}); a new input needs a new seq, or a new session"}
    again = await c.send({**gun, "pair": 2, "session": "replay-2", "t": 1_700_000_090_000_000})
    assert again["ok"] and "duplicate" not in again
    await c.close()
    c2 = FeedClient("127.0.0.1", stack.settings.ingest_tcp_port, TOKENS["gun"])
    c2.hello_extra = {"session": "replay-2"}
    assert (await c2.connect())["last_seq"] == 1
    await c2.close()
    stored = await raw_inputs(redis_client)
    assert [(x["pair"], x.get("session")) for x in stored] == [(1, None), (2, "replay-2")]
    stats = await redis_client.hgetall(keys.ingest_stats(MAIN))
    assert {k: int(stats[k.encode()]) for k in ("accepted", "duplicate", "conflict",
                                                "rejected")} == {
        "accepted": 2, "duplicate": 1, "conflict": 1, "rejected": 1}
    [(_, reject)] = await redis_client.xrange(keys.rejects_stream(MAIN))
    assert reject[b"reason"].decode() == other["error"]


async def test_garbage_gets_clear_errors_and_loses_nothing(stack, redis_client):
    port = stack.settings.ingest_tcp_port
    hello = json.dumps({"type": "hello", "token": TOKENS["finish-loop"]}) + "\n"
    good = [json.dumps({"type": "passing", "seq": n, "transponder": "7", "t": 10**15 + n}) + "\n"
            for n in (1, 2)]
    lines = [hello, good[0], "\x8e\x02\x33garbage\xff\n".encode("latin-1").decode("latin-1"),
             "{not json\n", '{"type":"passing","seq":3,"transponder":"7","t":-5}\n',
             '{"type":"teleport","seq":4}\n', '["a list"]\n',
             '{"type":"passing","seq":5,"transponder":"7","t":1,"source":"gun"}\n', good[1]]
    replies = await tcp_lines(port, lines)
    assert replies[0]["ok"] and replies[1]["ok"] and replies[-1]["ok"]
    errors = [x["error"] for x in replies[2:-1]]
    assert all(not x["ok"] for x in replies[2:-1])
    assert errors[0].startswith("not JSON") and errors[1].startswith("not JSON")
    assert "'t' out of range" in errors[2]
    assert "unknown type 'teleport'" in errors[3]
    assert errors[4] == "an input must be a JSON object"
    assert "not 'gun'" in errors[5]
    assert [i["seq"] for i in await raw_inputs(redis_client)] == [1, 2]
    rejects = await redis_client.xrange(keys.rejects_stream(MAIN))
    assert len(rejects) == 6
    assert rejects[0][1][b"raw"].startswith(b"\xc2\x8e") or b"garbage" in rejects[0][1][b"raw"]
    assert int((await redis_client.hgetall(keys.ingest_stats(MAIN)))[b"rejected"]) == 6
    # The service is still up and serving.
    c = FeedClient("127.0.0.1", port, TOKENS["gun"])
    await c.connect()
    assert (await c.send({"type": "gun", "race": "r", "pair": 1, "t": 5, "seq": 1}))["ok"]
    await c.close()


async def test_unauthenticated_tcp_is_refused(stack, redis_client):
    replies = await tcp_lines(stack.settings.ingest_tcp_port,
                              ['{"type":"passing","seq":1,"transponder":"1","t":1}\n'])
    assert not replies[0]["ok"] and "token" in replies[0]["error"]
    with pytest.raises(FeedRefused):
        await FeedClient("127.0.0.1", stack.settings.ingest_tcp_port, "wrong").connect()
    assert await redis_client.xlen(keys.raw_stream(MAIN)) == 0


async def test_overlong_line_is_refused_and_the_stream_carries_on(stack, redis_client):
    from services.ingest.feed import MAX_LINE
    port = stack.settings.ingest_tcp_port
    hello = json.dumps({"type": "hello", "token": TOKENS["gun"]}) + "\n"
    big = b"x" * (MAX_LINE + 10) + b"\n"
    gun = json.dumps({"type": "gun", "race": "r", "pair": 1, "t": 5, "seq": 9}) + "\n"
    replies = await tcp_lines(port, [hello, big, gun], read=3)
    assert replies[1] == {"ok": False, "error": f"line longer than {MAX_LINE} bytes"}
    assert replies[2]["ok"]


async def test_http_feed_object_array_ndjson_and_auth(stack, redis_client):
    url = f"http://127.0.0.1:{stack.settings.ingest_http_port}"
    auth = {"Authorization": f"Bearer {TOKENS['finish-loop']}"}
    p = lambda n: {"type": "passing", "seq": n, "transponder": "9", "t": 10**15 + n}  # noqa: E731
    async with aiohttp.ClientSession() as s:
        async with s.get(url + "/api/stats") as resp:
            before = await resp.json()  # nothing has happened: every counter is there, at 0
        assert (before["accepted"], before["duplicate"], before["rejected"]) == (0, 0, 0)
        async with s.post(url + "/feed", json=p(1)) as resp:
            assert resp.status == 401
        # The scheme's name is case-insensitive (RFC 9110 §11.1).
        lower = {"Authorization": f"bearer {TOKENS['finish-loop']}"}
        async with s.post(url + "/feed", json=p(1), headers=lower) as resp:
            assert (await resp.json())["ok"]
        async with s.post(url + "/feed", json=[p(2), p(1), {"type": "x"}], headers=auth) as resp:
            res = await resp.json()
            assert [r["ok"] for r in res] == [True, True, False] and res[1]["duplicate"]
        async with s.post(url + "/feed", json=p(2), headers=auth) as resp:
            assert (await resp.json())["duplicate"]
        body = "\n".join(json.dumps(p(n)) for n in (3, 4)) + "\n{oops\n"
        async with s.post(url + "/feed", data=body, headers=auth) as resp:
            assert [r["ok"] for r in await resp.json()] == [True, True, False]
        bad_sl = {"skaters": [{"bib": "1", "name": "A"}], "races": [
            {"id": "r", "distance": 1000, "pairs": [{"pair": 1, "inner": "2"}]}]}
        async with s.post(url + "/api/startlist", json=bad_sl, headers=auth) as resp:
            assert resp.status == 400
            assert (await resp.json())["error"] == \
                "start list: races[0].pairs[0].inner: bib 2 is not in 'skaters'"
        async with s.get(url + "/api/stats") as resp:
            stats = await resp.json()
    assert [i["seq"] for i in await raw_inputs(redis_client)] == [1, 2, 3, 4]
    assert stats["accepted"] == 4 and stats["duplicate"] == 2 and stats["rejected"] == 3


async def test_a_typo_is_named_and_a_start_list_keeps_its_rounds(stack, redis_client):
    url = f"http://127.0.0.1:{stack.settings.ingest_http_port}"
    auth = {"Authorization": f"Bearer {TOKENS['officials']}"}
    typo = {"type": "decision", "seq": 7, "race": "r", "action": "dq", "bib": "1", "reasn": "x"}
    sl = {"skaters": [{"bib": "1", "name": "A"}], "races": [],
          "events": [{"id": "w500", "distance": 500, "rounds": [{"name": "Final A"}]}],
          "standings_before": {"Women 500 m": {"1": 500}}}
    async with aiohttp.ClientSession() as s:
        async with s.post(url + "/feed", json=typo, headers=auth) as resp:
            assert await resp.json() == {
                "ok": False, "seq": 7,
                "error": "unknown field 'reasn' in a decision input (did you mean 'reason'?)"}
        async with s.post(url + "/api/startlist", json=sl, headers=auth) as resp:
            assert (await resp.json())["ok"]
    [stored] = await raw_inputs(redis_client)
    assert stored["events"] == sl["events"] and stored["standings_before"] == sl[
        "standings_before"]
