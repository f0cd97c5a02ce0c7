"""Every screen, every race kind, three screen sizes: nothing cut, nothing spilling, AA contrast.

One Chromium (Debian's, through Playwright) with one page per screen. Each fixture's inputs
go straight to ingest over the TCP feed, as fast as it takes them, and stop at a few
moments of the race (mid-race, a finish or a decision, the end); at each moment every
screen is looked at in 1920x1080 (16:9), 1920x192 (an LED ribbon) and 375x812 (a phone)
by tests/screen_check.js, which lists what would not go on air. At some moments the
screens are also looked at with no data coming for a minute (stale), with the server
unreachable, and in Dutch and German (every text translated, German's longer words fit).
Screenshots of every look with a problem (of every look with ICETIME_SCREENSHOTS=1) go
to tests/screenshots/ (git-ignored).
"""
from __future__ import annotations

import asyncio
import copy
import json
import os
import re
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from icetime import bus
from icetime.feedclient import FeedClient
from icetime.replay import Timed, load_fixture, script_inputs
from icetime.timefmt import now_us

from .chromium import ARGS as BASE_ARGS
from .chromium import CHROMIUM
from .conftest import TOKENS, caught_up, make_settings, start_stack
from .test_pipeline import load_startlist

FIXTURES = Path(__file__).parents[1] / "fixtures"
SHOTS = Path(__file__).parent / "screenshots"
CHECK = (Path(__file__).parent / "screen_check.js").read_text()
WEB = Path(__file__).parents[1] / "web"
LANGS = {p.stem: json.loads(p.read_text()) for p in (WEB / "lang").glob("*.json")}
#: The texts that say the data or the link is not good, in every language: never green.
PROBLEMS = sorted({texts[k] for texts in LANGS.values() for k in (
    "No timing data", "no data", "no data for {n} s", "Server unreachable",
    "Server unreachable: reconnecting…", "Data stale", "Data stale: reconnecting to storage…")})
#: Words a page may show in every language: the product's name, a key's name.
EVERY_LANGUAGE = {"icetime", "Esc"}
#: Every word of text a page shows (text, option, aria-label, title), and the words of
#: its data (the race view's texts, the races' names, the last passing's source and
#: timing point), which no language file translates.
WORDS = """async () => {
  const words = (s) => String(s).split(/[^\\p{L}]+/u).filter((w) => w.length >= 3);
  const shown = new Set(), data = new Set();
  const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walk.nextNode(); n; n = walk.nextNode()) {
    const el = n.parentElement;
    if (el.closest("title, script, style")) continue;
    if (!el.closest("option") && !el.getClientRects().length) continue;
    words(n.textContent).forEach((w) => shown.add(w));
  }
  for (const el of document.querySelectorAll("[aria-label], [title]")) {
    words(el.getAttribute("aria-label") || "").forEach((w) => shown.add(w));
    words(el.getAttribute("title") || "").forEach((w) => shown.add(w));
  }
  const strings = (v) => typeof v === "string" ? [v]
    : v && typeof v === "object" ? Object.values(v).flatMap(strings) : [];
  const view = window.icetime.view || {};
  const races = await fetch("/api/races").then((r) => r.json()).catch(() => []);
  // The monitor's last passing names its source and timing point: ids, not words.
  const health = await fetch("/api/health").then((r) => r.json()).catch(() => ({}));
  [...strings(view), ...Object.keys((view.race || {}).records || {}), ...races.map((r) => r.name),
    ...strings(health.last_passing || {})]
    .forEach((s) => words(s).forEach((w) => data.add(w)));
  return [[...shown], [...data]];
}"""
#: ICETIME_SCREENSHOTS=1: a screenshot of every look, not only of those with a problem.
ALL_SHOTS = os.environ.get("ICETIME_SCREENSHOTS") == "1"
SIZES = [(1920, 1080), (1920, 192), (375, 812)]
#: Screens that never scroll: everything must be inside the viewport.
FIXED = {"board", "overlay"}
SCREENS = ["board", "overlay", "live", "monitor"]
ARGS = [*BASE_ARGS, "--force-color-profile=srgb", "--hide-scrollbars"]

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium found: install Debian's `chromium` (.ci/run does)")

Moment = Callable[[list[Timed], int], bool]


@dataclass
class Race:
    """A fixture and the moments to look at: each a name, a test of "stop before input i",
    and the decisions an official sends there."""

    fixture: str
    moments: list[tuple[str, Moment, list[dict[str, Any]]] |
                  tuple[str, Moment, list[dict[str, Any]], set[str]]]
    pairs: tuple[int, ...] = ()
    doc: dict[str, Any] = field(default_factory=dict)
    #: Texts every screen must show at a moment (by name).
    shows: dict[str, list[str]] = field(default_factory=dict)


def nth_passing(n: int) -> Moment:
    """Before the n-th passing of the script (1-based)."""
    def at(items: list[Timed], i: int) -> bool:
        return sum(x.inp["type"] == "passing" for x in items[:i + 1]) == n \
            and items[i].inp["type"] == "passing"
    return at


def fraction(f: float) -> Moment:
    return lambda items, i: i == int(len(items) * f)


def gun(nth: int) -> Moment:
    """Before the nth gun (a pair race: the previous pair is done)."""
    def at(items: list[Timed], i: int) -> bool:
        return items[i].inp["type"] == "gun" and \
            sum(x.inp["type"] == "gun" for x in items[:i + 1]) == nth
    return at


def end(items: list[Timed], i: int) -> bool:
    return i == len(items)


RACES = [
    # Long track: Rijpma-de Jong (the longest name) in pair 8, then Leerdam, then Takagi;
    # Leerdam disqualified after her finish while her pair is still up.
    # Ties in hundredths (thousandths decide): pair 8's two skaters, and at the end Takagi
    # (1:14.446) and bib 19 (made 1:14.449). Mid-race also stale, unreachable and in
    # Dutch and German.
    Race("beijing2023_w1000a", [
        ("mid-pair", nth_passing(8), [], {"quiet", "offline", "langs"}),
        ("dq", gun(3), [{"action": "dq", "bib": "17", "reason": "lane"}]),
        ("end", end, [{"action": "official"}], {"langs"}),
    ], pairs=(8, 9, 10), shows={"end": ["1:14.446", "1:14.449"]}),
    Race("beijing2023_w_massstart", [("lap-6", fraction(0.35), [], {"quiet", "langs"}),
                                     ("last-lap", fraction(0.93), []),
                                     ("end", end, [], {"langs"})]),
    # Short track: a restart, then the final with two falls; official.
    Race("shanghai2019_m500_final", [("restart", gun(2), [], {"langs"}),
                                     ("racing", fraction(0.6), [], {"offline"}),
                                     ("end", end, [])]),
    Race("shanghai2019_mixed_relay_final", [("racing", fraction(0.5), [], {"langs"}),
                                            ("end", end, [])]),
    Race("demo_w_team_pursuit", [("mid-pair", fraction(0.3), [], {"langs"}), ("end", end, [])]),
]

#: Final times changed to ties in hundredths: fixture -> {bib: final time}.
TIES = {"beijing2023_w1000a": {"15": "1:15.789", "19": "1:14.449"}}


def prepare(race: Race) -> Race:
    doc = copy.deepcopy(load_fixture(FIXTURES / f"{race.fixture}.json"))
    if race.pairs:
        doc["script"]["pairs"] = [p for p in doc["script"]["pairs"] if p["pair"] in race.pairs]
    doc["script"]["pair_interval_s"] = 3
    for p in doc["script"].get("pairs", []):
        for bib, final in TIES.get(race.fixture, {}).items():
            if bib in p["times"]:
                p["times"][bib][-1] = final
    race.doc = doc
    return race


#: Two frames (the resize laid out, the running clocks drawn), then what would not go
#: on air: one round trip per look (each waits its turn on a busy machine, while every
#: open page keeps drawing its clocks).
LOOK = ("async (args) => { await new Promise((r) => requestAnimationFrame(() => "
        f"requestAnimationFrame(r))); return ({CHECK})(args); }}")
#: The colour scheme each page was last shown in (emulated per page, kept across loads):
#: set again only when it changes (a change restyles the whole page).
SCHEMES: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def scheme(size: tuple[int, int]) -> str:
    """Both themes: the phone in light (as most phones are by day), the rest dark."""
    return "light" if size[0] < 1000 else "dark"


async def look(pages: dict[str, Any], offset: str | None, name: str,
               sizes: list[tuple[int, int]] = SIZES) -> list[str]:
    """Every screen at every size, once each page shows the race as of ``offset`` (None:
    as it is); the pages side by side (one Chromium renders them in parallel)."""
    async def one(screen: str, page: Any) -> list[str]:
        if offset is not None:
            await page.wait_for_function("(o) => window.icetime && window.icetime.offset === o "
                                         "&& !window.icetime.pending.length", arg=offset)
        problems = []
        # In this order: the page comes from the last size (the phone), so the first
        # look is after a resize. (The phone first, with no resize since the page
        # loaded, once found the overlay's title wider than its box.)
        for w, h in sizes:
            await page.set_viewport_size({"width": w, "height": h})
            if SCHEMES.get(page) != scheme((w, h)):
                await page.emulate_media(color_scheme=scheme((w, h)))
                SCHEMES[page] = scheme((w, h))
            # Colours change with the theme, not the size: contrast once per theme.
            found = await page.evaluate(LOOK, [screen in FIXED, (w, h) != SIZES[1], PROBLEMS])
            shot = SHOTS / f"{name}-{screen}-{w}x{h}.png"
            if found or ALL_SHOTS:
                await page.screenshot(path=shot, omit_background=screen == "overlay")
            problems += [f"{shot.name}: {p}" for p in found]
        return problems
    found = await asyncio.gather(*(one(s, p) for s, p in pages.items()))
    return [p for screen in found for p in screen]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser():
    """One Chromium for the module's races (the suite hands its races to one worker, in
    a row: a launch each took seconds on a busy machine); each race opens its own pages."""
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        chromium = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield chromium
        await chromium.close()


@pytest_asyncio.fixture(loop_scope="module")
async def stack(redis_server):
    """tests/conftest.py's stack, in the module's event loop (the browser's)."""
    s = await start_stack(make_settings(redis_server.url), redis_server.url)
    yield s
    await s.close()


# One test per race: each with its own stack, pages and failures.
@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("race", RACES, ids=lambda race: race.fixture)
async def test_every_screen_fits_every_race_at_every_size(browser, stack, race):
    started = time.monotonic()
    r = bus.connect(stack.url)
    feeds: dict[str, FeedClient] = {}
    problems: list[str] = []
    # A page each, each in a context of its own (nothing shared between the screens).
    pages = {s: await browser.new_page() for s in SCREENS}
    try:
        for page in pages.values():
            page.on("pageerror", lambda e: problems.append(f"script error: {e}"))
        problems += await run_race(stack, r, feeds, pages, prepare(race))
    finally:
        for page in pages.values():
            await page.close()
        for c in feeds.values():
            await c.close()
        await r.aclose()
    print(f"screen check: {time.monotonic() - started:.1f} s")
    assert not problems, "\n".join(problems)


async def run_race(stack, r, feeds, pages, race: Race) -> list[str]:
    doc = race.doc
    race_id = doc["script"]["race"]
    await load_startlist(stack, doc)
    # Sent far faster than real time: every source's clock reading already in the past.
    items = script_inputs(doc, clock_base_us=now_us() - 600_000_000)
    problems: list[str] = []
    sent = 0
    for moment in race.moments:
        name, at, extra = moment[:3]
        while sent < len(items) and not at(items, sent):
            await send(stack, feeds, items[sent].source, items[sent].inp)
            sent += 1
        for d in extra:
            await send(stack, feeds, "officials", {"type": "decision", "race": race_id,
                                                   **d})
        offset = await caught_up(r, race_id)
        # Opened at the moment (the snapshot): four pages folding every event while
        # they arrive would slow the feed tenfold on a small machine. Following the
        # stream live is tests/test_browser.py's and tests/test_fold.py's part.
        await open_all(stack, pages, race_id, "en")
        shot = f"{race.fixture}-{name}"
        problems += await look(pages, offset, shot)
        problems += await missing(pages, race.shows.get(name, []), shot)
        also = moment[3] if len(moment) > 3 else set()
        if "langs" in also:
            problems += await languages(stack, pages, race_id, offset, shot)
        if "quiet" in also:
            problems += await quiet(pages, f"{shot}-quiet")
        if "offline" in also:
            problems += await offline(stack, pages, f"{shot}-offline")
        # Idle while the next stretch is sent (the pages open again at the next moment).
        if moment is not race.moments[-1]:
            await asyncio.gather(*(page.goto("about:blank") for page in pages.values()))
    return problems


async def missing(pages: dict[str, Any], wants: list[str], name: str) -> list[str]:
    """The texts of ``wants`` a page does not show."""
    if not wants:
        return []
    texts = await asyncio.gather(*(page.inner_text("body") for page in pages.values()))
    return [f"{name}-{screen}: {want!r} not shown" for screen, text in zip(pages, texts,
                                                                           strict=True)
            for want in wants if want not in text]


async def open_all(stack, pages: dict[str, Any], race_id: str, lang: str) -> None:
    await asyncio.gather(*(page.goto(f"{stack.http}/{screen}?race={race_id}&lang={lang}")
                           for screen, page in pages.items()))


async def languages(stack, pages, race_id: str, offset: str, name: str) -> list[str]:
    """The screens in Dutch and German: every word the English page shows that is not
    the race's own data (names, nations, the engine's story lines) must be translated,
    and the longer German texts must fit too (looked at like the English ones)."""
    english = await asyncio.gather(*(page.evaluate(WORDS) for page in pages.values()))
    problems: list[str] = []
    for code in ("nl", "de"):
        await open_all(stack, pages, race_id, code)
        if code == "de":
            problems += await look(pages, offset, f"{name}-de")
        theirs = {w for text in LANGS[code].values() for w in re.split(r"[^\w]+", text)}
        seen = await asyncio.gather(*(words_at(page, offset) for page in pages.values()))
        for screen, (shown, data), (en_words, _) in zip(pages, seen, english, strict=True):
            left = sorted(set(shown) & set(en_words) - set(data) - theirs - EVERY_LANGUAGE)
            if left:
                problems.append(f"{name}-{screen} in {code}: English words shown: {left}")
    return problems


async def words_at(page: Any, offset: str) -> tuple[list[str], list[str]]:
    """The page's words (:data:`WORDS`) once it shows the race as of ``offset``."""
    await page.wait_for_function("(o) => window.icetime && window.icetime.offset === o",
                                 arg=offset)
    shown, data = await page.evaluate(WORDS)
    return shown, data


async def frames(page) -> None:
    """Two frames: the change laid out, the running clocks and status lines drawn."""
    await page.evaluate("() => new Promise((r) => requestAnimationFrame(() => "
                        "requestAnimationFrame(r)))")


async def quiet(pages: dict[str, Any], name: str) -> list[str]:
    """The screens with no event for a minute while the race runs (the timing has
    stopped): the page's last event is dated a minute back, the rest is as it was."""
    async def hush(page: Any) -> None:
        await page.evaluate("() => { window.icetime.lastEventAt -= 60000; }")
        await frames(page)
    await asyncio.gather(*(hush(page) for page in pages.values()))
    return await look(pages, None, name)


async def offline(stack, pages: dict[str, Any], name: str) -> list[str]:
    """The screens while the server is unreachable (broadcast stopped), then back."""
    await stack.stop("broadcast")
    try:
        async def lost(page: Any) -> None:
            await page.wait_for_function("() => window.icetime.status && "
                                         "window.icetime.status !== 'live'")
            await frames(page)
        await asyncio.gather(*(lost(page) for page in pages.values()))
        return await look(pages, None, name)
    finally:
        await stack.start("broadcast")


#: The last sequence number each source sent in this process (ingest deduplicates by it).
SEQ: dict[str, int] = {}


async def send(stack, feeds: dict[str, FeedClient], source: str, inp: dict[str, Any]) -> None:
    """One input from ``source``; numbered anew, since every script numbers from 1 and
    (source, seq) is what ingest deduplicates by."""
    if source not in feeds:
        feeds[source] = FeedClient("127.0.0.1", stack.settings.ingest_tcp_port, TOKENS[source])
    SEQ[source] = SEQ.get(source, 0) + 1
    reply = await feeds[source].send({**inp, "seq": SEQ[source]})
    assert reply.get("ok"), (inp, reply)


def test_every_page_text_has_its_translations():
    """Each text the pages translate (t("...") in web/js, data-i18n in web/*.html) is in
    web/lang/en.json, and every language file has exactly en.json's texts."""
    import json
    import re

    web = Path(__file__).parents[1] / "web"
    used = set()
    for js in (web / "js").glob("*.js"):
        used |= set(re.findall(r'\bt\("([^"]+)"', js.read_text()))
    for html in web.glob("*.html"):
        text = html.read_text()
        used |= set(re.findall(r'data-i18n(?:-label|-title)="([^"]+)"', text))
        used |= {s.strip() for s in re.findall(r"data-i18n>([^<]+)<", text)}
    langs = {p.stem: json.loads(p.read_text()) for p in (web / "lang").glob("*.json")}
    assert {"en", "nl", "de"} <= set(langs)
    assert used <= set(langs["en"]), sorted(used - set(langs["en"]))
    for code, texts in langs.items():
        assert set(texts) == set(langs["en"]), code
