"""The test receivers themselves: scripted answers, deduplication, down/up on the same port."""

from __future__ import annotations

import time

import aiohttp
import pytest

from tests.alerting.receivers import Answer, Receiver


def test_script_entries_parse() -> None:
    """Script strings become answers: status, status + body, 429 with Retry-After, hang."""
    assert Answer.parse("500") == Answer(500, "error 500")
    assert Answer.parse("400 invalid_payload") == Answer(400, "invalid_payload")
    assert Answer.parse("429:2") == Answer(429, "rate_limited", {"Retry-After": "2"})
    date = "Wed, 21 Oct 2015 07:28:00 GMT"
    assert Answer.parse(f"429:{date}").headers == {"Retry-After": date}
    assert Answer.parse("hang:1.5") == Answer(delay=1.5)
    assert Answer.parse(204).status == 204


async def test_script_then_default_and_dedupe_count() -> None:
    """Scripted answers come in order, then the default; accepted counts distinct keys answered 2xx."""
    async with Receiver() as receiver, aiohttp.ClientSession() as session:
        receiver.script = ["503", "200"]
        statuses = []
        for key in ("a", "a", "a", "b"):
            async with session.post(
                receiver.url + "/x", json={"n": 1}, headers={"Idempotency-Key": key}
            ) as r:
                statuses.append(r.status)
        assert statuses == [503, 200, 200, 200]
        assert (receiver.accepted, receiver.duplicates) == (2, 1)
        assert [request.status for request in receiver.requests] == statuses
        assert receiver.bodies == [{"n": 1}] * 4


async def test_down_refuses_and_up_serves_on_the_same_port() -> None:
    """down() refuses connections (even from a keep-alive client); up() serves again on the same port."""
    async with Receiver() as receiver, aiohttp.ClientSession() as session:
        port = receiver.port
        async with session.post(receiver.url) as response:
            assert response.status == 200
        await receiver.down()
        with pytest.raises(aiohttp.ClientConnectorError):
            async with session.post(receiver.url):
                pass
        await receiver.up()
        assert receiver.port == port
        async with session.post(receiver.url) as response:
            assert response.status == 200


async def test_close_cuts_a_hang_short() -> None:
    """Closing the receiver ends a hanging answer at once instead of waiting it out."""
    receiver = Receiver()
    await receiver.start()
    receiver.script = ["hang:30"]
    async with aiohttp.ClientSession() as session:
        with pytest.raises(TimeoutError):
            async with session.post(receiver.url, timeout=aiohttp.ClientTimeout(total=0.2)):
                pass
    started = time.monotonic()
    await receiver.close()
    assert time.monotonic() - started < 3
    assert len(await receiver.wait_for_requests(1)) == 1
