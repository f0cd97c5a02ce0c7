"""The officials' desk in a real Chromium (Debian's), driven by Playwright: a chief
referee's short session on a finished pair (a DQ and its undo, a photo-finish time,
official), each effect checked on the desk and on the monitor; the audit exported."""
from __future__ import annotations

import re
from pathlib import Path

import aiohttp
import pytest

from icetime.timefmt import parse_time

from .conftest import TOKENS, make_settings, start_stack
from .test_browser import CHROMIUM, launch, open_page
from .test_pipeline import FIXTURE, RACE, load_startlist

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium found: install Debian's `chromium` (.ci/run does)")
T0 = 1_700_000_000_000_000


async def skate_pair_one(st) -> None:
    """Pair 1's gun and every passing of its two skaters (the fixture's times)."""
    url = f"http://127.0.0.1:{st.settings.ingest_http_port}/feed"
    transponders = {s["bib"]: s["transponders"][0] for s in FIXTURE["startlist"]["skaters"]}
    times = FIXTURE["script"]["pairs"][0]["times"]
    passings = sorted((T0 + parse_time(t), transponders[bib])
                      for bib, ts in times.items() for t in ts)
    async with aiohttp.ClientSession() as s:
        gun = {"type": "gun", "race": RACE, "pair": 1, "t": T0, "seq": 1}
        async with s.post(url, json=gun, params={"wait": "1"},
                          headers={"Authorization": f"Bearer {TOKENS['gun']}"}) as resp:
            assert (await resp.json())["verdict"] == "applied"
        body = [{"type": "passing", "transponder": tr, "t": t, "seq": n}
                for n, (t, tr) in enumerate(passings, 1)]
        async with s.post(url, json=body, params={"wait": "1"},
                          headers={"Authorization": f"Bearer {TOKENS['finish-loop']}"}) as resp:
            assert all(r["ok"] for r in await resp.json())


async def test_a_referee_session_on_the_desk(redis_server, tmp_path):
    from playwright.async_api import async_playwright, expect

    st = await start_stack(make_settings(redis_server.url), redis_server.url)
    try:
        await load_startlist(st)
        await skate_pair_one(st)
        async with async_playwright() as p:
            browser = await launch(p)
            desk, desk_errors = await open_page(
                browser, f"http://127.0.0.1:{st.settings.ingest_http_port}/desk", 1600, 1000)
            monitor, monitor_errors = await open_page(browser, f"{st.http}/monitor?race={RACE}")
            effect = desk.get_by_test_id("effect")

            # A gun's token does not open the desk; a referee's does.
            await desk.get_by_test_id("token").fill(TOKENS["gun"])
            await desk.keyboard.press("Enter")
            await expect(desk.locator("#login-error")).to_contain_text("role 'gun'")
            await desk.get_by_test_id("token").fill(TOKENS["referee"])
            await desk.keyboard.press("Enter")
            await expect(desk.get_by_test_id("who")).to_have_text("referee · referee")
            await expect(desk.get_by_test_id("race-name")).to_have_text(
                "Women 1000 m · Division A")
            await expect(desk.get_by_test_id("official")).to_have_text("provisional")
            await expect(desk.get_by_test_id("next-pair")).to_contain_text("pair 2")

            # Every read, with the passage it was given: the newest is a finish.
            reads = desk.get_by_test_id("reads").locator("tbody tr")
            await expect(reads).to_have_count(6)
            await expect(reads.first).to_contain_text("finish 1:16.412")
            await expect(reads.last).to_contain_text("200 m")

            # A DQ with its reason, and its undo.
            await desk.get_by_test_id("row-1").click()
            await desk.keyboard.press("q")
            await desk.keyboard.type("impeding")
            await desk.keyboard.press("Enter")
            await expect(effect).to_have_text("DQ · 1 Ellia Smeding: applied")
            await expect(desk.get_by_test_id("status-1")).to_have_text("DQ")
            await expect(monitor.get_by_test_id("final-1")).to_have_text("DQ")
            await desk.keyboard.press("u")
            await desk.keyboard.press("Enter")
            await expect(effect).to_have_text("Undo: DQ bib 1 (impeding): applied")
            await expect(desk.get_by_test_id("status-1")).to_have_text("")
            await expect(monitor.get_by_test_id("final-1")).to_contain_text("1:16.41")

            # The photo-finish time for the next skater down.
            await desk.keyboard.press("ArrowDown")
            await desk.keyboard.press("t")
            await desk.keyboard.type("1:16.100")
            await desk.keyboard.press("Enter")
            await expect(effect).to_have_text(re.compile(r"^Photo-finish time · 2 .*: applied$"))
            await expect(desk.get_by_test_id("final-2")).to_have_text("1:16.100 photo")
            await expect(monitor.get_by_test_id("final-2")).to_contain_text("1:16.10")

            # A time that is not one is refused with the reason, and nothing is sent.
            await desk.keyboard.press("m")
            await desk.keyboard.type("soon")
            await desk.keyboard.press("Enter")
            await expect(effect).to_have_text("not sent: a time such as 1:15.123")
            await desk.keyboard.press("Escape")

            # Official.
            await desk.keyboard.press("o")
            await desk.keyboard.press("Enter")
            await expect(effect).to_have_text("Declare official: applied")
            await expect(desk.get_by_test_id("official")).to_have_text("official")

            # The audit: who, what and its effect; exported as CSV.
            audit = desk.get_by_test_id("audit").locator("tbody tr")
            # The start list, the gun, DQ, undo, photo time, official: newest first.
            await expect(audit).to_have_count(6)
            await expect(audit.nth(3)).to_contain_text("DQ bib 1 (impeding)")
            await expect(audit.nth(3)).to_contain_text("applied · undone")
            await expect(audit.first).to_contain_text("referee")
            async with desk.expect_download() as download:
                await desk.get_by_test_id("export-csv").click()
            csv = Path(await (await download.value).path()).read_text()
            assert csv.splitlines()[0].startswith("input,received_utc,source,type,race,action")
            assert ",referee,decision,bj23-w1000a,dq,1," in csv and ",void," in csv

            # A start list that is not JSON: the error names its line.
            bad = tmp_path / "bad.json"
            bad.write_text('{\n  "skaters": [\n    {"bib": 1,,}\n  ]\n}\n')
            await desk.get_by_test_id("startlist-file").set_input_files(str(bad))
            await expect(desk.get_by_test_id("startlist-errors")).to_contain_text("line 3")
            assert not desk_errors and not monitor_errors, desk_errors + monitor_errors
            await browser.close()
    finally:
        await st.close()
