"""The live page (GET /) in a real headless Chromium: level, usage vs limit, a live chart, and a level change."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from memmon.evaluation.rules import ThresholdSet
from memmon.model import Level

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
# Chromium's own background traffic (updates, sync, QUIC probes) would try to leave this machine; the page itself
# only talks to the agent on 127.0.0.1.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
]  # fmt: skip

playwright = pytest.importorskip("playwright.async_api", reason="playwright is a test dependency (make test)")
if not Path(CHROMIUM).exists():
    pytest.skip(
        "Debian's chromium is missing; make test installs it when run as root", allow_module_level=True
    )


async def test_page_shows_level_chart_and_follows_a_level_change(start_agent) -> None:
    """The page shows the level and a non-empty chart, turns critical when memory crosses the threshold, and a
    screenshot is saved as a test artifact."""
    agent = await start_agent()
    for _ in range(5):
        await agent.monitor.check_now()
    async with playwright.async_playwright() as driver:
        browser = await driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = await browser.new_page(viewport={"width": 1100, "height": 900})
            await page.goto(f"{agent.base}/?refresh=500")
            level = page.locator("#level")
            await playwright.expect(level).to_have_text("ok", timeout=10_000)
            await page.wait_for_function(
                "document.getElementById('usage-line')?.getAttribute('d').split('L').length > 3",
                timeout=10_000,
            )
            assert "MB" in await page.locator("#usage").inner_text()
            assert "(" in await page.locator("#limit").inner_text()  # names the limit source
            agent.monitor.evaluator.rule.thresholds = ThresholdSet(
                {Level.WARNING: 1.0, Level.CRITICAL: 2.0}, {}, {}, {}
            )
            await playwright.expect(level).to_have_text("critical", timeout=10_000)
            await playwright.expect(page.locator("#alerts")).to_contain_text("CRITICAL", timeout=10_000)
            await playwright.expect(page.locator("#actions")).to_contain_text("throttle", timeout=10_000)
            ARTIFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "live-page.png"), full_page=True)
            phone = await browser.new_page(viewport={"width": 390, "height": 844})
            await phone.goto(f"{agent.base}/")
            await playwright.expect(phone.locator("#level")).to_have_text("critical", timeout=10_000)
            width = await phone.evaluate("document.documentElement.scrollWidth")
            assert width <= 390  # readable on a phone: no horizontal scrolling
        finally:
            await browser.close()
    assert (ARTIFACTS / "live-page.png").stat().st_size > 10_000


async def test_page_is_self_contained(start_agent) -> None:
    """The page loads nothing from other origins (no CDN) and forbids it by its Content-Security-Policy."""
    agent = await start_agent()
    async with agent.session.get(agent.base + "/") as response:
        html = await response.text()
        policy = response.headers["Content-Security-Policy"]
    assert response.status == 200 and response.content_type == "text/html"
    # The SVG namespace is an identifier, not something fetched.
    markup = html.replace("http://www.w3.org/2000/svg", "")
    assert "http://" not in markup and "https://" not in markup
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy
