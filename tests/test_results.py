"""Results out, through the running stack: the results API against the WebSocket, the
CSV and the PDF sheet of a finished race, the RMonitor feed on a real TCP socket, and
the Prometheus endpoint scraped during a replay (docs/results.md)."""
from __future__ import annotations

import asyncio
import copy
import csv
import io
import json
from pathlib import Path

import aiohttp
import pypdf
from prometheus_client.parser import text_string_to_metric_families

from icetime import keys
from icetime.cli import replay
from icetime.keys import DEFAULT_COMPETITION as MAIN
from icetime.replay import load_fixture
from icetime.timefmt import format_time, parse_time

from .conftest import TOKENS, race_view
from .test_decoder_link import decoder_stack
from .test_desk import T0, gun, send_reads
from .test_pipeline import FIXTURE, RACE, Follower, load_startlist

FIXTURES = Path(__file__).parents[1] / "fixtures"
BEIJING = load_fixture(FIXTURES / "beijing2023_w1000a.json")
STAVANGER = load_fixture(FIXTURES / "stavanger2022_w1000a.json")
SPEED = 400.0


def thousandths(us):
    """The API's time text, written here from the docs: M:SS.fff, or SS.fff."""
    if us is None:
        return None
    ms = us // 1000
    if ms >= 60_000:
        return f"{ms // 60_000}:{ms % 60_000 // 1000:02d}.{ms % 1000:03d}"
    return f"{ms // 1000}.{ms % 1000:03d}"


async def get(stack, path, headers=None):
    async with aiohttp.ClientSession() as s:
        async with s.get(stack.http + path, headers=headers or {}) as resp:
            return resp.status, resp.headers.copy(), await resp.read()


async def settled(stack, redis_client, f, race):
    """Follow until the follower holds the stream's last event (the replay is over)."""
    async def done():
        last = await redis_client.xrevrange(keys.events_stream(MAIN, race), count=1)
        return f.offset == last[0][0].decode()
    async with asyncio.timeout(10):
        while not await done():
            await f.run(lambda s: True, resume=True, timeout=2)
            await asyncio.sleep(0.05)


def lanes(view):
    return {p[side]: lane for p in view["pairs"] for side, lane in
            (("inner", "I"), ("outer", "O")) if p.get(side)}


def assert_same_numbers(doc, view):
    """Every number of the API document is the WebSocket view's, skater by skater."""
    by_bib = {r["startNumber"]: r for r in doc["results"]}
    assert set(by_bib) == set(view["skaters"])
    cls = view["classification"]
    assert [r["startNumber"] for r in doc["results"][:len(cls["bib"])]] == cls["bib"]
    for i, bib in enumerate(cls["bib"]):
        r = by_bib[bib]
        assert (r["rank"], r["time"], r["timeBehind"]) == (
            cls["rank"][i], thousandths(cls["t"][i]), thousandths(cls["behind"][i]))
    side = lanes(view)
    for bib, res in view["results"].items():
        r = by_bib[bib]
        assert r["startLane"] == side[bib] and r["status"] == res["status"]
        rows = [p for p in res["passages"] if p is not None]
        assert [(lap["distance"], lap["passageTime"], lap["time"], lap["rank"],
                 lap["timeBehind"]) for lap in r["laps"]] == [
            (p["m"], thousandths(p["t"]),
             None if p.get("missing") else thousandths(p["lap_time"]), p["rank"],
             thousandths(p["gap_best"])) for p in rows]
        if bib not in cls["bib"]:
            assert r["rank"] is None


async def test_the_api_serves_what_the_websocket_does(stack, redis_client):
    race = "bj23-w1000a"
    await load_startlist(stack, BEIJING)
    f = Follower(stack.ws_url)
    follower = asyncio.create_task(f.run(lambda s: s.finished()))
    await replay(BEIJING, stack.settings, speed=SPEED, announce=False)
    await follower
    await settled(stack, redis_client, f, race)

    status, headers, body = await get(stack, f"/api/results/races/{race}")
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert headers["Cache-Control"] == "public, max-age=2"
    doc = json.loads(body)
    assert_same_numbers(doc, f.view)
    assert doc["race"]["isOfficial"] is False and doc["race"]["status"] == "provisional"
    assert doc["records"] == {"WR": "1:11.610", "TR": "1:13.190"}
    top = [(r["competitor"]["name"], r["time"][:-1]) for r in doc["results"][:3]]
    assert top == [("Miho Takagi", "1:14.44"), ("Kimi Goetz", "1:14.45"),
                   ("Jutta Leerdam", "1:14.88")]
    finishes = published_finishes(BEIJING)
    assert all(r["time"] == thousandths(finishes[r["startNumber"]]) for r in doc["results"])

    # The same document again costs a 304 while the race has not changed.
    etag = headers["ETag"]
    status, again, body = await get(stack, f"/api/results/races/{race}",
                                    {"If-None-Match": etag})
    assert (status, body, again["ETag"]) == (304, b"", etag)
    assert again["Access-Control-Allow-Origin"] == "*"
    status, _, body = await get(stack, f"/api/results/races/{race}?inSeconds=1")
    assert json.loads(body)["results"][0]["time"] == "74.446"
    async with aiohttp.ClientSession() as s:
        async with s.options(f"{stack.http}/api/results/races/{race}") as resp:
            assert resp.status == 204
            assert "If-None-Match" in resp.headers["Access-Control-Allow-Headers"]

    status, _, body = await get(stack, "/api/results/competitions")
    comps = json.loads(body)
    assert [(c["id"], [r["id"] for r in c["races"]]) for c in comps] == [
        ("wc-beijing-2023", [race])]
    assert comps[0]["races"][0]["resultsUrl"] == f"/api/results/races/{race}"

    # A decision changes the race: a new ETag, the DQ, and still the WebSocket's numbers.
    url = f"http://127.0.0.1:{stack.settings.ingest_http_port}/feed"
    async with aiohttp.ClientSession() as s:
        async with s.post(url, json={"type": "decision", "race": race, "action": "dq",
                                     "bib": "20", "reason": "lane", "seq": 1},
                          headers={"Authorization": f"Bearer {TOKENS['officials']}"}) as resp:
            assert (await resp.json())["ok"]
    await f.run(lambda s: s.view["results"]["20"]["status"] == "DQ", resume=True)
    status, changed, body = await get(stack, f"/api/results/races/{race}",
                                      {"If-None-Match": etag})
    assert status == 200 and changed["ETag"] != etag
    doc = json.loads(body)
    assert_same_numbers(doc, f.view)
    dq = next(r for r in doc["results"] if r["startNumber"] == "20")
    assert (dq["rank"], dq["status"]) == (None, "DQ")
    assert doc["results"][0]["competitor"]["name"] == "Kimi Goetz"
    status, _, _ = await get(stack, "/api/results/races/no-such-race")
    assert status == 404


def published_finishes(doc):
    """Each skater's finish time in the fixture (race time, µs)."""
    return {bib: parse_time(times[-1]) for pair in doc["script"]["pairs"]
            for bib, times in pair["times"].items()}


async def test_the_csv_and_the_pdf_of_a_finished_race(stack, redis_client):
    race = "stv22-w1000a"
    await load_startlist(stack, STAVANGER)
    await replay(STAVANGER, stack.settings, speed=SPEED, announce=False)
    async with asyncio.timeout(10):
        while True:
            status, headers, body = await get(stack, f"/api/results/races/{race}")
            if status == 200 and json.loads(body)["race"]["isOfficial"]:
                break
            await asyncio.sleep(0.05)
    doc = json.loads(body)
    official_at = doc["race"]["officialAt"]
    finishes = published_finishes(STAVANGER)
    expected = sorted(finishes, key=lambda b: finishes[b])  # the published order

    status, headers, body = await get(stack, f"/api/results/races/{race}/results.csv")
    assert status == 200 and headers["Content-Type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(body.decode())))
    assert [r["bib"] for r in table] == expected
    assert [r["time"] for r in table] == [thousandths(finishes[b]) for b in expected]
    assert [(r["name"], r["time"][:-1]) for r in table[:3]] == [
        ("Jutta Leerdam", "1:15.60"), ("Kim Min-sun", "1:15.82"), ("Miho Takagi", "1:16.40")]
    assert [int(r["rank"]) for r in table] == list(range(1, len(expected) + 1))
    assert table[1]["behind"] == "0.220" and table[1]["pair"] == "7"

    status, headers, body = await get(stack, f"/api/results/races/{race}/results.pdf")
    assert status == 200 and headers["Content-Type"] == "application/pdf"
    text = "\n".join(p.extract_text() for p in pypdf.PdfReader(io.BytesIO(body)).pages)
    lines = text.splitlines()
    names = STAVANGER["startlist"]["skaters"]
    name_of = {s["bib"]: s["name"] for s in names}
    found = []
    for bib in expected:
        line = next(ln for ln in lines if name_of[bib] in ln)
        assert format_time(finishes[bib]) in line, line
        found.append(lines.index(line))
    assert found == sorted(found), "the sheet's order is the published order"
    assert "Official results" in text
    stamp = f"{official_at[:10]} {official_at[11:19]} UTC"
    assert f"Official results, {stamp}" in text
    status, again, _ = await get(stack, f"/api/results/races/{race}/results.pdf",
                                 {"If-None-Match": headers["ETag"]})
    assert status == 304


async def test_a_missed_passage_and_a_keyed_in_one_in_the_exports(stack):
    """Pair 1 of the 1000 m with both 600 m reads missed: skater 2's 600 m keyed in by
    the referee (a manual time), skater 1's left missing. The CSV and the API give
    skater 1 no 1000 m lap time (it would span two laps), skater 2 her own lap times;
    the PDF's legend names skater 2's 600 m as an official's time, as it names
    official finish times (docs/results.md)."""
    times = FIXTURE["script"]["pairs"][0]["times"]
    chips = {s["bib"]: s["transponders"][0] for s in FIXTURE["startlist"]["skaters"]}
    await load_startlist(stack)
    await gun(stack, 1, T0, 1)
    await send_reads(stack, [(T0 + parse_time(ts[i]), chips[bib])
                             for bib, ts in times.items() for i in (0, 2)], 1)
    manual = {"type": "decision", "race": RACE, "action": "manual_time", "bib": "2",
              "m": 600, "time_us": parse_time(times["2"][1]), "seq": 1}
    async with aiohttp.ClientSession() as s, s.post(
            f"http://127.0.0.1:{stack.settings.ingest_http_port}/feed", json=manual,
            params={"wait": "1"},
            headers={"Authorization": f"Bearer {TOKENS['referee']}"}) as resp:
        assert (await resp.json())["verdict"] == "applied"
    async with asyncio.timeout(10):
        while True:
            status, _, body = await get(stack, f"/api/results/races/{RACE}")
            laps = {r["startNumber"]: r["laps"] for r in json.loads(body)["results"]} \
                if status == 200 else {}
            if len(laps.get("1", [])) == 2 and len(laps.get("2", [])) == 3:
                break
            await asyncio.sleep(0.05)
    ms = {bib: [parse_time(t) for t in ts] for bib, ts in times.items()}
    assert [(lap["distance"], lap["time"]) for lap in laps["1"]] == [
        (200, thousandths(ms["1"][0])), (1000, None)]
    assert [lap["time"] for lap in laps["2"]] == [
        thousandths(ms["2"][0]), thousandths(ms["2"][1] - ms["2"][0]),
        thousandths(ms["2"][2] - ms["2"][1])]

    _, _, body = await get(stack, f"/api/results/races/{RACE}/results.csv")
    table = {r["bib"]: r for r in csv.DictReader(io.StringIO(body.decode()))}
    one, two = table["1"], table["2"]
    assert (one["600 m time"], one["600 m lap time"]) == ("", "")
    assert (one["1000 m time"], one["1000 m lap time"]) == (thousandths(ms["1"][2]), "")
    assert (two["600 m time"], two["600 m lap time"], two["1000 m lap time"]) == (
        thousandths(ms["2"][1]), thousandths(ms["2"][1] - ms["2"][0]),
        thousandths(ms["2"][2] - ms["2"][1]))

    _, _, body = await get(stack, f"/api/results/races/{RACE}/results.pdf")
    text = " ".join(p.extract_text() for p in pypdf.PdfReader(io.BytesIO(body)).pages)
    text = " ".join(text.split())
    legend = "Times from photo finish, a beam or an official (bib, passage, origin): "
    assert f"{legend}2 600 m (manual)" in text, text
    assert "1 600 m" not in text


async def read_records(reader, until, timeout=20.0):
    records = []
    async with asyncio.timeout(timeout):
        while not until(records):
            line = await reader.readline()
            assert line.endswith(b"\r\n"), line
            records.append(next(csv.reader([line.decode("ascii").strip()])))
    return records


async def test_the_rmonitor_feed_during_a_replay(stack, redis_client):
    race = "bj23-w1000a"
    await load_startlist(stack, BEIJING)
    reader, writer = await asyncio.open_connection("127.0.0.1",
                                                   stack.settings.broadcast_rmonitor_port)
    try:
        first = await read_records(reader, lambda rs: sum(r[0] == "$COMP" for r in rs) >= 20)
        assert first[0][0] == "$I"
        assert [first[1][0], first[1][2]] == ["$B", "Women 1000 m  Division A"]  # ASCII
        comps = {r[1]: r for r in first if r[0] == "$COMP"}
        assert comps["20"][4:7] == ["Miho", "Takagi", "JPN"]
        assert {r[1] for r in first if r[0] == "$A"} == set(comps)
        task = asyncio.create_task(replay(BEIJING, stack.settings, speed=SPEED,
                                          announce=False))
        passages = 20 * 3

        def finished(rs):  # every passage, and the positions sent after the last one
            js = [i for i, r in enumerate(rs) if r[0] == "$J"]
            return len(js) >= passages and sum(r[0] == "$G" for r in rs[js[-1]:]) >= 20
        records = await read_records(reader, finished)
        await task
    finally:
        writer.close()
        await writer.wait_closed()
    view = await race_view(redis_client, race)

    def hms(us):
        ms = us // 1000
        return f"00:{ms // 60000:02d}:{ms % 60000 // 1000:02d}.{ms % 1000:03d}"
    sent = {}
    for r in records:
        if r[0] == "$J":
            sent.setdefault(r[1], []).append((r[2], r[3]))
    for bib, res in view["results"].items():
        assert sent[bib] == [(hms(p["lap_time"]), hms(p["t"])) for p in res["passages"]]
    last_g = {}
    for r in records:
        if r[0] == "$G":
            last_g[int(r[1])] = (r[2], int(r[3]), r[4])
    cls = view["classification"]
    assert [last_g[i + 1] for i in range(len(cls["bib"]))] == [
        (b, 3, hms(t)) for b, t in zip(cls["bib"], cls["t"], strict=True)]
    assert any(r[0] == "$F" and r[5] == "Green " for r in records)
    best = [r for r in records if r[0] == "$H"]
    assert best and all(r[4].startswith("00:00:") for r in best)


def samples(text):
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def scrape(st):
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{st.http}/metrics") as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"].startswith("text/plain")
            return samples(await resp.text())


async def test_metrics_scraped_during_a_replay(redis_server, redis_client, tmp_path):
    doc = copy.deepcopy(BEIJING)
    doc["script"]["pairs"] = [p for p in doc["script"]["pairs"] if p["pair"] in (3, 9, 10)]
    async with decoder_stack(redis_server, tmp_path) as (st, sim):
        await load_startlist(st, doc)
        f = Follower(st.ws_url)
        follower = asyncio.create_task(f.run(lambda s: s.finished(6)))
        await asyncio.sleep(0.2)
        seen_mid = {}

        async def hold(item):
            if item.inp["type"] == "gun" and item.inp["pair"] == 9:
                seen_mid.update(await scrape(st))  # mid-race: pair 3 is done
        await replay(doc, st.settings, speed=200.0, announce=False, decoder=sim, hold=hold)
        await follower
        # A gun sent twice (the replay's were in its own session: this one is new) and a
        # refusal, so the duplicate and rejected counters move.
        url = f"http://127.0.0.1:{st.settings.ingest_http_port}/feed"
        gun = {"type": "gun", "race": "bj23-w1000a", "pair": 10, "t": 1, "seq": 1}
        async with aiohttp.ClientSession() as s:
            for body in (gun, gun, {"type": "gun", "seq": 1, "t": "soon"}):
                async with s.post(url, json=body,
                                  headers={"Authorization": f"Bearer {TOKENS['gun']}"}):
                    pass
        async with asyncio.timeout(10):
            while True:
                m = await scrape(st)
                if m.get(("icetime_decoder_passings_total",
                          (("decoder", "finish-p3"),))) == 36:
                    break
                await asyncio.sleep(0.2)
        assert m[("icetime_redis_up", ())] == 1
        clients = ("icetime_broadcast_clients", (("kind", "websocket"),))
        assert (seen_mid[clients], m[clients]) == (1, 0)  # the follower left once done
        assert m[("icetime_decoder_connected", (("decoder", "finish-p3"),))] == 1
        inputs = 1 + 3 + 36 + 1  # the start list, the guns, the passings (both ankles), ours
        assert m[("icetime_ingest_inputs_total", (("outcome", "accepted"),))] == inputs
        assert m[("icetime_ingest_inputs_total", (("outcome", "duplicate"),))] == 1
        assert m[("icetime_ingest_inputs_total", (("outcome", "rejected"),))] == 1
        live = sum(1 for e in f.events)
        for hop in ("ingest_scoring", "scoring_broadcast"):
            count = m[("icetime_hop_latency_seconds_count", (("hop", hop),))]
            assert count >= live - 1 >= 1, (hop, count, live)
        accepted_mid = seen_mid[("icetime_ingest_inputs_total", (("outcome", "accepted"),))]
        assert 1 < accepted_mid < inputs
        assert seen_mid[("icetime_hop_latency_seconds_count", (("hop", "ingest_scoring"),))] > 0
        frames = m[("icetime_broadcast_frames_total", (("race", "bj23-w1000a"),))]
        assert frames >= live - 1
        assert m[("icetime_raw_log_entries", ())] == await redis_client.xlen(keys.raw_stream(MAIN))
