"""Debian's chromium, headless, driven by selenium through Debian's chromium-driver (nothing is
downloaded): for the browser tests of the campaign page and ``bench_overhead.py --browser``."""

from __future__ import annotations

import shutil


def open_chromium(width: int = 1400, height: int = 2600):
    """A headless Chromium that keeps its console log (``driver.get_log("browser")``)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver_path):
        raise RuntimeError("Debian's chromium and chromium-driver are needed: scripts/setup.sh --test installs them")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    # --no-sandbox: CI and containers run as root, where Chromium's sandbox refuses to start.
    # No back-forward cache: a page left for another keeps its websocket open there, and the
    # campaign page's server would go on reading the store for a session nobody sees.
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-features=BackForwardCache", f"--window-size={width},{height}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver_path), options=options)
