"""The shared HTTP client kit (memmon.kits.http_client) against real aiohttp servers on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from memmon.kits.http_client import HttpClient, HttpFailure, one_line
from tests.alerting.receivers import Answer, Receiver

BEARER = "eyJhbGciOiJSUzI1NiJ9.kube-sa-token-abcdef"


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A started :class:`Receiver` (answers 200 ``ok`` unless scripted), closed after the test."""
    async with Receiver() as started:
        yield started


@pytest.fixture
async def echo() -> AsyncIterator[str]:
    """A server answering 403 with the request's headers in its body, as a misconfigured proxy does."""

    async def handle(request: web.Request) -> web.Response:
        lines = "\n".join(f"{name}: {value}" for name, value in request.headers.items())
        return web.Response(status=403, text=f"{request.method} {request.path_qs}\n{lines}")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


async def test_excerpt_scrubs_the_credential_headers_sent(echo: str) -> None:
    """A bearer token sent in Authorization and echoed back never shows in the answer's excerpt, even when the
    caller says the URL holds no secrets (the Kubernetes API paths)."""
    async with HttpClient(user_agent="t/1") as client:
        answer = await client.request(
            "GET", echo + "/api/v1/pods", headers={"Authorization": f"Bearer {BEARER}"}, timeout=5, secrets=()
        )
    assert (answer.status, answer.ok, answer.retryable) == (403, False, False)
    assert BEARER in answer.text  # the raw body is the caller's to decode
    excerpt = answer.excerpt(limit=1000)
    assert BEARER not in excerpt and "kube-sa-token" not in excerpt
    assert "/api/v1/pods" in excerpt and "User-Agent: t/1" in excerpt


async def test_without_following_a_redirect_comes_back_as_the_answer(receiver: Receiver) -> None:
    """follow_redirects=False: a 307 is the answer (the Kubernetes client never sends its token on)."""
    receiver.script = [Answer(status=307, body="", headers={"Location": "/elsewhere"})]
    async with HttpClient(user_agent="t/1") as client:
        answer = await client.request(
            "POST", receiver.url + "/a", body=b"{}", timeout=5, follow_redirects=False
        )
    assert answer.status == 307 and answer.headers["Location"] == "/elsewhere"
    assert [request.path for request in receiver.requests] == ["/a"]


async def test_a_refused_redirect_is_a_final_failure_with_its_status(receiver: Receiver) -> None:
    """Following, a 303 raises HttpFailure(retryable=False, status=303) naming the scrubbed Location."""
    receiver.script = [Answer(status=303, body="", headers={"Location": "/new?token=s3cret-value"})]
    async with HttpClient(user_agent="t/1") as client:
        with pytest.raises(HttpFailure) as caught:
            await client.request("PUT", receiver.url + "/a", body=b"x", timeout=5)
    failure = caught.value
    assert (failure.retryable, failure.status, failure.tls) == (False, 303, False)
    assert "/new" in failure.reason and "s3cret-value" not in failure.reason and "PUT" in failure.reason


async def test_retry_after_and_retryable_statuses(receiver: Receiver) -> None:
    """429 with Retry-After: 7 is retryable with retry_after 7.0; a 500 is retryable, a 404 is not."""
    receiver.script = ["429:7", "500", "404"]
    async with HttpClient(user_agent="t/1") as client:
        answers = [await client.request("GET", receiver.url, timeout=5) for _ in range(3)]
    assert [(a.status, a.retryable, a.retry_after) for a in answers] == [
        (429, True, 7.0),
        (500, True, None),
        (404, False, None),
    ]


def test_one_line_flattens_and_cuts_with_an_ellipsis() -> None:
    """one_line joins whitespace runs and cuts to the limit, the last character an ellipsis."""
    assert one_line("a\n b\t c", 10) == "a b c"
    assert one_line("x" * 20, 10) == "x" * 9 + "…"
