"""Shared fixtures: a real monitor on real /proc with its state in a temporary directory."""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from memmon.app import ProductionMemoryMonitor
from memmon.config import load_settings
from memmon.exposition.server import MemoryHealthServer
from tests.cgroups import v1_memory_cgroup

MonitorFactory = Callable[..., ProductionMemoryMonitor]


def is_loopback_host(host: object) -> bool:
    """Whether a host name or address stays on this machine (127.0.0.0/8, ::1, localhost, or a bind-any)."""
    if host is None or host in ("", b"", "localhost", "ip6-localhost"):
        return True
    text = host.decode() if isinstance(host, bytes) else str(host)
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests may reach 127.0.0.0/8 only: name lookups and connections to anything else fail at once (the
    guide's example config names real Slack and webhook hosts; a test must never contact them)."""
    real_getaddrinfo = socket.getaddrinfo
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def refuse(host: object) -> OSError:
        return OSError(f"test network guard: only loopback may be reached, not {host!r}")

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if not is_loopback_host(host):
            raise socket.gaierror(socket.EAI_NONAME, str(refuse(host)))
        return real_getaddrinfo(host, *args, **kwargs)

    def connect(self: socket.socket, address: Any) -> None:
        if isinstance(address, tuple) and not is_loopback_host(address[0]):
            raise refuse(address[0])
        real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        if isinstance(address, tuple) and not is_loopback_host(address[0]):
            raise refuse(address[0])
        return real_connect_ex(self, address)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``extra`` over ``base``, section by section."""
    merged = dict(base)
    for key, value in extra.items():
        merged[key] = deep_merge(merged[key], value) if isinstance(value, dict) and key in merged else value
    return merged


@pytest.fixture
def make_monitor(tmp_path: Path) -> MonitorFactory:
    """Builds monitors on the real host with a fast check interval and a temporary state directory."""

    def factory(overrides: dict[str, Any] | None = None, **kwargs: Any) -> ProductionMemoryMonitor:
        base = {
            "monitoring": {"check_interval": 0.05, "prometheus_port": 0},
            "server": {"health_port": 0},
            "storage": {"state_dir": str(tmp_path / "state"), "flush_interval_seconds": 0.05},
        }
        settings = load_settings(None, overrides=deep_merge(base, overrides or {}), environ={})
        return ProductionMemoryMonitor(settings=settings, **kwargs)

    return factory


class RunningAgent:
    """A started monitor and server, with an HTTP client pointed at it."""

    def __init__(
        self, monitor: ProductionMemoryMonitor, server: MemoryHealthServer, session: aiohttp.ClientSession
    ):
        self.monitor = monitor
        self.server = server
        self.session = session

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    async def get(self, path: str, **kwargs: Any) -> tuple[int, Any]:
        async with self.session.get(self.base + path, **kwargs) as response:
            body = (
                await response.json()
                if response.content_type == "application/json"
                else await response.text()
            )
            return response.status, body

    async def post(self, path: str, **kwargs: Any) -> tuple[int, Any]:
        async with self.session.post(self.base + path, **kwargs) as response:
            return response.status, await response.json()


@pytest.fixture
async def start_agent(make_monitor: MonitorFactory) -> AsyncIterator[Callable[..., Any]]:
    """Starts monitor + server on 127.0.0.1 (free ports) and waits for the first check; stops them after."""
    started: list[RunningAgent] = []
    session = aiohttp.ClientSession()

    async def start(
        overrides: dict[str, Any] | None = None, *, first_check: bool = True, **kwargs: Any
    ) -> RunningAgent:
        monitor = make_monitor(overrides, **kwargs)
        server = MemoryHealthServer(monitor, port=0, host="127.0.0.1")
        await server.start_server()
        agent = RunningAgent(monitor, server, session)
        started.append(agent)
        if first_check:
            await monitor.start_monitoring()
            await monitor.check_now()
        return agent

    yield start
    for agent in started:
        await agent.server.stop_server()
        await agent.monitor.stop_monitoring()
    await session.close()


@pytest.fixture
def v1_cgroup() -> Iterator[Path]:
    """A fresh ``/sys/fs/cgroup/memory/memmon-test-<random>`` with a 256 MiB limit, removed afterwards."""
    with v1_memory_cgroup(256 * 1024 * 1024) as directory:
        yield directory


def skip_reason(report: pytest.TestReport) -> str:
    """The reason a skipped test gave (``pytest.skip``, ``skipif``), without pytest's "Skipped: " prefix."""
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return reason.removeprefix("Skipped: ")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """At the end of a run: how many tests skipped for each reason, most first, and in which files (what this
    machine could not test; ``-ra`` lists the same skips by location)."""
    skipped = terminalreporter.stats.get("skipped", [])
    by_reason: dict[str, collections.Counter[str]] = {}
    for report in skipped:
        by_reason.setdefault(skip_reason(report), collections.Counter())[report.location[0]] += 1
    if not by_reason:
        return
    terminalreporter.section("skipped, by reason")
    for reason, files in sorted(by_reason.items(), key=lambda item: (-item[1].total(), item[0])):
        terminalreporter.write_line(f"{files.total():4d}  {reason}")
        where = ", ".join(f"{path} ({count})" for path, count in files.most_common())
        terminalreporter.write_line(f"      in {where}")
    terminalreporter.write_line(f"{len(skipped)} skipped, for {len(by_reason)} reason(s)")


@pytest.fixture
async def sleeper() -> AsyncIterator[int]:
    """A small real process (``sleep``) to watch as another target: its pid; killed after the test."""
    child = await asyncio.create_subprocess_exec("sleep", "600")
    try:
        yield child.pid
    finally:
        child.kill()
        await child.wait()
