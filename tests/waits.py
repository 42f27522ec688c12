"""Bounded waits for tests: a condition polled until it holds or a deadline passes, then
a failure that says what was awaited (never a loop that spins until pytest-timeout kills
the whole test with a stack dump instead of a reason).

The deadlines are generous on purpose: they bound a hang, they do not measure speed (a
loaded 2-core CI machine can stall a process for a second or more)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

# In-process fakes answer in microseconds; this only bounds a hang.
DEFAULT_TIMEOUT_S = 10.0


def _timed_out(what: str, timeout_s: float, last: object) -> AssertionError:
    return AssertionError(f"timed out after {timeout_s:g} s waiting for {what} (last: {last!r})")


def wait_until(
    predicate: Callable[[], T],
    what: str,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    every_s: float = 0.01,
) -> T:
    """Polls `predicate` (blocking) until it returns something truthy; returns that.

    Raises:
        AssertionError: `timeout_s` passed first; the message names `what`.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise _timed_out(what, timeout_s, value)
        time.sleep(every_s)


async def until(
    predicate: Callable[[], T],
    what: str,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    every_s: float = 0.001,
) -> T:
    """`wait_until` for a coroutine: sleeps on the event loop between polls, so the
    tasks the condition waits for run meanwhile."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise _timed_out(what, timeout_s, value)
        await asyncio.sleep(every_s)
