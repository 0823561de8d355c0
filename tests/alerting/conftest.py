"""Fixtures for the delivery channels: an HTTP receiver, SMTP servers and a real Alertmanager, all on 127.0.0.1."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.alerting.receivers import HOST, Receiver, SmtpServer, free_port, make_self_signed_cert

ALERTMANAGER_BIN = os.environ.get("MEMMON_TEST_ALERTMANAGER_BIN", "/usr/bin/prometheus-alertmanager")

SmtpFactory = Callable[..., SmtpServer]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A started :class:`Receiver` (answers 200 ``ok`` unless scripted), closed after the test."""
    async with Receiver() as started:
        yield started


@pytest.fixture(scope="session")
def tls_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed ``(cert.pem, key.pem)`` for localhost/127.0.0.1, made once with ``openssl``."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command line tool is needed to make a test certificate")
    return make_self_signed_cert(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def smtp_server(request: pytest.FixtureRequest) -> Iterator[SmtpFactory]:
    """Starts SMTP servers: ``smtp_server(mode="plain"|"starttls"|"ssl", auth=(user, pw), refuse=[addr])``.

    TLS modes use the session's self-signed ``tls_cert`` (its ``cert.pem`` is ``server.cert_file``).
    """
    started: list[SmtpServer] = []

    def start(**kwargs: Any) -> SmtpServer:
        if kwargs.get("mode", "plain") != "plain":
            kwargs.setdefault("cert", request.getfixturevalue("tls_cert"))
        server = SmtpServer(**kwargs).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


# -- Alertmanager ----------------------------------------------------------------------------------------------

_AM_CONFIG = """\
route:
  receiver: "null"
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: "null"
"""


def _get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # 127.0.0.1 only
        return int(response.status), response.read()


def get_json(url: str) -> Any:
    """GET ``url`` (on 127.0.0.1) and decode its JSON."""
    return json.loads(_get(url)[1])


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Alertmanager on 127.0.0.1 (no clustering, a null receiver); yields its base URL."""
    if not os.access(ALERTMANAGER_BIN, os.X_OK):
        pytest.skip(
            f"{ALERTMANAGER_BIN} is missing: install Debian's prometheus-alertmanager; "
            "`make test` does this when run as root"
        )
    workdir = tmp_path_factory.mktemp("alertmanager")
    (workdir / "am.yml").write_text(_AM_CONFIG)
    port = free_port()
    log = (workdir / "alertmanager.log").open("wb")
    process = subprocess.Popen(
        [
            ALERTMANAGER_BIN,
            f"--config.file={workdir / 'am.yml'}",
            f"--storage.path={workdir / 'data'}",
            f"--web.listen-address={HOST}:{port}",
            "--cluster.listen-address=",  # empty: no gossip, no other listener
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://{HOST}:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            if process.poll() is not None:
                pytest.fail(f"alertmanager exited with {process.returncode}: {_tail(workdir)}")
            try:
                if _get(f"{base}/-/ready", timeout=0.5)[0] == 200:
                    break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"alertmanager not ready within 15 s: {_tail(workdir)}")
            time.sleep(0.05)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        log.close()


def _tail(workdir: Path) -> str:
    return (workdir / "alertmanager.log").read_text(errors="replace")[-2000:]
