"""The HTTP server against abusive clients (issue 13, items 13 and 20): raw sockets on 127.0.0.1 that send partial
or malformed requests, an agent bound to 0.0.0.0 without a token, and wrong tokens tried again and again."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import sys

import aiohttp
import pytest

from memmon.exposition import protocol
from memmon.exposition.requests import AuthThrottle
from memmon.exposition.server import MemoryHealthServer

PROBE = b"GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


async def raw_exchange(port: int, data: bytes, *, wait: float = 30.0) -> bytes:
    """Send ``data`` on a fresh connection and read until the server closes it (``TimeoutError`` after ``wait``)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(wait):
            return await reader.read()
    finally:
        writer.close()


@pytest.mark.parametrize(
    "sent",
    [b"", b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n", b"GET /health HT"],
    ids=["nothing", "headers-unfinished", "request-line-unfinished"],
)
async def test_a_connection_without_a_complete_request_is_closed(
    start_agent, monkeypatch, sent: bytes
) -> None:
    """A client that sends nothing or only part of its request is disconnected after the header timeout (here
    0.5 s; before, such connections stayed open for an hour), without an answer."""
    monkeypatch.setattr(protocol, "HEADER_TIMEOUT_SECONDS", 0.5)
    agent = await start_agent()
    assert await raw_exchange(agent.server.port, sent) == b""


async def test_a_request_sent_in_pieces_within_the_timeout_is_answered(start_agent, monkeypatch) -> None:
    """Headers arriving in pieces are fine as long as they are complete before the header timeout."""
    monkeypatch.setattr(protocol, "HEADER_TIMEOUT_SECONDS", 30.0)
    agent = await start_agent()
    reader, writer = await asyncio.open_connection("127.0.0.1", agent.server.port)
    try:
        writer.write(b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.write(b"Connection: close\r\n\r\n")
        async with asyncio.timeout(30):
            answer = await reader.read()
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 200")


def split_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


@pytest.mark.parametrize(
    "sent",
    [
        b"GET /health HTTP/1.1 extra\r\nHost: x\r\n\r\n",
        b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n",
        b"GET /health HTTP/1.1\r\nBad Header Line\r\n\r\n",
    ],
    ids=["bad-request-line", "huge-header", "bad-header"],
)
async def test_a_malformed_request_gets_a_json_400_and_one_log_line(start_agent, caplog, sent: bytes) -> None:
    """What aiohttp's parser rejects is answered as JSON ``{"error", "message"}`` (4xx) and logged as one line on
    memmon.server, with no traceback anywhere."""
    agent = await start_agent()
    caplog.set_level(logging.DEBUG)
    caplog.clear()
    status, headers, body = split_response(await raw_exchange(agent.server.port, sent))
    assert 400 <= status < 500
    assert headers["content-type"].startswith("application/json")
    payload = json.loads(body)
    assert set(payload) == {"error", "message"} and payload["message"]
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records]
    mine = [r for r in caplog.records if r.name == "memmon.server" and "malformed request" in r.getMessage()]
    assert len(mine) == 1


async def test_with_json_logs_malformed_requests_log_only_json_lines(tmp_path, unused_port) -> None:
    """A real agent started with ``--log-format json``: after five malformed requests and SIGTERM, every line it
    wrote to stderr is a JSON object."""
    argv = [sys.executable, "-m", "memmon", "--bind", "127.0.0.1", "--health-port", str(unused_port),
            "--prometheus-port", "0", "--state-dir", str(tmp_path / "state"), "--log-format", "json"]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # noqa: ASYNC220 - once
    try:
        async with asyncio.timeout(60):
            while True:
                assert proc.poll() is None
                try:
                    await raw_exchange(unused_port, PROBE)
                    break
                except OSError:
                    await asyncio.sleep(0.1)
        for _ in range(5):
            await raw_exchange(unused_port, b"GET / HTTP/1.1\r\nBad Header Line\r\n\r\n")
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = (proc.stderr.read() if proc.stderr else b"").decode().splitlines()
    assert sum("malformed request" in line for line in lines) == 5
    for line in lines:
        assert isinstance(json.loads(line), dict), line


@pytest.fixture
def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_binding_beyond_loopback_without_a_token_warns_once(make_monitor, caplog) -> None:
    """Bound to 0.0.0.0 with no API token: one warning naming the address and what it exposes (/health/leaks)."""
    caplog.set_level(logging.INFO, logger="memmon.server")
    server = MemoryHealthServer(make_monitor(), port=0, host="0.0.0.0")
    await server.start_server()
    try:
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    finally:
        await server.stop_server()
    assert len(warnings) == 1
    assert "0.0.0.0" in warnings[0] and "/health/leaks" in warnings[0] and "file:line" in warnings[0]


@pytest.mark.parametrize(
    ("host", "overrides"),
    [("127.0.0.1", {}), ("0.0.0.0", {"server": {"api_token": "s3cret-token"}})],
    ids=["loopback", "with-token"],
)
async def test_no_exposure_warning_on_loopback_or_with_a_token(make_monitor, caplog, host, overrides) -> None:
    """Loopback without a token, or any address with a token: no exposure warning."""
    caplog.set_level(logging.INFO, logger="memmon.server")
    server = MemoryHealthServer(make_monitor(overrides), port=0, host=host)
    await server.start_server()
    await server.stop_server()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_repeated_wrong_tokens_are_throttled_per_address(start_agent) -> None:
    """After 5 wrong tokens an address gets 429 with Retry-After, even with the right token, while another
    address with the right token is served."""
    agent = await start_agent({"server": {"api_token": "s3cret-token"}})
    wrong = {"Authorization": "Bearer nope"}
    right = {"Authorization": "Bearer s3cret-token"}
    for _ in range(5):
        status, body = await agent.post("/health/actions/gc", headers=wrong)
        assert status == 401, body
    async with agent.session.post(agent.base + "/health/actions/gc", headers=right) as response:
        assert response.status == 429
        assert int(response.headers["Retry-After"]) >= 1
        assert (await response.json())["error"] == "too many failed attempts"
    connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
    async with (
        aiohttp.ClientSession(connector=connector) as other,
        other.post(agent.base + "/health/actions/gc", headers=right) as response,
    ):
        assert response.status == 200, await response.text()


def test_the_back_off_doubles_is_capped_and_ends() -> None:
    """Free failures, then 1 s, 2 s, 4 s ... up to max_seconds; a right token or max_seconds of quiet forget."""
    now = [0.0]
    throttle = AuthThrottle(free_failures=2, base_seconds=1.0, max_seconds=8.0, monotonic=lambda: now[0])
    throttle.failed("a")
    assert throttle.wait_seconds("a") == 0
    waits = []
    for _ in range(6):
        throttle.failed("a")
        waits.append(throttle.wait_seconds("a"))
    assert waits == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert throttle.wait_seconds("b") == 0
    throttle.succeeded("a")
    assert throttle.wait_seconds("a") == 0
    for _ in range(3):
        throttle.failed("a")
    now[0] += 8.5
    assert throttle.wait_seconds("a") == 0
    throttle.failed("a")
    assert throttle.wait_seconds("a") == 0  # the earlier failures were forgotten


def test_the_throttle_remembers_a_bounded_number_of_addresses() -> None:
    """Past max_peers addresses, the least recently failing one is forgotten."""
    throttle = AuthThrottle(free_failures=0, max_peers=3)
    for address in ("a", "b", "c", "d"):
        throttle.failed(address)
    assert throttle.wait_seconds("a") == 0
    assert all(throttle.wait_seconds(address) > 0 for address in ("b", "c", "d"))
