"""Shared fixtures: asyncio under the anyio plugin, and no blocking calls on the event loop."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from blockbuster import BlockBuster, blockbuster_ctx


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # aiohttp and aiolimiter are asyncio-only


@pytest.fixture(autouse=True)
def blockbuster() -> Iterator[BlockBuster]:
    """Fail any test whose async code blocks the event loop (file I/O, time.sleep, ...)."""
    with blockbuster_ctx() as bb:
        yield bb
