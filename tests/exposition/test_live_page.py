"""The live page (GET /) in a real headless Chromium: level, usage vs limit, a live chart, and a level change."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import shutil
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from memmon.evaluation.rules import ThresholdSet
from memmon.model import Level
from tests.alerting.receivers import Answer, Receiver

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


async def until(page: Any, predicate: str, seconds: float = 20) -> None:
    """Polls ``predicate`` (a JavaScript function) until it is true. Not ``page.wait_for_function``: that polls
    through ``eval`` in the page, which the page's Content-Security-Policy forbids, as it should."""
    deadline = time.monotonic() + seconds
    while not await page.evaluate(predicate):
        assert time.monotonic() < deadline, f"still false after {seconds} s: {predicate}"
        await asyncio.sleep(0.1)


async def test_page_shows_level_chart_and_follows_a_level_change(start_agent) -> None:
    """The page shows the level and a non-empty chart, turns critical when memory crosses the threshold, and a
    screenshot is saved as a test artifact."""
    agent = await start_agent()
    for _ in range(5):
        await agent.monitor.check_now()
    async with playwright.async_playwright() as driver:
        browser = await driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            await page.goto(f"{agent.base}/?refresh=500")
            level = page.locator("#level")
            await playwright.expect(level).to_have_text("ok", timeout=10_000)
            await until(
                page, "() => document.getElementById('usage-line')?.getAttribute('d').split('L').length > 3"
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
    assert "unsafe-inline" not in policy  # the page's own script and style are allowed by hash, nothing else
    assert response.headers["Cache-Control"] == "no-store"  # it carries the state of the moment


CRITICAL_AT_ONCE = {
    "thresholds": {"memory_warning_mb": 1, "memory_critical_mb": 2, "memory_emergency_mb": 100_000}
}
HOSTILE = '</script><script>document.title="pwned"</script><!--'


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    """A headless Debian Chromium, closed after the test."""
    async with playwright.async_playwright() as driver:
        launched = await driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield launched
        finally:
            await launched.close()


async def open_without_fetches(browser: Any, url: str, width: int = 1280) -> tuple[Any, list[Any], list[str]]:
    """A page whose fetches to the agent never answer (a slow network), with the fetches held and the
    Content-Security-Policy complaints of the console collected."""
    page = await browser.new_page(viewport={"width": width, "height": 900})
    held: list[Any] = []
    complaints: list[str] = []
    page.on(
        "console",
        lambda message: complaints.append(message.text) if "Security Policy" in message.text else None,
    )

    async def hold(route: Any) -> None:
        held.append(route)

    await page.route(re.compile(r"/health"), hold)
    await page.goto(url, wait_until="domcontentloaded")
    return page, held, complaints


async def test_first_paint_shows_the_current_level_without_a_fetch(start_agent, browser) -> None:
    """The first response already carries the level, usage and components: with every fetch left unanswered the
    page shows CRITICAL (not STARTING), the usage in MB and the reason, with no CSP complaint."""
    agent = await start_agent(CRITICAL_AT_ONCE)
    page, held, complaints = await open_without_fetches(browser, f"{agent.base}/")
    # Emergency too: the host's memory (the system_memory component) is shared with whatever else runs here.
    level = page.locator("#level")
    await playwright.expect(level).to_have_text(re.compile(r"^(critical|emergency)$"), timeout=5_000)
    assert "MB" in await page.locator("#usage").inner_text()
    assert "process_memory" in await page.locator("#components").inner_text()
    assert (await page.locator("#updated").inner_text()).startswith("as of")
    assert await page.title() == f"memmon: {await level.text_content()}"
    assert held  # the page did ask, and got nothing: what it shows came with the page
    assert complaints == []


async def test_a_missing_target_reads_unknown_with_its_reason(start_agent, browser) -> None:
    """A --pid that does not exist: the page says UNKNOWN (not the host's ok) and names the problem, at once."""
    child = await asyncio.create_subprocess_exec("true")
    await child.wait()  # a pid that existed and is gone
    agent = await start_agent({"target": {"pids": [child.pid]}})
    page, _held, complaints = await open_without_fetches(browser, f"{agent.base}/")
    await playwright.expect(page.locator("#level")).to_have_text("unknown", timeout=5_000)
    target = await page.locator("#target").inner_text()
    assert "missing" in target and f"pid {child.pid}" in target, target
    assert complaints == []


async def test_embedded_state_cannot_end_its_script_element(start_agent, browser) -> None:
    """A receiver's error text with ``</script><script>...`` stays data: the raw page has no early ``</script>``,
    the browser shows the text literally and runs none of it."""
    async with Receiver(default=Answer(status=500, body=HOSTILE)) as hook:
        agent = await start_agent(
            {
                "thresholds": {
                    "memory_warning_mb": 1,
                    "memory_critical_mb": 100_000,
                    "memory_emergency_mb": 200_000,
                },
                "alerting": {
                    "webhook_url": hook.url + "/hook",
                    "delivery": {"backoff_initial_seconds": 0.2, "backoff_max_seconds": 0.5},
                },
            }
        )
        deadline = time.monotonic() + 30
        while "pwned" not in (agent.monitor.alert_channels()["webhook"].last_error or ""):
            assert time.monotonic() < deadline, agent.monitor.alert_channels()
            await asyncio.sleep(0.1)
        async with agent.session.get(agent.base + "/") as response:
            html = await response.text()
        block = re.search(r'<script type="application/json" id="state">(.*?)</script>', html, re.DOTALL)
        assert block is not None and "<" not in block.group(1)
        assert "pwned" in json.loads(block.group(1))["health"]["alert_channels"]["webhook"]["last_error"]
        page, _held, complaints = await open_without_fetches(browser, f"{agent.base}/")
        await playwright.expect(page.locator("#channels")).to_contain_text(HOSTILE, timeout=5_000)
        assert await page.title() == f"memmon: {await page.locator('#level').text_content()}"  # not "pwned"
        assert complaints == []


async def wait_for_history(agent: Any, seconds: float) -> None:
    """Until the stored history spans ``seconds`` (the chart then has a time range to label)."""
    deadline = time.monotonic() + 60
    while True:
        _status, body = await agent.get("/health/metrics/history?hours=1&max_points=600")
        stamps = [s["timestamp"] for s in body["samples"]]
        if len(stamps) > 2:
            span = datetime.fromisoformat(stamps[-1]) - datetime.fromisoformat(stamps[0])
            if span.total_seconds() >= seconds:
                return
        assert time.monotonic() < deadline, "history did not grow"
        await asyncio.sleep(0.2)


CHART_TEXTS = """() => {
  const svg = document.getElementById("chart"), frame = svg.getBoundingClientRect();
  return [...svg.querySelectorAll("text")].map((t) => {
    const m = t.getScreenCTM(), r = t.getBoundingClientRect();
    return { text: t.textContent, kind: t.getAttribute("class"), sx: m.a, sy: m.d,
             font: parseFloat(getComputedStyle(t).fontSize), left: r.left - frame.left, right: r.right - frame.left,
             top: r.top - frame.top, bottom: r.bottom - frame.top, width: frame.width, height: frame.height };
  });
}"""


@pytest.mark.parametrize("width", [390, 1280])
async def test_chart_has_a_time_axis_and_readable_labels(start_agent, browser, width: int) -> None:
    """The chart labels its time axis with clock times left to right, and every label is drawn at >= 10 px
    without being squashed, inside the chart and clear of the others, on a phone and on a desktop."""
    agent = await start_agent()
    rss_mb = agent.monitor.latest.sample.target_bytes / 2**20
    agent.monitor.evaluator.rule.thresholds = ThresholdSet(
        {Level.WARNING: rss_mb * 1.15, Level.CRITICAL: rss_mb * 1.2}, {}, {}, {}
    )  # a threshold line near the usage, so its label is drawn too
    await wait_for_history(agent, 4)
    page = await browser.new_page(viewport={"width": width, "height": 900})
    await page.goto(f"{agent.base}/?refresh=500")
    await until(page, "() => document.querySelectorAll('#chart text.time').length >= 2")
    await until(page, "() => document.querySelectorAll('#chart text.mark').length >= 1")
    texts = await page.evaluate(CHART_TEXTS)
    times = [t for t in texts if t["kind"] == "time"]
    assert all(re.fullmatch(r"\d{2}:\d{2}(:\d{2})?", t["text"]) for t in times), times
    assert [t["left"] for t in times] == sorted(t["left"] for t in times)
    assert [t["text"] for t in times] == sorted(t["text"] for t in times)
    for label in texts:
        assert label["font"] * label["sy"] >= 10, label  # readable size on screen
        assert 0.95 <= label["sx"] / label["sy"] <= 1.05, label  # not squashed sideways
        assert label["left"] >= -1 and label["right"] <= label["width"] + 1, label
        assert label["top"] >= -1 and label["bottom"] <= label["height"] + 1, label
    for i, a in enumerate(texts):
        for b in texts[i + 1 :]:
            apart = (
                a["right"] <= b["left"]
                or b["right"] <= a["left"]
                or a["bottom"] <= b["top"]
                or b["bottom"] <= a["top"]
            )
            assert apart, (a, b)


ROWS = """() => {
  const main = document.querySelector("main"), style = getComputedStyle(main), box = main.getBoundingClientRect();
  const rows = {};
  for (const section of main.querySelectorAll(":scope > section")) {
    const r = section.getBoundingClientRect();
    (rows[Math.round(r.top)] ||= []).push([r.left, r.right]);
  }
  return { left: box.left + parseFloat(style.paddingLeft), right: box.right - parseFloat(style.paddingRight),
           gap: parseFloat(style.columnGap), rows: Object.values(rows) };
}"""


@pytest.mark.parametrize("width", [1280, 1024, 800, 390])
async def test_every_row_of_cards_is_full(start_agent, browser, width: int) -> None:
    """At desktop, tablet and phone widths each row of cards spans the page: no empty column beside a card."""
    agent = await start_agent()
    page = await browser.new_page(viewport={"width": width, "height": 900})
    await page.goto(f"{agent.base}/")
    layout = await page.evaluate(ROWS)
    assert len(layout["rows"]) >= 3
    for row in layout["rows"]:
        row.sort()
        assert abs(row[0][0] - layout["left"]) <= 2 and abs(row[-1][1] - layout["right"]) <= 2, (
            width,
            layout,
        )
        for (_left, right), (left, _right) in itertools.pairwise(row):
            assert left - right <= layout["gap"] + 2, (width, layout)
