"""The one Chromium the page tests drive (Debian's, through Playwright), and its flags."""
from __future__ import annotations

import shutil
from typing import Any

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

#: Chromium features Playwright turns off itself (its chromiumSwitches), repeated here
#: because Chromium keeps only the last ``--disable-features`` it is given, which is ours.
PLAYWRIGHT_DISABLED = (
    "AvoidUnnecessaryBeforeUnloadCheckSync", "DestroyProfileOnBrowserClose", "HttpsUpgrades",
    "HttpsFirstBalancedModeAutoEnable", "LensOverlay", "MediaRouter", "PaintHolding",
    "ThirdPartyStoragePartitioning", "AvoidCorsURLLoaderRestartOnRedirect",
    "TcpPortRandomizationWin", "OptimizationHints", "NetworkTimeServiceQuerying",
    "AimEnabled", "PreconnectToSearch")
#: Headless Chromium is the whole browser: each window (every page Playwright opens)
#: gets an address bar whose two drop-down lists are web pages of their own
#: (chrome://omnibox-popup.top-chrome/), laid out again at every viewport change in a
#: renderer process of their own. No test has an address bar to type in; these took a
#: fifth of the CPU of tests/test_screens.py (Chromium 156).
NO_ADDRESS_BAR = ("WebUIOmniboxPopup", "WebUIOmniboxAimPopup")

#: No QUIC: the network-cut tests (tests/netcut.py) cut TCP connections only.
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-quic", "--disable-features=" + ",".join(PLAYWRIGHT_DISABLED + NO_ADDRESS_BAR)]


async def launch(p: Any) -> Any:
    """Chromium with :data:`ARGS`, from a started Playwright ``p``."""
    return await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)


async def open_page(browser: Any, url: str, width: int = 1920, height: int = 1080,
                    clock: bool = False) -> tuple[Any, list[str]]:
    """A page at ``url`` (with ``clock``, on Playwright's clock: time runs as usual until
    the test moves it on); the list it returns collects the page's script errors."""
    page = await browser.new_page(viewport={"width": width, "height": height})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    if clock:
        await page.clock.install()
    await page.goto(url)
    return page, errors
