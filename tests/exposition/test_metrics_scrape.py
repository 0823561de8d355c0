"""/metrics as a scraper sees it over HTTP: zero series for every label set known up front (so a dashboard shows 0,
not "No data", on a healthy agent) and gzip when the scraper accepts it."""

from __future__ import annotations

import ast
import gzip
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from memmon.exposition.server import MemoryHealthServer
from memmon.model import ALERT_LEVELS
from memmon.telemetry import (
    ACTION_OUTCOMES,
    DELIVERY_OUTCOMES,
    MEMORY_EVENT_KINDS,
    REPUSH_OUTCOMES,
    STORE_OPERATIONS,
)
from tests.alerting.receivers import Receiver, free_port

PACKAGE = Path(__file__).resolve().parents[2] / "agent" / "memmon"


def samples_of(text: str) -> dict[str, list]:
    """Family name -> its samples."""
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def totals(samples: list, *labels: str) -> dict[tuple[str, ...], float]:
    """The ``_total`` samples of a counter family keyed by the values of ``labels``."""
    return {tuple(s.labels[n] for n in labels): s.value for s in samples if s.name.endswith("_total")}


async def scrape(url: str, encoding: str) -> tuple[aiohttp.ClientResponse, bytes]:
    """One GET with ``Accept-Encoding: encoding``; the raw body, not decompressed by the client."""
    async with (
        aiohttp.ClientSession(auto_decompress=False) as session,
        session.get(url, headers={"Accept-Encoding": encoding}) as response,
    ):
        return response, await response.read()


async def test_healthy_agent_has_zero_series_for_known_labels(start_agent) -> None:
    """On an agent that never failed anything, the delivery, alert, event and store counters already exist for
    every configured channel and known outcome, severity and component, event kind and store operation, the
    failure series at 0."""
    async with Receiver() as hook, Receiver() as slack:
        agent = await start_agent(
            {
                "alerting": {
                    "webhook_url": hook.url + "/hook",
                    "slack_webhook": slack.url + "/services/T/B/x",
                    "alertmanager_url": hook.url,
                }
            }
        )
        status, text = await agent.get("/metrics")
    assert status == 200
    families = samples_of(text)
    deliveries = totals(families["memmon_alert_deliveries"], "channel", "outcome")
    channels = set(agent.monitor.alert_channels())
    assert {"webhook", "slack", "alertmanager"} <= channels
    expected = {(channel, outcome) for channel in channels for outcome in DELIVERY_OUTCOMES}
    expected |= {("alertmanager", outcome) for outcome in REPUSH_OUTCOMES} | {("log", "delivered")}
    assert set(deliveries) == expected
    # The receivers accept everything; deliveries themselves may happen (the host's memory is shared with other
    # work, and the system_memory component may alert), failures cannot.
    assert {deliveries[key] for key in expected if key[1] not in ("delivered", "repushed")} == {0}
    components = {c.component for c in agent.monitor.latest.components}
    for family in ("memmon_alerts", "memmon_alerts_resolved"):
        fired = totals(families[family], "severity", "component")
        assert set(fired) >= {(level.label, c) for level in ALERT_LEVELS for c in components}
    events = totals(families["memmon_memory_events"], "kind")
    assert set(events) >= {(kind,) for kind in MEMORY_EVENT_KINDS}
    store = totals(families["memmon_store_errors"], "operation")
    assert store == {(operation,): 0 for operation in STORE_OPERATIONS}


async def test_action_outcomes_start_at_zero_once_an_action_ran(start_agent) -> None:
    """After an action ran once, each of its known outcomes has a series (failures show 0, not "No data")."""
    agent = await start_agent(
        {
            "thresholds": {
                "memory_warning_mb": 1,
                "memory_critical_mb": 100_000,
                "memory_emergency_mb": 200_000,
            }
        }
    )
    assert agent.monitor.recent_actions()  # warning actions ran on the first check
    actions = totals(samples_of((await agent.get("/metrics"))[1])["memmon_actions"], "action", "outcome")
    ran = {result.action for result in agent.monitor.recent_actions()}
    assert set(actions) >= {(action, outcome) for action in ran for outcome in ACTION_OUTCOMES}


async def test_metrics_are_gzipped_when_the_scraper_accepts_it(start_agent) -> None:
    """``Accept-Encoding: gzip`` gets a gzip body with the same metrics; ``identity`` gets plain text; both say
    ``Vary: Accept-Encoding`` so a cache never serves one to the other."""
    agent = await start_agent()
    plain, plain_body = await scrape(agent.base + "/metrics", "identity")
    zipped, zipped_body = await scrape(agent.base + "/metrics", "gzip")
    assert plain.status == zipped.status == 200
    assert "Content-Encoding" not in plain.headers
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert plain.headers["Content-Type"] == zipped.headers["Content-Type"]
    assert "Accept-Encoding" in plain.headers["Vary"] and "Accept-Encoding" in zipped.headers["Vary"]
    unzipped = gzip.decompress(zipped_body).decode()
    assert set(samples_of(unzipped)) == set(samples_of(plain_body.decode()))
    assert len(zipped_body) < len(plain_body) / 3
    weighted, weighted_body = await scrape(agent.base + "/metrics", "deflate;q=0.5, GZIP;q=0.9")
    assert weighted.headers["Content-Encoding"] == "gzip"
    assert "memmon_checks_total" in gzip.decompress(weighted_body).decode()


async def test_separate_prometheus_port_gzips_too(make_monitor) -> None:
    """The Prometheus-only port negotiates gzip the same way as the health port."""
    monitor = make_monitor()
    port = free_port()
    server = MemoryHealthServer(monitor, port=0, host="127.0.0.1", prometheus_port=port)
    await monitor.start_monitoring()
    await monitor.check_now()
    await server.start_server()
    try:
        zipped, body = await scrape(f"http://127.0.0.1:{port}/metrics", "gzip")
    finally:
        await server.stop_server()
        await monitor.stop_monitoring()
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert "memmon_build_info" in gzip.decompress(body).decode()


def literal_labels(counter: str, method: str = "inc") -> set[tuple[str, ...]]:
    """The label tuples passed to ``<...>.<counter>.inc(...)`` (or to ``<...>.<method>(...)`` when ``counter`` is
    empty) anywhere in the package; arguments that are not literals read as ``*``."""
    found: set[tuple[str, ...]] = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            owner = node.func.value
            named = (not counter) or (isinstance(owner, ast.Attribute) and owner.attr == counter)
            if node.func.attr == method and named:
                found.add(tuple(str(a.value) if isinstance(a, ast.Constant) else "*" for a in node.args))
    return found


def test_known_label_values_cover_what_the_code_counts() -> None:
    """Every outcome, store operation and event kind the code counts with a literal is in the known sets that the
    zero series are made from (a new outcome without an entry there would start as "No data" again)."""
    outcomes = {labels[-1] for labels in literal_labels("deliveries")}
    assert outcomes and outcomes <= {*DELIVERY_OUTCOMES, *REPUSH_OUTCOMES}
    # The recorder counts a failed store operation under the name it gave _guard.
    counted = literal_labels("store_errors") | literal_labels("", "_guard")
    operations = {labels[0] for labels in counted if labels and labels[0] != "*"}
    assert operations and operations <= set(STORE_OPERATIONS)
    action_outcomes = {labels[-1] for labels in literal_labels("actions") if labels[-1] != "*"}
    assert action_outcomes <= set(ACTION_OUTCOMES)
