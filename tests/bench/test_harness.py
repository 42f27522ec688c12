"""Smoke test of the LLM benchmark harness (bench/) without any engine: the load
client and its statistics against a fake streaming server, the Markdown report, and
the stop/leak check on a process tree that leaves a process behind. A few seconds."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

# bench/ holds scripts run as files (`python bench/llm_bench.py`) that import their
# siblings by name; pyproject's pytest `pythonpath` puts bench/ on the path for this.
import load
import pytest
import servers
from llm_bench import markdown, ratio_lines

from tests.waits import wait_until

MAX_TOKENS = 8


def _fake_app():
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route

    async def completions(request):
        body = await request.json()
        assert body["ignore_eos"] is True and body["max_tokens"] == MAX_TOKENS
        usage = {
            "prompt_tokens": 5,
            "completion_tokens": MAX_TOKENS,
            "total_tokens": 5 + MAX_TOKENS,
        }
        if not body["stream"]:
            return JSONResponse({"choices": [{"text": "x" * MAX_TOKENS}], "usage": usage})

        async def events():
            for _ in range(MAX_TOKENS):
                await asyncio.sleep(0.005)
                yield f"data: {json.dumps({'choices': [{'index': 0, 'text': 'x'}]})}\n\n"
            yield f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    async def embeddings(request):
        body = await request.json()
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        EMBEDDED.extend(inputs)
        return JSONResponse({"data": [{"index": i} for i in range(len(inputs))]})

    return Starlette(
        routes=[
            Route("/v1/completions", completions, methods=["POST"]),
            Route("/v1/embeddings", embeddings, methods=["POST"]),
        ]
    )


EMBEDDED: list[str] = []  # every input the fake server was asked to embed


@pytest.fixture(scope="module")
def fake_server():
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(_fake_app(), host="127.0.0.1", port=port, log_level="error")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, "the fake server to start", timeout_s=20, every_s=0.05)
    yield f"http://127.0.0.1:{port}/v1"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.mark.parametrize("stream", [True, False])
def test_load_level_against_fake_server(fake_server, stream):
    prompts = load.make_prompts(4, 8, seed=0)
    assert prompts == load.make_prompts(4, 8, seed=0)  # seeded: the same set
    summary = asyncio.run(
        load.run_level(
            fake_server,
            "m",
            prompts,
            concurrency=3,
            requests=6,
            max_tokens=MAX_TOKENS,
            stream=stream,
            time_budget_s=30,
        )
    )
    assert summary["requests_ok"] == 6 and summary["errors"] == 0
    assert summary["wrong_token_count"] == 0
    assert summary["output_tokens"] == 6 * MAX_TOKENS and summary["output_tok_s"] > 0
    if stream:
        assert summary["text_chunks_per_request"] == MAX_TOKENS
        assert 0 < summary["ttft_ms"]["p50"] <= summary["ttft_ms"]["p99"]
        assert 0 < summary["itl_ms"]["p50"] <= summary["itl_ms"]["p99"]
        assert summary["tpot_ms_mean"] > 0


@pytest.mark.parametrize("per_request", [1, 4])
def test_embeddings_phase_sends_its_sentences(fake_server, per_request):
    import embeddings_throughput

    EMBEDDED.clear()
    rate = asyncio.run(
        embeddings_throughput.run_phase(fake_server, "m", 6, 3, per_request=per_request)
    )
    # The warm-up request, then 6 requests of `per_request` distinct sentences each.
    assert len(EMBEDDED) == 7 * per_request
    assert len(set(EMBEDDED[per_request:])) == 6 * per_request
    assert rate > 0


def test_errors_are_counted_not_raised(fake_server):
    summary = asyncio.run(
        load.run_level(
            fake_server.replace("/v1", "/nope"),
            "m",
            ["p"],
            concurrency=2,
            requests=4,
            max_tokens=MAX_TOKENS,
            stream=True,
            time_budget_s=30,
        )
    )
    assert summary["errors"] == 4 and "HTTP 404" in summary["error_samples"][0]


def test_percentile():
    assert load.percentile([], 50) is None
    assert load.percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert load.percentile([5.0], 99) == 5.0


def test_stop_finds_and_kills_a_leaked_process(tmp_path):
    """A 'server' whose child escapes its process group (as an engine could) is found
    through the environment marker and killed; the report says so."""
    model = servers.ModelSpec("tiny", "m", "src", tmp_path, {}, 1)
    server = servers.Server("vllm", model)
    server.workdir = tmp_path
    code = (
        "import os, subprocess, sys, time\n"
        "subprocess.Popen([sys.executable, '-c', "
        "'import os, time; os.setsid(); time.sleep(300)'])\n"
        "time.sleep(300)\n"
    )
    server._spawn([sys.executable, "-c", code], "server.log", "vllm api_server")
    wait_until(
        lambda: len(server.marked_processes()) >= 2,
        "the server and its escaped child, both marked",
        timeout_s=20,
        every_s=0.2,
    )
    assert len(server.marked_processes()) == 2
    report = server.stop(grace_s=10, settle_s=1)
    assert len(report["left_after_graceful_stop"]) == 1
    assert report["left_after_kill"] == [] and report["clean"]
    assert server.marked_processes() == []


def test_markdown_report_has_tables_and_ratios():
    level = {
        "mode": "stream",
        "concurrency": 1,
        "requests_ok": 2,
        "errors": 0,
        "output_tok_s": 10.0,
        "req_s": 1.0,
        "ttft_ms": {"p50": 5.0, "p99": 6.0},
        "itl_ms": {"p50": 1.0, "p90": 2.0, "p99": 3.0},
        "tpot_ms_mean": 1.0,
    }
    stop = {"stop_s": 1.0, "clean": True, "left_after_graceful_stop": [], "left_after_kill": []}
    fast = dict(level, output_tok_s=20.0)
    report = {
        "started": "now",
        "mode": "quick",
        "total_s": 1.0,
        "machine": {
            "cpu": "cpu",
            "cores": 2,
            "ram_gib": 1.0,
            "gpus": [],
            "load_average_start": (1.0, 1.0, 1.0),
            "vllm": "v",
            "ray": "r",
        },
        "models": [
            {
                "spec": {"key": "tiny", "name": "m", "source": "s", "engine_kwargs": {}},
                "plan": {"max_tokens": 8, "prompt_words": 4},
                "engine_env": {},
                "servers": [
                    {"server": "vllm", "levels": [level], "stop": stop},
                    {
                        "server": "rayllm",
                        "levels": [],
                        "stop": stop,
                        "failure": "RuntimeError: boom",
                    },
                    {"server": "ours", "levels": [fast], "stop": stop},
                ],
            }
        ],
    }
    md = markdown(report)
    assert "| vllm | stream | 1 |" in md and "FAILED: RuntimeError: boom" in md
    assert "| ours | stream | 1 | vllm | 1 | 2.00 |" in md


def test_rounds_compare_within_a_round_and_report_the_median():
    def level(tok_s, ttft):
        return {
            "mode": "stream",
            "concurrency": 16,
            "requests_ok": 2,
            "errors": 0,
            "output_tok_s": tok_s,
            "req_s": 1.0,
            "ttft_ms": {"p50": ttft, "p99": ttft},
            "itl_ms": {"p50": 1.0, "p90": 2.0, "p99": 3.0},
            "tpot_ms_mean": 1.0,
        }

    runs = [
        ("vllm", 1, 100.0, 500.0),
        ("ours", 1, 90.0, 520.0),
        ("vllm", 2, 50.0, 800.0),
        ("ours", 2, 49.0, 810.0),
        ("vllm", 3, 80.0, 600.0),
        ("ours", 3, 60.0, 700.0),
    ]
    servers = [
        {"server": k, "round": r, "rounds": 3, "levels": [level(t, f)]} for k, r, t, f in runs
    ]
    lines = ratio_lines(servers)
    # Per round: 0.90, 0.98, 0.75 (a machine that halved its speed in round 2 does not
    # skew the comparison); the median is 0.90. TTFT differences: +20, +10, +100 ms.
    assert any(line.startswith("| ours | stream | 16 | vllm | 2 | 0.98 |") for line in lines)
    median = next(line for line in lines if "| median |" in line)
    cells = [c.strip() for c in median.strip("|").split("|")]
    assert cells[5] == "0.90" and cells[8] == "+20"


def test_cpu_per_token_splits_engine_from_serving():
    from cpu import by_role, per_token

    before = {1: ("engine worker", 10.0), 2: ("ingress replica", 1.0)}
    after = {
        1: ("engine worker", 12.0),
        2: ("ingress replica", 1.5),
        3: ("serve proxy", 0.5),
    }  # started in between: counted from zero
    figures = per_token(by_role(before, after), tokens=1000)
    assert figures["engine_ms_per_token"] == 2.0
    assert figures["serving_ms_per_token"] == 1.0
    assert figures["serving_ms_per_token_by_role"] == {"ingress replica": 0.5, "serve proxy": 0.5}


def test_a_labelled_level_shows_a_progress_bar(fake_server, monkeypatch):
    bars = []

    class Bar:
        def __init__(self, **kw):
            self.kw, self.n, self.closed = kw, 0, False
            bars.append(self)

        def update(self, n=1):
            self.n += n

        def set_postfix(self, **kw):
            pass

        def close(self):
            self.closed = True

    monkeypatch.setattr(load, "tqdm", Bar)
    asyncio.run(
        load.run_level(
            fake_server,
            "m",
            ["p"],
            concurrency=2,
            requests=4,
            max_tokens=MAX_TOKENS,
            stream=True,
            time_budget_s=30,
            label="ours stream c=2",
        )
    )
    (bar,) = bars
    assert (bar.kw["desc"], bar.kw["total"], bar.n, bar.closed) == ("ours stream c=2", 4, 4, True)
    assert bar.kw["disable"] is None  # tqdm's own rule: shown on a terminal only


def test_the_load_client_is_prioritized_and_its_children_are_not():
    # In a process of its own: the test process must keep its normal priority.
    code = (
        "import os, subprocess, sys, load\n"
        "got = load.prioritize_client()\n"
        "child = subprocess.run([sys.executable, '-c', 'import os; print(os.sched_getscheduler(0))'],"
        " capture_output=True, text=True, check=True).stdout.strip()\n"
        "print(got, os.sched_getscheduler(0) & ~os.SCHED_RESET_ON_FORK, child, sep='|')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(load.__file__).parent,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    got, policy, child = out.split("|")
    if got == "SCHED_FIFO 1":
        assert int(policy) == os.SCHED_FIFO
    else:  # not permitted here: the client stays normal and says why
        assert got.startswith("normal (") and int(policy) == os.SCHED_OTHER
    # A server started from the client never inherits the priority.
    assert int(child) == os.SCHED_OTHER


def test_embeddings_rounds_report_each_round_and_the_medians(tmp_path, monkeypatch):
    import embeddings_throughput

    assert embeddings_throughput._without_rounds(
        ["--start", "--rounds", "3", "--engine", "--rounds=2", "--direct"]
    ) == ["--start", "--engine", "--direct"]
    rates = iter([10.0, 30.0, 20.0])
    calls = []

    def fake_run(cmd, **kwargs):
        calls.append(cmd)
        rate = next(rates)
        report = {
            "model": "m",
            "engine_one_at_a_time": {"sentences_per_s": 40.0},
            "one_at_a_time": {"sentences_per_s": rate, "vs_engine": rate / 40},
        }
        return subprocess.CompletedProcess(cmd, 0, "log line\n" + json.dumps(report, indent=2))

    monkeypatch.setattr(embeddings_throughput.subprocess, "run", fake_run)
    summary = embeddings_throughput.run_rounds(["--start", "--engine"], 3, tmp_path)
    assert len(calls) == 3 and all(c[-2:] == ["--start", "--engine"] for c in calls)
    assert [r["one_at_a_time"]["sentences_per_s"] for r in summary["rounds"]] == [10, 30, 20]
    assert summary["median"]["one_at_a_time.sentences_per_s"] == 20.0
    assert summary["median"]["one_at_a_time.vs_engine"] == 0.5
    assert summary["median"]["engine_one_at_a_time.sentences_per_s"] == 40.0
    written = json.loads(Path(summary["written_to"]).read_text())
    assert written["median"] == summary["median"]
