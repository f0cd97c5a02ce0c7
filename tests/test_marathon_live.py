"""Marathons through the whole chain (TCP feed -> ingest -> Redis -> scoring -> broadcast ->
WebSocket), and the pages with a 10,000-skater field in Chromium.

Each timing mat is a source of its own (its decoder), as at a venue. The first test
replays the small generated field whole and checks that a WebSocket client's fold is
the engine's view. The second loads 10,000 skaters, opens the fans' page (1920x1080 and
375x812), the board and the monitor, and sends the start of the race as fast as the
chain takes it; meanwhile it looks for one skater among 10,000 and checks, counted in
frames and DOM rows (never wall time), that the pages answer at once and keep only the
rows in sight.
"""
from __future__ import annotations

import asyncio
import io
import json
import os
import unicodedata
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bench.marathon import COURSE, RACE, build
from icetime import bus
from icetime.feedclient import FeedClient
from icetime.replay import Timed, script_inputs
from icetime.settings import Source
from icetime.timefmt import now_us
from services.scoring.competition import Competition

from .chromium import ARGS, CHROMIUM
from .conftest import TOKENS, caught_up, feed, make_settings, start_stack
from .test_pipeline import Follower, load_startlist

SHOTS = Path(__file__).parent / "screenshots"
CHECK = (Path(__file__).parent / "screen_check.js").read_text()
#: The mats' decoders (and the spare on each), each a source with its own token.
MATS = [f"mat-{p}{spare}" for p, _ in COURSE for spare in ("", "-b")]
#: How many of the 10,000-skater race's inputs the browser test sends: the guns and the
#: first reads of the start mat and beyond. The runner stores the whole view per input
#: (a few MB at 10,000), so this bounds the test's time, not the pages' work.
BIG_INPUTS = 120


@pytest.fixture
async def mat_stack(redis_server):
    base = make_settings(redis_server.url)
    mats = tuple(Source(m, f"t-{m}", role="decoder") for m in MATS)
    s = await start_stack(replace(base, sources=(*base.sources, *mats)), redis_server.url)
    yield s
    await s.close()


class Sender:
    """One feed connection per source, each numbering its inputs from 1."""

    def __init__(self, stack: Any) -> None:
        self.stack = stack
        self.feeds: dict[str, FeedClient] = {}
        self.seq: dict[str, int] = {}

    async def send(self, item: Timed) -> None:
        source = item.source
        if source not in self.feeds:
            token = "t-gun" if source == "gun" else f"t-{source}"
            self.feeds[source] = FeedClient("127.0.0.1", self.stack.settings.ingest_tcp_port,
                                            token)
        self.seq[source] = self.seq.get(source, 0) + 1
        reply = await self.feeds[source].send({**item.inp, "seq": self.seq[source]})
        assert reply.get("ok"), (item.inp, reply)

    async def close(self) -> None:
        for f in self.feeds.values():
            await f.close()


def engine_view(doc: dict[str, Any], items: list[Timed]) -> dict[str, Any]:
    comp = Competition()
    feed(comp, "sl", {"type": "startlist", **doc["startlist"]})
    for n, it in enumerate(items):
        feed(comp, f"in-{n}", {**it.inp, "source": it.source})
    return comp.view(RACE)


def plain(view: dict[str, Any]) -> dict[str, Any]:
    """A view less its revision count and its waves' running-clock origins (ingest's
    wall clock when each gun arrived)."""
    out = {k: v for k, v in json.loads(json.dumps(view)).items() if k != "revision"}
    for wave in out["waves"].values():
        assert wave["run"] is not None
        wave["run"]["clock_origin_us"] = None
    return out


async def load_big_startlist(stack: Any, doc: dict[str, Any]) -> None:
    """A start list of 10,000 skaters (2 MB): streamed, as aiohttp wants a body that big.
    Answered once stored (``wait=0``): scoring takes seconds over 10,000 skaters on a busy
    machine, longer than a feed waits for a verdict; the test waits for scoring later."""
    url = f"http://127.0.0.1:{stack.settings.ingest_http_port}/api/startlist?wait=0"
    body = io.BytesIO(json.dumps(doc["startlist"]).encode())
    async with aiohttp.ClientSession() as s:
        async with s.post(url, data=body, headers={
                "Authorization": f"Bearer {TOKENS['officials']}",
                "Content-Type": "application/json"}) as resp:
            assert resp.status == 200, await resp.text()


async def test_a_marathon_through_the_whole_chain(mat_stack):
    doc, _ = build(40)
    items = script_inputs(doc, clock_base_us=now_us() - 10**9)
    expected = engine_view(doc, items)
    await load_startlist(mat_stack, doc)
    f = Follower(mat_stack.ws_url, race=RACE)
    following = asyncio.create_task(f.run(
        lambda s: bool(s.view) and s.view["counts"] == expected["counts"], timeout=60))
    await asyncio.sleep(0.2)
    sender = Sender(mat_stack)
    try:
        await send_all(sender, items)
    finally:
        await sender.close()
    await following
    assert plain(f.view) == plain(expected)
    kinds = {e["event"]["type"] for e in f.events}
    assert {"wave_start", "course_passage"} <= kinds


# ---------------------------------------------------------------- the pages at 10,000
#: Type a query into a page's search box, then count animation frames until the hit (a
#: bib) is on screen: the answer's delay counted in frames, not milliseconds.
SEARCH = """async ([query, bib]) => {
  const box = document.querySelector('[data-testid=marathon-search]');
  box.value = query;
  box.dispatchEvent(new Event('input'));
  let frames = 0;
  const hit = () => document.querySelector(`[data-testid=marathon-hits] [data-bib="${bib}"]`);
  while (!hit() && frames < 120) {
    await new Promise((r) => requestAnimationFrame(r));
    frames++;
  }
  return frames;
}"""
#: How many frames a search may take to show its hit (the handler is synchronous: 0).
SEARCH_FRAMES = 2
#: Rows the monitor's list may keep in the DOM, whatever the field (a screen's worth
#: plus the overscan above and below).
DOM_ROWS_MAX = 60


def pick_skater(doc: dict[str, Any], items: list[Timed]) -> tuple[str, str]:
    """A skater whose first read is among ``items`` (sent after the page has found her:
    her card must follow it live), preferably with an accented name (the search folds
    accents): her bib and her name as a fan types it, lower case and unaccented."""
    read = [str(int(it.inp["transponder"]) - 500_000) for it in items
            if it.inp["type"] == "passing"]
    skaters = {s["bib"]: s for s in doc["startlist"]["skaters"]}
    bib = next((b for b in read if not skaters[b]["name"].isascii()
                and unaccented(skaters[b]["name"]).isascii()), read[0])
    return bib, unaccented(skaters[bib]["name"]).lower()


def unaccented(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFD", text)
                   if not unicodedata.combining(c))


def big_race() -> tuple[dict[str, Any], list[Timed], str, str, dict[str, Any]]:
    """The 10,000-skater race, the first :data:`BIG_INPUTS` of its inputs, the skater to
    find (bib, name as typed) and the engine's view after those inputs."""
    doc, _ = build(10_000)
    everything = script_inputs(doc, clock_base_us=now_us() - 10**10)
    items = everything[:BIG_INPUTS]
    bib, who = pick_skater(doc, items[len(items) // 2:])
    return doc, items, bib, who, engine_view(doc, items)


#: The pages the 10,000-skater test opens: name, path, viewport.
BIG_PAGES = (("fans", "live", (1920, 1080)), ("phone", "live", (375, 812)),
             ("board", "board", (1920, 1080)), ("monitor", "monitor", (1920, 1080)))


async def open_big_pages(browser: Any, stack: Any, r: Any, errors: list[str]) -> dict[str, Any]:
    """Every page of :data:`BIG_PAGES`, made while scoring takes the start list in and
    loaded once it has (a page that asks before asks again only 3 s later), all at once;
    each returned once it has its view."""
    async def made(w: int, h: int) -> Any:
        page = await browser.new_page(viewport={"width": w, "height": h})
        page.on("pageerror", lambda e: errors.append(str(e)))
        return page

    async def loaded(page: Any, path: str) -> None:
        await page.goto(f"{stack.http}/{path}?race={RACE}")
        await page.wait_for_function("() => window.icetime && window.icetime.view",
                                     timeout=60_000)

    pages, _ = await asyncio.gather(
        asyncio.gather(*(made(w, h) for _, _, (w, h) in BIG_PAGES)),
        caught_up(r, RACE, timeout_s=60))
    await asyncio.gather(*(loaded(page, path)
                           for page, (_, path, _) in zip(pages, BIG_PAGES, strict=True)))
    return {name: page for (name, _, _), page in zip(BIG_PAGES, pages, strict=True)}


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium found: install Debian's `chromium`")
async def test_the_pages_with_10000_skaters(mat_stack):
    from playwright.async_api import async_playwright

    # The race is made (seconds of Python) in a thread while Chromium starts.
    making = asyncio.create_task(asyncio.to_thread(big_race))
    r = bus.connect(mat_stack.url)
    sender = Sender(mat_stack)
    errors: list[str] = []
    try:
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            doc, items, bib, who, expected = await making
            await load_big_startlist(mat_stack, doc)
            pages = await open_big_pages(browser, mat_stack, r, errors)
            half = len(items) // 2
            for it in items[:half]:
                await sender.send(it)
            # While the rest streams in: find her among 10,000 on both screen sizes.
            sending = asyncio.create_task(send_all(sender, items[half:]))
            for screen in ("fans", "phone"):
                frames = await pages[screen].evaluate(SEARCH, [who, bib])
                assert frames <= SEARCH_FRAMES, (screen, who, frames)
                frames = await pages[screen].evaluate(SEARCH, [bib, bib])
                assert frames <= SEARCH_FRAMES, (screen, frames)
                await pages[screen].click(f"[data-testid=marathon-hits] [data-bib='{bib}']")
            await sending
            offset = await caught_up(r, RACE, timeout_s=60)
            for page in pages.values():
                await page.wait_for_function(
                    "(o) => window.icetime.offset === o && !window.icetime.pending.length",
                    arg=offset)
            await check_pages(pages, expected, bib)
            if os.environ.get("ICETIME_SCREENSHOTS") == "1":
                for name, page in pages.items():
                    await page.screenshot(path=SHOTS / f"marathon-10000-{name}.png")
            await browser.close()
    finally:
        await sender.close()
        await r.aclose()
        await asyncio.wait({making})  # its thread done, whatever it raised
    assert not errors, errors


async def send_all(sender: Sender, items: list[Timed]) -> None:
    for it in items:
        await sender.send(it)


async def check_pages(pages: dict[str, Any], expected: dict[str, Any], bib: str) -> None:
    """Every page folded the stream to the engine's view; the followed skater's card
    shows her passages; the monitor keeps a bounded number of rows in the DOM; the board
    shows its top and the count."""
    for name, page in pages.items():
        counts = await page.evaluate("() => window.icetime.view.counts")
        assert counts == expected["counts"], name
        order = await page.evaluate("() => window.icetime.view.order")
        assert order == expected["order"], name
    shown = [t for t in expected["results"][bib]["t"] if t is not None]
    for name in ("fans", "phone"):
        card = pages[name].locator(f"[data-testid=marathon-card-{bib}]")
        await card.wait_for()
        cells = await card.locator("tbody tr td:nth-child(2)").all_inner_texts()
        assert sum(1 for c in cells if c and c[0].isdigit()) == len(shown), (name, cells)
    monitor = pages["monitor"]
    await monitor.evaluate("() => new Promise((r) => requestAnimationFrame(() => "
                           "requestAnimationFrame(r)))")
    rows = await monitor.locator("[data-testid=marathon-list] .mrow").count()
    listed = await monitor.evaluate(
        "() => document.querySelector('[data-testid=marathon-list] .vspace').offsetHeight / 28")
    started = expected["counts"]["started"]
    assert 0 < rows <= DOM_ROWS_MAX < started <= listed, (rows, listed, started)
    # Scrolled to the end: still a screen's worth of rows, the last skaters among them.
    await monitor.evaluate("() => { const l = document.querySelector("
                           "'[data-testid=marathon-list]'); l.scrollTop = l.scrollHeight; }")
    await monitor.evaluate("() => new Promise((r) => requestAnimationFrame(r))")
    assert await monitor.locator("[data-testid=marathon-list] .mrow").count() <= DOM_ROWS_MAX
    board = pages["board"]
    assert await board.locator("[data-testid=board-marathon] .mrow").count() == 8
    # What would not go on air (tests/screen_check.js): cut or spilling text, sideways
    # scrolling, low contrast; the board may not scroll at all.
    problems = []
    for name, page in pages.items():
        found = await page.evaluate(CHECK, [name == "board", True])
        problems += [f"{name}: {p}" for p in found]
    assert not problems, "\n".join(problems)
    assert "Started" in await board.locator("[data-testid=board-counts]").inner_text()
