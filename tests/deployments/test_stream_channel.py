"""The stream channel's wire, both ends real (the model replica's senders here, the
ingress's StreamChannel), on loopback: the handshake, one frame per loop pass for many
requests, refusal of a wrong secret and of an oversized frame."""

from __future__ import annotations

import asyncio
import pickle
from collections.abc import AsyncIterator

import pytest

from deployments.contract import ChoiceDelta, GenerationChunk
from deployments.stream_channel import (
    HEADER,
    MAGIC,
    MAX_FRAME_BYTES,
    NONCE_BYTES,
    ChannelBroken,
    ChannelSenders,
    ChannelTarget,
    encode_frame,
    mac,
)
from ingress.channel import StreamChannel

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def ends() -> AsyncIterator[tuple[StreamChannel, ChannelSenders]]:
    """An ingress's channel on loopback and a model replica's senders."""
    channel, senders = StreamChannel("127.0.0.1"), ChannelSenders()
    yield channel, senders
    senders.close()
    channel.close()


def _chunk(text: str) -> GenerationChunk:
    return GenerationChunk([ChoiceDelta(0, text)], 3, 1)


async def _until(predicate, timeout_s: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def test_items_of_one_loop_pass_travel_as_one_frame(ends):
    channel, senders = ends
    (t1, q1), (t2, q2) = await channel.open(), await channel.open()
    conn = await senders.get(t1)
    assert await senders.get(t2) is conn  # one connection per ingress replica
    conn.send(t1.key, _chunk("a"))
    conn.send(t2.key, _chunk("b"))
    conn.send(t1.key, _chunk("c"))
    got1 = [await asyncio.wait_for(q1.get(), 5) for _ in range(2)]
    got2 = await asyncio.wait_for(q2.get(), 5)
    assert [c.deltas[0].text for c in got1] == ["a", "c"]
    assert got2.deltas[0].text == "b" and got2.prompt_tokens == 3
    assert senders.stats() == {"connections": 1, "frames": 1, "items": 3}
    # A second pass is a second frame.
    conn.send(t2.key, _chunk("d"))
    assert (await asyncio.wait_for(q2.get(), 5)).deltas[0].text == "d"
    assert senders.stats()["frames"] == 2


async def test_items_for_a_forgotten_key_are_dropped(ends):
    channel, senders = ends
    (gone, _), (kept, queue) = await channel.open(), await channel.open()
    channel.forget(gone.key)
    conn = await senders.get(kept)
    conn.send(gone.key, _chunk("late"))
    conn.send(kept.key, _chunk("x"))
    assert (await asyncio.wait_for(queue.get(), 5)).deltas[0].text == "x"
    assert channel.open_streams == 1


async def test_a_wrong_secret_is_hung_up_on_and_nothing_is_delivered(ends):
    channel, senders = ends
    target, queue = await channel.open()
    forged = ChannelTarget(target.host, target.port, b"x" * 32, target.key)
    conn = await senders.get(forged)  # the handshake has no reply: it looks fine
    await _until(lambda: conn.broken)  # until the ingress hangs up
    with pytest.raises(ChannelBroken):
        conn.send(forged.key, _chunk("forged"))
    assert queue.empty()
    # The next get opens a new connection instead of reusing the broken one.
    fresh = await senders.get(target)
    assert fresh is not conn
    fresh.send(target.key, _chunk("ok"))
    assert (await asyncio.wait_for(queue.get(), 5)).deltas[0].text == "ok"


async def test_a_connection_to_a_departed_ingress_is_dropped_and_counted():
    channel, senders = StreamChannel("127.0.0.1"), ChannelSenders()
    try:
        target, queue = await channel.open()
        conn = await senders.get(target)
        conn.send(target.key, _chunk("a"))
        assert (await asyncio.wait_for(queue.get(), 5)).deltas[0].text == "a"
        channel.close()  # the ingress replica stops
        await _until(lambda: conn.broken)
        # Dropped when it broke, not when (if ever) that ingress asks again.
        assert senders._connections == {}
        assert senders.stats() == {"connections": 0, "frames": 1, "items": 1}
    finally:
        senders.close()
        channel.close()


async def test_an_oversized_frame_closes_the_connection():
    channel = StreamChannel("127.0.0.1")
    try:
        target, queue = await channel.open()
        reader, writer = await asyncio.open_connection(target.host, target.port)
        hello = await reader.readexactly(len(MAGIC) + NONCE_BYTES)
        writer.write(mac(target.secret, hello[len(MAGIC) :]))
        writer.write(HEADER.pack(MAX_FRAME_BYTES + 1))
        await writer.drain()
        assert await asyncio.wait_for(reader.read(1), 5) == b""  # closed by the ingress
        assert queue.empty()
        writer.close()
    finally:
        channel.close()


async def test_a_frame_is_a_length_and_a_pickle():
    data = encode_frame([(7, _chunk("z"))])
    (size,) = HEADER.unpack(data[: HEADER.size])
    assert size == len(data) - HEADER.size
    [(key, item)] = pickle.loads(data[HEADER.size :])
    assert key == 7 and item.deltas[0].text == "z"


def test_a_target_never_prints_its_secret():
    target = ChannelTarget("127.0.0.1", 5, b"\x01secret-bytes", 9)
    assert "secret" not in repr(target) and "\\x01" not in repr(target)
    assert repr(target) == "ChannelTarget(127.0.0.1:5, key=9)"


async def test_an_unreachable_channel_raises_on_connect():
    senders = ChannelSenders()
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    with pytest.raises(OSError):
        await senders.get(ChannelTarget("127.0.0.1", port, b"s" * 32, 1))
    assert senders.stats() == {"connections": 0, "frames": 0, "items": 0}
