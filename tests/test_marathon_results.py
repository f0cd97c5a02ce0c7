"""Results out for a marathon (docs/results.md): the small generated field replayed
through the whole chain, then the results API, the CSV, the PDF sheet and the RMonitor
feed read over HTTP and TCP and checked against the engine's own classification; and
the CSV and the PDF of a 2,000-skater field, timed (the figures are printed)."""
from __future__ import annotations

import asyncio
import csv
import io
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import pypdf
import pytest

from bench.marathon import COURSE, RACE, build
from icetime.replay import script_inputs
from icetime.timefmt import now_us
from services.broadcast import sheet
from services.broadcast.results import Meta, csv_text
from services.scoring.competition import Competition

from .chromium import CHROMIUM, launch, open_page
from .conftest import TOKENS, caught_up, feed
from .test_marathon_live import Sender, mat_stack, send_all  # noqa: F401 (a fixture)
from .test_pipeline import load_startlist
from .test_results import get, read_records

SCREEN_CHECK = (Path(__file__).parent / "screen_check.js").read_text()
SHOTS = Path(__file__).parent / "screenshots"


def hms_text(us: int) -> str:
    """The API's time text from an hour on, written here from the docs: H:MM:SS.fff."""
    ms = us // 1000
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, f = divmod(rest, 1000)
    if h:
        return f"{h}:{m:02d}:{s:02d}.{f:03d}"
    if m:
        return f"{m}:{s:02d}.{f:03d}"
    return f"{s}.{f:03d}"


def engine(doc: dict[str, Any], items: list[Any]) -> Any:
    comp = Competition()
    feed(comp, "sl", {"type": "startlist", **doc["startlist"]})
    for n, it in enumerate(items):
        feed(comp, f"in-{n}", {**it.inp, "source": it.source})
    return comp


@pytest.fixture
async def chromium_soon():
    """Chromium starting in the background while the test feeds its race (the Playwright
    driver and the browser take seconds on a busy machine): a task whose result is the
    browser, or None without Chromium. Both are stopped after the test."""
    if CHROMIUM is None:
        yield None
        return
    from playwright.async_api import async_playwright

    driver = async_playwright()

    async def start() -> Any:
        return await launch(await driver.start())
    task = asyncio.create_task(start())
    try:
        yield task
    finally:
        await asyncio.wait({task})
        if not task.cancelled() and task.exception() is None:
            await task.result().close()
        await driver.__aexit__(None, None, None)


async def test_a_marathons_results_out(mat_stack, redis_client, chromium_soon):  # noqa: F811
    doc, truth = build(40)
    items = script_inputs(doc, clock_base_us=now_us() - 10**9)
    # An official's DNF for a skater who stopped on the course: out of the ranking.
    stopped = sorted(truth.stopped, key=int)[0]
    dnf = {"type": "decision", "race": RACE, "action": "dnf", "bib": stopped}
    comp = engine(doc, items)
    feed(comp, "dnf", {**dnf, "source": "referee"})
    race = comp.races[RACE]
    cls = race.classification()
    await load_startlist(mat_stack, doc)
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", mat_stack.settings.broadcast_rmonitor_port)
    sender = Sender(mat_stack)
    try:
        await send_all(sender, items)
    finally:
        await sender.close()
    async with aiohttp.ClientSession() as s:
        async with s.post(f"http://127.0.0.1:{mat_stack.settings.ingest_http_port}/feed",
                          json=dnf, params={"wait": "1"},
                          headers={"Authorization": f"Bearer {TOKENS['referee']}"}) as resp:
            assert (await resp.json())["verdict"] == "applied"
    await caught_up(redis_client, RACE, timeout_s=60)

    # The API: the engine's classification, then the skaters with a status, then the rest.
    status, headers, body = await get(mat_stack, f"/api/results/races/{RACE}")
    assert status == 200 and headers["Access-Control-Allow-Origin"] == "*"
    api = json.loads(body)
    assert api["race"]["kind"] == "marathon" and api["race"]["lapCount"] == len(COURSE)
    results = api["results"]
    assert len(results) == 40
    n = len(cls["bib"])
    assert 0 < n < 40 and stopped not in cls["bib"]
    assert [(r["startNumber"], r["rank"], r["time"], r["timeBehind"], r["timingPoint"])
            for r in results[:n]] == [
        (b, k, hms_text(t), hms_text(d), p) for b, k, t, d, p in zip(
            cls["bib"], cls["rank"], cls["t"], cls["behind"], cls["point"], strict=True)]
    statuses = [r for r in results[n:] if r["status"]]
    assert [(r["startNumber"], r["status"], r["rank"]) for r in statuses] == [
        (stopped, "DNF", None)]
    winner = results[0]
    assert winner["timingPoint"] == "finish" and winner["timeOrigin"] == "transponder"
    sk = next(s for s in doc["startlist"]["skaters"] if s["bib"] == winner["startNumber"])
    assert winner["competitor"]["club"] == sk["club"]
    assert winner["wave"] in (1, 2, 3)
    # Every timing point passed, with its time (the engine's passage) and rank there.
    for r in results:
        mine = race.times[race.row[r["startNumber"]]]
        assert [(lap["timingPoint"], lap["passageTime"]) for lap in r["laps"]] == [
            (COURSE[k][0], hms_text(t)) for k, t in enumerate(mine) if t is not None]
    assert winner["laps"][-1]["rank"] == 1 and winner["laps"][-1]["timeBehind"] == "0.000"

    listed = json.loads((await get(mat_stack, "/api/results/competitions"))[2])
    assert [x["id"] for c in listed for x in c["races"]] == [RACE]

    # The CSV: the same skaters, in the same order, with the same numbers.
    status, headers, body = await get(mat_stack, f"/api/results/races/{RACE}/results.csv")
    assert status == 200 and headers["Content-Type"].startswith("text/csv")
    lines = list(csv.DictReader(io.StringIO(body.decode())))
    assert [(x["bib"], x["rank"], x["time"], x["club"]) for x in lines] == [
        (r["startNumber"], str(r["rank"] or ""), r["time"] or "", r["competitor"]["club"])
        for r in results]
    first = lines[0]
    assert [first[f"{p} time"] for p, _ in COURSE] == [lap["passageTime"]
                                                      for lap in winner["laps"]]

    # The PDF sheet: the winner first, times to hundredths, hours shown.
    status, headers, body = await get(mat_stack, f"/api/results/races/{RACE}/results.pdf")
    assert status == 200 and body.startswith(b"%PDF")
    text = pypdf.PdfReader(io.BytesIO(body)).pages[0].extract_text()
    assert "Provisional results" in text and winner["competitor"]["name"] in text
    assert winner["time"][:-1] in text

    # RMonitor: the whole state (every skater, the classification), then a passage each.
    try:
        records = await read_records(
            reader, lambda rs: sum(r[0] == "$J" for r in rs) >= 10
            and any(r[0] == "$COMP" for r in rs))
    finally:
        writer.close()
        await writer.wait_closed()
    assert {r[1] for r in records if r[0] == "$COMP"} == {s["bib"] for s in
                                                          doc["startlist"]["skaters"]}
    assert all(len(r) == 4 for r in records if r[0] == "$J")

    if chromium_soon is not None:
        await overlay_check(await chromium_soon, mat_stack, cls)


async def overlay_check(browser: Any, stack: Any, cls: dict[str, list[Any]]) -> None:
    """The overlay at 1920x1080: the front three at the finish (the furthest point
    reached), the counts, and nothing that would not go on air (screen_check.js)."""
    from playwright.async_api import expect

    page, errors = await open_page(browser, f"{stack.http}/overlay?race={RACE}")
    third = page.get_by_test_id("overlay-third")
    await expect(third).to_be_visible()
    await expect(page.locator("#title")).to_contain_text("Finish")
    rows = page.get_by_test_id("overlay-rows").locator(".row")
    await expect(rows).to_have_count(3)
    await expect(rows.first).to_contain_text(
        str(cls["t"][0] // 3_600_000_000))  # the winner's hours
    assert await rows.first.get_attribute("data-testid") == f"overlay-{cls['bib'][0]}"
    await expect(page.get_by_test_id("overlay-counts")).to_contain_text("Finished")
    problems = await page.evaluate(SCREEN_CHECK, [True, True])
    await page.screenshot(path=SHOTS / "marathon-overlay-1920x1080.png",
                          omit_background=True)
    assert problems == [] and errors == []


def view_of(truth: Any, doc: dict[str, Any]) -> dict[str, Any]:
    """A finished marathon's view in the documented shape (docs/protocol.md, Marathons),
    made straight from the generator's truth: 10,000 skaters without 95,000 inputs."""
    race = doc["startlist"]["races"][0]
    wave = {b: w["wave"] for w in race["waves"] for b in w["skaters"]}
    skaters = {s["bib"]: {"bib": s["bib"], "name": s["name"], "short": s["short"],
                          "nation": s["nation"], "club": s["club"], "wave": wave[s["bib"]]}
               for s in doc["startlist"]["skaters"]}
    results = {b: {"t": list(t), "status": "DNF" if b in truth.stopped else None,
                   "manual": []} for b, t in truth.passages.items() if any(t)}
    order = [sorted((b for b, r in results.items() if r["t"][k] is not None
                     and not r["status"]), key=lambda b, k=k: (results[b]["t"][k], b))
             for k in range(len(COURSE))]
    return {"race": {"id": RACE, "name": race["name"], "kind": "marathon",
                     "distance": COURSE[-1][1],
                     "course": [{"point": p, "m": m} for p, m in COURSE], "official": False},
            "skaters": skaters, "results": results, "order": order,
            "counts": {"started": len(results), "finished": len(order[-1]), "status": 0,
                       "waves": len(race["waves"]), "passed": [len(o) for o in order]}}


def test_the_csv_and_the_sheet_of_a_big_field(capsys):
    """The CSV and the PDF sheet of a finished 2,000-skater marathon: one line per
    skater, one page per 44; the time of each is printed, not asserted. (10,000 rows:
    typst takes about 10 s for the 228 pages on a quiet machine, too long for the suite.)"""
    rows = 2_000
    doc, truth = build(rows)
    view = view_of(truth, doc)
    started = time.perf_counter()
    text = csv_text(view)
    csv_s = time.perf_counter() - started
    started = time.perf_counter()
    pdf = sheet.pdf(view, Meta())
    pdf_s = time.perf_counter() - started
    assert text.count("\r\n") == rows + 1
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    assert len(reader.pages) == -(-rows // sheet.MARATHON_CHUNK)
    with capsys.disabled():
        print(f"\n  marathon, {rows:,} rows: CSV {csv_s:.2f} s ({len(text) / 1e6:.1f} MB), "
              f"PDF {pdf_s:.1f} s ({len(pdf) / 1e6:.1f} MB, {len(reader.pages)} pages)")
