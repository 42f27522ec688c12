"""The Files API through real Serve + HTTP with the official `openai` SDK: upload (as
`client.files.create` sends it), list, retrieve, content, delete, every body validated
against OpenAI's schemas; a purpose other than batch and an unknown id as OpenAI errors
without internals. The session ingress keeps the bytes in its own data folder."""

from __future__ import annotations

import io
import json

import openai
import pytest

from tests.e2e.internals import assert_no_internals
from tests.openapi import validate

pytestmark = pytest.mark.e2e

LINES = "".join(
    json.dumps(
        {
            "custom_id": f"r{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "m", "messages": [{"role": "user", "content": f"hi {i}"}]},
        }
    )
    + "\n"
    for i in range(3)
).encode()


def test_files_round_trip_with_the_sdk(client: openai.OpenAI) -> None:
    created = client.files.create(file=("requests.jsonl", io.BytesIO(LINES)), purpose="batch")
    body = created.model_dump(exclude_none=True)
    validate("OpenAIFile", body)
    assert created.id.startswith("file-") and created.bytes == len(LINES)
    assert created.filename == "requests.jsonl" and created.purpose == "batch"
    try:
        listed = client.files.list(purpose="batch")
        assert created.id in [f.id for f in listed.data]
        raw = client.files.with_raw_response.list().http_response.json()
        validate("ListFilesResponse", raw)
        page = client.files.list(limit=1)
        assert len(page.data) == 1

        got = client.files.retrieve(created.id)
        assert got.model_dump(exclude_none=True) == body
        assert client.files.content(created.id).content == LINES
    finally:
        deleted = client.files.delete(created.id)
    validate("DeleteFileResponse", deleted.model_dump())
    assert deleted.id == created.id and deleted.deleted is True
    with pytest.raises(openai.NotFoundError) as raised:
        client.files.retrieve(created.id)
    assert_no_internals(raised.value.response.text)


def test_bad_uploads_are_openai_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.files.create(file=("a.jsonl", io.BytesIO(b"{}\n")), purpose="fine-tune")
    error = raised.value.response.json()["error"]
    assert error["param"] == "purpose" and "'batch'" in error["message"]
    assert_no_internals(raised.value.response.text)
    with pytest.raises(openai.NotFoundError):
        client.files.content("file-does-not-exist")
