"""The ingress's async tests run on asyncio only: its fakes are built on asyncio primitives."""

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
