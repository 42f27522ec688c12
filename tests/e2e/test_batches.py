"""The Batch API through real Serve + vLLM + Ray Data, with the official `openai` SDK:
files.create → batches.create → poll → files.content, every object validated against
OpenAI's schemas; errors per line and per file; cancel (its lines leave the engine);
expiry; killed callers and a killed supervisor; another key."""

from __future__ import annotations

import io
import json
import os
import signal
import time

import openai
import pytest

from tests.conftest import EMBEDDINGS_MODEL, TINY_MODEL, delete_app
from tests.openapi import validate

pytestmark = pytest.mark.e2e

KEYS = ("sk-batch-one", "sk-batch-two")
WINDOW_S = 25  # the second ingress's batch window (its expiry test)
TERMINAL = {"completed", "failed", "expired", "cancelled"}


def _chat_line(i: int, model: str = TINY_MODEL, max_tokens: int = 2, **body) -> dict:
    return {
        "custom_id": f"req-{i}",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "model": model,
            "messages": [{"role": "user", "content": f"Question {i}"}],
            "max_tokens": max_tokens,
            "ignore_eos": True,
            **body,
        },
    }


def _upload(client: openai.OpenAI, lines: list[dict] | bytes) -> str:
    data = (
        lines if isinstance(lines, bytes) else "".join(json.dumps(x) + "\n" for x in lines).encode()
    )
    file = client.files.create(file=("input.jsonl", io.BytesIO(data)), purpose="batch")
    validate("OpenAIFile", file.model_dump(exclude_none=True))
    return file.id


def _batch(client: openai.OpenAI, file_id: str, endpoint: str = "/v1/chat/completions"):
    batch = client.batches.create(input_file_id=file_id, endpoint=endpoint, completion_window="24h")
    _check(client, batch.id)
    assert batch.status == "validating"
    return batch


def _check(client: openai.OpenAI, batch_id: str) -> dict:
    body = client.batches.with_raw_response.retrieve(batch_id).http_response.json()
    validate("Batch", body)
    return body


def _wait(client: openai.OpenAI, batch_id: str, until, timeout: float = 600) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        body = _check(client, batch_id)
        if until(body):
            return body
        assert body["status"] not in TERMINAL or until(body), body
        assert time.monotonic() < deadline, f"batch stuck: {body}"
        time.sleep(0.5)


def _done(client: openai.OpenAI, batch_id: str, timeout: float = 600) -> dict:
    return _wait(client, batch_id, lambda b: b["status"] in TERMINAL, timeout)


def _lines(client: openai.OpenAI, file_id: str | None) -> list[dict]:
    if file_id is None:
        return []
    text = client.files.content(file_id).text
    # Split on "\n" only, and each line is plain ASCII (a model's text escaped).
    assert text.isascii()
    return [json.loads(line) for line in text.split("\n") if line]


def _ids(lines: list[dict]) -> list[str]:
    return [line["custom_id"] for line in lines]


def test_a_thousand_line_chat_batch_completes_each_id_once(client):
    file_id = _upload(client, [_chat_line(i) for i in range(1000)])
    batch = _batch(client, file_id)
    done = _done(client, batch.id)
    assert done["status"] == "completed", done
    assert done["request_counts"] == {"total": 1000, "completed": 1000, "failed": 0}
    for key in ("in_progress_at", "finalizing_at", "completed_at"):
        assert done["created_at"] <= done[key]
    assert done["in_progress_at"] <= done["finalizing_at"] <= done["completed_at"]
    out = _lines(client, done["output_file_id"])
    assert sorted(_ids(out)) == sorted(f"req-{i}" for i in range(1000))
    for line in out[:50]:
        assert line["error"] is None and line["response"]["status_code"] == 200
        validate("CreateChatCompletionResponse", line["response"]["body"])
        assert line["response"]["body"]["usage"]["completion_tokens"] == 2
    assert done.get("error_file_id") is None
    # The output file is a file of this key's, listed with purpose batch_output.
    assert client.files.retrieve(done["output_file_id"]).purpose == "batch_output"


def test_embeddings_batch(client, minilm_app):
    lines = [
        {
            "custom_id": f"emb-{i}",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": EMBEDDINGS_MODEL, "input": f"sentence {i}"},
        }
        for i in range(20)
    ]
    done = _done(client, _batch(client, _upload(client, lines), "/v1/embeddings").id)
    assert done["status"] == "completed", done
    out = _lines(client, done["output_file_id"])
    assert sorted(_ids(out)) == sorted(f"emb-{i}" for i in range(20))
    vector = out[0]["response"]["body"]["data"][0]["embedding"]
    assert len(vector) == 384


def test_bad_lines_go_to_the_error_file(client):
    lines = [_chat_line(i) for i in range(4)]
    lines.append({**_chat_line(4), "body": {**_chat_line(4)["body"], "model": "no/such-model"}})
    lines.append({**_chat_line(5), "body": {**_chat_line(5)["body"], "temperature": 9}})
    lines.append({**_chat_line(6), "body": {**_chat_line(6)["body"], "stream": True}})
    done = _done(client, _batch(client, _upload(client, lines)).id)
    assert done["status"] == "completed", done
    assert done["request_counts"] == {"total": 7, "completed": 4, "failed": 3}
    errors = {line["custom_id"]: line for line in _lines(client, done["error_file_id"])}
    assert errors["req-4"]["response"]["status_code"] == 404
    assert errors["req-4"]["response"]["body"]["error"]["param"] == "model"
    assert errors["req-5"]["response"]["status_code"] == 400
    assert errors["req-5"]["response"]["body"]["error"]["param"] == "temperature"
    assert errors["req-6"]["error"]["code"] == "invalid_value"
    assert sorted(_ids(_lines(client, done["output_file_id"]))) == [f"req-{i}" for i in range(4)]


@pytest.mark.parametrize(
    ("content", "code", "line"),
    [
        (b'{"custom_id": "a", "method": "POST"\nnot json\n', "invalid_json_line", 1),
        (
            (json.dumps(_chat_line(0)) + "\n" + json.dumps(_chat_line(0)) + "\n").encode(),
            "duplicate_custom_id",
            2,
        ),
        (
            json.dumps({**_chat_line(0), "url": "/v1/embeddings"}).encode() + b"\n",
            "mismatched_endpoint",
            1,
        ),
    ],
)
def test_a_malformed_file_fails_in_validating(client, content, code, line):
    done = _done(client, _batch(client, _upload(client, content)).id)
    assert done["status"] == "failed" and done["failed_at"] >= done["created_at"]
    first = done["errors"]["data"][0]
    assert first["code"] == code and first["line"] == line


def test_cancel_mid_run_keeps_the_partial_output_and_stops_the_lines(client, tiny_app_handle):
    def in_engine() -> int:
        return tiny_app_handle.stats.remote().result()["unfinished_requests"]

    # 200 short lines, then 200 that would keep the engine busy for minutes.
    lines = [_chat_line(i) for i in range(200)]
    lines += [_chat_line(i, max_tokens=1500) for i in range(200, 400)]
    batch = _batch(client, _upload(client, lines))
    _wait(client, batch.id, lambda b: b["request_counts"]["completed"] >= 10)
    deadline = time.monotonic() + 60
    while in_engine() < 20:  # long lines running
        assert time.monotonic() < deadline, "the long lines never reached the engine"
        time.sleep(0.2)
    t_cancel = time.monotonic()
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status in ("cancelling", "cancelled")
    done = _done(client, batch.id)
    # At once, not once the block of long lines in flight ends (half a minute and more).
    assert time.monotonic() - t_cancel < 15, "the cancel waited for the lines in flight"
    assert done["status"] == "cancelled" and done["cancelled_at"] >= done["cancelling_at"]
    out = _ids(_lines(client, done["output_file_id"]))
    assert 10 <= len(out) < 400 and len(out) == len(set(out))
    assert done["request_counts"]["completed"] == len(out)
    # The lines in flight were aborted, and no more come: the engine empties and stays so.
    deadline = time.monotonic() + 15
    while in_engine():
        assert time.monotonic() < deadline, f"{in_engine()} lines still run after the cancel"
        time.sleep(0.2)
    for _ in range(10):
        time.sleep(0.3)
        assert in_engine() == 0, "a cancelled batch's line entered the engine"


def test_a_finished_batch_cannot_be_cancelled(client):
    done = _done(client, _batch(client, _upload(client, [_chat_line(0)])).id)
    assert done["status"] == "completed"
    with pytest.raises(openai.BadRequestError):
        client.batches.cancel(done["id"])


def test_list_pages_newest_first(client):
    ids = [_batch(client, _upload(client, [_chat_line(0)])).id for _ in range(3)]
    page = client.batches.list(limit=2)
    body = client.batches.with_raw_response.list(limit=2).http_response.json()
    validate("ListBatchesResponse", body)
    assert [b.id for b in page.data] == ids[::-1][:2] and page.has_more
    rest = client.batches.list(limit=2, after=ids[1])
    assert rest.data[0].id == ids[0]
    for batch_id in ids:
        _done(client, batch_id)


# --- a second ingress: API keys, a short window, supervisors and workers killed ---------


@pytest.fixture(scope="module")
def keyed(openai_stack, tmp_path_factory):
    """An ingress with API keys whose batches expire after WINDOW_S."""
    from ray import serve

    from ingress.builder import build_app

    serve.run(
        build_app(
            {
                "catalog_refresh_s": 0.5,
                "state": {"data_dir": str(tmp_path_factory.mktemp("batch-state"))},
                "batches": {"window_s": WINDOW_S, "supervisor": {"name": "KeyedSupervisor"}},
                "deployment": {
                    "name": "BatchIngress",
                    "ray_actor_options": {
                        "runtime_env": {"env_vars": {"OPENAI_SERVE_API_KEYS": ",".join(KEYS)}}
                    },
                },
            }
        ),
        name="openai-batches",
        route_prefix="/batched",
    )
    base = openai_stack.replace("/v1/openai", "/batched/v1/openai")
    yield [openai.OpenAI(base_url=base, api_key=k, max_retries=0, timeout=120) for k in KEYS]
    delete_app("openai-batches")


def test_another_key_cannot_see_or_cancel(keyed):
    mine, theirs = keyed
    file_id = _upload(mine, [_chat_line(i) for i in range(3)])
    batch = _batch(mine, file_id)
    for call in (
        lambda: theirs.batches.retrieve(batch.id),
        lambda: theirs.batches.cancel(batch.id),
        lambda: theirs.files.retrieve(file_id),
        lambda: theirs.batches.create(
            input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
        ),
    ):
        with pytest.raises(openai.NotFoundError):
            call()
    assert batch.id not in [b.id for b in theirs.batches.list().data]
    assert _done(mine, batch.id)["status"] == "completed"


def test_past_its_window_a_batch_expires_with_partial_output(keyed):
    mine, _ = keyed
    # More than the tiny engine makes in the window (it made 400 x 200 tokens in less).
    lines = 3000
    batch = _batch(mine, _upload(mine, [_chat_line(i, max_tokens=200) for i in range(lines)]))
    assert batch.expires_at - batch.created_at == WINDOW_S
    done = _done(mine, batch.id, timeout=WINDOW_S + 120)
    assert done["status"] == "expired" and done["expired_at"] >= done["expires_at"]
    out = _ids(_lines(mine, done.get("output_file_id")))
    assert 0 < len(out) < lines and len(out) == len(set(out))
    assert done["request_counts"]["completed"] == len(out)


def _pids(title_part: str) -> list[int]:
    """The processes whose title (Ray names its workers `ray::<actor class>...`) holds
    `title_part`."""
    import psutil

    pids = []
    for proc in psutil.process_iter(["cmdline"]):
        title = " ".join(proc.info["cmdline"] or [])
        if title.startswith("ray::") and title_part in title:
            pids.append(proc.pid)
    return pids


def test_killed_worker_and_supervisor_mid_batch_each_id_once(client):
    mine = client  # the session's ingress: its window is 24 h, its lease 5 s
    total = 300
    batch = _batch(mine, _upload(mine, [_chat_line(i, max_tokens=24) for i in range(total)]))
    _wait(mine, batch.id, lambda b: b["request_counts"]["completed"] >= 20)
    # SIGKILL, as a crash: the supervisor's callers (Ray restarts them and retries the
    # blocks they held) and Ray Data's task workers, then, once more lines are done, the
    # supervisor (Serve starts another; the batch's lease passes to it).
    workers = _pids("LineCaller")
    assert workers, "no batch caller alive"
    for pid in workers + _pids("call_lines"):
        os.kill(pid, signal.SIGKILL)
    _wait(mine, batch.id, lambda b: b["request_counts"]["completed"] >= 60)
    [supervisor] = _pids("ServeReplica:openai:BatchSupervisor")
    os.kill(supervisor, signal.SIGKILL)
    done = _done(mine, batch.id)
    assert done["status"] == "completed", done
    out = _ids(_lines(mine, done["output_file_id"]))
    assert sorted(out) == sorted(f"req-{i}" for i in range(total))


# --- the store on PostgreSQL ---------------------------------------------------------


@pytest.fixture(scope="module")
def pg_client(openai_stack, postgres_url, tmp_path_factory):
    """An ingress whose store is PostgreSQL (Debian's server, started by the fixture);
    its files' bytes in a directory of its own."""
    from ray import serve

    from ingress.builder import build_app

    serve.run(
        build_app(
            {
                "catalog_refresh_s": 0.5,
                "state": {
                    "url": postgres_url,
                    "data_dir": str(tmp_path_factory.mktemp("pg-batch-blobs")),
                },
                "batches": {"supervisor": {"name": "PgSupervisor"}},
                "deployment": {
                    "name": "PgBatchIngress",
                    "ray_actor_options": {
                        "runtime_env": {"env_vars": {"OPENAI_SERVE_API_KEYS": ",".join(KEYS)}}
                    },
                },
            }
        ),
        name="openai-pg-batches",
        route_prefix="/pgbatched",
    )
    base = openai_stack.replace("/v1/openai", "/pgbatched/v1/openai")
    yield openai.OpenAI(base_url=base, api_key=KEYS[0], max_retries=0, timeout=120)
    delete_app("openai-pg-batches")


def test_a_batch_on_postgresql_completes_each_id_once(pg_client):
    lines = [_chat_line(i) for i in range(40)] + [_chat_line(40, model="no-such-model")]
    batch = _batch(pg_client, _upload(pg_client, lines))
    done = _done(pg_client, batch.id)
    assert done["status"] == "completed", done
    assert done["request_counts"] == {"total": 41, "completed": 40, "failed": 1}
    out = _lines(pg_client, done["output_file_id"])
    assert sorted(_ids(out)) == sorted(f"req-{i}" for i in range(40))
    errors = _lines(pg_client, done["error_file_id"])
    assert _ids(errors) == ["req-40"] and errors[0]["response"]["status_code"] == 404
    listed = pg_client.batches.list(limit=5).data
    assert batch.id in [b.id for b in listed]
    assert pg_client.files.retrieve(done["output_file_id"]).purpose == "batch_output"
