"""The Files API: POST /files (upload), GET /files (list), GET /files/{id},
GET /files/{id}/content, DELETE /files/{id}. The bytes live in the blob store
(ingress/blobs.py), the metadata in the state store (table `files`); every file
belongs to the API key that uploaded it (another key gets a 404).

The upload is parsed with python-multipart's streaming parser, fed from
`request.stream()`: each chunk of the body goes through the parser, and the file
part's bytes go straight on to the blob store (Blobs.write), counted as they pass
(bytes and lines). The file is never whole in memory nor in a temporary file of its
own, and the bounds act as the bytes arrive: past `files.max_file_bytes` a 413, past
`files.max_file_lines` a 400, and the partial blob is removed. Starlette's
`request.form()` was not used: it spools each file part to a temporary file first (on
disk past 1 MiB) and bounds the number of parts and the size of plain fields, never a
file's size, so an oversized upload would be written to local disk whole before any
413, and then copied once more into the blob store.

Other parts (`purpose`, and any other small field the SDK sends, such as
`expires_after[...]`) are bounded to FIELD_MAX_BYTES each and MAX_PARTS in all; part
headers by the parser's own bounds. The filename is reduced to its last path segment,
without control characters, at most MAX_FILENAME_CHARS characters.
"""

from __future__ import annotations

import asyncio
import logging
import time
import unicodedata
from collections.abc import AsyncIterator
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from ingress.blobs import BlobUnavailable
from ingress.endpoints import Api
from ingress.errors import OpenAIError
from ingress.forward import RequestContext
from ingress.http import parse
from ingress.store import FileRecord, StoreUnavailable
from ingress.wire.common import sortable_id

logger = logging.getLogger("ray.serve")

PURPOSES = ("batch",)  # what an upload may be for here
FIELD_MAX_BYTES = 4096  # a form field other than the file
MAX_PARTS = 16
MAX_FILENAME_CHARS = 255
MULTIPART_SLACK_BYTES = 64 * 1024  # what a multipart body may hold beside the file


class ListFilesQuery(BaseModel):
    """GET /files's query (OpenAI's: limit 1–10000, default 10000)."""

    model_config = ConfigDict(extra="ignore", strict=False)
    purpose: str | None = Field(default=None, max_length=64)
    limit: int = Field(default=10_000, ge=1, le=10_000)
    order: Literal["asc", "desc"] = "desc"
    after: str | None = Field(default=None, max_length=200)


def _owner(ctx: RequestContext) -> str:
    return ctx.api_key or ""


def _store_down(request_id: str) -> OpenAIError:
    return OpenAIError(
        f"The file store is unavailable (request id {request_id}). Retry later.",
        503,
        code="store_unavailable",
        retry_after=5,
    )


def _blobs_down(request_id: str) -> OpenAIError:
    return OpenAIError(
        f"The file storage is unavailable (request id {request_id}). Retry later.",
        503,
        code="file_storage_unavailable",
        retry_after=5,
    )


def _not_found(file_id: str) -> OpenAIError:
    return OpenAIError(f"No such File object: {file_id}", 404, param="file_id", code="not_found")


def _bad_upload(message: str, param: str | None = None) -> OpenAIError:
    return OpenAIError(message, 400, param=param)


def _bad_purpose(purpose: str) -> OpenAIError:
    shown = purpose if len(purpose) <= 64 else purpose[:64] + "..."
    accepted = ", ".join(f"'{p}'" for p in PURPOSES)
    return OpenAIError(
        f"Invalid value for 'purpose': {shown!r} is not supported here; accepted: {accepted}.",
        400,
        param="purpose",
        code="invalid_value",
    )


def sanitize_filename(raw: str) -> str:
    """The last path segment of `raw` (either separator), without control characters,
    at most MAX_FILENAME_CHARS characters (the extension kept); "file" when nothing is
    left."""
    name = raw.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if unicodedata.category(c)[0] != "C").strip()
    if name in ("", ".", ".."):
        return "file"
    if len(name) > MAX_FILENAME_CHARS:
        stem, dot, ext = name.rpartition(".")
        if dot and 0 < len(ext) <= 16:
            name = stem[: MAX_FILENAME_CHARS - len(ext) - 1] + "." + ext
        else:
            name = name[:MAX_FILENAME_CHARS]
    return name


class _Upload:
    """The state of one multipart body while it streams: the parser's callbacks put
    the file part's bytes in `pending` (taken after each chunk) and the other parts
    in `fields`."""

    def __init__(self, boundary: bytes, max_bytes: int, max_lines: int) -> None:
        self.max_bytes, self.max_lines = max_bytes, max_lines
        self.fields: dict[str, str] = {}
        self.filename: str | None = None
        self.file_parts = 0
        self.bytes = self.newlines = 0
        self.last_byte = b"\n"
        self.pending: list[bytes] = []
        self.ended = False
        self.parts = 0
        self._in_file = False
        self._field: str | None = None
        self._value = bytearray()
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._disposition = b""
        self.parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._part_begin,
                "on_header_field": self._on_header_field,
                "on_header_value": self._on_header_value,
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._part_data,
                "on_part_end": self._part_end,
                "on_end": self._end,
            },
        )

    def _part_begin(self) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise _bad_upload(f"The form has more than {MAX_PARTS} parts.")
        self._disposition = b""
        self._field = None
        self._in_file = False
        self._value.clear()

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        if self._header_field.strip().lower() == b"content-disposition":
            self._disposition = bytes(self._header_value)
        self._header_field.clear()
        self._header_value.clear()

    def _headers_finished(self) -> None:
        kind, options = parse_options_header(self._disposition)
        name = options.get(b"name")
        if kind != b"form-data" or name is None:
            raise _bad_upload("Each part of the form needs a Content-Disposition with a name.")
        field = name.decode("utf-8", "replace")
        if field == "file":
            if self.file_parts:
                raise _bad_upload("Send one file per upload.", "file")
            self.file_parts += 1
            self._in_file = True
            raw = options.get(b"filename", b"")
            self.filename = sanitize_filename(raw.decode("utf-8", "replace"))
            purpose = self.fields.get("purpose")
            if purpose is not None and purpose not in PURPOSES:
                raise _bad_purpose(purpose)
        else:
            self._field = field

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            piece = data[start:end]
            if not piece:
                return
            self.bytes += len(piece)
            if self.bytes > self.max_bytes:
                raise OpenAIError(
                    f"The file is larger than {self.max_bytes} bytes (files.max_file_bytes).",
                    413,
                    param="file",
                    code="file_too_large",
                )
            self.newlines += piece.count(b"\n")
            self.last_byte = piece[-1:]
            if self.lines > self.max_lines:
                raise OpenAIError(
                    f"The file has more than {self.max_lines} lines (files.max_file_lines).",
                    400,
                    param="file",
                    code="too_many_lines",
                )
            self.pending.append(piece)
        elif self._field is not None:
            self._value += data[start:end]
            if len(self._value) > FIELD_MAX_BYTES:
                raise _bad_upload(
                    f"The form field '{self._field[:64]}' is longer than {FIELD_MAX_BYTES} bytes."
                )

    def _part_end(self) -> None:
        if self._field is not None:
            self.fields[self._field] = self._value.decode("utf-8", "replace")
        self._in_file = False
        self._field = None

    def _end(self) -> None:
        self.ended = True

    @property
    def lines(self) -> int:
        """Newlines, plus a last line without one."""
        return self.newlines + (1 if self.bytes and self.last_byte != b"\n" else 0)

    async def file_bytes(self, request: Request) -> AsyncIterator[bytes]:
        """The file part's bytes, as the body streams through the parser."""
        try:
            async for chunk in request.stream():
                try:
                    self.parser.write(chunk)
                except MultipartParseError:
                    raise _bad_upload("The body is not a valid multipart/form-data body.") from None
                if self.pending:
                    yield b"".join(self.pending)
                    self.pending.clear()
        except ClientDisconnect:
            raise _bad_upload("The upload ended before its body was complete.") from None
        if not self.ended:
            raise _bad_upload("The multipart/form-data body ended before its closing boundary.")


def _boundary(request: Request) -> bytes:
    """The multipart boundary of the request's Content-Type (415 for another type)."""
    kind, options = parse_options_header(request.headers.get("content-type", ""))
    if kind != b"multipart/form-data":
        shown = kind.decode("latin-1")[:100]
        raise OpenAIError(
            f"Content-Type must be multipart/form-data (the fields file and purpose), "
            f"not {shown!r}.",
            415,
            code="unsupported_media_type",
        )
    boundary = options.get(b"boundary")
    if not boundary or len(boundary) > 200:
        raise _bad_upload("The multipart/form-data Content-Type has no valid boundary.")
    return boundary


async def create_file(api: Api, request: Request, ctx: RequestContext) -> Response:
    limits = api.config.files
    boundary = _boundary(request)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limits.max_file_bytes + MULTIPART_SLACK_BYTES:
        raise OpenAIError(
            f"The file is larger than {limits.max_file_bytes} bytes (files.max_file_bytes).",
            413,
            param="file",
            code="file_too_large",
        )
    owner = _owner(ctx)
    store, blobs = api.state(), api.files()
    try:
        if await store.count_files(owner) >= limits.max_files_per_key:
            raise OpenAIError(
                f"This API key holds {limits.max_files_per_key} files, the most it may "
                "(files.max_files_per_key). Delete some first.",
                400,
                code="too_many_files",
            )
    except StoreUnavailable:
        raise _store_down(ctx.request_id) from None
    upload = _Upload(boundary, limits.max_file_bytes, limits.max_file_lines)
    file_id = sortable_id("file-")
    key = f"files/{file_id}"
    try:
        await blobs.write(key, upload.file_bytes(request))
    except BlobUnavailable:
        raise _blobs_down(ctx.request_id) from None
    try:
        if not upload.file_parts:
            raise _bad_upload("The form has no part named 'file'.", "file")
        purpose = upload.fields.get("purpose")
        if purpose is None:
            raise _bad_upload("The form has no field 'purpose'.", "purpose")
        if purpose not in PURPOSES:
            raise _bad_purpose(purpose)
        record = FileRecord(
            id=file_id,
            owner=owner,
            purpose=purpose,
            filename=upload.filename or "file",
            bytes=upload.bytes,
            created_at=int(time.time()),
            blob_key=key,
            lines=upload.lines,
        )
        try:
            await api.state().put_file(record)
        except StoreUnavailable:
            raise _store_down(ctx.request_id) from None
    except BaseException:
        await _delete_blob(api, key)
        raise
    return JSONResponse(record.to_openai())


async def _delete_blob(api: Api, key: str) -> None:
    """Deletes a blob nobody will read; a failure is logged (an orphan), not raised."""
    try:
        await asyncio.shield(api.files().delete(key))
    except BlobUnavailable:
        logger.warning("files: the blob of a deleted or failed upload remains (%s)", key)


async def list_files(api: Api, request: Request, ctx: RequestContext) -> Response:
    query = parse(ListFilesQuery, dict(request.query_params))
    try:
        page, has_more = await api.state().list_files(
            _owner(ctx), query.purpose, query.limit, query.after, query.order
        )
    except StoreUnavailable:
        raise _store_down(ctx.request_id) from None
    return JSONResponse(
        {
            "object": "list",
            "data": [f.to_openai() for f in page],
            "first_id": page[0].id if page else None,
            "last_id": page[-1].id if page else None,
            "has_more": has_more,
        }
    )


async def _record(api: Api, request: Request, ctx: RequestContext) -> FileRecord:
    file_id = request.path_params["file_id"]
    try:
        record = await api.state().get_file(_owner(ctx), file_id)
    except StoreUnavailable:
        raise _store_down(ctx.request_id) from None
    if record is None:
        raise _not_found(file_id)
    return record


async def get_file(api: Api, request: Request, ctx: RequestContext) -> Response:
    return JSONResponse((await _record(api, request, ctx)).to_openai())


async def get_file_content(api: Api, request: Request, ctx: RequestContext) -> Response:
    """The bytes, streamed from the blob store; the first chunk is read before the
    response starts, so that a blob store that is down is still a 503."""
    record = await _record(api, request, ctx)
    chunks = api.files().read_chunks(record.blob_key)
    try:
        first = await anext(chunks, b"")
    except BlobUnavailable:
        raise _blobs_down(ctx.request_id) from None

    async def body() -> AsyncIterator[bytes]:
        try:
            if first:
                yield first
            async for chunk in chunks:
                yield chunk
        finally:
            await chunks.aclose()

    jsonl = record.filename.endswith(".jsonl") or record.purpose in ("batch", "batch_output")
    return StreamingResponse(
        body(),
        media_type="application/jsonl" if jsonl else "application/octet-stream",
        headers={"content-length": str(record.bytes)},
    )


async def delete_file(api: Api, request: Request, ctx: RequestContext) -> Response:
    """Deletes the row, then its bytes (a blob store that fails then leaves an orphan
    blob, logged; the file is gone for the client either way)."""
    file_id = request.path_params["file_id"]
    try:
        record = await api.state().delete_file(_owner(ctx), file_id)
    except StoreUnavailable:
        raise _store_down(ctx.request_id) from None
    if record is None:
        raise _not_found(file_id)
    await _delete_blob(api, record.blob_key)
    return JSONResponse({"id": file_id, "object": "file", "deleted": True})
