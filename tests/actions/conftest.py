"""Fixtures for the actions: a strict Kubernetes API server stand-in on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.actions.kube_standin import KubeStandin


@pytest.fixture
async def kube_api() -> AsyncIterator[KubeStandin]:
    """A started :class:`KubeStandin` holding pod shop/app-7d9f (token ``standin-token-aaaa``), stopped after."""
    async with KubeStandin() as api:
        yield api
