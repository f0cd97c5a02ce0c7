"""Hostile text from a start list or an input never runs on any screen.

A start list with HTML and script in every field (bibs, names, short names, nations, race
ids and names, team ids and names, the competition), a decoder whose id is HTML and a
referee's reason that is HTML go through the real stack; then every screen is opened in
Chromium at the arena's and a phone's size. Twice: as served (with the node's
Content-Security-Policy), where nothing may run and nothing may be refused (a refusal
means markup got through, or our own code breaks the policy), and with the policy
bypassed, where escaping alone must keep every payload inert text.
"""
from __future__ import annotations

import asyncio
import copy
import re
from pathlib import Path
from urllib.parse import quote

import aiohttp
import pytest

from icetime import bus, keys
from icetime.cli import replay
from icetime.feedclient import FeedClient
from icetime.keys import DEFAULT_COMPETITION as MAIN
from icetime.replay import load_fixture, script_inputs
from icetime.settings import Decoder
from icetime.timefmt import now_us
from services.ingest.decoders.simulator import DecoderSimulator

from .chromium import ARGS, CHROMIUM
from .conftest import TOKENS, make_settings, post_feed, start_stack
from .test_browser import stored_before_guns
from .test_pipeline import FIXTURE, load_startlist

FIXTURES = Path(__file__).parents[1] / "fixtures"
PAGE_PATHS = ("/", "/live", "/monitor", "/board", "/overlay")
VIEWPORTS = ((1920, 1080), (375, 812))

IMG = "<img src=x onerror=window.__xss=1>"
SCRIPT = "<script>window.__xss=2</script>"
SVG = "<svg onload=window.__xss=3>"
#: Breaks out of a double-quoted attribute, or a single-quoted one.
DQ, SQ = '"><img src=x onerror=window.__xss=4>', "'><svg onload=window.__xss=5>"

LONG = 'bj23 "w1000a\'<b>&amp;'
LONG_NAME = f"Women 1000 m {IMG}{SCRIPT}"
RELAY = f"alm22-relay\"'{SVG}"
RELAY_NAME = f"Women 3000 m Relay {SCRIPT}&lt;"
DECODER = f"p3{DQ}"
REASON = f"impeding {IMG}"


def evil_bib(bib: str) -> str:
    return bib + (DQ if int(bib.lstrip("r")) % 2 else SQ)


def evil_name(name: str) -> str:
    return f"{name} {SCRIPT}\"'&amp;"


def evil_short(short: str) -> str:
    return f"{short}{IMG}"


def hostile_competition() -> tuple[dict, dict, dict]:
    """One start list (a 1000 m and a relay) and the two races' scripts, every name
    hostile. The 1000 m's last pair and the relay stop mid-race, so the screens show
    a pair on the ice and a pack running."""
    long_doc = copy.deepcopy(FIXTURE)
    relay_doc = load_fixture(FIXTURES / "almaty2022_w3000_relay_final.json")
    bibs = {s["bib"]: evil_bib(s["bib"]) for s in long_doc["startlist"]["skaters"]}
    rbibs = {s["bib"]: evil_bib("r" + s["bib"]) for s in relay_doc["startlist"]["skaters"]}
    skaters = []
    for s, table in [(s, bibs) for s in long_doc["startlist"]["skaters"]] + \
            [(s, rbibs) for s in relay_doc["startlist"]["skaters"]]:
        skaters.append({**s, "bib": table[s["bib"]], "name": evil_name(s["name"]),
                        "short": evil_short(s["short"]), "nation": f"<b>{s['nation']}</b>"})

    long_race = copy.deepcopy(long_doc["startlist"]["races"][0])
    long_race.update(id=LONG, name=LONG_NAME, pairs=[
        {"pair": p["pair"], "inner": bibs[p["inner"]], "outer": bibs[p["outer"]]}
        for p in long_race["pairs"]])
    relay_race = copy.deepcopy(relay_doc["startlist"]["races"][0])
    teams = {t["id"]: f"{t['id']}{DQ}" for t in relay_race["teams"]}
    relay_race.update(id=RELAY, name=RELAY_NAME, teams=[
        {"id": teams[t["id"]], "name": evil_name(t["name"]), "nation": f"<i>{t['nation']}</i>",
         "skaters": [rbibs[b] for b in t["skaters"]]} for t in relay_race["teams"]])
    relay_race["world_cup"] = {**relay_race["world_cup"], "cup": f"Women relay {SCRIPT}"}
    startlist = {"competition": {"id": "hostile", "name": f"Hostile {SCRIPT}{IMG}"},
                 "skaters": skaters, "races": [long_race, relay_race]}

    pairs = [p for p in long_doc["script"]["pairs"] if p["pair"] in (3, 9, 10)]
    long_script = {"race": LONG, "pair_interval_s": 4, "pairs": [
        {**p, "times": {bibs[b]: ts if p["pair"] != 10 else ts[:2] for b, ts in p["times"].items()}}
        for p in pairs]}
    crossings = relay_doc["script"]["crossings"]
    relay_script = {"race": RELAY, "format": "pack", "crossings": {
        teams[tid]: [[t, rbibs[b]] for t, b in rows[:6]] for tid, rows in crossings.items()}}
    return ({"startlist": startlist},
            {"startlist": startlist, "script": long_script},
            {"startlist": startlist, "script": relay_script})


def uri_component(s: str) -> str:
    """``s`` as the pages' encodeURIComponent writes it."""
    return quote(s, safe="!'()*")


def url(st, path: str, race: str | None = None) -> str:
    return f"{st.http}{path}" + (f"?race={uri_component(race)}" if race else "")


async def feed_second_race(doc: dict, settings, speed: float, seq_from: int) -> None:
    """A second race's script through the TCP feed, paced like ``icetime replay``, its
    sequence numbers moved past the first race's (a source's (source, seq) is its
    idempotency key: a second replay from 1 would be taken for a resend)."""
    loop = asyncio.get_running_loop()
    items = script_inputs(doc, clock_base_us=now_us(), rate=speed)
    clients = {src: FeedClient(settings.host, settings.ingest_tcp_port, TOKENS[src])
               for src in {i.source for i in items}}
    start = loop.time()
    try:
        for item in items:
            await asyncio.sleep(max(0.0, start + item.at_us / 1e6 / speed - loop.time()))
            reply = await clients[item.source].send(
                {**item.inp, "seq": item.inp["seq"] + seq_from, "sent_us": now_us()})
            assert reply["ok"] and not reply.get("duplicate"), (item.inp, reply)
    finally:
        for c in clients.values():
            await c.close()


#: Collects what a page must never do, from before its first script runs.
WATCH = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (e) => window.__violations.push(
  `${e.violatedDirective} ${e.blockedURI} ${e.sourceFile}:${e.lineNumber} ${e.sample}`));
"""

#: Markup that only a payload could have made: the pages make no images, no inline
#: scripts, no event-handler attributes, and the only <svg> is the live page's chart.
INJECTED = """() => [...document.querySelectorAll(
  "img, iframe, object, embed, script:not([src]), svg:not(#chart), [onerror], [onload]"
  )].map((e) => e.outerHTML.slice(0, 120))"""


async def open_checked(context, address: str, size: tuple[int, int]):
    page = await context.new_page()
    await page.set_viewport_size({"width": size[0], "height": size[1]})
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    # Console errors include every refusal by the policy, and any 404 (the browser's own
    # request for /favicon.ico included: both nodes serve it).
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text} {m.location}")
            if m.type in ("error", "warning") else None)

    async def dialog(d):
        problems.append(f"dialog: {d.message}")
        await d.dismiss()
    page.on("dialog", dialog)
    await page.add_init_script(WATCH)
    await page.goto(address)
    return page, problems


async def assert_inert(page, problems: list[str], where: str) -> None:
    await asyncio.sleep(0.3)  # a payload's image would have failed and fired by now
    assert await page.evaluate("typeof window.__xss") == "undefined", where
    assert await page.evaluate("window.__violations") == [], where
    assert await page.evaluate(INJECTED) == [], where
    assert not problems, (where, problems)


async def check_screen(context, st, path: str, race: str | None, size: tuple[int, int],
                       how: str) -> None:
    page, problems = await open_checked(context, url(st, path, race), size)
    await expect_screen(page, path, race)
    await assert_inert(page, problems, f"{path} {race!r} {how}")
    await page.close()


async def expect_fitted(page, testid: str, full: str, short: str) -> None:
    """A name the board or overlay fits to its box (web/js/fit.js): whole, or the short
    name when the whole one does not fit; either way text, and the whole one kept."""
    from playwright.async_api import TimeoutError as PlaywrightTimeout

    try:
        await page.wait_for_function("""([testid, full, short]) => [...document.querySelectorAll(
            `[data-testid="${testid}"] [data-fit]`)].some((el) => el.dataset.full === full &&
            [full, short].includes(el.textContent))""", arg=[testid, full, short], timeout=10_000)
    except PlaywrightTimeout:
        # What the screen showed instead: the one flaky run so far left no trace of it.
        seen = await page.evaluate("""(testid) => {
            const v = window.icetime && window.icetime.view;
            return {mode: document.getElementById("board") &&
                      document.getElementById("board").dataset.mode,
                    status: window.icetime && window.icetime.status,
                    current_pair: v && v.current_pair,
                    on_ice: v && Object.keys(v.on_ice || {}),
                    fits: [...document.querySelectorAll(`[data-testid="${testid}"] [data-fit]`)]
                      .map((el) => [el.dataset.full, el.textContent, el.clientWidth]),
                    html: (document.querySelector(`[data-testid="${testid}"]`) || {})
                      .outerHTML?.slice(0, 800)};
        }""", testid)
        raise AssertionError(f"{testid} never showed {full!r}: {seen}") from None


#: The first look at a screen waits for its first snapshot: every screen opens at once, so
#: on a busy machine that can take longer than Playwright's default 5 s (ms).
FIRST = 20_000


async def expect_screen(page, path: str, race: str | None) -> None:
    """The payloads are on screen, as text, where the names belong."""
    from playwright.async_api import expect

    skater = evil_name("Miho Takagi")  # pair 10, on the ice
    if path == "/":
        races = page.get_by_test_id("races")
        await expect(races).to_contain_text(LONG_NAME, timeout=FIRST)
        names = await races.locator("b").all_text_contents()
        assert LONG_NAME in names and RELAY_NAME in names, names
        hrefs = await races.locator("a").evaluate_all(
            "(as) => as.map((a) => a.getAttribute('href'))")
        assert f"/live?race={uri_component(LONG)}" in hrefs
        assert f"/overlay?race={uri_component(RELAY)}" in hrefs
        return
    if race == LONG:
        if path == "/live":
            await expect(page.get_by_test_id("race-name")).to_have_text(LONG_NAME, timeout=FIRST)
            await expect(page.get_by_test_id("lanes")).to_contain_text(skater, timeout=10_000)
            await expect(page.get_by_test_id("classification")).to_contain_text(
                evil_name("Kimi Goetz"))
            await expect(page.get_by_test_id("stories")).to_contain_text(evil_short("Goetz"))
            bibs = await page.locator("#cls-body tr").evaluate_all(
                "(rs) => rs.map((r) => r.dataset.bib)")
            assert evil_bib("5") in bibs, bibs
        elif path == "/monitor":
            await expect(page.get_by_test_id("monitor-race")).to_have_text(LONG_NAME, timeout=FIRST)
            await expect(page.get_by_test_id("grid")).to_contain_text(skater, timeout=10_000)
            await expect(page.get_by_test_id("stories")).to_contain_text(evil_short("Goetz"))
            await expect(page.get_by_test_id("health")).to_contain_text(f"{DECODER} finish",
                                                                        timeout=10_000)
            await expect(page.get_by_test_id(f"decoder-{DECODER}")).to_have_count(1)
            await expect(page.get_by_test_id(f"final-{evil_bib('5')}")).to_contain_text("1:14.45")
            # The keyboard: select Goetz, pin her (a selector built from her bib).
            await page.locator("#grid-body tr").nth(0).click()
            await page.keyboard.press("p")
            await page.keyboard.press("ArrowDown")
        elif path == "/board":
            await expect(page.get_by_test_id("board-race")).to_have_text(LONG_NAME, timeout=FIRST)
            await expect_fitted(page, "board-main", skater, evil_short("Takagi"))
            await expect(page.get_by_test_id("board-standings")).to_contain_text(
                evil_short("Goetz"))
        else:
            await expect(page.get_by_test_id("overlay-third")).to_contain_text(
                f"{LONG_NAME} · pair 10", timeout=FIRST)
            await expect_fitted(page, "overlay-rows", skater, evil_short("Takagi"))
        return
    team = evil_name("Canada")
    if path == "/live":
        await expect(page.get_by_test_id("race-name")).to_have_text(RELAY_NAME, timeout=FIRST)
        await expect(page.get_by_test_id("pack-order")).to_contain_text(team, timeout=10_000)
        await expect(page.get_by_test_id("stories")).to_contain_text(f"({REASON})")
    elif path == "/monitor":
        await expect(page.get_by_test_id("grid")).to_contain_text(team, timeout=FIRST)
        # Under a team: the member on the track (not under Canada: a penalty takes a
        # team's passages out of the race, DOMAIN.md's short-track PEN).
        await expect(page.get_by_test_id("grid")).to_contain_text(
            re.compile(re.escape(evil_short("NED #")).replace("\\#", r"\d")))
        await expect(page.get_by_test_id("stories")).to_contain_text(f"({REASON})")
    elif path == "/board":
        await expect(page.get_by_test_id("board-race")).to_have_text(RELAY_NAME, timeout=FIRST)
        await expect(page.get_by_test_id("board-pack")).to_contain_text(team, timeout=10_000)
    else:
        await expect(page.get_by_test_id("overlay-rows")).to_contain_text(team, timeout=FIRST)


async def check_every_screen(browser, st, screens: list[tuple[str, str | None]]) -> None:
    """Each screen at every size as served (with the policy), and at the arena's size
    without it (escaping alone must keep every payload text). At most one page per screen
    is open at a time, as many as there are screens; each screen's sizes come one after
    the other in one context (a choice made on the first, a pin on the monitor, is there
    on the next, as in one browser), and a screen done early takes its next size at once
    instead of waiting for the slowest screen of a round."""
    served = await browser.new_context()
    bare = await browser.new_context(bypass_csp=True)
    slots = asyncio.Semaphore(len(screens))

    async def one_after_the_other(context, path: str, race: str | None, sizes) -> None:
        for size, how in sizes:
            async with slots:
                await check_screen(context, st, path, race, size, how)

    await asyncio.gather(
        *(one_after_the_other(served, path, race, [(size, f"{size}") for size in VIEWPORTS])
          for path, race in screens),
        *(one_after_the_other(bare, path, race, [(VIEWPORTS[0], "without CSP")])
          for path, race in screens))


async def feed_both_races(st, sim) -> None:
    """The 1000 m through the P3 decoder, each gun after the passings before it; the
    relay through the feed (each input sent once the one before is answered: in order
    at any speed); then the referee's penalty with a hostile reason."""
    doc, long_doc, relay_doc = hostile_competition()
    await load_startlist(st, doc)
    r = bus.connect(st.url)
    try:
        hold = stored_before_guns(r, await r.xlen(keys.raw_stream(MAIN)))
        await replay(long_doc, st.settings, speed=400.0, announce=False, decoder=sim,
                     hold=hold)
    finally:
        await r.aclose()
    await feed_second_race(relay_doc, st.settings, speed=200.0, seq_from=10_000)
    team = relay_doc["startlist"]["races"][1]["teams"][0]["id"]
    # Answered with scoring's verdict: every input before it is scored too (one stream),
    # so the screens open on the whole of both races, not on what scoring reached.
    async with aiohttp.ClientSession() as s:
        reply = await post_feed(s, st, "officials", {"type": "decision", "race": RELAY,
                                                     "action": "pen", "bib": team,
                                                     "reason": REASON}, seq=90_001)
    assert reply["ok"] and reply.get("verdict") == "applied", reply


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium found: install Debian's `chromium`")
async def test_a_hostile_start_list_runs_nothing_on_any_screen(redis_server, tmp_path):
    from playwright.async_api import async_playwright

    sim = DecoderSimulator()
    port = await sim.start()
    settings = make_settings(redis_server.url, data_dir=str(tmp_path / "data"),
                             decoders=(Decoder(DECODER, "127.0.0.1", port),))
    st = await start_stack(settings, redis_server.url)
    try:
        screens = [("/", None)] + [(p, race) for race in (LONG, RELAY) for p in PAGE_PATHS[1:]]
        async with async_playwright() as p:
            # Chromium starts while the races are fed (the pages open once they are in).
            launching = asyncio.create_task(
                p.chromium.launch(executable_path=CHROMIUM, args=ARGS))
            try:
                await feed_both_races(st, sim)
            except BaseException:
                launching.cancel()
                raise
            browser = await launching
            await check_every_screen(browser, st, screens)
            await browser.close()
    finally:
        await st.close()
        await sim.stop()


async def test_every_response_carries_the_security_headers(stack):
    """Every page, script, style and API answer has the CSP and nosniff; the CSP lets
    pages reach the node's WebSocket at the bound port, or the public URL configured."""
    ws = stack.settings.broadcast_ws_port
    paths = [*PAGE_PATHS, "/static/js/fans.js", "/static/css/style.css", "/api/config",
             "/api/races", "/api/health", "/no-such-page"]
    async with aiohttp.ClientSession() as s:
        for path in paths:
            async with s.get(stack.http + path) as r:
                csp = r.headers.get("Content-Security-Policy", "")
                assert r.headers.get("X-Content-Type-Options") == "nosniff", path
                directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
                assert directives["script-src"] == "'self'", (path, csp)
                assert directives["object-src"] == "'none'", (path, csp)
                assert directives["base-uri"] == "'none'", (path, csp)
                assert directives["connect-src"] == f"'self' ws://127.0.0.1:{ws}", (path, csp)
                assert "unsafe" not in csp, (path, csp)
        # Asked for by another name, the policy follows the name the browser used.
        async with s.get(stack.http + "/live", headers={"Host": "arena.local:8080"}) as r:
            assert f"connect-src 'self' ws://arena.local:{ws};" in r.headers[
                "Content-Security-Policy"]
        async with s.get(stack.http + "/live", headers={"Host": "[::1]:8080"}) as r:
            assert f"connect-src 'self' ws://*:{ws};" in r.headers["Content-Security-Policy"]
    # No inline script or handler is left in the pages for the policy to refuse.
    for html in (Path(__file__).parents[1] / "web").glob("*.html"):
        text = html.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)", text), html.name
        assert not re.search(r"\son[a-z]+\s*=|\sstyle\s*=", text), html.name


async def test_the_policy_names_the_public_websocket(redis_server):
    # A public path (behind a load balancer) is on the host the browser asked for, over
    # ws: or wss: (TLS may end at the balancer).
    for public, host, source in (
            ("wss://live.example.org/ws", None, "wss://live.example.org"),
            ("ws://10.0.0.5:9001/", None, "ws://10.0.0.5:9001"),
            ("/ws", "live.example.org", "ws://live.example.org wss://live.example.org"),
            ("/ws", "lb.local:8000", "ws://lb.local:8000 wss://lb.local:8000"),
            ("/ws", "[::1]:8000", "ws://*:8000 wss://*:8000")):
        settings = make_settings(redis_server.url, public_ws_url=public)
        st = await start_stack(settings, redis_server.url)
        try:
            async with aiohttp.ClientSession() as s, s.get(
                    st.http + "/monitor", headers={"Host": host} if host else None) as r:
                assert f"connect-src 'self' {source};" in r.headers["Content-Security-Policy"]
        finally:
            await st.close()
