"""The blob store (ingress/blobs.py) on the local filesystem: streamed writes, atomic
(a failed or cancelled write leaves nothing), reads, listing and deleting by prefix,
the default folder's mode, a file:// URI, and failures as BlobUnavailable without
the path."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from ingress import blobs as blobs_module
from ingress.blobs import Blobs, BlobUnavailable
from ingress.config import FilesConfig, StateConfig

pytestmark = pytest.mark.anyio


async def _chunks(*parts: bytes, fail_after: int | None = None) -> AsyncIterator[bytes]:
    for i, part in enumerate(parts):
        if fail_after is not None and i == fail_after:
            raise ValueError("the source failed")
        yield part
        await asyncio.sleep(0)


def _files_on_disk(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


async def test_streamed_write_then_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(blobs_module, "WRITE_BUFFER_BYTES", 8)  # several writes
    blobs = Blobs(str(tmp_path / "blobs"))
    parts = [b"line one\n", b"line", b" two\n", b"x" * 100]
    assert await blobs.write("files/file-1", _chunks(*parts)) == sum(map(len, parts))
    assert (tmp_path / "blobs" / "files" / "file-1").read_bytes() == b"".join(parts)
    read = [c async for c in blobs.read_chunks("files/file-1", chunk_size=7)]
    assert b"".join(read) == b"".join(parts) and max(map(len, read)) == 7
    with blobs.open_input("files/file-1") as reader:
        assert reader.read() == b"".join(parts)
    assert blobs.path("files/file-1") == f"{tmp_path / 'blobs'}/files/file-1"
    info = blobs.filesystem.get_file_info(blobs.path("files/file-1"))
    assert info.size == sum(map(len, parts))


async def test_a_write_is_streamed_not_gathered(tmp_path: Path) -> None:
    """While the source still yields, the first buffer is already on disk (in the
    temporary file), and the target does not exist yet."""
    blobs = Blobs(str(tmp_path))
    seen: list[list[str]] = []
    big = b"y" * blobs_module.WRITE_BUFFER_BYTES

    async def source() -> AsyncIterator[bytes]:
        yield big
        yield b"z"  # the first buffer is written before this one is asked for
        seen.append(_files_on_disk(tmp_path))
        yield b"end"

    await blobs.write("files/f", source())
    assert len(seen[0]) == 1 and seen[0][0].startswith("files/.f.tmp-")
    assert _files_on_disk(tmp_path) == ["files/f"]
    assert (tmp_path / "files" / "f").stat().st_size == len(big) + 4


async def test_a_failed_write_leaves_nothing(tmp_path: Path) -> None:
    blobs = Blobs(str(tmp_path))
    await blobs.write_bytes("files/keep", b"old")
    with pytest.raises(ValueError, match="the source failed"):  # the source's own error
        await blobs.write("files/new", _chunks(b"a", b"b", fail_after=1))
    with pytest.raises(ValueError):  # a failed rewrite keeps the old bytes
        await blobs.write("files/keep", _chunks(b"new", b"more", fail_after=1))
    assert _files_on_disk(tmp_path) == ["files/keep"]
    assert (tmp_path / "files" / "keep").read_bytes() == b"old"


async def test_a_cancelled_write_leaves_nothing(tmp_path: Path) -> None:
    blobs = Blobs(str(tmp_path))
    started = asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        yield b"a" * 10
        started.set()
        await asyncio.sleep(60)
        yield b"never"

    task = asyncio.create_task(blobs.write("files/f", slow()))
    await started.wait()
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(100):  # the clean-up runs shielded, in a thread
        if not _files_on_disk(tmp_path):
            break
        await asyncio.sleep(0.01)
    assert _files_on_disk(tmp_path) == []


async def test_list_delete_and_delete_prefix(tmp_path: Path) -> None:
    blobs = Blobs(str(tmp_path))
    for key in (
        "files/file-a",
        "files/file-ab",
        "batches/b1/out",
        "batches/b1/err",
        "batches/b2/x",
    ):
        await blobs.write_bytes(key, key.encode())
    (tmp_path / "files" / ".file-c.tmp-123").write_bytes(b"in flight")  # not a key
    assert await blobs.list("files/") == ["files/file-a", "files/file-ab"]
    assert await blobs.list("files/file-a") == ["files/file-a", "files/file-ab"]
    assert await blobs.list("batches/b1/") == ["batches/b1/err", "batches/b1/out"]
    assert await blobs.list("nothing/") == []
    assert len(await blobs.list("")) == 5
    await blobs.delete("files/file-a")
    await blobs.delete("files/file-a")  # missing: no error
    assert await blobs.list("files/") == ["files/file-ab"]
    await blobs.delete_prefix("batches/b1/")
    await blobs.delete_prefix("batches/none/")  # missing: no error
    assert await blobs.list("batches/") == ["batches/b2/x"]
    assert not (tmp_path / "batches" / "b1").exists()


async def test_keys_are_relative_and_plain(tmp_path: Path) -> None:
    blobs = Blobs(str(tmp_path))
    for key in ("", "/abs", "a/../b", "a//b", ".hidden", "a/.tmp"):
        with pytest.raises(ValueError):
            blobs.path(key)
        with pytest.raises(ValueError):
            await blobs.write_bytes(key, b"x")


async def test_the_default_folder_and_its_mode(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    blobs = Blobs.from_config(FilesConfig(), StateConfig(data_dir="~/deep/state"))
    folder = tmp_path / "deep" / "state" / "files"
    assert not folder.exists()  # nothing made before the first write
    await blobs.write_bytes("files/f", b"x")
    assert (folder / "files" / "f").read_bytes() == b"x"
    assert folder.stat().st_mode & 0o777 == 0o700
    assert isinstance(blobs.filesystem, pafs.LocalFileSystem)


async def test_a_file_uri(tmp_path: Path) -> None:
    blobs = Blobs.from_config(
        FilesConfig(blob_uri=f"file://{tmp_path}/store"), StateConfig(data_dir="/unused")
    )
    await blobs.write_bytes("files/f", b"hello")
    assert (tmp_path / "store" / "files" / "f").read_bytes() == b"hello"
    assert await blobs.list("files/") == ["files/f"]


class _BrokenFileSystem:
    """Every call fails as a backend that is down does, its message naming the place."""

    def __getattr__(self, name: str):
        def fail(*args, **kwargs):
            raise OSError(
                f"When {name} '/tmp/secret-broken/x': connection refused by host.internal"
            )

        return fail


async def test_failures_are_unavailable_without_the_path(tmp_path: Path) -> None:
    blocker = tmp_path / "secret-blocker"
    blocker.write_text("")  # a file where the folder should be
    blobs = Blobs(str(blocker / "blobs"))
    broken = Blobs(str(tmp_path / "secret-broken"))
    broken._fs = _BrokenFileSystem()  # type: ignore[assignment]
    calls = [
        lambda: blobs.write_bytes("files/f", b"x"),
        lambda: blobs.write("files/f", _chunks(b"x")),
        lambda: anext(blobs.read_chunks("files/f")),
        lambda: broken.list("files/"),
        lambda: broken.delete("files/f"),
        lambda: broken.delete_prefix("files/"),
        lambda: broken.write_bytes("files/f", b"x"),
    ]
    for call in calls:
        with pytest.raises(BlobUnavailable) as raised:
            await call()
        message = str(raised.value)
        assert "secret" not in message and "host.internal" not in message
        assert "Error" not in message and "errno" not in message.lower()
        assert raised.value.__suppress_context__
    with pytest.raises(BlobUnavailable):
        Blobs(str(tmp_path)).open_input("files/missing")


async def test_an_unreadable_uri_is_unavailable(tmp_path: Path) -> None:
    blobs = Blobs("nosuchscheme://bucket/prefix")  # no I/O, no error yet
    with pytest.raises(BlobUnavailable) as raised:
        await blobs.write_bytes("files/f", b"x")
    assert "bucket" not in str(raised.value) and "nosuchscheme" not in str(raised.value)


async def test_open_input_reads_lines(tmp_path):
    blobs = Blobs(str(tmp_path))
    await blobs.write_bytes("files/x", b"a\nbb\n\nccc")
    with blobs.open_input("files/x") as reader:
        assert list(reader) == [b"a\n", b"bb\n", b"\n", b"ccc"]
