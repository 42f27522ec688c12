"""The ingress replica's end of the stream channel (deployments/stream_channel.py).

`StreamChannel` listens on this node's address, lazily, for the model replicas'
connections; each accepted connection must answer the handshake with this replica's
secret, then its frames are fanned out by key to the waiting requests' queues.
`ChannelStream` is one request's stream: the `rest` of a ForwardedStream, fed by the
channel and ended by the request's Serve call (`generate_to` returns StreamEnd).
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import logging
import os
import pickle
import secrets
from typing import Any

from deployments.contract import ErrorInfo, GenerationChunk, StreamEnd
from deployments.stream_channel import (
    HANDSHAKE_TIMEOUT_S,
    HEADER,
    MAC_BYTES,
    MAGIC,
    MAX_FRAME_BYTES,
    NONCE_BYTES,
    ChannelTarget,
    mac,
)

logger = logging.getLogger("ray.serve")

# Set to 0, the ingress streams every generation over Serve (one Ray item per chunk),
# whatever its config says: the switch back to the path before the channel.
DISABLE_ENV = "OPENAI_SERVE_STREAM_CHANNEL"
# After a request's Serve call has ended, how long its last channel items may take
# to arrive (they were written before the call returned) before the stream is cut.
_LATE_ITEMS_S = 30.0


class ChannelUnavailable(Exception):
    """The model replica could not reach this channel; nothing ran."""


def channel_enabled(configured: bool) -> bool:
    return configured and os.environ.get(DISABLE_ENV, "1") != "0"


def node_address() -> str:
    """This node's address as Ray knows it (the raylet's `--node-ip-address`): where
    the model replicas reach us. Not `ray.util.get_node_ip_address()`: in a worker it
    guesses from the default route, which is not loopback in the embedded default."""
    import ray

    node_id = ray.get_runtime_context().get_node_id()
    for node in ray.nodes():  # type: ignore[no-untyped-call]
        if node.get("NodeID") == node_id:
            return str(node["NodeManagerAddress"])
    raise RuntimeError("this node is not in Ray's node table")


class StreamChannel:
    """The channel server of one ingress replica.

    Args:
        host: the address to listen on; None: this node's address (Ray's view), which
            is loopback in the embedded default and the node IP in a cluster.
    """

    def __init__(self, host: str | None = None) -> None:
        self._host = host
        self._secret = secrets.token_bytes(32)
        self._queues: dict[int, asyncio.Queue[Any]] = {}
        self._keys = itertools.count(1)
        self._server: asyncio.Server | None = None
        self._address: tuple[str, int] | None = None
        self._starting: asyncio.Lock | None = None
        self._readers: set[asyncio.Task[None]] = set()

    async def _start(self) -> tuple[str, int]:
        if self._address is not None:
            return self._address
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._address is None:
                host = self._host if self._host else await asyncio.to_thread(node_address)
                self._server = await asyncio.start_server(self._accept, host, 0)
                port = int(self._server.sockets[0].getsockname()[1])
                self._address = (host, port)
                logger.info("stream channel listening on %s:%d", host, port)
            return self._address

    async def open(self) -> tuple[ChannelTarget, asyncio.Queue[Any]]:
        """A new request's target (sent to the model replica) and its queue."""
        host, port = await self._start()
        key = next(self._keys)
        queue: asyncio.Queue[Any] = asyncio.Queue()
        self._queues[key] = queue
        return ChannelTarget(host, port, self._secret, key), queue

    def forget(self, key: int) -> None:
        """Drops a request's queue; items that arrive for it later are discarded."""
        self._queues.pop(key, None)

    @property
    def open_streams(self) -> int:
        return len(self._queues)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._readers.add(task)
        try:
            nonce = secrets.token_bytes(NONCE_BYTES)
            writer.write(MAGIC + nonce)
            answer = await asyncio.wait_for(reader.readexactly(MAC_BYTES), HANDSHAKE_TIMEOUT_S)
            if not hmac.compare_digest(answer, mac(self._secret, nonce)):
                logger.warning("stream channel: a peer failed the handshake; closed")
                return
            await self._read_frames(reader)
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            pass  # the peer left or never answered: nothing to deliver
        except Exception:
            logger.exception("stream channel: connection dropped")
        finally:
            writer.close()
            if task is not None:
                self._readers.discard(task)

    async def _read_frames(self, reader: asyncio.StreamReader) -> None:
        while True:
            (size,) = HEADER.unpack(await reader.readexactly(HEADER.size))
            if size > MAX_FRAME_BYTES:
                logger.warning("stream channel: a %d-byte frame; connection closed", size)
                return
            # Unpickled only from a peer that proved it holds the secret (module doc).
            batch = pickle.loads(await reader.readexactly(size))
            for key, item in batch:
                queue = self._queues.get(key)
                if queue is not None:
                    queue.put_nowait(item)

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._readers):
            task.cancel()


class _End:
    """Put on a request's queue when its Serve call ends: its result or exception."""

    __slots__ = ("value",)

    def __init__(self, value: StreamEnd | BaseException) -> None:
        self.value = value


class ChannelStream:
    """One request's items: those the channel delivers, then the call's last item.

    An async iterator of GenerationChunk | ErrorInfo, like a Serve streaming
    response; `cancel` cancels the Serve call (the replica aborts the engine
    request) and forgets the key.

    Raises (from iteration):
        ChannelUnavailable: the replica could not reach the channel (first item only).
        Exception: the Serve call failed (replica died), or the items it sent never
            arrived.
    """

    def __init__(
        self, channel: StreamChannel, key: int, queue: asyncio.Queue[Any], response: Any
    ) -> None:
        self._channel = channel
        self._key = key
        self._queue = queue
        self.response = response  # Serve's DeploymentResponse of `generate_to`
        self._received = 0
        self._end: StreamEnd | None = None
        self._done = False
        self._waiter = asyncio.ensure_future(self._await_end())

    async def _await_end(self) -> None:
        try:
            value: StreamEnd | BaseException = await self.response
        except asyncio.CancelledError:
            return  # cancelled by us: nobody reads on
        except Exception as exc:
            value = exc
        self._queue.put_nowait(_End(value))

    def __aiter__(self) -> ChannelStream:
        return self

    async def __anext__(self) -> GenerationChunk | ErrorInfo:
        if self._done:
            raise StopAsyncIteration
        while True:
            end = self._end
            if end is not None and self._received >= end.sent:
                self._finish()
                if end.last is None:
                    raise ChannelUnavailable
                return end.last
            if end is None:
                item = await self._queue.get()
            else:
                try:
                    item = await asyncio.wait_for(self._queue.get(), _LATE_ITEMS_S)
                except TimeoutError:
                    self._finish()
                    raise ConnectionError(
                        f"the stream channel delivered {self._received} of {end.sent} items"
                    ) from None
            if isinstance(item, _End):
                if isinstance(item.value, BaseException):
                    self._finish()
                    raise item.value
                self._end = item.value
                continue
            self._received += 1
            return item  # type: ignore[no-any-return]

    def _finish(self) -> None:
        self._done = True
        self._channel.forget(self._key)

    def cancel(self) -> None:
        """Stops the generation (unless it ended) and forgets the key; idempotent."""
        if not self._waiter.done():
            self._waiter.cancel()
            self.response.cancel()
        self._finish()
