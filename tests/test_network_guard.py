"""The test suite's own network guard: nothing but loopback is reachable from in-process test code."""

from __future__ import annotations

import socket

import pytest


def test_guard_refuses_other_hosts_and_allows_loopback() -> None:
    """Looking up or connecting to a non-loopback host fails at once; 127.0.0.1 still works."""
    with pytest.raises(socket.gaierror, match="only loopback"):
        socket.getaddrinfo("hooks.slack.com", 443)
    with socket.socket() as sock, pytest.raises(OSError, match="only loopback"):
        sock.connect(("192.0.2.1", 80))
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        with socket.create_connection(server.getsockname(), timeout=2):
            pass
