"""Ingress metrics: the per-key token count, and GET /metrics' reader (node lookup once per replica, reads on a thread of their own, concurrent scrapes sharing one read)."""

import asyncio
import threading

import pytest

from ingress.metrics import IngressMetrics, NodeMetrics, RequestTimer
from tests.ingress.fakes import RecordingInstrument

pytestmark = pytest.mark.anyio


async def test_the_node_is_looked_up_once_per_replica():
    lookups: list[int] = []
    fetched: list[str] = []

    def find_url() -> str:
        lookups.append(1)
        return "http://10.0.0.1:9000/metrics"

    def fetch(url: str, timeout_s: float) -> str:
        fetched.append(url)
        return "ray_up 1\n"

    node = NodeMetrics(find_url, fetch, timeout_s=3)
    for _ in range(3):
        assert await node.text() == "ray_up 1\n"
    assert lookups == [1] and fetched == ["http://10.0.0.1:9000/metrics"] * 3
    node.close()


async def test_a_failed_lookup_is_tried_again():
    answers = iter([OSError("GCS not reachable"), "http://node/metrics"])

    def find_url() -> str:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    node = NodeMetrics(find_url, lambda url, t: url)
    with pytest.raises(OSError):
        await node.text()
    assert await node.text() == "http://node/metrics"
    node.close()


async def test_reads_run_on_their_own_thread_never_the_default_executor():
    threads: list[str] = []

    def fetch(url: str, timeout_s: float) -> str:
        threads.append(threading.current_thread().name)
        return ""

    node = NodeMetrics(lambda: "http://node/metrics", fetch)
    await node.text()
    await node.text()
    assert len(threads) == 2 and all(t.startswith("node-metrics") for t in threads)
    assert threading.current_thread().name not in threads
    node.close()


async def test_a_hung_agent_holds_up_neither_the_loop_nor_the_default_executor():
    release = threading.Event()
    calls: list[int] = []

    def fetch(url: str, timeout_s: float) -> str:
        calls.append(1)
        release.wait(5)
        return "late\n"

    node = NodeMetrics(lambda: "http://node/metrics", fetch)
    scrapes = [asyncio.ensure_future(node.text()) for _ in range(3)]
    await asyncio.sleep(0.05)
    # A large body built off the loop (the request path) still gets a thread at once.
    assert await asyncio.wait_for(asyncio.to_thread(lambda: "body"), 1) == "body"
    assert not any(s.done() for s in scrapes)
    release.set()
    assert await asyncio.gather(*scrapes) == ["late\n"] * 3
    assert calls == [1]  # concurrent scrapes shared one read
    node.close()


async def test_a_scraper_that_leaves_does_not_cancel_the_shared_read():
    release = threading.Event()

    def fetch(url: str, timeout_s: float) -> str:
        release.wait(5)
        return "text"

    node = NodeMetrics(lambda: "http://node/metrics", fetch)
    leaving = asyncio.ensure_future(node.text())
    staying = asyncio.ensure_future(node.text())
    await asyncio.sleep(0.02)
    leaving.cancel()
    release.set()
    assert await staying == "text"
    node.close()


def test_tokens_are_counted_by_key_only_for_a_keyed_request():
    metrics = IngressMetrics(export=False)
    metrics.key_tokens = RecordingInstrument()
    RequestTimer(metrics, "m", "m-1", "chat", key="0a1b2c3d").finish(4, 6)
    RequestTimer(metrics, "m", "m-1", "chat").finish(4, 6)
    RequestTimer(metrics, "m", "m-1", "chat", key="0a1b2c3d").finish(0, 0)
    assert metrics.key_tokens.records == [
        (10, {"model": "m", "deploy_id": "m-1", "key": "0a1b2c3d"})
    ]
