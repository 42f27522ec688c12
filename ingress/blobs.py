"""The blob store: where the bytes of files live (uploads of the Files API, the
results a batch writes), by key (`files/file-<hex>`); their metadata is in the
state store (ingress/store.py).

Where: by default the local folder `<state.data_dir>/files` (created mode 0700), which
the ingress replicas of one machine share; any `pyarrow.fs` URI otherwise
(`files.blob_uri`: `s3://bucket/prefix`, `gs://bucket/prefix`, `file:///abs/path`), which
a cluster needs. `filesystem` and `path(key)` hand the same place to readers that take a
pyarrow filesystem (Ray Data).

Writes are streamed (`write` takes an async iterator of chunks and never holds the
whole file) and atomic on a local filesystem: the bytes go to a hidden temporary key
beside the target and are moved onto it once complete, so a failed or cancelled write
leaves nothing behind. On an object store the object appears when its upload completes;
a failed one is deleted. Every blocking pyarrow call runs in a thread
(`asyncio.to_thread`).

Failures of the backend raise BlobUnavailable, whose message names no path, URI, host or
exception class (the endpoints answer it with a 503); the log has the backend's words.
"""

from __future__ import annotations

import asyncio
import functools
import io
import logging
import os
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar, cast

import pyarrow
import pyarrow.fs as pafs

if TYPE_CHECKING:
    from ingress.config import FilesConfig, StateConfig

logger = logging.getLogger("ray.serve")

T = TypeVar("T")
WRITE_BUFFER_BYTES = 1 << 20  # chunks are gathered to this size before each write call
_TMP_MARK = ".tmp-"


class BlobUnavailable(Exception):
    """The blob store is down, unreachable or refused the operation (a 503)."""


def _unavailable(what: str, exc: BaseException) -> BlobUnavailable:
    """The exception the endpoint answers with: no path, URI, host or class name.
    The log gets the backend's first line."""
    first = str(exc).splitlines()[0] if str(exc) else ""
    logger.warning("blob store: %s failed: %s: %s", what, type(exc).__name__, first)
    return BlobUnavailable(f"the file store is unavailable ({what} failed); retry later")


_BACKEND_ERRORS = (OSError, pyarrow.ArrowException)


def _check_key(key: str) -> None:
    """Keys are relative, `/`-separated, without empty, `.`-led or `..` segments."""
    parts = key.split("/")
    if not key or any(not p or p.startswith(".") for p in parts):
        raise ValueError(f"invalid blob key {key!r}")


class Blobs:
    """One pyarrow filesystem and a base path in it; resolved on first use (no I/O here)."""

    def __init__(self, uri_or_dir: str) -> None:
        self._where = uri_or_dir
        self._fs: pafs.FileSystem | None = None
        self._base = ""
        self._local = "://" not in uri_or_dir
        self._base_made = False

    @classmethod
    def from_config(cls, files: FilesConfig, state: StateConfig) -> Blobs:
        """`files.blob_uri`, else the folder `<state.data_dir>/files`."""
        return cls(files.blob_uri or str(Path(state.data_dir).expanduser() / "files"))

    def _resolve(self) -> None:
        if self._fs is not None:
            return
        if "://" not in self._where:
            fs: pafs.FileSystem = pafs.LocalFileSystem()
            base = os.path.abspath(os.path.expanduser(self._where))
        else:
            fs, base = pafs.FileSystem.from_uri(self._where)  # S3: may ask for the region
        self._local = isinstance(fs, pafs.LocalFileSystem)
        self._base = base.rstrip("/")
        self._fs = fs

    @property
    def filesystem(self) -> pafs.FileSystem:
        """The pyarrow filesystem (for `ray.data.read_json(blobs.path(key), filesystem=...)`)."""
        self._resolve()
        assert self._fs is not None
        return self._fs

    def path(self, key: str) -> str:
        """The full path of `key` inside `filesystem`."""
        _check_key(key)
        self._resolve()
        return f"{self._base}/{key}"

    async def _run(self, what: str, call: Callable[[], T]) -> T:
        """`call` in a thread, its backend errors as BlobUnavailable."""
        try:
            return await asyncio.to_thread(call)
        except _BACKEND_ERRORS as exc:
            raise _unavailable(what, exc) from None

    def _make_parent(self, path: str) -> None:
        """The folders above `path` (blocking); the base folder mode 0700 on a local disk."""
        fs = self.filesystem
        if self._local and not self._base_made:
            os.makedirs(self._base, mode=0o700, exist_ok=True)
            os.chmod(self._base, 0o700)  # makedirs's mode is cut by the umask
            self._base_made = True
        parent = path.rsplit("/", 1)[0]
        if parent != self._base:
            fs.create_dir(parent, recursive=True)

    async def write(self, key: str, chunks: AsyncIterator[bytes]) -> int:
        """Streams `chunks` into `key` (replacing it); returns the bytes written.

        Atomic on a local filesystem (a temporary key, then a move). An exception of
        `chunks` itself (e.g. a bound exceeded) is raised as it is, after the partial
        bytes are removed; a backend failure is BlobUnavailable.
        """
        _check_key(key)
        await self._run("write", self._resolve)
        target, fs = self.path(key), self.filesystem
        folder, name = target.rsplit("/", 1)
        written = f"{folder}/.{name}{_TMP_MARK}{uuid.uuid4().hex[:12]}" if self._local else target
        await self._run("write", lambda: self._make_parent(target))
        stream = await self._run("write", lambda: fs.open_output_stream(written))
        total = 0
        done = False
        try:
            pending = bytearray()
            async for chunk in chunks:
                pending += chunk
                total += len(chunk)
                if len(pending) >= WRITE_BUFFER_BYTES:
                    await self._run("write", functools.partial(stream.write, bytes(pending)))
                    pending = bytearray()
            if pending:
                await self._run("write", functools.partial(stream.write, bytes(pending)))
            await self._run("write", stream.close)
            if written != target:
                await self._run("write", lambda: fs.move(written, target))
            done = True
        finally:
            if not done:
                await asyncio.shield(asyncio.to_thread(self._discard, stream, written))
        return total

    def _discard(self, stream: pyarrow.NativeFile, path: str) -> None:
        """After a failed write: close the stream and delete what it wrote (blocking)."""
        try:
            if not stream.closed:
                stream.close()
        except _BACKEND_ERRORS:
            pass
        try:
            self.filesystem.delete_file(path)
        except FileNotFoundError:
            pass
        except _BACKEND_ERRORS as exc:
            logger.warning("blob store: a failed write's bytes remain: %s", type(exc).__name__)

    async def write_bytes(self, key: str, data: bytes) -> None:
        async def one() -> AsyncIterator[bytes]:
            yield data

        await self.write(key, one())

    def open_input(self, key: str) -> IO[bytes]:
        """A buffered binary reader of `key` (blocking: call it, and read, in a thread).

        Raises:
            BlobUnavailable: the key is missing or the backend failed.
        """
        _check_key(key)
        try:
            stream = self.filesystem.open_input_stream(self.path(key))
        except _BACKEND_ERRORS as exc:
            raise _unavailable("read", exc) from None
        # pyarrow's stream reads, but neither iterates lines nor reads a line: this adds
        # both (closing it closes the stream).
        return io.BufferedReader(cast(Any, stream), buffer_size=1 << 20)

    async def read_chunks(self, key: str, chunk_size: int = 1 << 16) -> AsyncGenerator[bytes, None]:
        """The bytes of `key`, `chunk_size` at a time; each read in a thread (an async
        generator: `aclose()` closes the reader early)."""
        reader = await asyncio.to_thread(self.open_input, key)
        try:
            while True:
                chunk = await self._run("read", lambda: reader.read(chunk_size))
                if not chunk:
                    return
                yield chunk
        finally:
            await asyncio.to_thread(reader.close)

    async def delete(self, key: str) -> None:
        """Deletes `key`; a missing key is no error."""
        _check_key(key)

        def delete() -> None:
            try:
                self.filesystem.delete_file(self.path(key))
            except FileNotFoundError:
                pass

        await self._run("delete", delete)

    async def delete_prefix(self, prefix: str) -> None:
        """Deletes every key under `prefix` (a folder when it ends with `/`)."""
        keys = await self.list(prefix)
        for key in keys:
            await self.delete(key)
        if prefix.endswith("/"):
            folder_key = prefix.rstrip("/")
            _check_key(folder_key)

            def remove_folder() -> None:
                try:
                    self.filesystem.delete_dir(self.path(folder_key))
                except FileNotFoundError:
                    pass

            await self._run("delete", remove_folder)

    async def list(self, prefix: str) -> list[str]:
        """The keys that start with `prefix`, sorted (temporary keys of writes in
        flight left out)."""
        folder_key = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        if folder_key:
            _check_key(folder_key)

        def listing() -> list[str]:
            self._resolve()
            folder = f"{self._base}/{folder_key}" if folder_key else self._base
            selector = pafs.FileSelector(folder, allow_not_found=True, recursive=True)
            infos = self.filesystem.get_file_info(selector)
            start = len(self._base) + 1
            keys = [
                info.path[start:]
                for info in infos
                if info.type == pafs.FileType.File and info.path.startswith(self._base + "/")
            ]
            return sorted(
                k
                for k in keys
                if k.startswith(prefix) and not any(p.startswith(".") for p in k.split("/"))
            )

        return await self._run("list", listing)
