"""The http_hook action through the shared HTTP client, against real aiohttp receivers on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from memmon.actions.http_hook import HttpHookAction
from tests.alerting.receivers import Answer, Receiver, free_port

NOTICE = {"level": "critical", "memory_usage_mb": 812.5, "target": "pid:42"}
TOKEN = "hook-T0ken-0123456789abcdef"


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A started :class:`Receiver` (answers 200 ``ok`` unless scripted), closed after the test."""
    async with Receiver() as started:
        yield started


def moved(status: int, location: str) -> Answer:
    """A redirect answer to ``location``."""
    return Answer(status=status, body="moved", headers={"Location": location})


async def test_hook_posts_the_notice_as_json(receiver: Receiver) -> None:
    """One POST with the notice as its JSON body; a 2xx is success with the status and scheme://host:port only."""
    result = await HttpHookAction(f"{receiver.url}/clear/{TOKEN}").run(NOTICE)
    assert (result.action, result.success, result.error) == ("http_hook", True, None)
    assert dict(result.detail) == {"status": 200, "hook": f"http://127.0.0.1:{receiver.port}"}
    (request,) = receiver.requests
    assert (request.method, request.json) == ("POST", NOTICE)
    assert request.headers["Content-Type"] == "application/json"


@pytest.mark.parametrize("status", [307, 308])
async def test_hook_follows_307_and_308_with_the_same_post(receiver: Receiver, status: int) -> None:
    """A 307/308 sends the same POST and body to the Location (RFC 9110 §15.4.8/9)."""
    receiver.script = [moved(status, "/moved")]
    result = await HttpHookAction(receiver.url + "/clear").run(NOTICE)
    assert result.success and result.detail["status"] == 200
    _first, second = receiver.requests
    assert (second.method, second.path, second.json) == ("POST", "/moved", NOTICE)


@pytest.mark.parametrize("status", [301, 302, 303])
async def test_hook_does_not_turn_its_post_into_a_get(receiver: Receiver, status: int) -> None:
    """301/302/303 are not followed (a client may send them on as a GET without the notice): the result fails,
    naming the status and the new Location. Before the shared client, aiohttp followed them as a GET."""
    receiver.script = [moved(status, "/new-clear")]
    result = await HttpHookAction(receiver.url + "/clear").run(NOTICE)
    assert result.success is False and result.detail["status"] == status
    assert result.error is not None and f"HTTP {status}" in result.error and "/new-clear" in result.error
    assert [request.method for request in receiver.requests] == ["POST"]


async def test_hook_errors_never_show_the_url_secrets(receiver: Receiver) -> None:
    """A token in the path, a query token and userinfo never appear in the error, even when the app echoes them
    (non-2xx answer, timeout, connection refused)."""
    url = f"http://user:pa55word@127.0.0.1:{receiver.port}/clear/{TOKEN}?token=hunter2-secret"
    receiver.script = [f"500 cannot clear /clear/{TOKEN}?token=hunter2-secret", "hang:5"]
    errors = [
        (await HttpHookAction(url).run(NOTICE)).error,
        (await HttpHookAction(url, timeout=0.2).run(NOTICE)).error,
    ]
    await receiver.down()
    errors.append((await HttpHookAction(url).run(NOTICE)).error)
    assert "HTTP 500" in str(errors[0]) and "timed out after 0.2s" in str(errors[1])
    assert "connection refused" in str(errors[2])
    for error in errors:
        assert error is not None and f"127.0.0.1:{receiver.port}" in error
        for secret in (TOKEN, "hunter2", "pa55word", "user:"):
            assert secret not in error, error


async def test_hook_to_a_closed_port_fails_without_raising() -> None:
    """Nobody listening: the result fails with 'connection refused' and no status; run() never raises."""
    result = await HttpHookAction(f"http://127.0.0.1:{free_port()}/clear").run(NOTICE)
    assert (result.success, result.detail["status"]) == (False, None)
    assert result.error is not None and "connection refused" in result.error
