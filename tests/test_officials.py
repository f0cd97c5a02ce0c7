"""Roles, verdicts and the officials' stream, over real sockets with a real Redis:
every role against every input type and endpoint, a refused input that does not poison
its race, the feed that waits for scoring's verdict, idempotency, token rotation."""
from __future__ import annotations

import asyncio
import json

import aiohttp
import msgspec
import pytest

from icetime import bus, keys
from icetime.feedclient import FeedClient
from icetime.keys import DEFAULT_COMPETITION as MAIN
from icetime.messages import RaceEvent
from icetime.settings import ROLE_INPUTS
from icetime.settings import load as load_settings

from .conftest import ROLES, TOKENS, Stack, write_venue_config
from .test_pipeline import RACE, load_startlist

#: One valid input of each type (the start list is the fixture's, loaded again).
INPUTS = {
    "passing": {"type": "passing", "transponder": "4100011", "t": 10**15, "seq": 1},
    "clock": {"type": "clock", "offset_us": 0},
    "gun": {"type": "gun", "race": RACE, "pair": 1, "t": 10**15},
    "call": {"type": "call", "race": RACE, "pair": 2},
    # Bib 1 skates in pair 1, started by the gun above: a time counts from its gun.
    "finish_time": {"type": "finish_time", "race": RACE, "bib": "1", "time_us": 75_000_000},
    "decision": {"type": "decision", "race": RACE, "action": "dns", "bib": "4"},
}
DESK_ENDPOINTS = ("/api/desk/races", f"/api/desk/race?race={RACE}", "/api/desk/reads",
                  "/api/desk/audit")


def auth(source: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[source]}"}


async def post(s, url, body, source, **params):
    async with s.post(url, json=body, headers=auth(source), params=params) as resp:
        return resp.status, await resp.json()


async def events(r, race=RACE):
    return [json.loads(f[b"e"]) for _, f in await r.xrange(keys.events_stream(MAIN, race))]


async def verdicts(r):
    return [json.loads(f[b"v"]) for _, f in await r.xrange(keys.officials_stream(MAIN))]


async def test_each_role_sends_only_its_own_inputs_and_opens_only_its_endpoints(
        stack, redis_client):
    from .test_pipeline import FIXTURE
    base = f"http://127.0.0.1:{stack.settings.ingest_http_port}"
    await load_startlist(stack)
    inputs = {**INPUTS, "startlist": {"type": "startlist", **FIXTURE["startlist"]}}
    refused = 0
    async with aiohttp.ClientSession() as s:
        for source, role in ROLES.items():
            for kind, body in inputs.items():
                _, reply = await post(s, base + "/feed", body, source)
                if kind in ROLE_INPUTS[role]:
                    assert reply["ok"], (role, kind, reply)
                else:
                    refused += 1
                    assert not reply["ok"], (role, kind)
                    assert reply["error"].startswith(
                        f"role '{role}' (source '{source}') may not send a '{kind}' input")
            status, _ = await post(s, base + "/api/startlist", FIXTURE["startlist"], source)
            assert status == (200 if role in ("loader", "admin") else 400), role
            refused += role not in ("loader", "admin")
            for path in DESK_ENDPOINTS:
                async with s.get(base + path, headers=auth(source)) as resp:
                    assert resp.status == (200 if role in ("referee", "admin") else 403), \
                        (role, path)
                    if resp.status == 403:
                        assert f"role '{role}'" in (await resp.json())["error"]
            async with s.get(base + "/api/whoami", headers=auth(source)) as resp:
                assert (await resp.json())["role"] == role
        for path in (*DESK_ENDPOINTS, "/api/whoami"):
            async with s.get(base + path) as resp:
                assert resp.status == 401, path
        async with s.get(base + "/api/stats") as resp:
            assert (await resp.json())["refused_role"] == refused


async def test_a_refused_gun_is_published_and_does_not_block_the_race(stack, redis_client):
    """The issue's wall: a gun for a pair that does not exist. With the wait mode it is
    answered with scoring's refusal, not "ok"; the refusal is on the race's stream and
    the officials' stream; the decisions and photo times after it still apply."""
    base = f"http://127.0.0.1:{stack.settings.ingest_http_port}/feed"
    await load_startlist(stack)
    async with aiohttp.ClientSession() as s:
        _, gun = await post(s, base, {"type": "gun", "race": RACE, "pair": 99, "t": 10**15},
                            "officials", wait="1")
        assert gun["ok"] is False and gun["verdict"] == "refused" and gun["stored"]
        assert "no pair 99" in gun["error"]
        _, good = await post(s, base, {"type": "gun", "race": RACE, "pair": 1, "t": 10**15},
                             "officials", wait="1")
        assert good["verdict"] == "applied"
        _, early = await post(s, base, {"type": "finish_time", "race": RACE, "bib": "3",
                                        "time_us": 76_205_000}, "photo-finish", wait="1")
        assert early["ok"] is False and early["verdict"] == "refused"
        assert early["error"] == (f"refused by scoring: race {RACE}: pair 2 of bib 3 has no "
                                  "gun yet: an official time counts from its pair's gun")
        _, dq = await post(s, base, {"type": "decision", "race": RACE, "action": "dq",
                                     "bib": "1", "reason": "false start"}, "referee", wait="1")
        assert dq == {"ok": True, "id": dq["id"], "seq": None, "verdict": "applied"}
        _, photo = await post(s, base, {"type": "finish_time", "race": RACE, "bib": "2",
                                        "time_us": 76_205_000}, "photo-finish", wait="true")
        assert photo["ok"] and photo["verdict"] == "applied"
        _, unknown = await post(s, base, {"type": "decision", "race": "nope",
                                          "action": "official"}, "referee", wait="1")
        assert unknown["verdict"] == "refused" and "unknown race 'nope'" in unknown["error"]
        # With wait=0, "ok" means stored: said, and nothing more.
        _, quick = await post(s, base, {"type": "decision", "race": RACE, "action": "dns",
                                        "bib": "404"}, "referee", wait="0")
        assert quick["ok"] and "verdict" not in quick
    evs = await events(redis_client)
    refusals = [e for e in evs if e["type"] == "refused"]
    assert [(e["input"], e["input_type"], e["source"]) for e in refusals][0] == \
        (gun["id"], "gun", "officials")
    assert "no pair 99" in refusals[0]["reason"]
    msgspec.convert(refusals[0], RaceEvent)  # as docs/schema/race-event.json says
    revision = [e for e in evs if e["type"] == "revision"][-1]
    assert revision["view"]["results"]["1"]["status"] == "DQ"
    # The snapshot still folds: a refused event changes nothing.
    got = {v["input"]: v for v in await verdicts(redis_client)}
    assert got[gun["id"]]["verdict"] == "refused" and got[dq["id"]]["verdict"] == "applied"
    assert got[dq["id"]]["source"] == "referee"
    assert got[dq["id"]]["input_fields"] == {"race": RACE, "action": "dq", "bib": "1",
                                             "reason": "false start"}
    assert got[unknown["id"]]["verdict"] == "refused"
    for _ in range(200):  # the quick one is judged too, after its reply
        got = {v["input"]: v for v in await verdicts(redis_client)}
        if quick["id"] in got:
            break
        await asyncio.sleep(0.02)
    assert got[quick["id"]]["verdict"] == "refused" and "no bib '404'" in \
        got[quick["id"]]["reason"]


async def test_ok_is_never_said_of_what_scoring_refuses(stack, redis_client):
    """People's inputs wait for the verdict by default; a read nobody can own is refused
    to a sender who waits; a passing without ``seq`` is refused at once."""
    base = f"http://127.0.0.1:{stack.settings.ingest_http_port}/feed"
    await load_startlist(stack)
    gun = {"type": "gun", "race": RACE, "pair": 99, "t": 10**15}
    async with aiohttp.ClientSession() as s:
        _, bad = await post(s, base, gun, "gun")  # no ?wait: a person's input waits
        assert bad["ok"] is False and bad["verdict"] == "refused" and bad["stored"]
        assert "no pair 99" in bad["error"]
        _, stored = await post(s, base, {**gun, "pair": 98}, "gun", wait="0")
        assert stored["ok"] is True and "verdict" not in stored  # the old answer, asked for
        _, good = await post(s, base, {**gun, "pair": 1}, "gun")
        assert good["ok"] is True and good["verdict"] == "applied"
        read = {"type": "passing", "transponder": "9999999", "t": 10**15 + 20_000_000,
                "seq": 1}
        _, unknown = await post(s, base, read, "finish-loop", wait="1")
        assert unknown["ok"] is False and unknown["verdict"] == "refused"
        assert "transponder 9999999 is on no skater" in unknown["error"]
        _, quick = await post(s, base, {**read, "seq": 2}, "finish-loop")  # decoders: no wait
        assert quick["ok"] is True and "verdict" not in quick
        _, known = await post(s, base, {**read, "transponder": "4100011", "seq": 3},
                              "finish-loop", wait="1")
        assert known["ok"] is True and known["verdict"] == "applied"
        _, noseq = await post(s, base, {k: v for k, v in read.items() if k != "seq"},
                              "finish-loop")
        assert noseq["ok"] is False and noseq["error"].startswith("a passing needs 'seq'")
    c = FeedClient("127.0.0.1", stack.settings.ingest_tcp_port, TOKENS["finish-loop"])
    reply = await c.send({"type": "passing", "transponder": "4100011", "t": 10**15})
    assert reply["ok"] is False and reply["error"].startswith("a passing needs 'seq'")
    await c.close()
    got = {v["input"]: v for v in await verdicts(redis_client)}
    assert got[unknown["id"]]["verdict"] == "refused" and got[unknown["id"]]["type"] == \
        "passing"
    assert known["id"] not in got  # an applied read has no entry: the hot path
    for _ in range(200):  # scoring writes its counters once a second
        stats = {k.decode(): int(v) for k, v in
                 (await redis_client.hgetall(keys.scoring_stats(MAIN))).items()}
        if stats.get("unknown_transponder") == 2:
            break
        await asyncio.sleep(0.02)
    # The bad gun and the one sent without waiting; the unknown reads are not counted.
    assert (stats["unknown_transponder"], stats.get("refused")) == (2, 2)


async def test_a_double_click_decides_once(stack, redis_client):
    base = f"http://127.0.0.1:{stack.settings.ingest_http_port}/feed"
    await load_startlist(stack)
    dq = {"type": "decision", "race": RACE, "action": "dq", "bib": "5"}
    async with aiohttp.ClientSession() as s:
        _, first = await post(s, base, dq, "referee", wait="1")
        _, second = await post(s, base, dq, "referee", wait="1")
        assert first["ok"] and second == {**first, "duplicate": True}
        # An explicit key: the same key is the same input, another key another input.
        keyed = {**auth("referee"), "Idempotency-Key": "desk-1"}
        ids = []
        for key in ("desk-1", "desk-1", "desk-2"):
            async with s.post(base, json={**dq, "action": "reinstate"},
                              headers={**keyed, "Idempotency-Key": key}) as resp:
                ids.append((await resp.json())["id"])
        assert ids[0] == ids[1] != ids[2]
        # Undone and sent again at once: a new decision, applied; its double click is not.
        undo = {"type": "decision", "race": RACE, "action": "void", "target": first["id"]}
        _, voided = await post(s, base, undo, "referee", wait="1")
        _, clicked = await post(s, base, undo, "referee", wait="1")
        assert voided["verdict"] == "applied" and clicked == {**voided, "duplicate": True}
        _, again = await post(s, base, dq, "referee", wait="1")
        assert again["verdict"] == "applied" and "duplicate" not in again, again
        _, twice = await post(s, base, dq, "referee", wait="1")
        assert twice == {**again, "duplicate": True}
        # With its own seq: undone and sent again (a new seq) is applied; the same seq
        # re-delivered, after its undo too, stays the duplicate of the first.
        _, numbered = await post(s, base, {**dq, "bib": "6", "seq": 1}, "referee", wait="1")
        _, undone = await post(s, base, {**undo, "target": numbered["id"]}, "referee",
                               wait="1")
        assert (numbered["verdict"], undone["verdict"]) == ("applied", "applied")
        _, resent = await post(s, base, {**dq, "bib": "6", "seq": 2}, "referee", wait="1")
        assert resent["verdict"] == "applied" and resent["id"] != numbered["id"], resent
        _, redelivered = await post(s, base, {**dq, "bib": "6", "seq": 1}, "referee",
                                    wait="1")
        assert redelivered == {**numbered, "duplicate": True}
    raw = [bus.unpack_input(f[b"d"]) for _, f in await redis_client.xrange(keys.raw_stream(MAIN))]
    assert [i.get("action") for i in raw if i["type"] == "decision"] == \
        ["dq", "reinstate", "reinstate", "void", "dq", "dq", "void", "dq"]


async def test_a_tcp_sender_may_wait_for_the_verdict(stack, redis_client):
    await load_startlist(stack)
    c = FeedClient("127.0.0.1", stack.settings.ingest_tcp_port, TOKENS["gun"], wait=True)
    hello = await c.connect()
    assert hello["wait"] is True and hello["role"] == "gun"
    bad = await c.send({"type": "call", "race": RACE, "pair": 77, "seq": 1})
    assert bad["verdict"] == "refused" and "cannot call pair 77" in bad["error"]
    good = await c.send({"type": "call", "race": RACE, "pair": 2, "seq": 2})
    assert good["ok"] and good["verdict"] == "applied"
    await c.close()


@pytest.mark.parametrize("transport", ["http", "tcp"])
async def test_a_token_is_rotated_without_a_restart(redis_server, tmp_path, transport):
    path = write_venue_config(tmp_path)
    settings = load_settings(path)
    st = Stack(settings, redis_server.url)
    await st.start("ingest")
    url = f"http://127.0.0.1:{st.settings.ingest_http_port}/feed"
    gun = {"type": "gun", "race": "r", "pair": 1, "t": 5}
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1",
                                                       st.settings.ingest_tcp_port)
        writer.write(json.dumps({"type": "hello", "token": TOKENS["gun"]}).encode() + b"\n")
        assert json.loads(await reader.readline())["ok"]
        path.write_text(path.read_text().replace('token = "t-gun"', 'token = "t-gun-2"'))
        async with aiohttp.ClientSession() as s:
            for _ in range(100):  # checked once a second
                async with s.post(url, json=gun, headers={"Authorization":
                                                          "Bearer t-gun-2"}) as resp:
                    status, reply = resp.status, await resp.json()
                if status == 200:
                    break
                await asyncio.sleep(0.05)
            assert status == 200 and reply["ok"]
            async with s.post(url, json=gun, headers=auth("gun")) as resp:
                assert resp.status == 401
        if transport == "tcp":  # the connection that said hello with the old token
            writer.write(json.dumps({**gun, "seq": 9}).encode() + b"\n")
            reply = json.loads(await reader.readline())
            assert reply["ok"] is False and "no longer valid" in reply["error"]
            assert await reader.read() == b""  # closed
        writer.close()
    finally:
        await st.close()


def test_a_refused_input_leaves_its_race_as_if_it_had_not_come():
    """In the engine: the bad gun is refused, and the race that follows (a decision and
    a photo time) is the race without it; the refused event fits the schema and the
    fold passes it by."""
    import copy

    from icetime.view import apply_event
    from services.scoring.competition import Competition

    from .conftest import feed
    from .test_pipeline import FIXTURE

    def race(with_bad_gun: bool) -> tuple[Competition, dict]:
        comp = Competition()
        feed(comp, "1-0", {"type": "startlist", **FIXTURE["startlist"]})
        if with_bad_gun:
            assert feed(comp, "2-0", {"type": "gun", "race": RACE, "pair": 99, "t": 5}) == {}
            assert "no pair 99" in comp.last_reason
        feed(comp, "2-1", {"type": "gun", "race": RACE, "pair": 1, "t": 10**15})
        out = feed(comp, "3-0", {"type": "decision", "race": RACE, "action": "dq", "bib": "1"})
        assert out[RACE][0]["type"] == "revision"
        feed(comp, "4-0", {"type": "finish_time", "race": RACE, "bib": "2",
                           "time_us": 76_000_000})
        return comp, comp.view(RACE)

    bad, view = race(True)
    assert bad.stats["refused"] == 1
    clean = race(False)[1]
    assert view == clean and view["results"]["1"]["status"] == "DQ"
    event = {"type": "refused", "race": RACE, "input": "2-0", "input_type": "gun",
             "source": "gun", "reason": bad.last_reason, "seq": 3,
             "hops": {"source_us": None, "ingest_us": 1, "scoring_us": 2}}
    msgspec.convert(event, RaceEvent)
    assert apply_event(copy.deepcopy(view), event) == view


def test_a_manual_time_names_its_decision_and_a_dq_outranks_it_on_replay():
    """A missed finish read fixed by a manual time: the passage is the decision's (its
    ``input``); a DQ after it takes the skater out of the classification, as any DQ."""
    from services.scoring.competition import Competition

    from .conftest import feed
    from .test_pipeline import FIXTURE

    comp = Competition()
    feed(comp, "1-0", {"type": "startlist", **FIXTURE["startlist"]})
    feed(comp, "2-0", {"type": "gun", "race": RACE, "pair": 1, "t": 10**15})
    feed(comp, "3-0", {"type": "passing", "transponder": "4100011", "t": 10**15 + 18_310_000})
    feed(comp, "4-0", {"type": "decision", "race": RACE, "action": "manual_time", "bib": "1",
                       "time_us": 76_412_000})
    rows = comp.view(RACE)["results"]["1"]["passages"]
    assert [r and r["input"] for r in rows] == ["3-0", None, "4-0"]
    feed(comp, "5-0", {"type": "decision", "race": RACE, "action": "dq", "bib": "1"})
    view = comp.view(RACE)
    assert view["results"]["1"]["status"] == "DQ" and view["classification"]["bib"] == []
