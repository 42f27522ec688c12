"""The handle cache: one build per (application, mode), shared by concurrent misses, dropped when the application goes, retried after a failed build; and the bounded wait for a replica."""

import asyncio
import threading

import pytest

from ingress.handles import HandleCache, wait_assigned
from tests.ingress.fakes import FakeApplication, FakeResponse, FakeServe

pytestmark = pytest.mark.anyio


class SlowServe(FakeServe):
    """get_app_handle blocks (as Serve's controller round trip does) until released."""

    def __init__(self, apps: dict[str, FakeApplication]) -> None:
        super().__init__(apps)
        self.release = threading.Event()

    def get_app_handle(self, name: str) -> FakeApplication:
        assert self.release.wait(5)
        return super().get_app_handle(name)


async def test_concurrent_misses_build_one_handle():
    serve = SlowServe({"a": FakeApplication()})
    cache = HandleCache(get_app_handle=serve.get_app_handle)
    first = asyncio.ensure_future(cache.get("a", stream=True))
    second = asyncio.ensure_future(cache.get("a", stream=True))
    await asyncio.sleep(0.01)
    serve.release.set()
    h1, h2 = await asyncio.gather(first, second)
    assert h1 is h2
    assert serve.lookups == ["a"]
    assert serve.apps["a"].options_calls == [True]


async def test_modes_are_cached_apart():
    serve = FakeServe({"a": FakeApplication()})
    cache = HandleCache(get_app_handle=serve.get_app_handle)
    unary = await cache.get("a", stream=False)
    stream = await cache.get("a", stream=True)
    assert unary is not stream
    assert await cache.get("a", stream=False) is unary
    assert serve.apps["a"].options_calls == [False, True]


async def test_keep_only_drops_gone_applications():
    serve = FakeServe({"a": FakeApplication(), "b": FakeApplication()})
    cache = HandleCache(get_app_handle=serve.get_app_handle)
    a = await cache.get("a", stream=False)
    b = await cache.get("b", stream=True)
    cache.keep_only({"a"})
    assert await cache.get("a", stream=False) is a
    assert await cache.get("b", stream=True) is not b  # rebuilt
    assert serve.lookups == ["a", "b", "b"]


async def test_failed_build_is_retried_by_the_next_get():
    serve = FakeServe({})
    cache = HandleCache(get_app_handle=serve.get_app_handle)
    with pytest.raises(KeyError):
        await cache.get("late", stream=False)
    serve.apps["late"] = FakeApplication()
    handle = await cache.get("late", stream=False)
    assert handle is not None
    assert serve.lookups == ["late", "late"]


async def test_concurrent_getters_of_a_failing_build_all_see_the_error():
    serve = SlowServe({})
    cache = HandleCache(get_app_handle=serve.get_app_handle)
    getters = [asyncio.ensure_future(cache.get("x", stream=True)) for _ in range(5)]
    await asyncio.sleep(0.01)
    serve.release.set()
    outcomes = await asyncio.gather(*getters, return_exceptions=True)
    assert all(isinstance(o, KeyError) for o in outcomes)
    assert serve.lookups == ["x"]
    serve.apps["x"] = FakeApplication()
    assert await cache.get("x", stream=True) is not None


async def test_wait_assigned_returns_once_a_replica_took_the_call():
    assert await asyncio.wait_for(wait_assigned(FakeResponse(None), 1.0), 1.0) is None


async def test_wait_assigned_times_out_without_cancelling_the_call():
    response = FakeResponse(None, assigned=False)
    with pytest.raises(TimeoutError):
        await wait_assigned(response, 0.02)
    assert not response.cancelled  # the caller decides
    response.cancel()
