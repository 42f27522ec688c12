"""The stream channel: a model replica's stream items to an ingress replica, many
requests per frame, on one authenticated TCP connection per (model replica, ingress
replica) pair.

Why: a streamed item sent as its own Ray streaming item costs both replicas a Ray
call's worth of CPU per request per engine step. Over the channel, the items that
one engine step makes for all of one ingress's requests travel as one frame.

What stays with Serve: each generation is still one Serve call (`generate_to`),
unary, that lasts as long as the stream. Serve counts it on its replica (routing,
autoscaling, max_ongoing_requests), cancels it when the client leaves (which aborts
the engine request), and carries its end: `StreamEnd(sent, last)`, the number of
items sent over the channel and the last item (the finished chunk, or an ErrorInfo).
The ingress yields the `sent` channel items in order, then `last`.

The wire, replica → ingress only after the handshake:
    ingress → replica   MAGIC + 32-byte nonce
    replica → ingress   HMAC-SHA256(secret, nonce)          (else the ingress hangs up)
    replica → ingress   frames: 4-byte big-endian length + pickle of [(key, item), ...]
The secret is the ingress replica's own, random, and travels only inside Serve calls
(Ray's token-authenticated transport); the ingress unpickles frames only from a peer
that proved it holds it, which is the trust Ray's own data plane gives a pickle.

Standard library only: both sides import it (like contract.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import pickle
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger("ray.serve")

MAGIC = b"OSSC1"  # "openai-serve stream channel", version 1
NONCE_BYTES = 32
MAC_BYTES = 32
HEADER = struct.Struct("!I")
# A frame holds one engine step's items for one ingress's requests: kilobytes, or a
# few megabytes with logprobs. Past this the peer is broken; the ingress hangs up.
MAX_FRAME_BYTES = 64 * 1024 * 1024
HANDSHAKE_TIMEOUT_S = 5.0
# Past this many bytes waiting in the socket's buffer, a sender awaits the drain (the
# ingress reads slower than the engine makes tokens: hold the engine's output back).
_HIGH_WATER_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class ChannelTarget:
    """Where one request's items go: the ingress replica's channel and the request's
    key there. Sent to the model replica as an argument of `generate_to`."""

    host: str
    port: int
    secret: bytes
    key: int

    def __repr__(self) -> str:  # never print the secret (Serve logs call arguments)
        return f"ChannelTarget({self.host}:{self.port}, key={self.key})"


class ChannelBroken(ConnectionError):
    """The connection to the ingress replica is gone (it stopped, or hung up)."""


def mac(secret: bytes, nonce: bytes) -> bytes:
    return hmac.new(secret, nonce, hashlib.sha256).digest()


def encode_frame(batch: list[tuple[int, Any]]) -> bytes:
    data = pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(data)) + data


class ChannelConnection:
    """One authenticated connection from this model replica to one ingress replica.

    `send` queues an item and schedules one flush for the current loop pass: the
    engine's output handler wakes every request of a step in the same pass, so their
    items leave together as one frame.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        on_close: Callable[[ChannelConnection], None] | None = None,
    ) -> None:
        self._writer = writer
        self._on_close = on_close
        self._pending: list[tuple[int, Any]] = []
        self._flush_scheduled = False
        self.frames = 0
        self.items = 0
        # The ingress never writes after the handshake: a read that ends means the
        # connection is gone, and the next send says so instead of writing into it.
        self._watch = asyncio.get_running_loop().create_task(self._watch_close(reader))

    async def _watch_close(self, reader: asyncio.StreamReader) -> None:
        try:
            await reader.read(1)
        except Exception:  # reset or the like: closed either way
            pass
        self.close()

    @property
    def broken(self) -> bool:
        return self._writer.is_closing()

    def send(self, key: int, item: Any) -> None:
        """Queues `item` for the request `key`.

        Raises:
            ChannelBroken: the connection is gone.
        """
        if self.broken:
            raise ChannelBroken("stream channel to the ingress is closed")
        self._pending.append((key, item))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Writes what is queued now, as one frame."""
        self._flush_scheduled = False
        if not self._pending or self.broken:
            self._pending.clear()
            return
        batch, self._pending = self._pending, []
        self._writer.write(encode_frame(batch))
        self.frames += 1
        self.items += len(batch)

    async def drain_if_backlogged(self) -> None:
        transport = self._writer.transport
        if transport.get_write_buffer_size() > _HIGH_WATER_BYTES:
            await self._writer.drain()

    def close(self) -> None:
        if not self._writer.is_closing():
            self._writer.close()
        self._watch.cancel()
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close(self)


class ChannelSenders:
    """This model replica's connections, one per ingress replica (host, port,
    secret), opened on first use and replaced when they break."""

    def __init__(self) -> None:
        self._connections: dict[tuple[str, int, bytes], asyncio.Future[ChannelConnection]] = {}
        # Totals of connections already closed, so stats() counts every item sent.
        self.closed_frames = 0
        self.closed_items = 0

    async def get(self, target: ChannelTarget) -> ChannelConnection:
        """The open connection for `target`'s ingress replica.

        Raises:
            OSError, TimeoutError, ChannelBroken: it cannot be opened.
        """
        key = (target.host, target.port, target.secret)
        future = self._connections.get(key)
        if future is not None and future.done() and _unusable(future):
            future = None
        if future is None:
            future = asyncio.ensure_future(_connect(target, self._forget))
            self._connections[key] = future
        try:
            return await asyncio.shield(future)
        except BaseException:
            if self._connections.get(key) is future and future.done():
                del self._connections[key]
            raise

    def _forget(self, connection: ChannelConnection) -> None:
        # An ingress replica that went away (scaled down, restarted) never asks again:
        # drop its closed connection now rather than keep it until this replica stops.
        for key, future in list(self._connections.items()):
            if future.done() and not _failed(future) and future.result() is connection:
                del self._connections[key]
        self.closed_frames += connection.frames
        self.closed_items += connection.items

    def stats(self) -> dict[str, int]:
        conns = [f.result() for f in self._connections.values() if f.done() and not _failed(f)]
        return {
            "connections": sum(not c.broken for c in conns),
            "frames": self.closed_frames + sum(c.frames for c in conns),
            "items": self.closed_items + sum(c.items for c in conns),
        }

    def close(self) -> None:
        for future in list(self._connections.values()):
            if future.done() and not _failed(future):
                future.result().close()
            else:
                future.cancel()
        self._connections.clear()


def _failed(future: asyncio.Future[ChannelConnection]) -> bool:
    return future.cancelled() or future.exception() is not None


def _unusable(future: asyncio.Future[ChannelConnection]) -> bool:
    return _failed(future) or future.result().broken


async def _connect(
    target: ChannelTarget, on_close: Callable[[ChannelConnection], None]
) -> ChannelConnection:
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(target.host, target.port), HANDSHAKE_TIMEOUT_S
    )
    try:
        hello = await asyncio.wait_for(
            reader.readexactly(len(MAGIC) + NONCE_BYTES), HANDSHAKE_TIMEOUT_S
        )
        if not hello.startswith(MAGIC):
            raise ChannelBroken("the peer is not an ingress stream channel")
        writer.write(mac(target.secret, hello[len(MAGIC) :]))
        await writer.drain()
    except BaseException:
        writer.close()
        raise
    return ChannelConnection(reader, writer, on_close)
