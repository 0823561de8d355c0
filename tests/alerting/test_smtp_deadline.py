"""The email channel's deadline against misbehaving SMTP servers (real asyncio TCP servers on 127.0.0.1).

A server that drips its greeting one byte at a time never trips a per-read socket timeout; one that never says
anything trips it inside smtplib, which reports a disconnect. Either way a delivery must end at its deadline
with "timed out", and an agent must stop promptly while such a delivery is in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator

import pytest

from memmon.alerting.channel import Delivery, DeliveryFailed
from memmon.alerting.email import EmailChannel
from tests.alerting.receivers import HOST, sample_alert
from tests.test_cli import WARNING_FROM_1_MB, clean_env, free_port, memmon, stop, wait_ready
from tests.waiting import wait_until


class StallingSmtp:
    """Accepts connections; ``drip`` seconds per byte of a long 220 greeting, or (``drip=None``) silence."""

    def __init__(self, drip: float | None) -> None:
        self.drip = drip
        self.connections = 0
        self.closed = 0
        """Connections the client closed (the server saw EOF or a reset)."""
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> StallingSmtp:
        self._server = await asyncio.start_server(self._handle, HOST, 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._server is not None
        self._server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            if self.drip is None:
                await reader.read()  # returns at EOF: when the client gives up
            else:
                for byte in b"220 " + b"x" * 1000 + b"\r\n":
                    writer.write(bytes([byte]))
                    await writer.drain()
                    try:
                        await asyncio.wait_for(reader.read(1), self.drip)
                        break  # the client sent something or closed: it gave up waiting
                    except TimeoutError:
                        continue
        except (ConnectionError, OSError):
            pass
        finally:
            self.closed += 1
            writer.close()


@pytest.fixture
async def silent() -> AsyncIterator[StallingSmtp]:
    """An SMTP 'server' that accepts and never answers."""
    async with StallingSmtp(None) as server:
        yield server


def channel(port: int, timeout: float) -> EmailChannel:
    return EmailChannel(["oncall@example.org"], host=HOST, port=port, security="none", timeout=timeout)


def smtp_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("memmon-smtp")]


async def test_a_server_that_never_answers_is_a_timeout(silent: StallingSmtp) -> None:
    """No greeting at all: the failure says 'timed out after 0.5s', retryable, not 'closed the connection'."""
    with pytest.raises(DeliveryFailed) as caught:
        await channel(silent.port, 0.5).send(Delivery(sample_alert(), "k:firing"))
    failure = caught.value
    assert failure.retryable and "timed out after 0.5s" in failure.reason, failure.reason
    assert "closed the connection" not in failure.reason


async def test_a_dripping_server_is_cut_off_at_the_deadline() -> None:
    """One byte every 0.2 s (a 200 s greeting) ends at the 1 s deadline of the whole delivery, not per read;
    the connection is closed and no worker thread is left behind."""
    async with StallingSmtp(0.2) as server:
        started = time.monotonic()
        with pytest.raises(DeliveryFailed) as caught:
            await channel(server.port, 1.0).send(Delivery(sample_alert(), "k:firing"))
        elapsed = time.monotonic() - started
        assert "timed out after 1s" in caught.value.reason, caught.value.reason
        assert elapsed < 10  # the greeting alone would take 200 s
        await wait_until(lambda: server.closed == 1 and not smtp_threads())


async def test_cancelling_a_send_closes_its_connection() -> None:
    """A send cancelled from outside (the dispatcher's stop) closes the SMTP connection and its thread ends."""
    async with StallingSmtp(0.2) as server:
        task = asyncio.create_task(channel(server.port, 60.0).send(Delivery(sample_alert(), "k:firing")))
        await wait_until(lambda: server.connections == 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await wait_until(lambda: server.closed == 1 and not smtp_threads())


async def test_agent_stops_promptly_while_smtp_drips(tmp_path) -> None:
    """An agent delivering to a server that sends one byte every 3 s exits 0 within the stop budget on SIGTERM."""
    async with StallingSmtp(3.0) as server:
        port = free_port()
        env = clean_env(
            **WARNING_FROM_1_MB,
            MEMMON_ALERTING__EMAIL="oncall@example.org",
            MEMMON_ALERTING__SMTP__HOST=HOST,
            MEMMON_ALERTING__SMTP__PORT=str(server.port),
            MEMMON_ALERTING__SMTP__SECURITY="none",
        )
        args = ["--health-port", str(port), "--prometheus-port", "0", "--state-dir", str(tmp_path / "state"),
                "--check-interval", "0.2"]  # fmt: skip
        proc = memmon(*args, env=env)
        try:
            await asyncio.to_thread(wait_ready, port, proc)
            await wait_until(lambda: server.connections >= 1, within=15)
            await asyncio.sleep(1.0)  # a few bytes in: the delivery is in the middle of the greeting
        finally:
            returncode, elapsed, stderr = await asyncio.to_thread(stop, proc)
    assert returncode == 0, stderr
    assert elapsed < 8, f"took {elapsed:.1f}s to stop"
