"""The Files API through the real app, on a real SQLite store and a local blob store:
upload, list, get, content, delete; the bounds (413 with nothing stored, lines, count,
purpose); bodies that are not multipart; the filename; another key; stores that are
down. Every answer is checked against OpenAI's schemas."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from ingress.blobs import Blobs
from ingress.config import StateConfig
from ingress.endpoints.files import sanitize_filename
from ingress.store import Store
from tests.ingress.fakes import API, error_of, standard_stack
from tests.openapi import validate

pytestmark = pytest.mark.anyio

URL = f"{API}/files"
KEYS = "sk-one,sk-two"
LINES = b"".join(
    json.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions"}).encode()
    + b"\n"
    for i in range(3)
)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = Store(StateConfig(data_dir=str(tmp_path / "state")))
    yield store
    await store.close()  # its connections' threads end with this test's loop


@pytest.fixture
def blobs(tmp_path: Path) -> Blobs:
    return Blobs(str(tmp_path / "blobs"))


def _stack(store: Store, blobs: Blobs, **kw):
    return standard_stack(store=store, blobs=blobs, **kw)


def _blob_files(tmp_path: Path) -> list[Path]:
    root = tmp_path / "blobs"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


async def _upload(
    client: httpx.AsyncClient,
    content: bytes = LINES,
    filename: str = "input.jsonl",
    purpose: str = "batch",
    **kw,
) -> httpx.Response:
    return await client.post(
        URL, files={"file": (filename, content)}, data={"purpose": purpose}, **kw
    )


async def test_upload_list_get_content_delete(store, blobs, tmp_path):
    stack = _stack(store, blobs)
    async with stack.client() as client:
        r = await _upload(client)
        assert r.status_code == 200, r.text
        created = r.json()
        validate("OpenAIFile", created)
        assert created["id"].startswith("file-") and created["object"] == "file"
        assert created["bytes"] == len(LINES) and created["filename"] == "input.jsonl"
        assert created["purpose"] == "batch" and created["status"] == "processed"
        record = await store.get_file("", created["id"])
        assert record is not None and record.lines == 3
        assert (tmp_path / "blobs" / record.blob_key).read_bytes() == LINES

        second = (await _upload(client, b'{"a": 1}', filename="two.jsonl")).json()
        listed = (await client.get(URL)).json()
        validate("ListFilesResponse", listed)
        assert [f["id"] for f in listed["data"]] in (
            [second["id"], created["id"]],
            [created["id"], second["id"]],  # same second: ids decide
        )
        assert listed["first_id"] == listed["data"][0]["id"]
        assert listed["last_id"] == listed["data"][-1]["id"] and listed["has_more"] is False
        page = (await client.get(URL, params={"limit": 1, "order": "asc"})).json()
        validate("ListFilesResponse", page)
        assert len(page["data"]) == 1 and page["has_more"] is True
        rest = (
            await client.get(URL, params={"limit": 1, "order": "asc", "after": page["last_id"]})
        ).json()
        assert len(rest["data"]) == 1 and rest["has_more"] is False
        assert rest["data"][0]["id"] != page["data"][0]["id"]
        assert (await client.get(URL, params={"purpose": "batch_output"})).json()["data"] == []

        got = await client.get(f"{URL}/{created['id']}")
        assert got.status_code == 200 and got.json() == created
        content = await client.get(f"{URL}/{created['id']}/content")
        assert content.status_code == 200 and content.content == LINES
        assert content.headers["content-type"].startswith("application/jsonl")
        assert content.headers["content-length"] == str(len(LINES))

        deleted = await client.delete(f"{URL}/{created['id']}")
        assert deleted.status_code == 200
        validate("DeleteFileResponse", deleted.json())
        assert deleted.json() == {"id": created["id"], "object": "file", "deleted": True}
        for method, path in [("GET", ""), ("GET", "/content"), ("DELETE", "")]:
            r = await client.request(method, f"{URL}/{created['id']}{path}")
            assert error_of(r, 404)["code"] == "not_found"
    assert not (tmp_path / "blobs" / record.blob_key).exists()
    assert len(_blob_files(tmp_path)) == 1  # the second file's


async def test_a_file_over_the_size_bound_is_a_413_and_nothing_is_kept(store, blobs, tmp_path):
    stack = _stack(store, blobs, config={"files": {"max_file_bytes": 1000}})
    async with stack.client() as client:
        r = await _upload(client, b"x" * 1001)
        error = error_of(r, 413)
        assert error["param"] == "file" and error["code"] == "file_too_large"
        assert (await _upload(client, b"x" * 1000)).status_code == 200  # exactly the bound

        # A body whose declared length is far past the bound: refused before reading.
        async def endless():
            yield b"--b\r\n"
            raise AssertionError("the body was read")

        r = await client.post(
            URL,
            content=endless(),
            headers={
                "content-type": "multipart/form-data; boundary=b",
                "content-length": str(10_000_000),
            },
        )
        error_of(r, 413)
        listed = (await client.get(URL)).json()["data"]
    assert [f["bytes"] for f in listed] == [1000]
    assert len(_blob_files(tmp_path)) == 1  # no partial blob, no temporary file


async def test_the_size_bound_acts_while_the_body_streams(store, blobs, tmp_path):
    """No content-length: the 413 comes once the counted bytes pass the bound, and the
    rest of the body is never read."""
    stack = _stack(store, blobs, config={"files": {"max_file_bytes": 100_000}})
    sent = []

    async def body():
        yield (
            b'--b\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
            b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.jsonl"\r\n'
            b"Content-Type: application/octet-stream\r\n\r\n"
        )
        for _ in range(1000):
            sent.append(1)
            yield b"y" * 10_000

    async with stack.client() as client:
        r = await client.post(
            URL, content=body(), headers={"content-type": "multipart/form-data; boundary=b"}
        )
        error_of(r, 413)
    assert len(sent) < 20
    assert _blob_files(tmp_path) == []
    assert await store.count_files("") == 0


async def test_too_many_lines_is_a_400(store, blobs, tmp_path):
    stack = _stack(store, blobs, config={"files": {"max_file_lines": 2}})
    async with stack.client() as client:
        assert error_of(await _upload(client, b"a\nb\nc"), 400)["code"] == "too_many_lines"
        assert error_of(await _upload(client, b"a\nb\nc\n"), 400)["param"] == "file"
        r = await _upload(client, b"a\nb\n")
        assert r.status_code == 200, r.text
    assert len(_blob_files(tmp_path)) == 1


async def test_too_many_files_per_key(store, blobs):
    stack = _stack(store, blobs, config={"files": {"max_files_per_key": 2}})
    async with stack.client() as client:
        for _ in range(2):
            assert (await _upload(client)).status_code == 200
        assert error_of(await _upload(client), 400)["code"] == "too_many_files"


async def test_purpose_must_be_batch(store, blobs, tmp_path):
    stack = _stack(store, blobs)
    async with stack.client() as client:
        for purpose in ("fine-tune", "assistants", ""):
            error = error_of(await _upload(client, purpose=purpose), 400)
            assert error["param"] == "purpose" and "'batch'" in error["message"]
        # The purpose after the file: checked once the body is read, nothing kept.
        r = await client.post(
            URL,
            content=(
                b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.jsonl"\r\n\r\n'
                b"{}\n\r\n"
                b'--b\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nvision\r\n--b--\r\n'
            ),
            headers={"content-type": "multipart/form-data; boundary=b"},
        )
        assert error_of(r, 400)["param"] == "purpose"
        r = await client.post(URL, files={"file": ("a.jsonl", b"{}")})
        assert error_of(r, 400)["param"] == "purpose"
        r = await client.post(URL, data={"purpose": "batch"}, files={"other": ("a", b"x")})
        assert error_of(r, 400)["param"] == "file"
    assert _blob_files(tmp_path) == []
    assert await store.count_files("") == 0


async def test_bodies_that_are_not_multipart(store, blobs):
    stack = _stack(store, blobs)
    async with stack.client() as client:
        r = await client.post(URL, json={"purpose": "batch", "file": "x"})
        assert error_of(r, 415)["code"] == "unsupported_media_type"
        r = await client.post(URL, content=b"x", headers={"content-type": "multipart/form-data"})
        error_of(r, 400)  # no boundary
        for broken in (
            b"not multipart at all",
            b'--b\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch',  # no end
            b"--b\r\nX-Other: 1\r\n\r\nbatch\r\n--b--\r\n",  # no disposition
        ):
            r = await client.post(
                URL, content=broken, headers={"content-type": "multipart/form-data; boundary=b"}
            )
            error_of(r, 400)
        many = b"".join(
            b'--b\r\nContent-Disposition: form-data; name="f%d"\r\n\r\nv\r\n' % i for i in range(20)
        )
        r = await client.post(
            URL,
            content=many + b"--b--\r\n",
            headers={"content-type": "multipart/form-data; boundary=b"},
        )
        error_of(r, 400)
        r = await client.post(
            URL, files={"file": ("a.jsonl", b"{}")}, data={"purpose": "batch", "note": "x" * 5000}
        )
        error_of(r, 400)
        r = await client.post(
            URL,
            files=[("file", ("a.jsonl", b"{}")), ("file", ("b.jsonl", b"{}"))],
            data={"purpose": "batch"},
        )
        assert error_of(r, 400)["param"] == "file"
        # Fields the SDK may add (expires_after) are accepted and ignored.
        r = await client.post(
            URL,
            files={"file": ("a.jsonl", b"{}")},
            data={"purpose": "batch", "expires_after[anchor]": "created_at"},
        )
        assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("input.jsonl", "input.jsonl"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\batch.jsonl", "batch.jsonl"),
        ("a\x00b\nc.jsonl", "abc.jsonl"),
        ("dir/", "file"),
        ("..", "file"),
        ("", "file"),
        ("é" * 300 + ".jsonl", "é" * 249 + ".jsonl"),
        ("x" * 300, "x" * 255),
    ],
)
def test_filenames_are_sanitised(raw: str, clean: str) -> None:
    assert sanitize_filename(raw) == clean


async def test_the_stored_filename_is_sanitised(store, blobs):
    stack = _stack(store, blobs)
    async with stack.client() as client:
        r = await _upload(client, filename="../../secret/x.jsonl")
        assert r.json()["filename"] == "x.jsonl"


async def test_list_query_bounds(store, blobs):
    stack = _stack(store, blobs)
    async with stack.client() as client:
        for query in ({"limit": 0}, {"limit": 10_001}, {"order": "up"}, {"limit": "x"}):
            error_of(await client.get(URL, params=query), 400)
        empty = (await client.get(URL)).json()
        assert empty == {
            "object": "list",
            "data": [],
            "first_id": None,
            "last_id": None,
            "has_more": False,
        }


async def test_another_key_sees_nothing(store, blobs, monkeypatch):
    monkeypatch.setenv("OPENAI_SERVE_API_KEYS", KEYS)
    stack = _stack(store, blobs, config={"auth": {"enabled": True}})
    one = {"Authorization": "Bearer sk-one"}
    two = {"Authorization": "Bearer sk-two"}
    async with stack.client() as client:
        fid = (await _upload(client, headers=one)).json()["id"]
        for method, path in [("GET", fid), ("GET", f"{fid}/content"), ("DELETE", fid)]:
            error_of(await client.request(method, f"{URL}/{path}", headers=two), 404)
        assert (await client.get(URL, headers=two)).json()["data"] == []
        assert [f["id"] for f in (await client.get(URL, headers=one)).json()["data"]] == [fid]
        assert (await client.get(f"{URL}/{fid}/content", headers=one)).content == LINES


async def test_a_store_that_is_down_is_a_503(blobs, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    stack = _stack(Store(StateConfig(data_dir=str(blocker))), blobs)
    async with stack.client() as client:
        for r in (
            await _upload(client),
            await client.get(URL),
            await client.get(f"{URL}/file-x"),
            await client.delete(f"{URL}/file-x"),
        ):
            assert error_of(r, 503)["code"] == "store_unavailable"
            assert "not-a-folder" not in r.text and r.headers["retry-after"]
    assert _blob_files(tmp_path) == []


async def test_a_blob_store_that_is_down_is_a_503(store, tmp_path):
    blocker = tmp_path / "blob-blocker"
    blocker.write_text("")
    stack = _stack(store, Blobs(str(blocker / "files")))
    async with stack.client() as client:
        r = await _upload(client)
        assert error_of(r, 503)["code"] == "file_storage_unavailable"
        assert "blob-blocker" not in r.text
        assert await store.count_files("") == 0
    # A file whose bytes became unreadable: its content is a 503, the rest still works.
    good = _stack(store, Blobs(str(tmp_path / "blobs")))
    async with good.client() as client:
        fid = (await _upload(client)).json()["id"]
        for p in _blob_files(tmp_path):
            p.unlink()
        r = await client.get(f"{URL}/{fid}/content")
        assert error_of(r, 503)["code"] == "file_storage_unavailable"
        assert (await client.get(f"{URL}/{fid}")).status_code == 200
        assert (await client.delete(f"{URL}/{fid}")).status_code == 200
