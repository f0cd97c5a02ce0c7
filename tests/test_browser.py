"""The live page in a real Chromium (Debian's), driven by Playwright, while a race replays."""
from __future__ import annotations

import asyncio
import copy
import os
import re
import signal
from collections import Counter
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from icetime import bus, keys
from icetime.cli import replay
from icetime.keys import DEFAULT_COMPETITION as MAIN
from icetime.replay import script_inputs

from .chromium import CHROMIUM, open_page
from .conftest import make_settings, start_stack, stop_processes
from .netcut import Cable
from .test_pipeline import FIXTURE, RACE, load_startlist

SHOTS = Path(__file__).parent / "screenshots"

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None,
                       reason="no Chromium found: install Debian's `chromium` (.ci/run does)"),
    # One event loop for the module's tests, so they share one Chromium (:func:`chromium`):
    # Playwright's driver and browser belong to the loop that started them.
    pytest.mark.asyncio(loop_scope="module"),
]


@pytest_asyncio.fixture(loop_scope="module")
async def stack(redis_server):
    """conftest's ``stack``, in the module's event loop (the tests run in it)."""
    s = await start_stack(make_settings(redis_server.url), redis_server.url)
    yield s
    await s.close()


#: Replay speed between a test's holds. What the tests look at is held on the screens
#: (:class:`Hold`), so the pace in between only costs time; each input goes through the
#: JSON feed after the one before it was answered, so the order is the script's at any
#: speed (through a P3 decoder, with :func:`stored_before_guns`). The pages' running
#: clocks run this much faster too, still in minutes while a hold lasts.
FAST = 200.0


def stored_before_guns(r, stored: int):
    """A replay's ``hold`` for a fast replay through a P3 decoder: before each gun, wait
    until ingest has stored every input sent before it (``stored``: the input log's
    length at the start). The decoder's passings travel on a link of their own; without
    this a pair's last ones could reach ingest after the next pair's gun."""
    sent = 0

    async def hold(item) -> None:
        nonlocal sent
        if item.inp["type"] == "gun":
            async with asyncio.timeout(30):
                while await r.xlen(keys.raw_stream(MAIN)) < stored + sent:
                    await asyncio.sleep(0.01)
        sent += 1
    return hold


def short_race():
    """Pairs 3, 9 and 10: Goetz, Leerdam/Bowe, Li/Takagi, close together."""
    doc = copy.deepcopy(FIXTURE)
    doc["script"]["pairs"] = [p for p in doc["script"]["pairs"] if p["pair"] in (3, 9, 10)]
    doc["script"]["pair_interval_s"] = 4
    return doc


class Hold:
    """Pauses a replay (its ``hold``) before the first input that ``when`` matches, until
    :meth:`release`: a moment of the race stays on the screens while the test looks at it,
    however slowly the machine runs, instead of passing by at the replay's speed.
    ``arrived`` is set once the replay is there (everything before it sent)."""

    def __init__(self, when) -> None:
        self.when = when
        self.reached = False
        self.arrived = asyncio.Event()
        self.released = asyncio.Event()

    async def __call__(self, item) -> None:
        if not self.reached and self.when(item):
            self.reached = True
            self.arrived.set()
            await self.released.wait()

    def release(self) -> None:
        self.released.set()


def holds(*moments: Hold):
    """One replay ``hold`` made of several :class:`Hold`, each seeing every input."""
    async def hold(item) -> None:
        for moment in moments:
            await moment(item)
    return hold


def crossing(doc, number=None, bibs=()):
    """``when`` for :class:`Hold`: in ``doc``'s script, a transponder's (of one of
    ``bibs``, if given) ``number``-th passing, or (None) its last one: its finish."""
    mine = {t for s in doc["startlist"]["skaters"] if s["bib"] in bibs
            for t in s["transponders"]}
    last = Counter(i.inp["transponder"] for i in script_inputs(doc) if i.inp["type"] == "passing")
    seen: Counter[str] = Counter()

    def when(item) -> bool:
        if item.inp["type"] != "passing" or (mine and item.inp["transponder"] not in mine):
            return False
        seen[item.inp["transponder"]] += 1
        return seen[item.inp["transponder"]] == (number or last[item.inp["transponder"]])
    return when


def gun(pair: int):
    """``when`` for :class:`Hold`: the gun of ``pair``."""
    return lambda item: item.inp["type"] == "gun" and item.inp.get("pair") == pair


#: A running clock: race time in tenths (past a minute with the minutes).
RUNNING = re.compile(r"^(\d+:)?\d+\.\d$")


def seconds(text: str) -> float:
    minutes, _, secs = text.rpartition(":")
    return int(minutes or 0) * 60 + float(secs)


async def expect_running(clock) -> None:
    """``clock`` shows a race time in tenths, and it moves on."""
    from playwright.async_api import expect

    await expect(clock).to_have_text(RUNNING, timeout=10_000)
    first = await clock.text_content() or ""
    await expect(clock).not_to_have_text(first)
    later = await clock.text_content() or ""
    assert RUNNING.match(first) and RUNNING.match(later), (first, later)
    assert seconds(later) > seconds(first), f"the running clock went from {first} to {later}"


#: web/js/live.js: a clock sync this often (ms), doubling as the connection's heartbeat.
HEARTBEAT_MS = 5000


async def heartbeat(pages) -> None:
    """Each page's clock one heartbeat on (a phone's lid shut for 5 s): its heartbeat
    fires, once; whether it finds the connection dead is its own decision."""
    await asyncio.gather(*(page.clock.fast_forward(HEARTBEAT_MS) for page in pages))


async def reconnects(pages) -> list[int]:
    return [await page.evaluate("window.icetime.stats.reconnects") for page in pages]


async def test_fans_page_follows_a_skater_with_a_delay_through_a_network_drop(browser,
                                                                              redis_server):
    """The fans' phone page: follow Takagi, her gap chart, a TV delay on a second phone,
    and the network cut mid-race (silently, as in a tunnel): the page notices, comes
    back and has every event, with none twice."""
    from playwright.async_api import expect

    settings = make_settings(redis_server.url)
    cable = Cable()
    await cable.start()
    st = await start_stack(replace(settings, public_ws_url=f"ws://127.0.0.1:{cable.port}/"),
                           redis_server.url)
    cable.target_port = st.settings.broadcast_ws_port
    try:
        await load_startlist(st)
        url = f"{st.http}/live?race={RACE}&bib=20"
        (page, errors), (late, late_errors) = await asyncio.gather(
            open_page(browser, url, 375, 812, clock=True),
            open_page(browser, url + "&delay=4", 375, 812, clock=True))
        phones = (page, late)
        received = []
        page.on("websocket", lambda ws: ws.on("framereceived",
                                              lambda f: received.append(len(f))))
        await expect(page.get_by_test_id("race-name")).to_have_text(
            "Women 1000 m · Division A")
        await expect(page.get_by_test_id("status")).to_have_text("live")
        await expect(page.locator("#follow-title")).to_have_text("Following Takagi")
        await expect(late.get_by_test_id("status")).to_have_text("live · 4 s behind")

        doc = short_race()
        goetz = Hold(crossing(doc, 1, bibs=("5",)))  # pair 3 on the ice
        goetz_done = Hold(gun(9))
        pair_9 = Hold(crossing(doc, 1, bibs=("17", "18")))  # Leerdam and Bowe
        takagi_600 = Hold(crossing(doc, 2, bibs=("20",)))  # the cut held back up to here
        takagi_finish = Hold(crossing(doc, bibs=("20",)))
        feed = asyncio.create_task(replay(doc, st.settings, speed=FAST, announce=False,
                                          hold=holds(goetz, goetz_done, pair_9,
                                                     takagi_600, takagi_finish)))
        # Goetz in pair 3: the lanes' clock runs, then her finish.
        await expect(page.get_by_test_id("pair-label")).to_have_text("· pair 3",
                                                                     timeout=10_000)
        await expect(page.get_by_test_id("ice-state")).to_have_text("On the ice")
        await expect_running(page.get_by_test_id("clock-I"))
        goetz.release()
        await expect(page.get_by_test_id("final-5")).to_have_text("1:14.45",
                                                                  timeout=20_000)
        goetz_done.release()

        # Pair 9 on the ice. A heartbeat answered keeps the link: the phones stay.
        await expect(page.get_by_test_id("pair-label")).to_have_text("· pair 9",
                                                                     timeout=15_000)
        before = await reconnects(phones)
        for _ in range(2):
            heard = [await phone.evaluate("window.icetime.lastMessageAt")
                     for phone in phones]
            await heartbeat(phones)
            for phone, at in zip(phones, heard, strict=True):
                # The heartbeat's sync has its answer (the replay is held: nothing else
                # comes), so the next heartbeat finds the link alive.
                await phone.wait_for_function("(at) => window.icetime.lastMessageAt > at",
                                              arg=at)
        assert await reconnects(phones) == before, "a live link was given up"
        await expect(page.get_by_test_id("status")).to_have_text("live")
        # Into the tunnel: the next heartbeat goes unanswered (the cable swallowed it),
        # so the one after finds the link dead: the phones find out by themselves.
        cable.cut()
        swallowed = cable.swallowed
        await heartbeat(phones)
        async with asyncio.timeout(10):
            while cable.swallowed < swallowed + len(phones):
                await asyncio.sleep(0.02)
        await heartbeat(phones)
        for phone in phones:
            await expect(phone.get_by_test_id("status")).not_to_have_text(
                lambda_or_regex("^live"), timeout=10_000)
        # The race goes on in the tunnel: the rest of pair 9, then pair 10 to 200 m.
        pair_9.release()
        await takagi_600.arrived.wait()
        cable.restore()
        await heartbeat(phones)  # past the reconnect backoff
        await expect(page.get_by_test_id("status")).to_have_text("live", timeout=10_000)
        takagi_600.release()

        # Takagi at 600 m: 45.36, 3rd, 0.14 behind Goetz, on her card and her chart.
        await expect(page.get_by_test_id("follow-last-20")).to_have_text(
            "600 m 45.36 · 3rd · +0.14", timeout=30_000)
        await expect(page.get_by_test_id("lbl-20-600")).to_have_text("+0.14")
        await expect(page.get_by_test_id("lbl-20-200")).to_have_text("+0.08")
        # One gap on the whole page: the chart's is the card's and the lanes' (to the
        # leader of the moment, at each passage), and it says so.
        await expect(page.get_by_test_id("chart-title")).to_have_text(
            "Gap to the leader at each passage")
        # The phone 4 s behind has not seen it yet, and then it has.
        await expect(late.get_by_test_id("lbl-20-600")).to_have_count(0)
        takagi_finish.release()
        await expect(page.get_by_test_id("follow-final-20")).to_have_text(
            "1:14.44", timeout=20_000)
        await expect(late.get_by_test_id("follow-final-20")).to_have_count(0)
        await expect(late.get_by_test_id("lbl-20-600")).to_have_text("+0.14",
                                                                     timeout=10_000)
        await feed
        # The last pair has finished: nobody is on the ice (as the desk says).
        await expect(page.get_by_test_id("ice-state")).to_have_text("Nobody on the ice")
        await expect(page.get_by_test_id("pair-label")).to_have_text("· last pair 10")

        rows = page.get_by_test_id("classification").locator("tbody tr")
        await expect(rows).to_have_count(6)
        top = [await rows.nth(i).locator("td.who .full").text_content() for i in range(3)]
        times = [await rows.nth(i).locator(".t").text_content() for i in range(3)]
        assert top == ["Miho Takagi", "Kimi Goetz", "Jutta Leerdam"]
        assert times == ["1:14.44", "1:14.45", "1:14.88"]
        await expect(page.get_by_test_id("stories")).to_contain_text(
            "Takagi 0.14 behind Goetz at 600 m")
        # Everything from the cut came on resume: Leerdam's passages of pair 9 too.
        view = await page.evaluate("window.icetime.view")
        assert all(all(view["results"][b]["passages"]) for b in view["classification"]["bib"])
        stats = await page.evaluate("window.icetime.stats")
        assert stats["resumes"] >= 1 and stats["snapshots"] == 1
        assert stats["duplicates"] == 0
        await expect(late.get_by_test_id("follow-final-20")).to_have_text("1:14.44",
                                                                          timeout=10_000)
        late_stats = await late.evaluate("window.icetime.stats")
        assert late_stats["snapshots"] == 1 and late_stats["duplicates"] == 0, late_stats
        print(f"fans' page: {sum(received)} bytes in {len(received)} WebSocket frames "
              f"for the whole race (snapshot included)")
        assert sum(received) < 100_000, "the fans' page should stay light on data"

        # Tapping a skater in the classification follows her.
        await rows.nth(1).click()
        await expect(page.locator("#follow-title")).to_have_text("Following Goetz")
        await expect(page.get_by_test_id("follow-final-5")).to_have_text("1:14.45")
        # Goetz skated first: nobody led when she passed, so her chart has no point
        # (the same gap as her lanes' "Leader" column, empty too).
        await expect(page.get_by_test_id("chart-title")).to_have_text(
            "Gap to the leader at each passage")
        await expect(page.get_by_test_id("pt-5-600")).to_have_count(0)
        await expect(page.get_by_test_id("chart")).to_contain_text("no leader yet")
        await page.screenshot(path=SHOTS / "live-375x812.png", full_page=True)
        await assert_fits(page, LIVE_BOXES)
        assert not errors and not late_errors, errors + late_errors

        wide, wide_errors = await open_page(browser, f"{st.http}/live?race={RACE}&bib=20")
        await expect(wide.get_by_test_id("follow-final-20")).to_have_text("1:14.44")
        await wide.screenshot(path=SHOTS / "live-1920x1080.png")
        await assert_fits(wide, LIVE_BOXES)
        assert not wide_errors, wide_errors
    finally:
        # The network first: a silent connection left open would hold the node's
        # WebSocket server for its close timeout (10 s) on stop.
        await cable.close()
        await st.close()


def lambda_or_regex(pattern: str):
    import re

    return re.compile(pattern)


async def assert_fits(page, clipped: str, outside: str = "", vertical: bool = False) -> None:
    """No scrolling (sideways, and downwards if ``vertical``); no element of ``clipped``
    wider than its own box (cut-off text is a wrong number); no element of ``outside``
    reaching past the viewport."""
    bad = await page.evaluate("""([clipped, outside, vertical]) => {
        const out = [];
        const de = document.documentElement;
        if (de.scrollWidth > innerWidth || (vertical && de.scrollHeight > innerHeight)) {
            out.push('page');
        }
        for (const el of outside ? document.querySelectorAll(outside) : []) {
            const r = el.getBoundingClientRect();
            if (r.right > innerWidth + 1 || r.bottom > innerHeight + 1) out.push(el.className);
        }
        for (const el of document.querySelectorAll(clipped)) {
            if (el.scrollWidth > el.clientWidth + 1) {
                out.push('clipped: ' + (el.className || el.tagName) + ' ' + el.textContent);
            }
        }
        return out;
    }""", [clipped, outside, vertical])
    assert not bad, f"overflowing: {bad}"


LIVE_BOXES = "section, header, .lane, table, .controls, .fcard"
BOARD_TEXTS = ".under div, footer .row, .name, .who, .clock"
BOARD_BOXES = ".board, main, .lane, .step, footer"


async def test_arena_board_switches_by_itself_and_says_when_data_stops(browser, stack):
    from playwright.async_api import expect

    await load_startlist(stack)
    page, errors = await open_page(browser, f"{stack.http}/board?race={RACE}")
    board = page.get_by_test_id("board")
    await expect(page.get_by_test_id("board-race")).to_have_text("Women 1000 m · Division A")
    await expect(page.get_by_test_id("board-alert")).to_be_hidden()
    await expect(board).to_have_attribute("data-mode", "idle")

    doc = short_race()
    goetz = Hold(crossing(doc, 1, bibs=("5",)))  # pair 3 on the ice
    between = Hold(gun(9))
    takagi_600 = Hold(crossing(doc, bibs=("20",)))  # her last passage up, before her finish
    feed = asyncio.create_task(replay(doc, stack.settings, speed=FAST, announce=False,
                                      hold=holds(goetz, between, takagi_600)))
    await expect(board).to_have_attribute("data-mode", "pair", timeout=10_000)
    await expect(page.get_by_test_id("board-lane-I")).to_contain_text("Kimi Goetz")
    await expect_running(page.get_by_test_id("board-clock-I"))
    goetz.release()
    # Between pairs (the next gun held back): the last pair's result stays up with
    # the rank, then the board turns to the standings by itself.
    await expect(page.get_by_test_id("board-result-I")).to_contain_text("1st",
                                                                          timeout=15_000)
    await expect(board).to_have_attribute("data-mode", "standings")
    between.release()
    # Data stops: the board says so instead of freezing silently.
    await stack.stop("broadcast")
    await expect(page.get_by_test_id("board-alert")).to_have_text(
        "Server unreachable: reconnecting…", timeout=5_000)
    await stack.start("broadcast")
    await expect(page.get_by_test_id("board-alert")).to_be_hidden(timeout=10_000)
    # Takagi in the outer lane: at 600 m, 3rd and 0.14 behind the leader.
    await expect(page.get_by_test_id("board-lane-O")).to_contain_text("Miho Takagi",
                                                                      timeout=30_000)
    await expect(page.get_by_test_id("board-passage-O")).to_contain_text(
        "600 m 45.36", timeout=15_000)
    await expect(page.get_by_test_id("board-passage-O")).to_contain_text("+0.14")
    await page.screenshot(path=SHOTS / "board-pair-1920x1080.png")
    await assert_fits(page, BOARD_TEXTS, BOARD_BOXES, vertical=True)
    takagi_600.release()
    await feed
    # All done: the podium, in the published order.
    await expect(board).to_have_attribute("data-mode", "podium", timeout=15_000)
    podium = page.get_by_test_id("board-podium")
    await expect(podium.locator(".who")).to_have_text(
        ["Miho Takagi", "Kimi Goetz", "Jutta Leerdam"])
    await expect(podium.locator(".t")).to_have_text(["1:14.44", "1:14.45", "1:14.88"])
    await page.screenshot(path=SHOTS / "board-1920x1080.png")
    await assert_fits(page, BOARD_TEXTS, BOARD_BOXES, vertical=True)
    # A wide LED ribbon (3840×640 is 6:1): still no scrolling, nothing spills.
    await page.set_viewport_size({"width": 3840, "height": 640})
    await page.screenshot(path=SHOTS / "board-3840x640.png")
    await assert_fits(page, BOARD_TEXTS, BOARD_BOXES, vertical=True)
    assert not errors, errors


async def test_board_clock_of_a_late_gun_runs_from_the_gun_not_its_arrival(browser, stack):
    """A gun that reaches ingest 30 s late (tests/test_running_clock.py): the board's
    running clock is at least the race time of the split beside it, not 30 s behind."""
    from playwright.async_api import expect

    from .test_running_clock import LATE_US, Sender

    st = Sender(stack.settings.ingest_tcp_port)
    try:
        await st.load_pair()
        page, errors = await open_page(browser, f"{stack.http}/board?race=1000")
        a = await st.read_now("11")
        await st.send("gun", {"type": "gun", "race": "1000", "pair": 1, "t": a - LATE_US})
        split = page.get_by_test_id("board-passage-I")
        await expect(split).to_contain_text("200 m 30.", timeout=10_000)
        shown = (await split.locator("div").first.text_content() or "").split()[-1]
        clock = page.get_by_test_id("board-clock-I")
        await expect_running(clock)
        assert seconds(await clock.text_content() or "") >= seconds(shown), shown
        assert not errors, errors
    finally:
        await st.close()


async def test_broadcast_overlay_is_transparent_with_the_pair_and_gap(browser, stack):
    from playwright.async_api import expect

    await load_startlist(stack)
    page, errors = await open_page(browser, f"{stack.http}/overlay?race={RACE}")
    doc = short_race()
    doc["script"]["pairs"] = [x for x in doc["script"]["pairs"] if x["pair"] in (3, 10)]
    goetz = Hold(crossing(doc, 1, bibs=("5",)))  # pair 3 on the ice
    takagi_600 = Hold(crossing(doc, bibs=("20",)))  # her last passage up, before her finish
    feed = asyncio.create_task(replay(doc, stack.settings, speed=FAST, announce=False,
                                      hold=holds(goetz, takagi_600)))
    await expect(page.get_by_test_id("overlay-third")).to_be_visible(timeout=10_000)
    await expect(page.get_by_test_id("overlay-I")).to_contain_text("Kimi Goetz")
    goetz.release()
    # The last pair: Takagi at 600 m, 0.14 behind the leader Goetz, then her finish.
    await expect(page.get_by_test_id("overlay-O")).to_contain_text("Miho Takagi",
                                                                   timeout=20_000)
    await expect(page.get_by_test_id("overlay-O")).to_contain_text("600 m 45.36",
                                                                   timeout=15_000)
    await expect(page.get_by_test_id("overlay-O").locator(".gap")).to_have_text("+0.14")
    takagi_600.release()
    await feed
    await expect(page.get_by_test_id("overlay-O")).to_contain_text("1:14.44",
                                                                   timeout=10_000)
    png = await page.screenshot(path=SHOTS / "overlay-1920x1080.png", omit_background=True)
    assert not errors, errors
    import struct
    import zlib
    # Decode the PNG's first pixel: RGBA with alpha 0 means the page is see-through.
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    while pos < len(png):
        length, kind = struct.unpack(">I4s", png[pos:pos + 8])
        chunk = png[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, _, depth, colour = struct.unpack(">IIBB", chunk[:10])
            assert (depth, colour) == (8, 6), "expected RGBA"
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    raw = zlib.decompress(idat)
    # raw[0] is the row's filter type; for the first pixel of the first row every PNG
    # filter stores the value itself, so byte 4 is that pixel's alpha.
    assert raw[4] == 0, "the top-left pixel is not transparent"
    assert width == 1920


MONITOR_BOXES = "header, .health, main, aside section, .grid-wrap"


async def test_monitor_grid_stories_health_and_keyboard(browser, redis_server, tmp_path):
    """The monitor while the race comes through a P3 decoder (as at a venue), with a
    broadcast restart in the middle."""
    from playwright.async_api import expect

    from .test_decoder_link import decoder_stack, post

    async with decoder_stack(redis_server, tmp_path) as (st, sim):
        await post(st, "/api/startlist", FIXTURE["startlist"])
        page, errors = await open_page(browser, f"{st.http}/monitor?race={RACE}")
        await expect(page.get_by_test_id("monitor-race")).to_have_text(
            "Women 1000 m · Division A")
        await expect(page.get_by_test_id("records")).to_have_text("WR 1:11.61 · TR 1:13.19")
        grid = page.get_by_test_id("grid")
        await expect(grid.locator("tbody tr")).to_have_count(20)
        # Feed health: the decoder link is up and reports its STATUS.
        await expect(page.get_by_test_id("decoder-finish-p3")).to_contain_text("up",
                                                                               timeout=10_000)
        await expect(page.get_by_test_id("decoder-finish-p3")).to_contain_text("noise")

        doc = short_race()
        goetz = Hold(crossing(doc, 1, bibs=("5",)))  # pair 3 on the ice
        pair_9 = Hold(crossing(doc, 1, bibs=("17", "18")))  # Leerdam and Bowe on the ice
        takagi_600 = Hold(crossing(doc, 2, bibs=("20",)))  # the restart held back up to here
        r = bus.connect(st.url)
        st.clients.append(r)  # closed with the stack
        in_order = stored_before_guns(r, await r.xlen(keys.raw_stream(MAIN)))
        feed = asyncio.create_task(replay(doc, st.settings, speed=FAST, announce=False,
                                          decoder=sim,
                                          hold=holds(in_order, goetz, pair_9, takagi_600)))
        await expect_running(page.get_by_test_id("monitor-clock"))
        goetz.release()
        goetz_row = grid.locator('tr[data-bib="5"]')
        await expect(goetz_row.locator('td[data-m="600"] .t')).to_have_text("45.22",
                                                                            timeout=20_000)
        await expect(page.get_by_test_id("final-5")).to_contain_text("1:14.45", timeout=15_000)
        await expect(page.get_by_test_id("last-passing")).to_contain_text("s ago")
        await expect(page.get_by_test_id("latency")).to_contain_text(lambda_or_regex(r"\d ms"))

        # Broadcast restarts while pair 9 skates: the monitor resumes, no gap.
        await expect(page.get_by_test_id("monitor-pair")).to_have_text("pair 9",
                                                                        timeout=15_000)
        await st.stop("broadcast")
        await expect(page.get_by_test_id("status")).not_to_have_text("live", timeout=5_000)
        # The race goes on meanwhile: the rest of pair 9, then pair 10 to 200 m.
        pair_9.release()
        await takagi_600.arrived.wait()
        await st.start("broadcast")
        await expect(page.get_by_test_id("status")).to_have_text("live", timeout=10_000)
        takagi_600.release()

        # Takagi at 600 m: 45.36, 3rd there, 0.14 behind the leader, slower (red);
        # Leerdam's 44.96 is the fastest 600 m (purple).
        takagi = grid.locator('tr[data-bib="20"]')
        cell = takagi.locator('td[data-m="600"]')
        await expect(cell.locator(".t")).to_have_text("45.36", timeout=30_000)
        await expect(cell.locator(".rk")).to_have_text("3")
        await expect(cell.locator(".gap")).to_have_text("+0.14")
        await expect(cell.locator(".gap")).to_have_class(lambda_or_regex("slower"))
        await expect(grid.locator('tr[data-bib="17"] td[data-m="600"]')).to_have_class(
            lambda_or_regex(r"\bbest\b"))
        await expect(page.get_by_test_id("stories")).to_contain_text(
            "Takagi 0.14 behind Goetz at 600 m")
        await feed
        await expect(page.get_by_test_id("final-20")).to_contain_text("1:14.44", timeout=15_000)
        await expect(page.get_by_test_id("stories").locator("li.hot").first).to_have_text(
            "New leader: Takagi in 1:14.44, 0.006 ahead of Goetz")

        # Keyboard: pin Takagi (she moves to the top), then compare her with Goetz.
        await takagi.click()
        await page.keyboard.press("p")
        await expect(grid.locator("tbody tr").first).to_have_attribute("data-bib", "20")
        await page.keyboard.press("c")
        await goetz_row.click()
        await page.keyboard.press("c")
        cmp = page.get_by_test_id("compare")
        await expect(cmp.locator("th")).to_have_text(["", "Takagi", "Goetz", "Diff", "Lap"])
        await expect(cmp.locator('tr[data-m="600"] .diff')).to_have_text("+0.14")
        await expect(cmp.locator('tr[data-m="1000"] .diff')).to_have_text("-0.006")
        # Arrow keys move the selection; s orders by the classification (pins stay on top).
        await page.keyboard.press("ArrowDown")
        await expect(grid.locator("tr.selected")).to_have_count(1)
        await page.keyboard.press("s")
        await expect(grid.locator("tbody tr").nth(1)).to_have_attribute("data-bib", "5")
        stats = await page.evaluate("window.icetime.stats")
        assert stats["resumes"] >= 1 and stats["snapshots"] == 1 and stats["duplicates"] == 0
        await page.screenshot(path=SHOTS / "monitor-1920x1080.png")
        await assert_fits(page, ".chip, .cell, .final", MONITOR_BOXES, vertical=True)
        # The choices survive a reload.
        await page.reload()
        await expect(grid.locator("tbody tr").first).to_have_attribute("data-bib", "20")
        await expect(cmp.locator('tr[data-m="600"] .diff')).to_have_text("+0.14")
        assert not errors, errors


async def test_the_monitor_says_what_restarted(browser, stack):
    """Scoring stopped and started again (it rebuilt its engine), and the supervisor's
    restart of a service (as ``icetime run`` records it): the monitor's health shows each
    in a chip of its own, as the desk's health line says it, legible and unclipped at
    1920x1080; before, none (a first start is no restart)."""
    import redis
    from playwright.async_api import expect

    from icetime import restarts

    await load_startlist(stack)
    page, errors = await open_page(browser, f"{stack.http}/monitor?race={RACE}")
    await expect(page.get_by_test_id("feed-counts")).to_be_visible(timeout=10_000)
    chips = page.get_by_test_id("restarted")
    await expect(chips).to_have_count(0)
    await stack.stop("scoring")
    await stack.start("scoring")
    await expect(chips).to_have_count(1, timeout=10_000)
    await expect(chips).to_have_text(re.compile(
        r"^scoring restarted \d\d:\d\d:\d\d \(rebuilt from (checkpoint|the start), "
        r"\d+ inputs?, \d+\.\d s\)$"))
    sync = redis.Redis.from_url(stack.url)
    try:
        restarts.service_restarted(sync, MAIN, "scoring", restarts.ServiceRestart(
            restarts=2, at_us=1_700_000_000_000_000, exit_code=-9, ran_s=513.7))
    finally:
        sync.close()
    await expect(chips).to_have_count(2, timeout=10_000)
    await expect(chips.nth(1)).to_have_text(re.compile(
        r"^scoring restarted by the supervisor 2× \(last \d\d:\d\d:\d\d, exit code -9\)$"))
    size = await chips.first.evaluate("el => parseFloat(getComputedStyle(el).fontSize)")
    assert size >= 12, size
    await page.screenshot(path=SHOTS / "monitor-restarted-1920x1080.png")
    await assert_fits(page, ".chip", MONITOR_BOXES)
    assert not errors, errors


PACK_BOARD_TEXTS = ".prow .pname, .prow .pgap, .ltg, .away div, .ptable div, .step .who"


async def test_pack_race_screens_follow_a_mass_start(browser, stack):
    """The mass start on all four screens at once: laps to go, the points after each
    sprint, Groenewoud's breakaway, then the podium by the mass-start ranking."""
    from playwright.async_api import expect

    from icetime.replay import load_fixture

    doc = load_fixture(Path(__file__).parents[1] / "fixtures" / "beijing2023_w_massstart.json")
    await load_startlist(stack, doc)
    race = "bj23-wms"
    (board, e1), (fan, e2), (monitor, e3), (overlay, e4) = await asyncio.gather(
        open_page(browser, f"{stack.http}/board?race={race}"),
        open_page(browser, f"{stack.http}/live?race={race}&bib=1", 375, 812),
        open_page(browser, f"{stack.http}/monitor?race={race}"),
        open_page(browser, f"{stack.http}/overlay?race={race}"))
    await expect(monitor.get_by_test_id("grid").locator("tbody tr")).to_have_count(12)
    # Held in the second lap (before the leader's third crossing) ...
    lap_2 = Hold(crossing(doc, 3))
    # ... at the first lap-6 crossing: after sprint 1 (lap 4), before sprint 2 (lap 8)
    after_sprint_1 = Hold(crossing(doc, 6))
    at_finish = Hold(crossing(doc))  # ... and at the winner's finish: the last lap
    feed = asyncio.create_task(replay(doc, stack.settings, speed=FAST, announce=False,
                                      hold=holds(lap_2, after_sprint_1, at_finish)))

    await expect(board.get_by_test_id("board")).to_have_attribute("data-mode", "pack",
                                                                  timeout=10_000)
    await expect(board.get_by_test_id("board-laps")).to_have_text("15 laps to go",
                                                                  timeout=10_000)
    await expect(overlay.get_by_test_id("overlay-third")).to_contain_text("laps to go")
    lap_2.release()
    # After the first sprint (lap 4): the points on the board and the phone.
    await expect(board.get_by_test_id("board-points")).to_contain_text("Blondin3",
                                                                       timeout=15_000)
    await expect(fan.get_by_test_id("points-table")).to_contain_text("Blondin 3")
    await expect(monitor.get_by_test_id("stories")).to_contain_text(
        "Sprint 1 (lap 4): Blondin 3, Manganello 2, Maltais 1")
    after_sprint_1.release()
    # Groenewoud goes clear: her lead in seconds and metres, everywhere.
    await expect(board.get_by_test_id("board-breakaway")).to_contain_text(
        "Groenewoud+", timeout=20_000)
    await expect(fan.get_by_test_id("breakaway")).to_contain_text("Groenewoud +")
    # Her last crossing: its lap number, lap time and place across the line.
    await expect(fan.get_by_test_id("follow-last-1")).to_have_text(
        lambda_or_regex(r"^lap \d+ \d+\.\d\d · 1st across"))
    await board.screenshot(path=SHOTS / "board-pack-1920x1080.png")
    await assert_fits(board, PACK_BOARD_TEXTS, BOARD_BOXES, vertical=True)
    await monitor.screenshot(path=SHOTS / "monitor-pack-1920x1080.png")
    await assert_fits(monitor, ".chip, .final", MONITOR_BOXES, vertical=True)
    await expect(fan.get_by_test_id("laps-to-go")).to_have_text("Last lap", timeout=20_000)
    at_finish.release()
    await feed

    podium = board.get_by_test_id("board-podium")
    await expect(podium.locator(".who")).to_have_text(
        ["Marijke Groenewoud", "Ivanie Blondin", "Valérie Maltais"], timeout=10_000)
    await expect(podium.locator(".pts")).to_have_text(["63 pts", "46 pts", "24 pts"])
    rows = fan.get_by_test_id("classification").locator("tbody tr")
    await expect(rows).to_have_count(12)
    # Park crossed the line last with a sprint point: 7th, ahead of the pointless.
    await expect(rows.nth(6)).to_contain_text("Park Ji-woo")
    await expect(rows.nth(6)).to_contain_text("1 pt")
    await expect(fan.get_by_test_id("follow-final-1")).to_have_text("8:24.71")
    await fan.screenshot(path=SHOTS / "live-pack-375x812.png", full_page=True)
    await assert_fits(fan, LIVE_BOXES)
    errors = e1 + e2 + e3 + e4
    assert not errors, errors


#: What a page's chart legend says, per entry: the name, and the colours of its key and
#: of the chart's line (or point) of the same class.
LEGEND = """() => [...document.querySelectorAll("#chart-legend li")].map((li) => {
  const mark = document.querySelector(`#chart polyline.${li.className}`) ||
    document.querySelector(`#chart circle.${li.className}`);
  return [li.querySelector(".name").textContent,
          getComputedStyle(li.querySelector(".key")).backgroundColor,
          mark ? getComputedStyle(mark).stroke : null];
})"""
SCREEN_CHECK = (Path(__file__).parent / "screen_check.js").read_text()


async def test_the_pack_chart_says_who_is_which_line(browser, stack):
    """The fans' page of a mass start, nobody followed, mid-race: the chart draws the
    front three, its y axis says seconds, and its legend names each in the colour of her
    line, on the board-sized screen and on a phone, with nothing cut or spilling
    (tests/screen_check.js)."""
    from playwright.async_api import expect

    from icetime.replay import load_fixture

    doc = load_fixture(Path(__file__).parents[1] / "fixtures" / "beijing2023_w_massstart.json")
    await load_startlist(stack, doc)
    race = "bj23-wms"
    mid = Hold(crossing(doc, 6))
    feed = asyncio.create_task(replay(doc, stack.settings, speed=FAST, announce=False,
                                      hold=mid))
    try:
        await mid.arrived.wait()
        fan, errors = await open_page(browser, f"{stack.http}/live?race={race}")
        entries = fan.get_by_test_id("chart-legend").locator("li")
        await expect(entries).to_have_count(3, timeout=10_000)
        front = await fan.evaluate("() => window.icetime.view.pack.order.slice(0, 3).map("
                                   "(b) => window.icetime.view.skaters[b].short)")
        # The y axis: seconds behind the first across the line, which its labels say.
        chart = fan.get_by_test_id("chart")
        await expect(chart.locator("text.axis", has_text="1st")).to_have_count(1)
        await expect(fan.get_by_test_id("axis-behind")).to_have_text(re.compile(r"^\+\d+(\.5)? s$"))
        await expect(fan.get_by_test_id("axis-ahead")).to_have_text(re.compile(r"^-\d+(\.5)? s$"))
        for width, height in ((1920, 1080), (375, 812)):
            await fan.set_viewport_size({"width": width, "height": height})
            legend = await fan.evaluate(LEGEND)
            assert [name for name, _, _ in legend] == front
            assert all(key == line for _, key, line in legend), legend
            assert len({key for _, key, _ in legend}) == 3, legend
            await fan.screenshot(path=SHOTS / f"live-pack-legend-{width}x{height}.png",
                                 full_page=True)
            problems = await fan.evaluate(SCREEN_CHECK, [False, True, [], ""])
            assert problems == [], (width, problems)
        assert not errors, errors
    finally:
        mid.release()
        await feed


async def test_short_track_board_rings_the_bell_and_takes_the_photo_finish(browser, stack):
    from playwright.async_api import expect

    from icetime.replay import load_fixture

    doc = load_fixture(Path(__file__).parents[1] / "fixtures" / "almaty2022_w1500_2_final.json")
    await load_startlist(stack, doc)
    race = "alm22-w1500-2-fa"
    board, errors = await open_page(browser, f"{stack.http}/board?race={race}")
    lap_1 = Hold(crossing(doc, 2))  # the first lap, before the leader's second crossing
    last_lap = Hold(crossing(doc))  # at the leader's finish
    photo = Hold(lambda item: item.inp["type"] == "finish_time")  # the photo finish
    feed = asyncio.create_task(replay(doc, stack.settings, speed=FAST, announce=False,
                                      hold=holds(lap_1, last_lap, photo)))
    laps = board.get_by_test_id("board-laps")
    await expect(laps).to_have_text("13 laps to go", timeout=10_000)
    lap_1.release()
    await expect(laps).to_have_text("Last lap", timeout=30_000)
    await expect(laps).to_have_class(lambda_or_regex(r"\bbell\b"))
    await board.screenshot(path=SHOTS / "board-shorttrack-1920x1080.png")
    await assert_fits(board, PACK_BOARD_TEXTS, BOARD_BOXES, vertical=True)
    last_lap.release()
    # The transponders put Sarault first; the photo finish, seconds later, Desmet.
    podium = board.get_by_test_id("board-podium")
    await expect(podium.locator(".who").first).to_have_text("Courtney Sarault",
                                                            timeout=15_000)
    photo.release()
    await feed
    await expect(podium.locator(".who")).to_have_text(
        ["Hanne Desmet", "Courtney Sarault", "Anna Seidel"], timeout=10_000)
    await expect(podium.locator(".t")).to_have_text(["2:19.355", "2:19.361", "2:19.781"])
    # Declared official: the World Cup standings move, on the board and the phones.
    cups, cup_errors = await open_page(browser, f"{stack.http}/board?race=wc-standings")
    cup = cups.get_by_test_id("board-cup")
    await expect(cup.locator("caption")).to_have_text(
        lambda_or_regex("^Women (1500 m|overall)$"), timeout=10_000)
    await expect(cup.locator("tbody tr").first).to_contain_text("Hanne Desmet")
    await expect(cup.locator("tbody tr").first).to_contain_text("1000")
    await assert_fits(cups, ".cups td", BOARD_BOXES, vertical=True)
    phone, phone_errors = await open_page(browser, f"{stack.http}/live?race=wc-standings",
                                          375, 812)
    table = phone.locator('table[data-cup="Women 1500 m"] tbody tr')
    await expect(table).to_have_count(5)
    await expect(table.first).to_contain_text("Hanne Desmet")
    assert not errors and not cup_errors and not phone_errors, errors + cup_errors


async def test_team_pursuit_on_the_monitor_and_board(browser, stack):
    """Team events reuse the pair screens: two teams, the gap between them, and on the
    monitor each skater's time at every line."""
    from playwright.async_api import expect

    from icetime.replay import load_fixture

    doc = load_fixture(Path(__file__).parents[1] / "fixtures" / "demo_w_team_pursuit.json")
    doc["script"]["pairs"] = [p for p in doc["script"]["pairs"] if p["pair"] == 2]
    # Japan starts four: the fourth leads the first two laps, then drops (no more reads).
    doc["startlist"]["skaters"].append({"bib": "13", "name": "Japan skater 4", "short": "JPN 4",
                                        "nation": "JPN", "transponders": ["7700131"]})
    jpn = next(t for t in doc["startlist"]["races"][0]["teams"] if t["id"] == "JPN")
    jpn["skaters"].append("13")
    doc["script"]["pairs"][0]["times"]["13"] = ["31.000", "59.100"]
    await load_startlist(stack, doc)
    monitor, e1 = await open_page(browser, f"{stack.http}/monitor?race=demo-wtp")
    board, e2 = await open_page(browser, f"{stack.http}/board?race=demo-wtp")
    on_the_ice = Hold(crossing(doc, 1))  # before the first passing
    feed = asyncio.create_task(replay(doc, stack.settings, speed=FAST, announce=False,
                                      hold=on_the_ice))
    await expect(board.get_by_test_id("board-lane-I")).to_contain_text("Netherlands",
                                                                       timeout=10_000)
    await expect(board.get_by_test_id("board-lane-O")).to_contain_text("Japan")
    on_the_ice.release()
    ned400 = monitor.get_by_test_id("grid").locator('tr[data-bib="NED"] td[data-m="400"]')
    await expect(ned400.locator(".t")).to_have_text("32.30", timeout=15_000)
    await expect(ned400).to_have_attribute("title", "NED 1 31.40 · NED 2 31.85 · NED 3 32.30")
    await feed
    await expect(monitor.get_by_test_id("final-JPN")).to_contain_text("2:53.00",
                                                                      timeout=10_000)
    # Which three counted at the finish, and who dropped after which line.
    members = monitor.get_by_test_id("members-JPN")
    await expect(members.locator(".counted")).to_have_text(["JPN 1", "JPN 2", "JPN 3"])
    await expect(members.locator(".out")).to_have_text("JPN 4 out after 800 m")
    await expect(monitor.get_by_test_id("members-NED").locator(".counted")).to_have_count(3)
    await monitor.screenshot(path=SHOTS / "monitor-team-pursuit-end-1920x1080.png")
    assert not e1 and not e2, e1 + e2


async def test_team_pursuit_gap_between_the_teams_at_every_lap(browser, stack):
    """The first pair of a team pursuit (no team finished yet): at every lap the team
    behind shows its gap to the team ahead, on /live (lanes, card, chart), the board and
    the monitor; the team ahead sits on the chart's leader line."""
    from playwright.async_api import expect

    from icetime.replay import load_fixture

    doc = load_fixture(Path(__file__).parents[1] / "fixtures" / "demo_w_team_pursuit.json")
    doc["script"]["pairs"] = [p for p in doc["script"]["pairs"] if p["pair"] == 1]
    await load_startlist(stack, doc)
    phone, e1 = await open_page(browser, f"{stack.http}/live?race=demo-wtp", 375, 812)
    board, e2 = await open_page(browser, f"{stack.http}/board?race=demo-wtp")
    monitor, e3 = await open_page(browser, f"{stack.http}/monitor?race=demo-wtp")
    before_finish = Hold(crossing(doc, 6))  # five laps done, nobody has finished
    feed = asyncio.create_task(replay(doc, stack.settings, speed=FAST, announce=False,
                                      hold=before_finish))
    try:
        async with asyncio.timeout(30):
            await before_finish.arrived.wait()
        # Canada (inner) leads at every lap; the United States (outer) is behind by
        # 0.20, 0.40, 0.60, 0.80, 0.90 (the third skaters' times in the script).
        usa = phone.get_by_test_id("lane-O")
        for m, gap in ((400, "+0.20"), (1200, "+0.60"), (2000, "+0.90")):
            await expect(usa.locator(f'tr[data-m="{m}"] td.gap')).to_have_text(gap, timeout=15_000)
        can = phone.get_by_test_id("lane-I")
        await expect(can.locator('tr[data-m="2000"] td.rank')).to_have_text("1")
        await expect(phone.get_by_test_id("follow-last-USA")).to_contain_text("+0.90")
        chart = phone.get_by_test_id("chart")
        await expect(chart.get_by_test_id("pt-USA-2000")).to_have_count(1)
        await expect(chart.get_by_test_id("pt-CAN-2000")).to_have_count(1)
        await expect(chart).not_to_contain_text("no leader yet")
        await phone.screenshot(path=SHOTS / "live-team-pursuit-mid-375x812.png", full_page=True)
        await expect(board.get_by_test_id("board-passage-O")).to_contain_text("+0.90")
        await expect(board.get_by_test_id("board-passage-O")).to_contain_text("2000 m")
        await expect(board.get_by_test_id("board-passage-I")).to_contain_text("1st")
        await board.screenshot(path=SHOTS / "board-team-pursuit-mid-1920x1080.png")
        cell = monitor.get_by_test_id("grid").locator('tr[data-bib="USA"] td[data-m="2000"]')
        await expect(cell.locator(".gap")).to_have_text("+0.90")
        await monitor.screenshot(path=SHOTS / "monitor-team-pursuit-mid-1920x1080.png")
    finally:
        before_finish.release()
        await feed
    assert not e1 and not e2 and not e3, e1 + e2 + e3


async def test_monitor_says_the_last_passing_from_any_source(browser, stack):
    """Reads from a JSON feed (not a decoder link) that make no passage of the race (mat
    reads of unknown chips at a split point): the monitor's header still says when the
    last passing came and from where, not "none yet"; /api/health has it."""
    import aiohttp
    from playwright.async_api import expect

    from .conftest import TOKENS

    await load_startlist(stack)
    page, errors = await open_page(browser, f"{stack.http}/monitor?race={RACE}")
    chip = page.get_by_test_id("last-passing")
    await expect(chip).to_contain_text("none yet", timeout=10_000)
    reads = [{"type": "passing", "transponder": f"88{n}", "t": 10**15 + n, "point": "mat-1",
              "seq": n} for n in range(1, 4)]
    async with aiohttp.ClientSession() as s:
        async with s.post(f"http://127.0.0.1:{stack.settings.ingest_http_port}/feed",
                          json=reads, headers={"Authorization": f"Bearer {TOKENS['finish-loop']}"}
                          ) as resp:
            assert all(r["ok"] for r in await resp.json())
        async with s.get(f"{stack.http}/api/health") as resp:
            last = (await resp.json())["last_passing"]
    assert last["source"] == "finish-loop" and last["point"] == "mat-1", last
    await expect(chip).to_contain_text(re.compile(r"last passing [\d.]+ s ago · finish-loop "
                                                  r"\(mat-1\)"), timeout=10_000)
    assert not errors, errors


async def test_live_race_list_gains_races_loaded_later(browser, stack):
    """A /live page open on one race: a start list loaded afterwards adds its race to the
    page's Race drop-down (within a poll), without a reload."""
    from playwright.async_api import expect

    from icetime.replay import load_fixture

    await load_startlist(stack)
    page, errors = await open_page(browser, f"{stack.http}/live?race={RACE}", 375, 812,
                                   clock=True)
    options = page.get_by_test_id("race-select").locator("option")
    await expect(options).to_have_count(1, timeout=10_000)
    tp = load_fixture(Path(__file__).parents[1] / "fixtures" / "demo_w_team_pursuit.json")
    # Bibs of its own: in one competition a bib is one skater (docs/startlist.md).
    sl = tp["startlist"]
    sl["skaters"] = [{**sk, "bib": f"tp{sk['bib']}"} for sk in sl["skaters"]]
    for race in sl["races"]:
        for team in race["teams"]:
            team["skaters"] = [f"tp{b}" for b in team["skaters"]]
    await load_startlist(stack, tp)
    await page.clock.run_for(11_000)  # the drop-down asks again every 10 s
    await expect(options).to_have_count(2)
    await expect(options.nth(1)).to_have_text("Women Team Pursuit · demonstration")
    await expect(page.get_by_test_id("race-select")).to_have_value(RACE)
    assert not errors, errors


async def test_live_page_says_the_data_is_stale_while_redis_is_away(browser, stack, redis_server):
    """Redis killed under a followed race: the page says the data is stale (in the style
    of "server unreachable"), and live again once Redis is back on the same files."""
    from playwright.async_api import expect

    await load_startlist(stack)
    page, errors = await open_page(browser, f"{stack.http}/live?race={RACE}", 412, 915)
    status = page.get_by_test_id("status")
    await expect(status).to_have_attribute("data-state", "live", timeout=10_000)
    proc = redis_server.proc
    os.kill(proc.pid, signal.SIGKILL)
    await asyncio.to_thread(proc.wait, 10)
    await expect(status).to_have_attribute("data-state", "stale", timeout=5_000)
    await expect(status).to_have_text("Data stale: reconnecting to storage…")
    await page.screenshot(path=SHOTS / "live-stale-412x915.png")
    await asyncio.to_thread(redis_server.restart)  # on the same files
    await expect(status).to_have_attribute("data-state", "live", timeout=5_000)
    await expect(status).to_have_text("live")
    assert not errors, errors


async def start_broadcast_process(redis_url: str, tmp_path: Path):
    """A second broadcast node as a process of its own (so it can be SIGSTOPped), on the
    stack's Redis; returns it and its HTTP port (from ``icetime:listening``)."""
    import json
    import subprocess
    import sys

    import redis.asyncio as aioredis

    from icetime import keys

    from .conftest import write_venue_config

    config = write_venue_config(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "services.broadcast", "--config", str(config)],
                            cwd=Path(__file__).parents[1], env={**os.environ,
                                                                "REDIS_URL": redis_url})
    r = aioredis.Redis.from_url(redis_url)
    try:
        async with asyncio.timeout(20):
            while True:
                raw = await r.hget(keys.LISTENING, "broadcast")
                entry = json.loads(raw) if raw else {}
                if entry.get("pid") == proc.pid:
                    return proc, entry["ports"]["broadcast_http_port"]
                assert proc.poll() is None, "the broadcast node exited"
                await asyncio.sleep(0.05)
    finally:
        await r.aclose()


async def test_pages_say_the_server_is_unreachable_while_the_node_hangs(browser, stack,
                                                                        redis_server, tmp_path):
    """A broadcast node that hangs (SIGSTOP: its sockets accept, nothing answers): the
    fans' page, the monitor and the board find out by their own watchdog and say
    "Server unreachable: reconnecting…" in red, not "connecting"; live again on SIGCONT."""
    from playwright.async_api import expect

    await load_startlist(stack)
    proc, port = await start_broadcast_process(redis_server.url, tmp_path)
    try:
        base = f"http://127.0.0.1:{port}"
        opened = await asyncio.gather(
            open_page(browser, f"{base}/live?race={RACE}", 375, 812, clock=True),
            open_page(browser, f"{base}/monitor?race={RACE}", clock=True),
            open_page(browser, f"{base}/board?race={RACE}", clock=True))
        pages = [page for page, _ in opened]
        fans, monitor, board = pages
        for page in (fans, monitor):
            await expect(page.get_by_test_id("status")).to_have_text("live")
        await expect(board.get_by_test_id("board-alert")).to_be_hidden()
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            for _ in range(3):  # unanswered heartbeats, then a handshake never answered
                await heartbeat(pages)
            unreachable = "Server unreachable: reconnecting…"
            for page in (fans, monitor):
                status = page.get_by_test_id("status")
                await expect(status).to_have_text(unreachable)
                await expect(status).to_have_attribute("data-state", "reconnecting")
            await expect(board.get_by_test_id("board-alert")).to_have_text(unreachable)
            for _ in range(2):  # still so while it hangs: the watchdog tries again
                await heartbeat(pages)
            await expect(fans.get_by_test_id("status")).to_have_text(unreachable)
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        await heartbeat(pages)
        for page in (fans, monitor):
            await expect(page.get_by_test_id("status")).to_have_text("live",
                                                                     timeout=10_000)
        await expect(board.get_by_test_id("board-alert")).to_be_hidden(timeout=10_000)
        assert not any(errors for _, errors in opened), [e for _, e in opened]
    finally:
        stop_processes([proc])


async def test_live_page_says_the_data_is_stale_while_redis_hangs(browser, stack, redis_server):
    """Redis frozen (SIGSTOP: a cloud Redis behind a cut uplink answers nothing, and
    refuses nothing either): the page says the data is stale within the node's reply
    timeout, and live again once Redis answers."""
    from playwright.async_api import expect

    from icetime.redis_connect import REPLY_TIMEOUT_S
    from icetime.service import READY_PING_S

    await load_startlist(stack)
    page, errors = await open_page(browser, f"{stack.http}/live?race={RACE}", 412, 915)
    status = page.get_by_test_id("status")
    await expect(status).to_have_attribute("data-state", "live", timeout=10_000)
    pid = redis_server.proc.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        await expect(status).to_have_attribute(
            "data-state", "stale", timeout=int((3 * REPLY_TIMEOUT_S + 5) * 1000))
        # The node's readiness says why, in words (a timeout has none of its own).
        async with aiohttp.ClientSession() as s, s.get(f"{stack.http}/api/ready") as resp:
            assert (resp.status, await resp.json()) == (503, {
                "ready": False, "reason": f"redis: no answer within {READY_PING_S:g} s"})
    finally:
        os.kill(pid, signal.SIGCONT)
    await expect(status).to_have_attribute("data-state", "live", timeout=10_000)
    assert not errors, errors


async def test_a_pack_race_s_clock_stops_once_it_is_official(browser, stack):
    """A short-track final where one skater's finish read never came: the race is not
    over by its reads, so its clock runs; once the referee declares it official the
    clock stops: the board turns to the podium (no running clock) and the phone's order
    says Finished with no clock beside it."""
    import aiohttp
    from playwright.async_api import expect

    from icetime.timefmt import now_us

    from .conftest import post_feed

    skaters = [{"bib": str(b), "name": f"Skater {b}", "short": f"S{b}",
                "transponders": [f"C{b}"]} for b in range(1, 5)]
    race = "stop-clock-final"
    startlist = {"type": "startlist", "skaters": skaters, "races": [
        {"id": race, "name": "Women 500 m · Final A", "kind": "short_track", "distance": 500,
         "skaters": ["1", "2", "3", "4"]}]}
    gun_t = now_us() - 60_000_000
    # A session of their own: the module's other tests number these sources' inputs too.
    reads = [{"type": "passing", "transponder": f"C{b}", "session": race,
              "t": gun_t + int((6.3 + 9 * k + 0.25 * i) * 1e6)}
             for k in range(5) for i, b in enumerate("1234") if (b, k) != ("4", 4)]
    async with aiohttp.ClientSession() as s:
        assert (await post_feed(s, stack, "officials", startlist))["ok"]
        board, errors = await open_page(browser, f"{stack.http}/board?race={race}")
        phone, phone_errors = await open_page(browser, f"{stack.http}/live?race={race}",
                                              375, 812)
        assert (await post_feed(s, stack, "gun", {"type": "gun", "race": race, "t": gun_t,
                                                  "session": race},
                                seq=1))["ok"]
        for n, inp in enumerate(reads, 1):
            assert (await post_feed(s, stack, "finish-loop", inp, seq=n))["ok"]
        # Skater 4 has no finish: the race is on, its clock running.
        await expect(board.get_by_test_id("board-laps")).to_have_text("Finished")
        await expect(board.get_by_test_id("board-clock")).to_have_text(
            lambda_or_regex(r"^(\d+:)?\d+\.\d$"), timeout=10_000)
        await expect(phone.get_by_test_id("race-clock")).to_have_text(
            lambda_or_regex(r"^(\d+:)?\d+\.\d$"), timeout=10_000)
        assert (await post_feed(s, stack, "officials",
                                {"type": "decision", "race": race, "action": "official"}))["ok"]
    await expect(board.get_by_test_id("board-podium")).to_be_visible(timeout=10_000)
    await expect(board.get_by_test_id("board-clock")).to_have_count(0)
    await expect(phone.get_by_test_id("laps-to-go")).to_have_text("Finished")
    await expect(phone.get_by_test_id("race-clock")).to_have_text("")
    assert not errors and not phone_errors, errors + phone_errors
