"""The pure parts of bench/batch_bench.py: the input file (deterministic, OpenAI's batch
request shape, bodies valid chat requests), the output check (missing, duplicate,
unexpected custom_ids, errors, token counts), run_batch's phases from its log, ratios,
medians and verdicts, the report. No Ray, no engine: about a second."""

from __future__ import annotations

import json
from pathlib import Path

import batch_bench as bb
import pytest
from servers import ModelSpec

from tests.openapi import validate

MODEL = "bench/tiny-llama"


def _lines(n: int = 20, seed: int = 0) -> list[dict]:
    return bb.make_batch_lines(n, MODEL, 32, 48, seed)


def test_input_is_deterministic_valid_jsonl_in_openai_batch_shape():
    text = bb.to_jsonl(_lines())
    assert text == bb.to_jsonl(_lines())
    assert text != bb.to_jsonl(_lines(seed=1))
    rows = [json.loads(line) for line in text.splitlines()]
    assert len(rows) == 20 and text.endswith("\n") and "\n\n" not in text
    assert [r["custom_id"] for r in rows] == [f"req-{i:05d}" for i in range(20)]
    for r in rows:
        assert bb.envelope_problems(r) == []
        body = r["body"]
        assert body["model"] == MODEL and body["max_tokens"] == 32
        assert body["temperature"] == 0 and body["ignore_eos"] is True
        assert "stream" not in body
        # The body is a chat completion request by OpenAI's own schema (the document
        # has no schema for the batch line itself: the envelope is checked above).
        validate("CreateChatCompletionRequest", body)
    # Fixed-length prompts, each distinct.
    prompts = [r["body"]["messages"][0]["content"] for r in rows]
    assert len(set(prompts)) == 20
    assert {len(p.split(":", 1)[1].split()) for p in prompts} == {48}


def test_envelope_problems_name_what_is_wrong():
    good = _lines(1)[0]
    assert bb.envelope_problems({**good, "method": "GET"}) == ["method not POST"]
    assert bb.envelope_problems({**good, "url": "/v1/completions"}) == [
        "url not /v1/chat/completions"
    ]
    assert bb.envelope_problems({**good, "custom_id": ""}) == ["custom_id not a non-empty string"]
    assert bb.envelope_problems({**good, "extra": 1})[0].startswith("keys")
    assert bb.envelope_problems([]) == ["not an object"]


def _out(cid: str, status: int = 200, tokens: int = 32, error=None) -> str:
    body = {"usage": {"completion_tokens": tokens}} if status == 200 else None
    return json.dumps(
        {
            "id": f"batch_req_{cid}",
            "custom_id": cid,
            "response": {"status_code": status, "request_id": "r", "body": body},
            "error": error,
        }
    )


IDS = [bb.custom_id(i) for i in range(5)]


def test_output_check_passes_every_id_once_status_200():
    texts = [_out(c) for c in reversed(IDS)] + [""]
    r = bb.check_output(texts, IDS, 32)
    assert r["valid"] and r["ok"] == 5 and r["lines"] == 5 and r["output_tokens"] == 160
    assert r["missing"] == r["duplicates"] == r["errors"] == r["wrong_token_count"] == 0


def test_output_check_finds_missing_duplicate_and_unexpected_ids():
    texts = [_out(c) for c in IDS[:4]] + [_out(IDS[0]), _out("req-99999")]
    r = bb.check_output(texts, IDS, 32)
    assert not r["valid"]
    assert (r["missing"], r["missing_sample"]) == (1, ["req-00004"])
    assert (r["duplicates"], r["duplicate_sample"]) == (1, ["req-00000"])
    assert (r["unexpected"], r["unexpected_sample"]) == (1, ["req-99999"])


def test_output_check_counts_errors_wrong_tokens_and_garbage():
    texts = [
        _out(IDS[0]),
        _out(IDS[1], status=400, error={"message": "bad"}),
        _out(IDS[2], error={"message": "in a 200"}),
        _out(IDS[3], tokens=31),
        "not json",
        _out(IDS[4]),
    ]
    r = bb.check_output(texts, IDS, 32)
    assert not r["valid"]
    assert r["ok"] == 3 and r["errors"] == 2 and r["wrong_token_count"] == 1
    assert r["unparsable"] == 1 and r["lines"] == 6 and r["missing"] == 0
    assert r["error_samples"][0].startswith("req-00001: status 400")


def test_run_batch_phases_from_its_log():
    log = [(0.5, "INFO starting"), (40.25, "INFO Reading batch from /tmp/in.jsonl..."), (45, "x")]
    p = bb.run_batch_phases(log, exit_s=52.0, output_written_s=50.25)
    assert p == {
        "wall_s": 52.0,
        "engine_ready_s": 40.25,
        "generation_s": 10.0,
        "ready_to_exit_s": 11.75,
    }
    none = bb.run_batch_phases([(1.0, "crashed")], exit_s=3.0, output_written_s=None)
    assert none["engine_ready_s"] is None and none["generation_s"] is None
    assert none["wall_s"] == 3.0
    assert bb.per_s(50, 10.0) == 5.0 and bb.per_s(50, None) is None and bb.per_s(5, 0) is None


def test_batch_timestamps():
    t = bb.batch_timestamps({"created_at": 100, "in_progress_at": 101, "completed_at": 111})
    assert t == {
        "created_to_in_progress_s": 1,
        "in_progress_to_completed_s": 10,
        "created_to_completed_s": 11,
    }
    assert bb.batch_timestamps({"created_at": 100})["created_to_completed_s"] is None


VALID = {"valid": True}


def _run(r: int, ours_lps: float, gen_lps: float, wall_lps: float, valid: bool = True) -> dict:
    return {
        "round": r,
        "baselines": {
            "run-batch": {
                "lines_per_s_generation": gen_lps,
                "lines_per_s_wall": wall_lps,
                "output": {"valid": True},
            }
        },
        "ours": {"throughput": {"lines_per_s": ours_lps, "output": {"valid": valid}}},
    }


def test_throughput_ratios_are_per_round_then_median_and_skip_unchecked_rounds():
    runs = [
        _run(1, 90.0, 100.0, 30.0),
        _run(2, 80.0, 100.0, 30.0),
        _run(3, 120.0, 100.0, 30.0),
        _run(4, 500.0, 100.0, 30.0, valid=False),  # an output that did not check
    ]
    c = bb.throughput_comparison(runs, ["run-batch", "run-batch-uniproc"])
    t = c["run-batch"]
    assert [r["round"] for r in t["per_round"]] == [1, 2, 3]
    assert [r["vs_generation"] for r in t["per_round"]] == [0.9, 0.8, 1.2]
    assert t["median"]["vs_generation"] == pytest.approx(0.9)
    assert t["median"]["vs_wall"] == pytest.approx(3.0)
    assert t["ours >= 0.9x"] is True
    assert c["run-batch-uniproc"]["per_round"] == []
    assert c["run-batch-uniproc"]["ours >= 0.9x"] is None
    runs[0]["ours"]["throughput"]["lines_per_s"] = 85.0
    assert bb.throughput_comparison(runs, ["run-batch"])["run-batch"]["ours >= 0.9x"] is False


def test_other_ours_kinds_are_compared_with_the_first_per_round():
    runs = [_run(r, lps, 100.0, 30.0) for r, lps in ((1, 100.0), (2, 100.0), (3, 50.0))]
    for run, lps in zip(runs, (80.0, 120.0, 45.0), strict=True):
        run["ours_variants"] = {
            "ours-1thread": {"throughput": {"lines_per_s": lps, "output": {"valid": True}}}
        }
    runs[2]["ours_variants"]["ours-1thread"]["throughput"]["output"]["valid"] = False
    c = bb.variant_comparison(runs, ["ours-1thread"])["ours-1thread"]
    assert [r["ratio"] for r in c["per_round"]] == [0.8, 1.2]
    assert c["median"] == pytest.approx(1.0)
    assert bb.variant_comparison(runs, []) == {}
    # Only "ours" is compared with the baselines.
    assert bb.throughput_comparison(runs, ["run-batch"])["run-batch"]["per_round"][0][
        "vs_generation"
    ] == pytest.approx(1.0)


def _level(ttft: float, tok_s: float, errors: int = 0, **extra) -> dict:
    return {
        "ttft_ms": {"p50": ttft, "p90": ttft * 2},
        "output_tok_s": tok_s,
        "errors": errors,
        "requests_ok": 10,
        **extra,
    }


def _iso(r: int, alone: tuple, busy: tuple, active: bool = True, errors: int = 0) -> dict:
    return {
        "round": r,
        "ours": {
            "isolation": {
                "alone": _level(*alone),
                "with_batch": _level(
                    *busy,
                    errors=errors,
                    batch_active_throughout=active,
                    batch_lines_done_at_start=1,
                    batch_lines_done_at_end=9,
                    batch_status_at_end="in_progress" if active else "completed",
                ),
            }
        },
    }


def test_isolation_ratios_and_targets():
    runs = [
        _iso(1, (100.0, 200.0), (120.0, 170.0)),
        _iso(2, (100.0, 200.0), (130.0, 150.0), active=False),
        _iso(3, (100.0, 200.0), (110.0, 180.0)),
        _iso(4, (100.0, 200.0), (900.0, 10.0), errors=3),  # errors: not a ratio
    ]
    c = bb.isolation_comparison(runs)
    assert [r["round"] for r in c["per_round"]] == [1, 2, 3]
    assert c["median"] == {"ttft_p50": pytest.approx(1.2), "tok_s": pytest.approx(0.85)}
    assert c["ttft_p50 <= 1.25x"] is True and c["tok_s >= 0.8x"] is True
    assert c["every_window_covered"] is False
    slow = bb.isolation_comparison([_iso(1, (100.0, 200.0), (130.0, 150.0))])
    assert slow["ttft_p50 <= 1.25x"] is False and slow["tok_s >= 0.8x"] is False
    assert bb.isolation_comparison([])["tok_s >= 0.8x"] is None


def _stop() -> dict:
    return {"stop_s": 1.0, "clean": True, "left_after_graceful_stop": [], "left_after_kill": []}


def test_markdown_and_exit_status():
    runs = [_run(1, 90.0, 100.0, 30.0), _run(2, 95.0, 100.0, 30.0)]
    isos = [_iso(1, (100.0, 200.0), (120.0, 170.0)), _iso(2, (1, 2), (1, 2))]
    for run, iso in zip(runs, isos, strict=True):
        run["ours"].update(iso["ours"], stop=_stop(), ready_after_s=50.0)
        run["baselines"]["run-batch"].update(stop=_stop(), engine_ready_s=40.0, generation_s=0.5)
    report = {
        "started": "20261207-000000",
        "machine": {
            "cpu": "cpu",
            "cores": 2,
            "ram_gib": 8.0,
            "gpus": [],
            "load_average_start": (0.5, 0, 0),
            "vllm": "0.32.0",
            "ray": "2.60.0",
        },
        "lines": 50,
        "max_tokens": 32,
        "prompt_words": 48,
        "rounds": 2,
        "total_s": 10.0,
        "client_scheduling": "SCHED_FIFO 1",
        "command": ".venv/bin/python bench/batch_bench.py --models tiny",
        "online_concurrency": 4,
        "online_s": 60.0,
        "online_max_tokens": 64,
        "isolation_lines": 50,
        "models": [
            {
                "spec": {"key": "tiny", "name": MODEL, "engine_kwargs": {"dtype": "float32"}},
                "engine_env": {"VLLM_CPU_KVCACHE_SPACE": "1"},
                "throughput": True,
                "isolation": True,
                "runs": runs,
                "comparison": {
                    "throughput": bb.throughput_comparison(runs, ["run-batch"]),
                    "isolation": bb.isolation_comparison(runs),
                },
            }
        ],
    }
    md = bb.markdown(report)
    assert "| run-batch | median | 0.93 | 3.08 | ours >= 0.9x: yes |" in md
    assert "| 1 | with_batch | 10 | 0 | 120 | 240 | 170 | 1 -> 9 | yes |" in md
    assert "Stop and leak check: round 1 run-batch: clean" in md
    assert bb.report_ok(report)
    # A second kind of ours in the same rounds: its rows, its ratios, its checks.
    report["ours_kinds"] = ["ours", "ours-1thread"]
    for run, lps in zip(runs, (60.0, 190.0), strict=True):
        run["ours_variants"] = {
            "ours-1thread": {
                "throughput": {"lines_per_s": lps, "output": {"valid": True}},
                "stop": _stop(),
            }
        }
    report["models"][0]["comparison"]["variants"] = bb.variant_comparison(runs, ["ours-1thread"])
    md = bb.markdown(report)
    assert "| ours-1thread | median | 1.33 |" in md
    assert "round 2 ours-1thread: clean" in md
    assert bb.report_ok(report)
    runs[0]["ours_variants"]["ours-1thread"]["failure"] = "boom"
    assert not bb.report_ok(report)
    assert "- round 1 ours-1thread: boom" in bb.markdown(report)
    del runs[0]["ours_variants"]["ours-1thread"]["failure"]
    runs[1]["ours"]["throughput"]["output"]["valid"] = False
    assert not bb.report_ok(report)
    runs[1]["ours"]["throughput"]["output"]["valid"] = True
    runs[0]["baselines"]["run-batch"]["failure"] = "exit 1"
    assert not bb.report_ok(report)
    assert "Failures:" in bb.markdown(report)


def test_ours_server_merges_ingress_args_into_the_ingress_app_only():
    spec = ModelSpec("tiny", MODEL, "fixture", Path("/nonexistent"), {"dtype": "float32"}, 1)
    server = bb.BatchServer("ours", spec, ingress_args={"batches": {"online_share": 0.5}})
    apps = {a["name"]: a for a in server.serve_config()["applications"]}
    assert apps["openai"]["args"] == {"auth": {"enabled": False}, "batches": {"online_share": 0.5}}
    assert "batches" not in apps["bench-tiny"]["args"]
    assert apps["bench-tiny"]["args"]["engine"]["engine_kwargs"] == {"dtype": "float32"}
    # Once started (a work dir), its own state store there, unless the args name one.
    server.workdir = Path("/tmp/llmb-ours-x")
    args = server.serve_config()["applications"][0]["args"]
    assert args["state"] == {"data_dir": "/tmp/llmb-ours-x/state"}
    server.ingress_args = {"state": {"data_dir": "/elsewhere"}}
    assert server.serve_config()["applications"][0]["args"]["state"] == {"data_dir": "/elsewhere"}


def test_ours_1thread_leaves_the_engine_on_rays_thread():
    spec = ModelSpec("tiny", MODEL, "fixture", Path("/nonexistent"), {"dtype": "float32"}, 1)

    def engine(kind: str) -> dict:
        apps = {a["name"]: a for a in bb.BatchServer(kind, spec).serve_config()["applications"]}
        return apps["bench-tiny"]["args"]["engine"]

    assert engine("ours")["cpu_threads"] == "all"
    assert engine("ours-1thread")["cpu_threads"] is None
    assert engine("ours-1thread")["engine_kwargs"] == engine("ours")["engine_kwargs"]


def _fake_batch_api():
    """OpenAI's Files and Batch routes, just enough for the SDK: a batch is
    `validating`, then `in_progress`, then `completed` on successive reads, its output
    one 200 line per input line."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, PlainTextResponse
    from starlette.routing import Route

    files: dict[str, bytes] = {}
    batches: dict[str, dict] = {}

    async def upload(request):
        form = await request.form()
        assert form["purpose"] == "batch"
        data = await form["file"].read()
        fid = f"file-{len(files)}"
        files[fid] = data
        return JSONResponse(
            {
                "id": fid,
                "object": "file",
                "bytes": len(data),
                "created_at": 1,
                "filename": "in.jsonl",
                "purpose": "batch",
                "status": "processed",
            }
        )

    async def content(request):
        return PlainTextResponse(files[request.path_params["fid"]].decode())

    def _public(b: dict) -> dict:
        return {k: v for k, v in b.items() if not k.startswith("_")}

    async def create(request):
        body = await request.json()
        assert body["endpoint"] == "/v1/chat/completions" and body["completion_window"] == "24h"
        bid = f"batch_{len(batches)}"
        batches[bid] = {
            "id": bid,
            "object": "batch",
            "endpoint": body["endpoint"],
            "completion_window": "24h",
            "input_file_id": body["input_file_id"],
            "status": "validating",
            "created_at": 100,
            "request_counts": {"total": 0, "completed": 0, "failed": 0},
            "_reads": 0,
        }
        return JSONResponse(_public(batches[bid]))

    async def get(request):
        b = batches[request.path_params["bid"]]
        b["_reads"] += 1
        if b["_reads"] == 1:
            b.update(status="in_progress", in_progress_at=101)
        elif b["_reads"] == 2:
            lines = files[b["input_file_id"]].decode().splitlines()
            out = "".join(
                _out(json.loads(line)["custom_id"], tokens=json.loads(line)["body"]["max_tokens"])
                + "\n"
                for line in lines
            )
            files[f"out-{b['id']}"] = out.encode()
            n = len(lines)
            b.update(
                status="completed",
                completed_at=103,
                output_file_id=f"out-{b['id']}",
                request_counts={"total": n, "completed": n, "failed": 0},
            )
        return JSONResponse(_public(b))

    return Starlette(
        routes=[
            Route("/v1/files", upload, methods=["POST"]),
            Route("/v1/files/{fid}/content", content, methods=["GET"]),
            Route("/v1/batches", create, methods=["POST"]),
            Route("/v1/batches/{bid}", get, methods=["GET"]),
        ]
    )


def test_ours_side_drives_the_batch_api_through_the_openai_sdk(tmp_path):
    import argparse
    import socket
    import threading

    import openai
    import uvicorn

    from tests.waits import wait_until

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(_fake_batch_api(), host="127.0.0.1", port=port, log_level="error")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, "the fake server to start", timeout_s=20, every_s=0.05)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0)
        lines = _lines(7)
        path = tmp_path / "in.jsonl"
        path.write_text(bb.to_jsonl(lines))
        args = argparse.Namespace(poll_s=0.01, batch_timeout=20, max_tokens=32)
        r = bb.run_ours_batch(client, path, [x["custom_id"] for x in lines], args)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert r["status"] == "completed" and "failure" not in r
    assert r["output"]["valid"] and r["output"]["ok"] == 7
    assert [s["status"] for s in r["statuses_seen"]] == ["validating", "in_progress", "completed"]
    assert r["lines_per_s"] > 0 and r["created_to_completed_s"] > 0
    assert r["timestamps"] == {
        "created_to_in_progress_s": 1,
        "in_progress_to_completed_s": 2,
        "created_to_completed_s": 3,
    }
    assert r["lines_per_s_timestamps"] == round(7 / 3, 3)
