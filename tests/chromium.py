"""The one Chromium the page tests drive (Debian's, through Playwright), and its flags."""
from __future__ import annotations

import shutil

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

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-features=" + ",".join(PLAYWRIGHT_DISABLED + NO_ADDRESS_BAR)]
