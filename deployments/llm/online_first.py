"""Online first on one replica: background requests (Batch API lines) yield to online
ones.

While any online request runs on the replica, at most `while_online` background
requests stay in the engine. The others wait here, before the engine, until the
online requests are done or a background slot frees. An online request that arrives
while more are in the engine evicts the excess, newest first (they have done the
least work): the replica aborts their engine requests and runs them again from the
start once admitted (their prompts' KV is likely still in the prefix cache). With no
online request running, background requests pass; their number is bounded upstream
by the batch's share (the ingress's `batches.online_share`), once the replica has
been without online requests for `quiet_s`: a closed-loop client's gap between two
requests would otherwise let every waiting line in, each costing the engine a
prefill that the next online request waits behind.

Why evict rather than let them finish: on a slow engine the lines in flight when
online traffic arrives hold it for their whole generation (a hundred Gemma lines on
two CPU cores: half a minute), and vLLM's engine has no pause for them (its priority
scheduling preempts only when the KV cache is full).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

QUIET_S = 1.0  # how long without online requests before background ones pass freely


class OnlineFirst:
    def __init__(self, while_online: int, quiet_s: float = QUIET_S) -> None:
        self.while_online = while_online
        self.quiet_s = quiet_s
        self._last_online = -float("inf")  # time.monotonic() the last online one ended
        self.online = 0  # online requests in the engine
        self.waiting = 0  # background requests waiting here
        self.evictions = 0  # background requests told to leave the engine, in all
        # Background requests in the engine, in the order they entered: each one's
        # eviction notice (set: abort and come back).
        self._running: dict[int, asyncio.Event] = {}
        self._tickets = itertools.count()
        self._changed = asyncio.Event()

    @property
    def background(self) -> int:
        """Background requests in the engine that are not being evicted."""
        return sum(1 for notice in self._running.values() if not notice.is_set())

    def _quiet_in(self) -> float:
        """Seconds until the replica counts as quiet (0: it is; inf: online requests run)."""
        if self.online:
            return float("inf")
        return max(0.0, self._last_online + self.quiet_s - time.monotonic())

    def _admits(self) -> bool:
        return self.background < self.while_online or self._quiet_in() == 0.0

    def _signal(self) -> None:
        # Wakes every waiter (each checks again); the next change gets a fresh event.
        self._changed.set()
        self._changed = asyncio.Event()

    def _evict_excess(self) -> None:
        staying = [n for n in self._running.values() if not n.is_set()]
        for notice in reversed(staying[self.while_online :]):
            notice.set()
            self.evictions += 1

    @asynccontextmanager
    async def online_request(self) -> AsyncIterator[None]:
        """Counts an online request in the engine for the block."""
        self.online += 1
        self._evict_excess()
        try:
            yield
        finally:
            self.online -= 1
            self._last_online = time.monotonic()
            self._signal()

    @asynccontextmanager
    async def background_request(self) -> AsyncIterator[asyncio.Event]:
        """Waits for admission, then holds a background request's place for the block.
        Yields its eviction notice: once set, the holder must leave the engine."""
        self.waiting += 1
        try:
            while not self._admits():
                wait = self._quiet_in()
                changed = self._changed.wait()
                if wait == float("inf"):
                    await changed
                else:  # quiet soon: look again then, or at the next change
                    try:
                        await asyncio.wait_for(changed, wait)
                    except TimeoutError:
                        pass
        finally:
            self.waiting -= 1
        ticket = next(self._tickets)
        notice = self._running[ticket] = asyncio.Event()
        try:
            yield notice
        finally:
            del self._running[ticket]
            self._signal()
