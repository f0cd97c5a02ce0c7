"""The officials' desk in a real Chromium (Debian's), driven by Playwright: a chief
referee's short session on a finished pair (a DQ and its undo, a photo-finish time, a
read voided and brought back, official), each effect checked on the desk and on the
monitor; the audit exported."""
from __future__ import annotations

import re
from pathlib import Path

import aiohttp
import pytest

from icetime.timefmt import parse_time

from .chromium import CHROMIUM, open_page
from .conftest import TOKENS, make_settings, start_stack
from .test_pipeline import FIXTURE, RACE, load_startlist

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium found: install Debian's `chromium` (.ci/run does)")
#: The page tests run in one event loop for the module, so they share one Chromium
#: (:func:`chromium`: a launch is a second of CPU, more on a busy machine).
MODULE_LOOP = pytest.mark.asyncio(loop_scope="module")


T0 = 1_700_000_000_000_000
SCREEN_CHECK = (Path(__file__).parent / "screen_check.js").read_text()
#: The desk's tables that must show every cell (tests/screen_check.js, ``whole``).
WHOLE = "[data-testid=reads], [data-testid=audit], [data-testid=results]"
#: The board shows the last pair and the standings in turn: long enough for a turn (ms).
BOARD_TURN_MS = 20_000


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


@MODULE_LOOP
async def test_a_referee_session_on_the_desk(redis_server, tmp_path, browser):
    from playwright.async_api import expect

    st = await start_stack(make_settings(redis_server.url), redis_server.url)
    try:
        await load_startlist(st)
        await skate_pair_one(st)
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
        # Undo takes the latest entry of the audit log: the DQ, once the log has it.
        await expect(desk.get_by_test_id("audit")).to_contain_text("DQ bib 1 (impeding)")
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

        # The newest read (Smeding's finish) voided, flagged so; u brings it back.
        await desk.keyboard.press("]")
        await desk.keyboard.press("v")
        await desk.keyboard.press("Enter")
        await expect(effect).to_have_text(re.compile(r"^Void read: \d+ at finish .*: applied$"))
        await expect(desk.get_by_test_id("final-1")).to_have_text("")
        await expect(reads.first.locator("[data-flag]")).to_have_text("voided")
        await expect(desk.get_by_test_id("audit")).to_contain_text("VOID of read")
        await desk.keyboard.press("u")
        await desk.keyboard.press("Enter")
        await expect(effect).to_have_text(re.compile(r"^Undo: VOID of read .*: applied$"))
        await expect(reads.first).to_contain_text("finish 1:16.412")
        await expect(reads.first.locator("[data-flag]")).to_have_count(0)
        await expect(desk.get_by_test_id("final-1")).to_contain_text("1:16.412")
        await expect(monitor.get_by_test_id("final-1")).to_contain_text("1:16.41")

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
        # The start list, the gun, DQ, undo, photo time, void, undo, official: newest
        # first. An undo can be undone too (its button); an undone input cannot.
        await expect(audit).to_have_count(8)
        await expect(audit.nth(5)).to_contain_text("DQ bib 1 (impeding)")
        await expect(audit.nth(5)).to_contain_text("applied · undone")
        await expect(audit.nth(2)).to_contain_text("applied · undone")
        await expect(audit.nth(2).locator("button[data-undo]")).to_have_count(0)
        await expect(audit.nth(1).locator("button[data-undo]")).to_have_count(1)
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
    finally:
        await st.close()


async def send_reads(st, reads: list[tuple[int, str]], first_seq: int) -> None:
    """Passings (common-clock µs, transponder) from the finish loop's decoder."""
    url = f"http://127.0.0.1:{st.settings.ingest_http_port}/feed"
    body = [{"type": "passing", "transponder": tr, "t": t, "seq": n}
            for n, (t, tr) in enumerate(sorted(reads), first_seq)]
    async with aiohttp.ClientSession() as s, s.post(
            url, json=body, params={"wait": "0"},
            headers={"Authorization": f"Bearer {TOKENS['finish-loop']}"}) as resp:
        assert all(r["ok"] for r in await resp.json())


async def gun(st, pair: int, t: int, seq: int, race: str = RACE) -> None:
    url = f"http://127.0.0.1:{st.settings.ingest_http_port}/feed"
    async with aiohttp.ClientSession() as s, s.post(
            url, json={"type": "gun", "race": race, "pair": pair, "t": t, "seq": seq},
            headers={"Authorization": f"Bearer {TOKENS['gun']}"}) as resp:
        assert (await resp.json())["verdict"] == "applied"


async def decide(desk, key: str, text: str = "", passage: str = "") -> None:
    """Press a decision's key on the desk, type its time or reason, and send it."""
    await desk.keyboard.press(key)
    if passage:
        await desk.get_by_test_id("action-m").select_option(passage)
        await desk.get_by_test_id("action-time").focus()
    if text:
        await desk.keyboard.type(text)
    await desk.keyboard.press("Enter")


#: Another race on the ice at the same time (its own start list, skaters 91 and 92):
#: its reads are in the same raw log as the desk's race's.
OTHER_RACE = {"skaters": [{"bib": "91", "name": "Ada Other", "transponders": ["4109911"]},
                          {"bib": "92", "name": "Bea Other", "transponders": ["4109921"]}],
              "races": [{"id": "other-w500", "name": "Women 500 m · Other", "distance": 500,
                         "pairs": [{"pair": 1, "inner": "91", "outer": "92"}]}]}
#: Its reads: more than the desk's answer (DESK_READS 300) and panel (100) hold.
OTHER_READS = 350


def order(page):
    """The names in the fans' classification, in order."""
    return page.get_by_test_id("classification").locator("tbody tr td.who .full")


@MODULE_LOOP
async def test_the_chief_referees_afternoon(redis_server, browser):
    """A chief referee's afternoon on the real pipeline: a missed finish read fixed by a
    manual time, a photo-finish time that reverses the order, a DQ and its undo, a
    restart, official; each checked on the desk, the board, the monitor and a phone
    (375x812), and in the desk's audit log and its CSV export."""
    from playwright.async_api import expect

    st = await start_stack(make_settings(redis_server.url), redis_server.url)
    transponders = {s["bib"]: s["transponders"][0] for s in FIXTURE["startlist"]["skaters"]}
    times = FIXTURE["script"]["pairs"][0]["times"]
    try:
        await load_startlist(st)
        await gun(st, 1, T0, 1)
        reads = [(T0 + parse_time(t), transponders[bib])
                 for bib, ts in times.items() for t in ts]
        reads.remove((T0 + parse_time("1:16.412"), transponders["1"]))  # the missed read
        # The other ankle: Han Mei's second chip, 20 ms after her first at 200 m.
        ankles = {s["bib"]: s["transponders"][1] for s in FIXTURE["startlist"]["skaters"]}
        reads.append((T0 + parse_time("18.240"), ankles["2"]))
        reads.append((T0 + parse_time("30.000"), "9999999"))  # a chip nobody wears
        # Han Mei down on the line after her finish (1:16.205): her chip read every second
        # for 6 s, each read in the loop field (a trial found them `re-read`, then `no
        # passage` once she had got up).
        lying = [(T0 + parse_time("1:16.205") + k * 1_000_000, transponders["2"])
                 for k in range(1, 7)]
        await send_reads(st, reads + lying, 1)
        # Another race at the same time: its reads come after this race's, many of them.
        await load_startlist(st, {"startlist": OTHER_RACE})
        await gun(st, 1, T0, 2, race="other-w500")
        await send_reads(st, [(T0 + 1_000_000 + k * 100_000, f"41099{k % 2 + 1}1")
                              for k in range(OTHER_READS)], 100)
        http = f"http://127.0.0.1:{st.settings.ingest_http_port}"
        desk, errors = await open_page(browser, f"{http}/desk?race={RACE}", 1920, 1080)
        monitor, errors2 = await open_page(browser, f"{st.http}/monitor?race={RACE}")
        board, errors3 = await open_page(browser, f"{st.http}/board?race={RACE}")
        phone, errors4 = await open_page(browser, f"{st.http}/live?race={RACE}", 375, 812)
        effect = desk.get_by_test_id("effect")
        await desk.get_by_test_id("token").fill(TOKENS["referee"])
        await desk.keyboard.press("Enter")
        await expect(desk.get_by_test_id("login")).to_be_hidden()
        await expect(desk.get_by_test_id("official")).to_have_text("provisional")

        # The reads and what became of them: the stray chip, the other ankle, the
        # chip lying in the loop; the other race's reads are hidden, and counted.
        reads_rows = desk.get_by_test_id("reads").locator("tbody tr")
        others = desk.get_by_test_id("reads-others-text")
        await expect(others).to_have_text(
            f"{OTHER_READS} reads of other races' skaters hidden")
        await expect(reads_rows).to_have_count(13)
        stray = reads_rows.filter(has_text="9999999")
        await expect(stray.locator("[data-flag]")).to_have_text("unknown")
        await expect(stray).to_contain_text("none")
        ankle = reads_rows.nth(11)  # newest first: Han Mei's other chip at 200 m
        await expect(ankle).to_contain_text(ankles["2"])
        await expect(ankle.locator("[data-flag]")).to_have_text("re-read")
        await expect(reads_rows.nth(12)).to_contain_text("2 Han Mei · 200 m 18.220")
        flags = desk.get_by_test_id("reads").locator("[data-flag]")
        await expect(flags).to_have_text(["in field"] * 6 + ["unknown", "re-read"])
        # Shown on asking, newest first, each flagged and named; hidden again.
        await desk.get_by_test_id("reads-others-toggle").click()
        await expect(reads_rows).to_have_count(13 + 100)  # the panel holds 100 of them
        await expect(reads_rows.first.locator("[data-flag]")).to_have_text("other race")
        await expect(reads_rows.first).to_contain_text("another race · bib 92")
        await expect(others).to_have_text(
            f"{OTHER_READS} reads of other races' skaters shown, flagged other race")
        await expect(reads_rows.nth(100)).to_contain_text("in field")
        await desk.get_by_test_id("reads-others-toggle").click()
        await expect(reads_rows).to_have_count(13)
        # The endpoint: the race's own reads whole, the last 300 of the others' (the
        # 50 before them counted); an unknown race is a 404; without a race, the
        # last 300 reads of every race, as before.
        async with aiohttp.ClientSession(headers={
                "Authorization": f"Bearer {TOKENS['referee']}"}) as s:
            async with s.get(f"{http}/api/desk/reads", params={"race": RACE}) as resp:
                got = await resp.json()
            assert sum(not r["other"] for r in got["reads"]) == 13
            assert sum(r["other"] for r in got["reads"]) == 300
            assert got["dropped"] == OTHER_READS - 300
            async with s.get(f"{http}/api/desk/reads", params={"race": "nosuch"}) as resp:
                assert resp.status == 404
            async with s.get(f"{http}/api/desk/reads") as resp:
                got = await resp.json()
            assert len(got["reads"]) == 300 and "other" not in got["reads"][0]

        # 1. The missed finish read of Smeding, fixed by a manual time.
        await expect(desk.get_by_test_id("final-1")).to_have_text("")
        await desk.get_by_test_id("row-1").click()
        await decide(desk, "m", "1:16.412")
        await expect(effect).to_have_text("Manual time · 1 Ellia Smeding: applied")
        await expect(desk.get_by_test_id("final-1")).to_have_text("1:16.412 manual")
        await expect(monitor.get_by_test_id("final-1")).to_contain_text("1:16.41")
        # The board turns between the last pair and the standings: wait for the pair.
        await expect(board.get_by_test_id("board-result-I")).to_contain_text(
            "2nd", timeout=BOARD_TURN_MS)
        await expect(order(phone)).to_have_text(["Han Mei", "Ellia Smeding"])

        # 2. A photo-finish time for Han Mei reverses the order.
        await desk.keyboard.press("ArrowDown")
        await decide(desk, "t", "1:16.500")
        await expect(effect).to_have_text("Photo-finish time · 2 Han Mei: applied")
        await expect(desk.get_by_test_id("final-2")).to_have_text("1:16.500 photo")
        await expect(monitor.get_by_test_id("final-2")).to_contain_text("1:16.50")
        await expect(order(phone)).to_have_text(["Ellia Smeding", "Han Mei"])
        await expect(board.get_by_test_id("board-result-I")).to_contain_text(
            "1st", timeout=BOARD_TURN_MS)

        # 3. A DQ of Smeding and its undo.
        await desk.keyboard.press("ArrowUp")
        await decide(desk, "q", "lane change")
        await expect(effect).to_have_text("DQ · 1 Ellia Smeding: applied")
        await expect(monitor.get_by_test_id("final-1")).to_have_text("DQ")
        await expect(board.get_by_test_id("board-clock-I")).to_have_text(
            "DQ", timeout=BOARD_TURN_MS)
        await expect(order(phone)).to_have_text(["Han Mei", "Ellia Smeding"])
        await expect(desk.get_by_test_id("audit")).to_contain_text("DQ bib 1 (lane change)")
        await decide(desk, "u")
        await expect(effect).to_have_text("Undo: DQ bib 1 (lane change): applied")
        await expect(monitor.get_by_test_id("final-1")).to_contain_text("1:16.41")
        await expect(order(phone)).to_have_text(["Ellia Smeding", "Han Mei"])
        await expect(board.get_by_test_id("board-result-I")).to_contain_text(
            "1st", timeout=BOARD_TURN_MS)

        # 4. Pair 2 starts, and is restarted (a false start the starter missed).
        t2 = T0 + 200_000_000
        await gun(st, 2, t2, 3)
        await send_reads(st, [(t2 + parse_time("18.150"), transponders["3"]),
                              (t2 + parse_time("18.350"), transponders["4"])], 500)
        await expect(desk.get_by_test_id("on-ice")).to_contain_text("Pair 2")
        await expect(monitor.get_by_test_id("grid")).to_contain_text("18.15")
        await desk.get_by_test_id("row-3").click()
        await decide(desk, "x", "false start")
        await expect(effect).to_have_text("Restart pair 2: applied")
        await expect(desk.get_by_test_id("row-3")).not_to_contain_text("200 m")
        await expect(monitor.get_by_test_id("grid")).not_to_contain_text("18.15")
        await expect(desk.get_by_test_id("on-ice")).to_contain_text("Nobody on the ice")
        # Later reads: Han Mei's lying reads are still `in field` (she is not now); her
        # finish read, which the photo-finish time replaced, made no passage.
        await expect(flags).to_have_text(["no passage"] * 2 + ["in field"] * 6
                                         + ["no passage", "unknown", "re-read"])

        # 5. Official.
        await decide(desk, "o")
        await expect(effect).to_have_text("Declare official: applied")
        await expect(desk.get_by_test_id("official")).to_have_text("official")
        await expect(board.get_by_test_id("board-official")).to_have_text("Official")
        await expect(phone.get_by_test_id("stories")).to_contain_text("Results official")
        await expect(monitor.get_by_test_id("stories")).to_contain_text("Results official")

        # The audit log: who, when, what, its effect; and the same in its export.
        audit = desk.get_by_test_id("audit").locator("tbody tr")
        await expect(audit).to_have_count(10)  # 2 start lists, 2 guns, 6 decisions
        await expect(audit.nth(0)).to_contain_text("OFFICIAL")
        await expect(audit.nth(1)).to_contain_text("RESTART pair 2 (false start)")
        await expect(audit.nth(4)).to_contain_text("DQ bib 1 (lane change)")
        await expect(audit.nth(4)).to_contain_text("applied · undone")
        await expect(audit.nth(6)).to_contain_text("MANUAL_TIME bib 1 finish 1:16.412")
        await expect(audit.nth(2)).to_contain_text("gun pair 2")
        for row in (0, 1, 3, 4, 5, 6):  # the desk's, sent with the referee's token
            await expect(audit.nth(row)).to_contain_text("referee")
            await expect(audit.nth(row).locator("td").first).to_have_text(
                re.compile(r"^\d\d:\d\d:\d\d\.\d{3}$"))
        async with desk.expect_download() as download:
            await desk.get_by_test_id("export-csv").click()
        csv = Path(await (await download.value).path()).read_text().splitlines()
        effects = {(c[5], c[11]) for c in (line.split(",") for line in csv[1:])
                   if c[3] == "decision"}
        assert effects == {("manual_time", "applied"), ("dq", "applied"),
                           ("void", "applied"), ("restart", "applied"),
                           ("official", "applied")}
        assert csv[0].endswith(",transponder,passage")
        assert any(",finish_time," in line and ",applied,,,finish" in line for line in csv)
        assert any(",manual_time,1," in line and line.endswith(",finish") for line in csv)
        # The stray chip's read is refused there too, with the reason.
        assert any(",passing," in line and ",refused," in line and "9999999" in line
                   for line in csv)
        # The desk on air: nothing cut, nothing sideways, AA contrast (as every screen),
        # on the arena's 1920x1080 and on a phone; signed in, the sign-in form is gone.
        await desk.keyboard.press("]")  # a read selected, a form open: as in use
        await desk.keyboard.press("b")
        for width, height in ((1920, 1080), (375, 812)):
            await desk.set_viewport_size({"width": width, "height": height})
            # The reads and the audit: every cell in sight, no word broken.
            problems = await desk.evaluate(SCREEN_CHECK, [False, True, [], WHOLE])
            assert problems == [], (width, problems)
            await expect(desk.get_by_test_id("login")).to_be_hidden()
        assert not errors + errors2 + errors3 + errors4
    finally:
        await st.close()


@MODULE_LOOP
async def test_swapped_chips_reassigned_on_the_desk(redis_server, browser):
    """Skaters 1 and 2 of pair 1 raced on each other's chips, so each has the other's
    time. On the desk the referee picks a read of skater 1's chip and skater 1, presses
    h and Enter (the chip is filled in from the read), then gives skater 2 her chip the
    same way, typed: each effect shows at once on the desk and the monitor; a chip that
    is already the skater's is refused with the reason; the audit log and its CSV show
    who did what with which chip, and undo takes the last one back."""
    from playwright.async_api import expect

    st = await start_stack(make_settings(redis_server.url), redis_server.url)
    chips = {s["bib"]: s["transponders"][0] for s in FIXTURE["startlist"]["skaters"]}
    worn = {"1": chips["2"], "2": chips["1"]}  # the swap
    times = FIXTURE["script"]["pairs"][0]["times"]
    try:
        await load_startlist(st)
        await gun(st, 1, T0, 1)
        await send_reads(st, [(T0 + parse_time(t), worn[bib])
                              for bib, ts in times.items() for t in ts], 1)
        http = f"http://127.0.0.1:{st.settings.ingest_http_port}"
        desk, errors = await open_page(browser, f"{http}/desk?race={RACE}", 1600, 1000)
        monitor, errors2 = await open_page(browser, f"{st.http}/monitor?race={RACE}")
        effect = desk.get_by_test_id("effect")
        final1, final2 = desk.get_by_test_id("final-1"), desk.get_by_test_id("final-2")
        await desk.get_by_test_id("token").fill(TOKENS["referee"])
        await desk.keyboard.press("Enter")
        await expect(final1).to_contain_text("1:16.205")  # skater 2's time
        await expect(final2).to_contain_text("1:16.412")

        # [ with no read selected takes the newest (the top row: skater 1's finish on
        # skater 2's chip), not the oldest; ] then goes down to an older one, [ back up.
        rows = desk.get_by_test_id("reads").locator("tbody tr")
        await expect(rows).to_have_count(sum(len(ts) for ts in times.values()))
        await desk.keyboard.press("[")
        await expect(rows.first).to_have_attribute("aria-selected", "true")
        await expect(rows.first).to_contain_text(chips["2"])
        await expect(rows.first).to_contain_text("1:16.412")
        await desk.keyboard.press("]")
        await expect(rows.nth(1)).to_have_attribute("aria-selected", "true")
        await expect(rows.first).to_have_attribute("aria-selected", "false")
        await desk.keyboard.press("[")
        await expect(rows.first).to_have_attribute("aria-selected", "true")

        # A read of skater 1's chip, then skater 1: h fills the chip in from the read.
        read = desk.get_by_test_id("reads").locator("tbody tr", has_text=chips["2"])
        await read.first.click()
        await desk.get_by_test_id("row-1").click()
        await desk.keyboard.press("h")
        chip = desk.get_by_test_id("action-chip")
        await expect(chip).to_have_value(chips["2"])
        await expect(chip).to_be_focused()
        await desk.keyboard.press("Enter")
        await expect(effect).to_have_text("Reassign chip · 1 Ellia Smeding: applied")
        await expect(final2).to_have_text("")  # both chips are skater 1's for now

        # Skater 2 gets hers, typed.
        await desk.keyboard.press("ArrowDown")
        await desk.keyboard.press("h")
        await chip.fill(chips["1"])
        await desk.keyboard.press("Enter")
        await expect(effect).to_have_text("Reassign chip · 2 Han Mei: applied")
        await expect(final1).to_contain_text("1:16.412")
        await expect(final2).to_contain_text("1:16.205")
        await expect(monitor.get_by_test_id("final-1")).to_contain_text("1:16.41")
        await expect(monitor.get_by_test_id("final-2")).to_contain_text("1:16.20")

        # The same chip again: refused, and why. No chip at all: nothing is sent.
        await desk.keyboard.press("h")
        await chip.fill(chips["1"])
        await desk.keyboard.press("Enter")
        await expect(effect).to_have_text(
            f"Reassign chip · 2 Han Mei: refused by scoring: transponder "
            f"{chips['1']} is already bib 2's")
        await desk.keyboard.press("h")
        await chip.fill("")
        await desk.keyboard.press("Enter")
        await expect(effect).to_have_text("not sent: the chip's transponder number")
        await desk.keyboard.press("Escape")

        audit = desk.get_by_test_id("audit").locator("tbody tr")
        await expect(audit.first).to_contain_text(f"REASSIGN bib 2 chip {chips['1']}")
        await expect(audit.first.get_by_test_id("effect-cell")).to_contain_text("refused: ")
        await expect(audit.nth(1)).to_contain_text(f"REASSIGN bib 2 chip {chips['1']}")
        await expect(audit.nth(1).get_by_test_id("effect-cell")).to_have_text("applied")
        await expect(audit.nth(2)).to_contain_text(f"REASSIGN bib 1 chip {chips['2']}")

        # Undo: the last reassignment is taken back (skater 1 has both chips again).
        await desk.keyboard.press("u")
        await desk.keyboard.press("Enter")
        await expect(effect).to_have_text(
            f"Undo: REASSIGN bib 2 chip {chips['1']}: applied")
        await expect(final2).to_have_text("")
        await expect(audit.nth(2).get_by_test_id("effect-cell")).to_have_text(
            "applied · undone")
        async with desk.expect_download() as download:
            await desk.get_by_test_id("export-csv").click()
        lines = Path(await (await download.value).path()).read_text().splitlines()
        assert lines[0].endswith(",refused_because,transponder,passage")
        assert any(",reassign,2," in x and x.endswith(f",applied,,{chips['1']},")
                   for x in lines)

        # Scoring stopped and started again: the desk's health line and /api/health
        # say when, from what it rebuilt, how many inputs, how long.
        health = desk.get_by_test_id("health")
        await expect(health).to_be_hidden()  # a first start is no restart
        await st.stop("scoring")
        await st.start("scoring")
        await expect(health).to_be_visible()
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{st.http}/api/health") as resp:
                got = await resp.json()
            async with s.get(f"{st.http}/metrics") as resp:
                metrics = await resp.text()
        assert re.search(r"^icetime_scoring_rebuilds_total 1\.0$", metrics, re.M), metrics
        assert "started_at_us" not in metrics and 'outcome="rebuilds"' not in metrics
        rebuild = got["scoring"]["last_rebuild"]
        assert got["scoring"]["rebuilds"] == 1 and got["service_restarts"] == {}, got
        assert rebuild["source"] in ("start", "checkpoint") and rebuild["inputs"] > 0
        assert rebuild["at_us"] == got["scoring"]["started_at_us"]
        source = "checkpoint" if rebuild["source"] == "checkpoint" else "the start"
        await expect(health).to_have_text(re.compile(
            rf"^scoring restarted \d\d:\d\d:\d\d \(rebuilt from {source}, "
            rf"{rebuild['inputs']} inputs, {rebuild['seconds']:.1f} s\)$"))
        assert not errors and not errors2, errors + errors2
    finally:
        await st.close()


@MODULE_LOOP
async def test_the_audit_log_shows_the_newest_first_however_long(redis_server, browser):
    """A long officials' stream (1,100 unknown-transponder reads sent after the start
    list): the gun keyed last is in the desk's first answer, and on the desk at once;
    older entries come on demand (``before``, the desk's "Older entries"), back to the
    start list."""
    from playwright.async_api import expect

    st = await start_stack(make_settings(redis_server.url), redis_server.url)
    ingest = f"http://127.0.0.1:{st.settings.ingest_http_port}"
    n_unknown = 1_100
    try:
        await load_startlist(st)
        async with aiohttp.ClientSession() as s:
            body = [{"type": "passing", "transponder": f"9{n:06d}", "t": T0 + n, "seq": n}
                    for n in range(1, n_unknown + 1)]
            async with s.post(f"{ingest}/feed", json=body,
                              headers={"Authorization": f"Bearer {TOKENS['finish-loop']}"}) as r:
                assert r.status == 200
            # Scoring answers inputs in order: the gun's verdict comes after the reads'.
            gun = {"type": "gun", "race": RACE, "pair": 1, "t": T0 + 10**7, "seq": 1}
            async with s.post(f"{ingest}/feed", json=gun, params={"wait": "1"},
                              headers={"Authorization": f"Bearer {TOKENS['gun']}"}) as r:
                assert (await r.json())["verdict"] == "applied"
            ref = {"Authorization": f"Bearer {TOKENS['referee']}"}
            async with s.get(f"{ingest}/api/desk/audit", headers=ref) as r:
                page = await r.json()
            assert page["entries"][-1]["type"] == "gun" and page["older"]
            assert len(page["entries"]) == 1000 and page["first"] == page["entries"][0]["offset"]
            # Back page by page to the start list, each page before the last one's first.
            seen = [page["entries"]]
            while page["older"]:
                async with s.get(f"{ingest}/api/desk/audit", headers=ref,
                                 params={"before": page["first"]}) as r:
                    page = await r.json()
                seen.insert(0, page["entries"])
            whole = [e for p in seen for e in p]
            assert whole[0]["type"] == "startlist" and len(whole) == n_unknown + 2
            ids = [tuple(map(int, e["offset"].split("-"))) for e in whole]
            assert ids == sorted(set(ids))  # in order, none twice
            async with s.get(f"{ingest}/api/desk/audit", headers=ref,
                             params={"before": "nonsense"}) as r:
                assert r.status == 400

        desk, errors = await open_page(browser, f"{ingest}/desk", 1600, 1000)
        await desk.get_by_test_id("token").fill(TOKENS["referee"])
        await desk.keyboard.press("Enter")
        audit = desk.get_by_test_id("audit").locator("tbody tr")
        await expect(audit).to_have_count(1)
        await expect(audit.first).to_contain_text("gun pair 1")
        older = desk.get_by_test_id("audit-older")
        await expect(older).to_be_visible()
        await desk.screenshot(path=Path(__file__).parent / "screenshots"
                              / "desk-audit-newest-1600x1000.png")
        for _ in range(2):  # 1,102 entries: the newest 1,000 shown, then one more page
            if await older.is_hidden():
                break
            await older.click()  # disabled until its page is in
            await expect(older).to_be_enabled()
        await expect(older).to_be_hidden()
        await expect(audit).to_have_count(2)
        await expect(audit.last).to_contain_text("startlist")
        await expect(audit.first).to_contain_text("gun pair 1")
        assert not errors, errors
    finally:
        await st.close()


async def test_both_nodes_serve_the_favicon_at_the_root(stack):
    """Browsers ask for /favicon.ico on their own: no page (the desk included) may log a
    404 for it. Both nodes answer /favicon.svg and /favicon.ico with web/favicon.svg."""
    icon = (Path(__file__).parents[1] / "web" / "favicon.svg").read_bytes()
    nodes = (stack.settings.broadcast_http_port, stack.settings.ingest_http_port)
    async with aiohttp.ClientSession() as s:
        for port in nodes:
            for path in ("/favicon.svg", "/favicon.ico", "/static/favicon.svg"):
                async with s.get(f"http://127.0.0.1:{port}{path}") as resp:
                    assert resp.status == 200, (port, path)
                    assert resp.content_type == "image/svg+xml", (port, path)
                    assert await resp.read() == icon
    desk = (Path(__file__).parents[1] / "web" / "desk.html").read_text()
    assert '<link rel="icon" href="/static/favicon.svg"' in desk


def test_the_audit_export_names_the_passage_of_a_manual_time():
    """A manual time for a missed 600 m read says 600 in its CSV row; one without
    ``m`` is the finish; a decision about no passage leaves the column empty."""
    import csv as csv_mod
    import io

    from services.ingest.desk import audit_csv

    entries = [{"input": "1-0", "type": "decision", "verdict": "applied",
                "input_fields": {"race": RACE, "action": "manual_time", "bib": "2", "m": 600,
                                 "time_us": 45_700_000}},
               {"input": "2-0", "type": "decision", "verdict": "applied",
                "input_fields": {"race": RACE, "action": "manual_time", "bib": "2",
                                 "time_us": 76_000_000}},
               {"input": "3-0", "type": "decision", "verdict": "applied",
                "input_fields": {"race": RACE, "action": "dq", "bib": "2"}}]
    rows = list(csv_mod.DictReader(io.StringIO(audit_csv(entries))))
    assert [r["passage"] for r in rows] == ["600", "finish", ""]
