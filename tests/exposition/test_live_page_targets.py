"""The live page of a multi-target agent in a real headless Chromium: the list of targets (worst first), opening
one (its name, its history, its detail), going back to the worst, names that are markup, and the layouts."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cgroups import v1_memory_cgroup
from tests.exposition.test_live_page import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    open_without_fetches,
    playwright,
    until,
)

LEVELS = {"ok": 0, "warning": 1, "critical": 2, "emergency": 3}
NAMES = """() => [...document.querySelectorAll("#targets button")].map((b) => b.dataset.target)"""
STATUSES = """() => [...document.querySelectorAll("#targets button .tag")].map((s) => s.textContent)"""


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    """A headless Debian Chromium, closed after the test."""
    async with playwright.async_playwright() as driver:
        launched = await driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def two_pids(start_agent, sleeper: int) -> Any:
    """An agent watching this test process as ``big`` (warning at 1 MB: the worst) and a ``sleep`` as ``small``
    (the default thresholds: ok), plus ``host``."""
    agent = await start_agent(
        {
            "targets": [
                {"pids": [os.getpid()], "name": "big", "thresholds": {"memory_warning_mb": 1}},
                {"pids": [sleeper], "name": "small"},
            ]
        }
    )
    for _ in range(3):
        await agent.monitor.check_now()
    return agent


async def test_the_page_lists_the_targets_worst_first_from_its_first_response(two_pids, browser) -> None:
    """With every fetch held, the first paint lists the three targets in /health/targets' order (worst first:
    ``big`` at warning), each with its level and usage, and the memory pane names the worst."""
    _status, answer = await two_pids.get("/health/targets")
    order = [t["name"] for t in answer["targets"]]
    assert order[0] == "big" and set(order) == {"big", "small", "host"}, order
    page, held, complaints = await open_without_fetches(browser, f"{two_pids.base}/")
    await until(page, "() => document.querySelectorAll('#targets button').length === 3", 5)
    assert await page.evaluate(NAMES) == order
    statuses = await page.evaluate(STATUSES)
    assert statuses[0] == "warning" and statuses == sorted(statuses, key=LEVELS.__getitem__, reverse=True)
    assert "MB of" in await page.locator("#targets").inner_text()
    assert await page.locator("#usage-title").inner_text() == "Memory: big"
    assert await page.locator("#targets button[aria-current=true]").get_attribute("data-target") == "big"
    assert held and complaints == []


async def test_opening_a_target_shows_its_name_and_history_and_back_shows_the_worst(
    two_pids, browser
) -> None:
    """Clicking ``small`` puts it in the address, the panes and the chart title, fetches its history
    (``?target=small``, only its samples) and its detail; "show the worst" goes back to ``big``."""
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    histories: list[Any] = []

    async def keep(response: Any) -> None:
        if "/health/metrics/history" in response.url:
            histories.append((response.url, json.loads(await response.body())))

    page.on("response", keep)
    await page.goto(f"{two_pids.base}/?refresh=500")
    await until(page, "() => document.querySelectorAll('#targets button').length === 3")
    await page.locator('#targets button[data-target="small"]').click()
    await playwright.expect(page.locator("#usage-title")).to_have_text("Memory: small", timeout=10_000)
    await playwright.expect(page.locator("#chart-title")).to_have_text("Last hour: small")
    await playwright.expect(page.locator("#target")).to_have_text("showing small")
    assert "target=small" in page.url
    assert await page.locator("#targets button[aria-current=true]").get_attribute("data-target") == "small"
    await until(page, "() => document.getElementById('usage-line')?.getAttribute('d').split('L').length > 2")
    opened = [body for url, body in histories if "target=small" in url]
    assert opened and all(s["target"] == "small" for body in opened for s in body["samples"]), histories
    _status, small = await two_pids.get("/health/targets/small")
    label = await page.locator("#chart").get_attribute("aria-label")
    now = float(re.search(r"now ([\d.]+) MB", label or "").group(1))  # type: ignore[union-attr]
    assert abs(now - small["memory_usage_mb"]) < 5, (label, small["memory_usage_mb"])  # a sleep, not pytest
    await playwright.expect(page.locator("#host")).to_contain_text("MB of", timeout=10_000)  # from its detail
    await playwright.expect(page.locator("#components")).to_have_text("all ok")
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "live-page-targets.png"), full_page=True)
    await page.locator("#show-worst").click()
    await playwright.expect(page.locator("#usage-title")).to_have_text("Memory: big", timeout=10_000)
    assert "target=" not in page.url
    assert await page.locator("#show-worst").is_hidden()
    await playwright.expect(page.locator("#components")).to_contain_text("process_memory")


async def test_an_address_with_a_target_opens_it_at_first_paint(two_pids, browser) -> None:
    """``/?target=small`` with every fetch held: the page shows ``small`` from the embedded list at once;
    an unknown name falls back to the worst."""
    page, _held, complaints = await open_without_fetches(browser, f"{two_pids.base}/?target=small")
    await playwright.expect(page.locator("#usage-title")).to_have_text("Memory: small", timeout=5_000)
    assert await page.locator("#show-worst").is_visible()
    other, _held, _ = await open_without_fetches(browser, f"{two_pids.base}/?target=nosuch")
    await playwright.expect(other.locator("#usage-title")).to_have_text("Memory: big", timeout=5_000)
    assert "target=" not in other.url and complaints == []


async def test_a_single_target_page_has_no_list(start_agent, browser) -> None:
    """One target: no list of targets, the header says "watching ..." and the memory pane is titled as before."""
    agent = await start_agent()
    page, _held, _complaints = await open_without_fetches(browser, f"{agent.base}/")
    await playwright.expect(page.locator("#target")).to_contain_text("watching", timeout=5_000)
    assert await page.locator("#targets-card").is_hidden()
    assert await page.locator("#usage-title").inner_text() == "Memory"


HOSTILE_TAG = "<img src=x onerror=\"document.title='pwned'\">"


@contextlib.contextmanager
def hostile_cgroups() -> Iterator[tuple[str, Path, Path]]:
    """Two fresh v1 memory cgroups matched by one glob, one of them named with markup: (glob, plain, hostile)."""
    tag = f"mpage{uuid.uuid4().hex[:8]}"
    with (
        v1_memory_cgroup(64 * 2**20, prefix=f"{tag}-plain") as plain,
        v1_memory_cgroup(64 * 2**20, prefix=f"{tag}-{HOSTILE_TAG}") as hostile,
    ):
        yield f"/{tag}-*", plain, hostile


async def test_a_target_named_with_markup_is_shown_as_text(start_agent, browser) -> None:
    """A glob's match named ``...<img onerror=...>``: the embedded state holds no ``<``, the list, the opened
    panes and its history show the name literally, no element is injected and nothing runs."""
    with hostile_cgroups() as (pattern, _plain, hostile):
        agent = await start_agent({"targets": [{"cgroup": pattern}]})
        name = f"cgroup:/{hostile.name}"
        for _ in range(40):
            _status, answer = await agent.get("/health/targets")
            if name in [t["name"] for t in answer["targets"]]:
                break
            await agent.monitor.check_now()
            await asyncio.sleep(0.1)
        assert name in [t["name"] for t in answer["targets"]], answer
        async with agent.session.get(agent.base + "/") as response:
            html = await response.text()
        block = re.search(r'<script type="application/json" id="state">(.*?)</script>', html, re.DOTALL)
        assert block is not None and "<" not in block.group(1)
        assert name in [t["name"] for t in json.loads(block.group(1))["targets"]["targets"]]
        page, _held, complaints = await open_without_fetches(browser, f"{agent.base}/")
        await playwright.expect(page.locator("#targets")).to_contain_text(HOSTILE_TAG, timeout=5_000)
        assert await page.evaluate("() => document.querySelectorAll('img').length") == 0
        live = await browser.new_page(viewport={"width": 1280, "height": 900})
        live.on("console", lambda m: complaints.append(m.text) if "Security Policy" in m.text else None)
        await live.goto(f"{agent.base}/?refresh=500")
        await until(live, "() => document.querySelectorAll('#targets button').length === 3")
        await live.locator("#targets button").filter(has_text=HOSTILE_TAG).click()
        await playwright.expect(live.locator("#usage-title")).to_have_text(f"Memory: {name}", timeout=10_000)
        await playwright.expect(live.locator("#host")).to_contain_text("MB of", timeout=10_000)  # its detail
        assert await live.evaluate("() => document.querySelectorAll('img').length") == 0
        assert "pwned" not in await live.title() and "pwned" not in await page.title()
        assert complaints == []


ROWS = """() => {
  const main = document.querySelector("main"), style = getComputedStyle(main), box = main.getBoundingClientRect();
  const rows = {};
  for (const card of main.querySelectorAll(":scope > section, :scope > nav")) {
    const r = card.getBoundingClientRect();
    (rows[Math.round(r.top)] ||= []).push([r.left, r.right]);
  }
  return { left: box.left + parseFloat(style.paddingLeft), right: box.right - parseFloat(style.paddingRight),
           gap: parseFloat(style.columnGap), rows: Object.values(rows), scroll: document.documentElement.scrollWidth,
           first: document.getElementById("targets-card").getBoundingClientRect().top ===
                  Math.min(...[...main.children].map((c) => c.getBoundingClientRect().top)) };
}"""


@pytest.mark.parametrize("width", [1280, 1024, 800, 390])
async def test_with_targets_every_row_of_cards_is_full(two_pids, browser, width: int) -> None:
    """With the list of targets shown, it is the first row and each row (list included) spans the page at
    desktop, tablet and phone widths, with no horizontal scrolling."""
    page = await browser.new_page(viewport={"width": width, "height": 900})
    await page.goto(f"{two_pids.base}/")
    await until(page, "() => document.querySelectorAll('#targets button').length === 3")
    layout = await page.evaluate(ROWS)
    assert layout["first"] and layout["scroll"] <= width, layout
    assert len(layout["rows"]) >= 4
    for row in layout["rows"]:
        row.sort()
        assert abs(row[0][0] - layout["left"]) <= 2 and abs(row[-1][1] - layout["right"]) <= 2, (
            width,
            layout,
        )
        for (_left, right), (left, _right) in itertools.pairwise(row):
            assert left - right <= layout["gap"] + 2, (width, layout)
