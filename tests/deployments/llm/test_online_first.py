"""OnlineFirst: beside online requests, background ones beyond `while_online` wait, and
those in the engine beyond it are evicted (newest first)."""

from __future__ import annotations

import asyncio
import time

from deployments.llm.online_first import OnlineFirst


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def _line(gate: OnlineFirst, order: list[str], name: str, release: asyncio.Event) -> bool:
    """A background request: True if it was evicted before `release`."""
    async with gate.background_request() as evicted:
        order.append(name)
        done = asyncio.ensure_future(release.wait())
        notice = asyncio.ensure_future(evicted.wait())
        await asyncio.wait({done, notice}, return_when=asyncio.FIRST_COMPLETED)
        done.cancel()
        notice.cancel()
        return evicted.is_set()


def test_background_passes_while_no_online_request_runs():
    async def main() -> int:
        gate = OnlineFirst(while_online=1)
        async with (
            gate.background_request(),
            gate.background_request(),
            gate.background_request(),
        ):
            return gate.background

    assert asyncio.run(main()) == 3


def test_beside_online_requests_only_while_online_lines_run_the_rest_wait():
    async def main() -> None:
        gate = OnlineFirst(while_online=1, quiet_s=0)
        order: list[str] = []
        release = {i: asyncio.Event() for i in (1, 2, 3)}
        async with gate.online_request():
            tasks = [
                asyncio.create_task(_line(gate, order, f"l{i}", release[i])) for i in (1, 2, 3)
            ]
            await _settle()
            assert order == ["l1"] and gate.waiting == 2
            release[1].set()  # its slot frees: one more line, not two
            await _settle()
            assert order == ["l1", "l2"] and gate.waiting == 1
        await _settle()  # the online request ended: the last line passes
        assert order == ["l1", "l2", "l3"] and gate.waiting == 0
        for event in release.values():
            event.set()
        assert await asyncio.gather(*tasks) == [False, False, False]
        assert (gate.online, gate.background, gate.evictions) == (0, 0, 0)

    asyncio.run(main())


def test_an_online_arrival_evicts_the_newest_lines_beyond_while_online():
    async def main() -> None:
        gate = OnlineFirst(while_online=1)
        order: list[str] = []
        never = asyncio.Event()
        tasks = [asyncio.create_task(_line(gate, order, f"l{i}", never)) for i in (1, 2, 3)]
        await _settle()
        assert gate.background == 3  # no online request: all three run
        async with gate.online_request():
            await _settle()
            assert gate.evictions == 2 and gate.background == 1
            # l2 and l3 left; l1, the oldest, stays.
            assert [t.done() for t in tasks] == [False, True, True]
            assert [t.result() for t in tasks[1:]] == [True, True]
            # A second online request evicts no more.
            async with gate.online_request():
                await _settle()
                assert gate.evictions == 2
        never.set()
        assert (await tasks[0]) is False

    asyncio.run(main())


def test_while_online_zero_pauses_background_until_online_ends():
    async def main() -> None:
        gate = OnlineFirst(while_online=0, quiet_s=0)
        order: list[str] = []
        go = asyncio.Event()
        async with gate.online_request():
            waiter = asyncio.create_task(_line(gate, order, "l1", go))
            await _settle()
            assert gate.waiting == 1 and order == []
        await _settle()
        assert order == ["l1"] and gate.waiting == 0
        go.set()
        assert (await waiter) is False

    asyncio.run(main())


def test_after_online_traffic_lines_beyond_while_online_wait_until_quiet():
    async def main() -> float:
        gate = OnlineFirst(while_online=0, quiet_s=0.2)
        order: list[str] = []
        go = asyncio.Event()
        async with gate.online_request():
            waiter = asyncio.create_task(_line(gate, order, "l1", go))
            await _settle()
        ended = time.monotonic()
        while not order:
            await asyncio.sleep(0.01)
        waited = time.monotonic() - ended
        go.set()
        await waiter
        return waited

    assert 0.15 <= asyncio.run(main()) < 1.0


def test_a_cancelled_waiter_leaves_no_count_behind():
    async def main() -> None:
        gate = OnlineFirst(while_online=0)
        async with gate.online_request():
            waiter = asyncio.create_task(_line(gate, [], "l1", asyncio.Event()))
            await _settle()
            waiter.cancel()
            await asyncio.gather(waiter, return_exceptions=True)
        assert (gate.online, gate.background, gate.waiting) == (0, 0, 0)

    asyncio.run(main())
