"""The live page in a real Chromium (Debian's), driven by Playwright, while a race replays."""
from __future__ import annotations

import asyncio
import copy
import shutil
from pathlib import Path

import pytest

from icetime.cli import replay

from .test_pipeline import FIXTURE, RACE, load_startlist

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SHOTS = Path(__file__).parent / "screenshots"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium found: install Debian's `chromium` (.ci/run does)")


def short_race():
    """Pairs 3, 9 and 10: Goetz, Leerdam/Bowe, Li/Takagi, close together."""
    doc = copy.deepcopy(FIXTURE)
    doc["script"]["pairs"] = [p for p in doc["script"]["pairs"] if p["pair"] in (3, 9, 10)]
    doc["script"]["pair_interval_s"] = 4
    return doc


async def launch(p):
    return await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)


async def test_live_page_follows_the_race_through_a_broadcast_restart(stack):
    from playwright.async_api import async_playwright, expect

    await load_startlist(stack)
    async with async_playwright() as p:
        browser = await launch(p)
        page = await browser.new_page(viewport={"width": 1920, "height": 1080})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        await page.goto(f"{stack.http}/?race={RACE}")
        await expect(page.get_by_test_id("race-name")).to_have_text("Women 1000 m · Division A")
        await expect(page.get_by_test_id("status")).to_have_text("live")

        feed = asyncio.create_task(replay(short_race(), stack.settings, speed=12.0,
                                          announce=False))
        # Goetz on the ice: the clock runs, then her finish shows 1:14.45.
        clock = page.get_by_test_id("clock-I")
        await expect(page.get_by_test_id("pair-label")).to_have_text("· pair 3", timeout=10_000)
        await expect(clock).to_have_text(lambda_or_regex(r"^\d+\.\d$"), timeout=5_000)
        first = await clock.text_content()
        await asyncio.sleep(0.4)
        assert await clock.text_content() != first, "the running clock is frozen"
        await expect(page.get_by_test_id("final-5")).to_have_text("1:14.45", timeout=15_000)

        # The broadcast service goes down and comes back while pair 9 skates.
        await expect(page.get_by_test_id("pair-label")).to_have_text("· pair 9", timeout=15_000)
        await stack.stop("broadcast")
        await expect(page.get_by_test_id("status")).not_to_have_text("live", timeout=5_000)
        await asyncio.sleep(1.0)
        await stack.start("broadcast")
        await expect(page.get_by_test_id("status")).to_have_text("live", timeout=10_000)

        # Takagi, outer lane of the last pair: 0.14 behind Goetz at 600 m, then wins.
        await expect(page.get_by_test_id("pair-label")).to_have_text("· pair 10", timeout=20_000)
        row600 = page.get_by_test_id("lane-O").locator('tr[data-m="600"]')
        await expect(row600.locator(".t")).to_have_text("45.36", timeout=15_000)
        await expect(row600.locator(".gap")).to_have_text("+0.14")
        await expect(page.get_by_test_id("stories")).to_contain_text(
            "Takagi 0.14 behind Goetz at 600 m")
        await expect(page.get_by_test_id("final-20")).to_have_text("1:14.44", timeout=15_000)
        await feed

        rows = page.get_by_test_id("classification").locator("tbody tr")
        await expect(rows).to_have_count(6)
        top = [await rows.nth(i).locator("td").nth(1).text_content() for i in range(3)]
        times = [await rows.nth(i).locator(".t").text_content() for i in range(3)]
        assert top == ["Miho Takagi", "Kimi Goetz", "Jutta Leerdam"]
        assert times == ["1:14.44", "1:14.45", "1:14.88"]

        stats = await page.evaluate("window.icetime.stats")
        assert stats["resumes"] >= 1 and stats["snapshots"] == 1 and stats["duplicates"] == 0
        assert not errors, errors
        await page.screenshot(path=SHOTS / "live-1920x1080.png")
        assert await no_overflow(page)

        phone = await browser.new_page(viewport={"width": 375, "height": 812})
        await phone.goto(f"{stack.http}/?race={RACE}")
        await expect(phone.get_by_test_id("classification").locator("tbody tr")).to_have_count(6)
        await phone.screenshot(path=SHOTS / "live-375x812.png", full_page=True)
        assert await no_overflow(phone)
        await browser.close()


def lambda_or_regex(pattern: str):
    import re

    return re.compile(pattern)


async def no_overflow(page) -> bool:
    """No horizontal scrolling, and no element wider than its box."""
    bad = await page.evaluate("""() => {
        const out = [];
        if (document.documentElement.scrollWidth > innerWidth) out.push('page');
        for (const el of document.querySelectorAll('section, header, .lane, table')) {
            if (el.scrollWidth > el.clientWidth + 1) out.push(el.className || el.tagName);
        }
        return out;
    }""")
    assert not bad, f"overflowing: {bad}"
    return True
