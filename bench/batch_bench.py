"""Batch API benchmark (issue #32): our `/v1/openai/batches` against `vllm run-batch` on the
same file with the same engine arguments, and online latency while a batch runs.

    .venv/bin/python bench/batch_bench.py                                   # tiny + gemma, 3 rounds
    .venv/bin/python bench/batch_bench.py --models tiny --lines 50 --rounds 1   # a smoke run
    .venv/bin/python bench/batch_bench.py --models gemma --only isolation

Input. `--lines` (1,000) chat requests in OpenAI's batch JSONL, one file per model used by
both sides: `{"custom_id": "req-00000", "method": "POST", "url": "/v1/chat/completions",
"body": {"model", "messages": [one user message], "max_tokens", "temperature": 0,
"ignore_eos": true}}`; prompts of `--prompt-words` pseudo-words (bench/load.py's seeded
generator), `max_tokens` fixed (`--max-tokens`, 32) and `ignore_eos`, so every line of
either side generates exactly that many tokens (the check counts any that did not).

Throughput, the baseline (`run-batch`: vLLM as it ships, its two-process CPU engine;
`run-batch-uniproc`: its engine as one process, the layout ours runs, as
bench/llm_bench.py's `vllm-uniproc`): `python -m vllm.entrypoints.openai.run_batch -i IN -o
OUT --model DIR --served-model-name NAME <engine flags>` with bench/servers.py's engine
environment (`engine_env`: KV cache size, thread binding, loopback, offline) and the
LLM_BENCH_RUN marker (leak check after exit). Timed from process start to exit (`wall`,
engine start included) and, from its own log lines (time-stamped here as they arrive), from
"Reading batch from" (engine and serving objects ready; the file is read next) to the
output file's last write (`generation`). lines/s = lines / time.

Throughput, ours: bench/servers.py's `ours` server (private Ray on loopback, our ingress
with auth off + one `deployments.llm.builder` app of the model, the same engine kwargs,
engine environment and thread binding; its state store (SQLite, uploaded files) in its own
work dir; `--ours-ingress-args` JSON is merged into the ingress app's args, e.g.
`'{"batches": {"online_share": 1.0}}'`; `--ours-kind ours-1thread`: the engine on the one
thread Ray's `num_cpus` gives the replica, an LLM application's default, instead of
`cpu_threads: all` as serve_config.yaml runs Gemma; a comma list runs each kind every round,
the first compared with the baselines, the others with the first), warmed up, then through the official `openai`
SDK: upload the file (purpose "batch"), create the batch (endpoint /v1/chat/completions,
window 24h), poll `batches.retrieve` every `--poll-s` (0.5 s) until a terminal status,
download the output and error files. lines/s = lines / (create call sent -> poll that saw `completed`); the
Batch object's own timestamps (whole seconds) give created -> in_progress and in_progress ->
completed. Before it, a warm-up batch of `--warmup-lines` (8) lines: a fresh stack's first
batch also starts the supervisor's Ray Data machinery (its time is in the JSON). Both
sides' outputs are checked alike: every custom_id exactly once, every line
status 200 without error, usage.completion_tokens == max_tokens.

Ratio: ours lines/s / the baseline's generation-phase lines/s (neither counts an engine
start: ours is already up), per round, then the median over rounds; target >= 0.9. The
ratio against the baseline's wall (its engine start included) is reported beside it.

Isolation (ours only; `--isolation-models`, gemma by default): `--online-concurrency` (4)
closed-loop streaming chat clients (bench/fleet_bench.py's `run_workload`: TTFT = first
chunk carrying text, tokens/s = the servers' usage / wall) for `--online-s` (60 s), once
alone and once while a batch of `--isolation-lines` runs (created, then the load starts
once it is `in_progress` and `--isolation-settle-s` later; the batch is cancelled after the
window and waited for, so the next phase is alone). The phases alternate order by round.
Ratios with / alone: TTFT p50 <= 1.25x, tokens/s >= 0.8x (medians over rounds). A window
the batch did not cover to its end is flagged (`batch_active_throughout` false).

Rounds (`--rounds`, 3) interleave the sides: baseline(s), ours, baseline(s), ours, ...; each
`ours` is a fresh stack. The load client runs at real-time priority (load.prioritize_client)
unless --normal-client. Output: bench/results/batch-<timestamp>.json (every raw figure,
machine, command) and .md (the tables, printed); logs in $TMPDIR/batch-bench-logs/. Exit
status 1 if a side failed, an output did not check, or a process was left.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo

from fleet_bench import Session, Workload, median, ratio, run_workload
from load import make_prompts
from servers import REPO, VARIANTS, ModelSpec, Server, _cli_flags, engine_env

ENDPOINT = "/v1/chat/completions"
# Baseline name -> bench/servers.py kind whose environment it runs with.
BASELINES = {"run-batch": "vllm", "run-batch-uniproc": "vllm-uniproc"}
# Our side's servers (--ours-kind): "ours" and bench/servers.py's variants of it.
OURS_KINDS = ["ours"] + [k for k, (base, _) in VARIANTS.items() if base == "ours"]
TERMINAL = ("completed", "failed", "expired", "cancelled")
THROUGHPUT_TARGET = 0.9  # ours / run-batch lines/s, at least
TTFT_TARGET = 1.25  # online TTFT p50 with a batch / alone, at most
TOK_S_TARGET = 0.8  # online tokens/s with a batch / alone, at least
READY_MARK = "Reading batch from"  # run_batch logs it once the engine and serving are up
SIDES = ("baseline", "ours")

# ---------------------------------------------------------------------------- input


def custom_id(i: int) -> str:
    return f"req-{i:05d}"


def make_batch_lines(
    n: int, model: str, max_tokens: int, prompt_words: int, seed: int = 0
) -> list[dict[str, Any]]:
    """`n` chat requests in OpenAI's batch input shape, the same for the same arguments:
    one user message of `prompt_words` pseudo-words each (distinct per line), fixed
    `max_tokens`, greedy, `ignore_eos` (every line generates exactly max_tokens)."""
    prompts = make_prompts(n, prompt_words, seed=seed)
    return [
        {
            "custom_id": custom_id(i),
            "method": "POST",
            "url": ENDPOINT,
            "body": {
                "model": model,
                "messages": [{"role": "user", "content": prompt}],
                "max_tokens": max_tokens,
                "temperature": 0,
                "ignore_eos": True,
            },
        }
        for i, prompt in enumerate(prompts)
    ]


def to_jsonl(lines: Iterable[dict[str, Any]]) -> str:
    return "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines)


def envelope_problems(line: Any) -> list[str]:
    """What keeps `line` from being one line of OpenAI's batch input (the request input
    object: custom_id, method POST, url, body; nothing else); empty when it is one."""
    if not isinstance(line, dict):
        return ["not an object"]
    problems = []
    if set(line) != {"custom_id", "method", "url", "body"}:
        problems.append(f"keys {sorted(line)}")
    if not isinstance(line.get("custom_id"), str) or not line.get("custom_id"):
        problems.append("custom_id not a non-empty string")
    if line.get("method") != "POST":
        problems.append("method not POST")
    if line.get("url") != ENDPOINT:
        problems.append(f"url not {ENDPOINT}")
    if not isinstance(line.get("body"), dict):
        problems.append("body not an object")
    return problems


# ---------------------------------------------------------------------------- output


def check_output(texts: Iterable[str], expected_ids: list[str], max_tokens: int) -> dict[str, Any]:
    """Checks the lines of a batch's output (and error) files, either side's, against
    the input's custom_ids: each exactly once, each status 200 with no error, each
    generating `max_tokens`. `valid` is all of that."""
    counts: Counter[str] = Counter()
    ok = errors = unparsable = wrong_tokens = tokens = 0
    samples: list[str] = []
    for text in texts:
        text = text.strip()
        if not text:
            continue
        try:
            line = json.loads(text)
            cid = line["custom_id"]
        except (ValueError, KeyError, TypeError):
            unparsable += 1
            continue
        counts[cid] += 1
        response = line.get("response") or {}
        status = response.get("status_code")
        if status == 200 and not line.get("error"):
            ok += 1
            usage = (response.get("body") or {}).get("usage") or {}
            got = int(usage.get("completion_tokens") or 0)
            tokens += got
            wrong_tokens += got != max_tokens
        else:
            errors += 1
            if len(samples) < 3:
                samples.append(f"{cid}: status {status}: {str(line.get('error'))[:200]}")
    expected = set(expected_ids)
    missing = sorted(expected - set(counts))
    duplicates = sorted(c for c, k in counts.items() if k > 1)
    unexpected = sorted(set(counts) - expected)
    return {
        "lines": sum(counts.values()) + unparsable,
        "ok": ok,
        "errors": errors,
        "error_samples": samples,
        "unparsable": unparsable,
        "missing": len(missing),
        "missing_sample": missing[:5],
        "duplicates": len(duplicates),
        "duplicate_sample": duplicates[:5],
        "unexpected": len(unexpected),
        "unexpected_sample": unexpected[:5],
        "output_tokens": tokens,
        "wrong_token_count": wrong_tokens,
        "valid": not (missing or duplicates or unexpected or errors or unparsable or wrong_tokens)
        and ok == len(expected),
    }


# ---------------------------------------------------------------------------- figures


def per_s(lines: int, seconds: float | None) -> float | None:
    return round(lines / seconds, 3) if seconds and seconds > 0 else None


def run_batch_phases(
    log: list[tuple[float, str]], exit_s: float, output_written_s: float | None
) -> dict[str, float | None]:
    """run_batch's phases from its log lines (seconds since its start, text) and the
    seconds from its start to its exit and to the output file's last write: engine start
    (-> READY_MARK), generation (READY_MARK -> output written), ready -> exit."""
    ready = next((t for t, text in log if READY_MARK in text), None)
    generation = None
    if ready is not None and output_written_s is not None and output_written_s >= ready:
        generation = round(output_written_s - ready, 3)
    return {
        "wall_s": round(exit_s, 3),
        "engine_ready_s": None if ready is None else round(ready, 3),
        "generation_s": generation,
        "ready_to_exit_s": None if ready is None else round(exit_s - ready, 3),
    }


def batch_timestamps(batch: dict[str, Any]) -> dict[str, int | None]:
    """Durations from a Batch object's own timestamps (whole seconds)."""

    def span(a: str, b: str) -> int | None:
        x, y = batch.get(a), batch.get(b)
        return None if x is None or y is None else y - x

    return {
        "created_to_in_progress_s": span("created_at", "in_progress_at"),
        "in_progress_to_completed_s": span("in_progress_at", "completed_at"),
        "created_to_completed_s": span("created_at", "completed_at"),
    }


def throughput_comparison(runs: list[dict[str, Any]], baselines: list[str]) -> dict[str, Any]:
    """Per baseline: ours / baseline lines/s for each round where both checked out
    (against the baseline's generation phase, and its wall incl. engine start), their
    medians and the target's verdict (None when not measured)."""
    out: dict[str, Any] = {}
    for base in baselines:
        per_round = []
        for run in runs:
            b = (run.get("baselines") or {}).get(base) or {}
            o = ((run.get("ours") or {}).get("throughput")) or {}
            if not (b.get("output", {}).get("valid") and o.get("output", {}).get("valid")):
                continue
            per_round.append(
                {
                    "round": run["round"],
                    "vs_generation": ratio(o.get("lines_per_s"), b.get("lines_per_s_generation")),
                    "vs_wall": ratio(o.get("lines_per_s"), b.get("lines_per_s_wall")),
                }
            )
        med = {k: median(r[k] for r in per_round) for k in ("vs_generation", "vs_wall")}
        gen = med["vs_generation"]
        out[base] = {
            "per_round": per_round,
            "median": med,
            f"ours >= {THROUGHPUT_TARGET}x": None if gen is None else gen >= THROUGHPUT_TARGET,
        }
    return out


def variant_comparison(runs: list[dict[str, Any]], variants: list[str]) -> dict[str, Any]:
    """Per extra ours kind: its lines/s / the first kind's, for each round where both
    checked out, and their median."""
    out: dict[str, Any] = {}
    for kind in variants:
        per_round = []
        for run in runs:
            first = ((run.get("ours") or {}).get("throughput")) or {}
            v = (((run.get("ours_variants") or {}).get(kind) or {}).get("throughput")) or {}
            if first.get("output", {}).get("valid") and v.get("output", {}).get("valid"):
                per_round.append(
                    {
                        "round": run["round"],
                        "ratio": ratio(v.get("lines_per_s"), first.get("lines_per_s")),
                    }
                )
        out[kind] = {"per_round": per_round, "median": median(r["ratio"] for r in per_round)}
    return out


def isolation_comparison(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """With a batch / alone, per round: TTFT p50 and tokens/s of the online load; their
    medians and the targets' verdicts."""
    per_round = []
    for run in runs:
        iso = ((run.get("ours") or {}).get("isolation")) or {}
        alone, busy = iso.get("alone"), iso.get("with_batch")
        if not (alone and busy) or alone.get("errors") or busy.get("errors"):
            continue
        per_round.append(
            {
                "round": run["round"],
                "ttft_p50": ratio(busy["ttft_ms"]["p50"], alone["ttft_ms"]["p50"]),
                "tok_s": ratio(busy["output_tok_s"], alone["output_tok_s"]),
                "batch_active_throughout": busy.get("batch_active_throughout"),
            }
        )
    med = {k: median(r[k] for r in per_round) for k in ("ttft_p50", "tok_s")}
    return {
        "per_round": per_round,
        "median": med,
        f"ttft_p50 <= {TTFT_TARGET}x": None
        if med["ttft_p50"] is None
        else med["ttft_p50"] <= TTFT_TARGET,
        f"tok_s >= {TOK_S_TARGET}x": None if med["tok_s"] is None else med["tok_s"] >= TOK_S_TARGET,
        "every_window_covered": all(r["batch_active_throughout"] for r in per_round)
        if per_round
        else None,
    }


# ---------------------------------------------------------------------------- baseline


def run_baseline(
    name: str,
    model: ModelSpec,
    input_path: Path,
    ids: list[str],
    args: argparse.Namespace,
    log_dir: Path,
    label: str,
) -> dict[str, Any]:
    """One `vllm run-batch` of the input file; its phases, lines/s and output check."""
    server = Server(BASELINES[name], model, threads_bind=args.threads_bind, gpu=args.gpu)
    server.workdir = Path(tempfile.mkdtemp(prefix="batchb-", dir="/tmp"))
    out_path = server.workdir / "out.jsonl"
    cmd = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.run_batch",
        "-i",
        str(input_path),
        "-o",
        str(out_path),
        "--model",
        str(model.path),
        "--served-model-name",
        model.name,
        *_cli_flags(model.engine_kwargs),
    ]
    report: dict[str, Any] = {
        "baseline": name,
        "command": " ".join(cmd[1:]),
        "env": {**engine_env(model, args.threads_bind), **server.extra_env},
    }
    log: list[tuple[float, str]] = []
    log_file = server.workdir / "run_batch.log"
    try:
        t_wall = time.time()
        t0 = time.monotonic()
        p = subprocess.Popen(
            cmd,
            cwd=REPO,
            env=server._env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        p.bench_label = "vllm run_batch"
        server.procs.append(p)

        def read() -> None:
            with open(log_file, "w") as f:
                for raw in p.stdout:
                    text = raw.decode(errors="replace").rstrip()
                    now = time.monotonic() - t0
                    log.append((now, text))
                    f.write(f"[{now:9.3f}] {text}\n")

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            rc = p.wait(timeout=args.batch_timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            rc = p.wait(timeout=30)
            report["failure"] = f"timed out after {args.batch_timeout} s"
        exit_s = time.monotonic() - t0
        reader.join(timeout=10)
        report["returncode"] = rc
        written = out_path.stat().st_mtime - t_wall if out_path.exists() else None
        phases = run_batch_phases(log, exit_s, written)
        report.update(phases)
        n = len(ids)
        report["lines_per_s_wall"] = per_s(n, phases["wall_s"])
        report["lines_per_s_generation"] = per_s(n, phases["generation_s"])
        texts = out_path.read_text().splitlines() if out_path.exists() else []
        report["output"] = check_output(texts, ids, args.max_tokens)
        if rc != 0 and "failure" not in report:
            tail = "\n".join(t for _, t in log[-20:])
            report["failure"] = f"exit {rc}\n{tail}"[:4000]
        print(
            f"  {label} {name}: exit {rc}, {report['output']['ok']}/{n} ok, wall "
            f"{phases['wall_s']} s, engine ready {phases['engine_ready_s']} s, generation "
            f"{phases['generation_s']} s -> {report['lines_per_s_generation']} lines/s "
            f"({report['lines_per_s_wall']} incl. start)",
            flush=True,
        )
    except Exception as e:
        report["failure"] = f"{type(e).__name__}: {e}"[:4000]
        print(f"  {label} {name}: FAILED {report['failure'][:2000]}", flush=True)
    finally:
        report["stop"] = server.stop()
        if log_file.exists():
            shutil.copy(log_file, log_dir / f"{label}-{name}.log")
        server.cleanup_files()
    return report


# ---------------------------------------------------------------------------- ours


@dataclass
class BatchServer(Server):
    """bench/servers.py's `ours`, with `ingress_args` merged into the ingress app's args
    and, unless they name one, a state store of its own (SQLite and uploaded files under
    its work dir, not the user's ~/.openai-serve), removed with it."""

    ingress_args: dict[str, Any] = field(default_factory=dict)

    def serve_config(self) -> dict:
        config = super().serve_config()
        own = {"state": {"data_dir": str(self.workdir / "state")}} if self.workdir else {}
        for app in config["applications"]:
            if app["import_path"] == "ingress.builder:build_app":
                app["args"] = {**app["args"], **own, **self.ingress_args}
        return config


def _dump(obj: Any) -> dict[str, Any]:
    return obj.model_dump() if hasattr(obj, "model_dump") else dict(obj)


def submit_batch(client: Any, input_path: Path) -> tuple[Any, dict[str, float]]:
    """Uploads the file and creates the batch; returns the Batch and the timings
    (`created` is the perf_counter when the create call was sent)."""
    t = time.perf_counter()
    with open(input_path, "rb") as f:
        uploaded = client.files.create(file=f, purpose="batch")
    t_create = time.perf_counter()
    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint=ENDPOINT, completion_window="24h"
    )
    return batch, {
        "upload_s": round(t_create - t, 3),
        "create_call_s": round(time.perf_counter() - t_create, 3),
        "created": t_create,
        "input_file_id": uploaded.id,
    }


def poll_batch(
    client: Any, batch: Any, poll_s: float, timeout_s: float, until: tuple[str, ...] = TERMINAL
) -> tuple[Any, list[tuple[float, str, int]]]:
    """Retrieves the batch every `poll_s` until its status is in `until` (or the
    timeout); returns it and the statuses seen: (perf_counter, status, lines completed)."""
    seen: list[tuple[float, str, int]] = []
    deadline = time.monotonic() + timeout_s
    while True:
        counts = batch.request_counts
        done = (counts.completed + counts.failed) if counts else 0
        if not seen or seen[-1][1] != batch.status:
            seen.append((time.perf_counter(), batch.status, done))
        if batch.status in until or time.monotonic() > deadline:
            return batch, seen
        time.sleep(poll_s)
        batch = client.batches.retrieve(batch.id)


def file_lines(client: Any, file_id: str | None) -> list[str]:
    if not file_id:
        return []
    return client.files.content(file_id).text.splitlines()


def run_ours_batch(
    client: Any, input_path: Path, ids: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    """One batch through our API, from upload to the downloaded output, checked."""
    batch, t = submit_batch(client, input_path)
    batch, seen = poll_batch(client, batch, args.poll_s, args.batch_timeout)
    t_done = seen[-1][0]
    t_dl = time.perf_counter()
    texts = file_lines(client, batch.output_file_id) + file_lines(client, batch.error_file_id)
    download_s = time.perf_counter() - t_dl
    created = t["created"]
    status_seen = [
        {"after_s": round(x - created, 3), "status": s, "lines_done": d} for x, s, d in seen
    ]
    first = {s["status"]: s["after_s"] for s in reversed(status_seen)}
    obj = _dump(batch)
    wall = t_done - created if batch.status == "completed" else None
    result = {
        "batch_id": batch.id,
        "status": batch.status,
        "upload_s": t["upload_s"],
        "create_call_s": t["create_call_s"],
        "created_to_completed_s": None if wall is None else round(wall, 3),
        "in_progress_seen_after_s": first.get("in_progress"),
        "lines_per_s": per_s(len(ids), wall),
        "download_s": round(download_s, 3),
        "timestamps": batch_timestamps(obj),
        "lines_per_s_timestamps": per_s(len(ids), batch_timestamps(obj)["created_to_completed_s"]),
        "statuses_seen": status_seen,
        "batch": obj,
        "output": check_output(texts, ids, args.max_tokens),
    }
    if batch.status != "completed":
        result["failure"] = f"batch ended {batch.status}: {obj.get('errors')}"[:4000]
    return result


def online_load(base_url: str, model: str, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """`--online-concurrency` streaming chat clients for `--online-s` seconds."""
    prompts = make_prompts(4096, args.prompt_words, seed=seed)
    wl = Workload("online", [Session(-1, "You tell short stories.", [p]) for p in prompts])
    return asyncio.run(
        run_workload(
            base_url,
            model,
            wl,
            concurrency=args.online_concurrency,
            max_tokens=args.online_max_tokens,
            budget_s=args.online_s,
        )
    )


def run_isolation(
    server: Server, client: Any, input_path: Path, round_: int, args: argparse.Namespace
) -> dict[str, Any]:
    """The online load alone and while a batch runs (order alternating by round)."""
    out: dict[str, Any] = {}
    order = ["alone", "with_batch"] if round_ % 2 else ["with_batch", "alone"]
    for phase in order:
        seed = 1000 * round_ + (phase == "with_batch")
        if phase == "alone":
            out[phase] = online_load(server.base_url, server.model.name, args, seed)
        else:
            batch, submitted = submit_batch(client, input_path)
            batch, seen = poll_batch(
                client, batch, args.poll_s, args.batch_timeout, until=("in_progress", *TERMINAL)
            )
            if batch.status != "in_progress":
                raise RuntimeError(f"isolation batch never ran: {batch.status} {batch.errors}")
            time.sleep(args.isolation_settle_s)
            start = client.batches.retrieve(batch.id)
            result = online_load(server.base_url, server.model.name, args, seed)
            end = client.batches.retrieve(batch.id)
            with contextlib.suppress(Exception):
                client.batches.cancel(batch.id)
            final, _ = poll_batch(client, end, args.poll_s, args.batch_timeout)
            result.update(
                {
                    "batch_id": batch.id,
                    "batch_in_progress_after_s": round(seen[-1][0] - submitted["created"], 3),
                    "batch_lines_done_at_start": start.request_counts.completed
                    if start.request_counts
                    else None,
                    "batch_lines_done_at_end": end.request_counts.completed
                    if end.request_counts
                    else None,
                    "batch_status_at_end": end.status,
                    "batch_active_throughout": end.status == "in_progress",
                    "batch_final_status": final.status,
                }
            )
            out[phase] = result
        r = out[phase]
        print(
            f"    isolation {phase:10} {r['requests_ok']} ok, {r['errors']} err, TTFT p50 "
            f"{r['ttft_ms']['p50']} ms, {r['output_tok_s']} tok/s"
            + (
                f", batch lines {r['batch_lines_done_at_start']}->{r['batch_lines_done_at_end']}"
                f" ({r['batch_status_at_end']})"
                if phase == "with_batch"
                else ""
            ),
            flush=True,
        )
    return out


def run_ours(
    model: ModelSpec,
    input_path: Path,
    iso_path: Path | None,
    ids: list[str],
    args: argparse.Namespace,
    log_dir: Path,
    label: str,
    round_: int,
    throughput: bool,
    kind: str = "ours",
) -> dict[str, Any]:
    """A fresh `ours` stack (bench/servers.py's `kind`): the throughput batch, then the
    isolation phases."""
    import openai
    from load import warm_up

    server = BatchServer(
        kind,
        model,
        threads_bind=args.threads_bind,
        gpu=args.gpu,
        ingress_args=args.ours_ingress_args,
    )
    report: dict[str, Any] = {}
    t0 = time.monotonic()
    try:
        server.start()
        report["base_url"] = server.base_url
        report["listed_after_s"] = round(server.wait_ready(args.start_timeout), 1)
        asyncio.run(
            warm_up(
                server.base_url,
                model.name,
                make_prompts(8, args.prompt_words, seed=99),
                args.max_tokens,
                timeout_s=args.start_timeout,
            )
        )
        report["ready_after_s"] = round(time.monotonic() - t0, 1)
        client = openai.OpenAI(
            base_url=server.base_url, api_key="batch-bench", max_retries=2, timeout=600
        )
        if args.warmup_lines:
            # The first batch of a fresh stack also starts the supervisor's pipeline
            # machinery (Ray Data, its workers); a service takes batches warm.
            warm = make_batch_lines(
                args.warmup_lines, model.name, args.max_tokens, args.prompt_words, seed=-1
            )
            warm_path = server.workdir / "warmup.jsonl"
            warm_path.write_text(to_jsonl(warm))
            w = report["warmup_batch"] = run_ours_batch(
                client, warm_path, [x["custom_id"] for x in warm], args
            )
            print(
                f"  {label} ours: warm-up batch of {args.warmup_lines} lines {w['status']} in "
                f"{w['created_to_completed_s']} s",
                flush=True,
            )
            if w.get("failure") or not w["output"]["valid"]:
                raise RuntimeError(f"warm-up batch: {w.get('failure') or w['output']}")
        if throughput:
            r = report["throughput"] = run_ours_batch(client, input_path, ids, args)
            ts = r["timestamps"]
            print(
                f"  {label} ours: {r['status']}, {r['output']['ok']}/{len(ids)} ok, created -> "
                f"completed {r['created_to_completed_s']} s -> {r['lines_per_s']} lines/s "
                f"(timestamps: created->in_progress {ts['created_to_in_progress_s']} s, "
                f"in_progress->completed {ts['in_progress_to_completed_s']} s); upload "
                f"{r['upload_s']} s, download {r['download_s']} s",
                flush=True,
            )
            if r.get("failure"):
                report["failure"] = r["failure"]
        if iso_path is not None:
            report["isolation"] = run_isolation(server, client, iso_path, round_, args)
    except Exception as e:
        report["failure"] = f"{type(e).__name__}: {e}"[:4000]
        print(f"  {label} ours: FAILED {report['failure'][:2000]}", flush=True)
    finally:
        report["stop"] = server.stop()
        if server.workdir:
            for log in server.workdir.glob("*.log"):
                shutil.copy(log, log_dir / f"{label}-ours-{log.name}")
        server.cleanup_files()
        print(
            f"  {label} ours: stopped in {report['stop']['stop_s']} s, "
            f"clean={report['stop']['clean']}",
            flush=True,
        )
    report["total_s"] = round(time.monotonic() - t0, 1)
    return report


# ---------------------------------------------------------------------------- report


def _our_sides(run: dict[str, Any], first: str = "ours") -> list[tuple[str, dict[str, Any]]]:
    """A round's runs of our side: the first kind's (named `first`), then the others'."""
    sides = [(first, run["ours"])] if run.get("ours") else []
    return sides + list((run.get("ours_variants") or {}).items())


def _fmt(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        return f"{x:.2f}" if abs(x) < 100 else f"{x:.0f}"
    return str(x)


def _row(cells: Iterable[Any]) -> str:
    return "| " + " | ".join(_fmt(c) for c in cells) + " |"


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    first = (report.get("ours_kinds") or ["ours"])[0]
    lines = [
        f"# Batch API benchmark, {report['started']}",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM"
        + (f", {'; '.join(m['gpus'])}" if m.get("gpus") else ", no GPU")
        + f"; load average at start {m['load_average_start'][0]:.1f}; vLLM {m['vllm']}, "
        f"Ray {m['ray']}. {report['lines']} lines, max_tokens {report['max_tokens']}, "
        f"prompts of {report['prompt_words']} words; rounds {report['rounds']}; took "
        f"{report['total_s']:.0f} s. Load client: {report['client_scheduling']}.",
        "",
        f"Command: `{report['command']}`",
        "",
    ]
    for model in report["models"]:
        spec = model["spec"]
        lines += [
            f"## {spec['key']}: {spec['name']}",
            "",
            f"engine {spec['engine_kwargs']}; env {model['engine_env']}",
            "",
        ]
        if model["throughput"]:
            lines += [
                "| side | round | ok | err | missing | dup | wrong tokens | engine start s "
                "| batch s | lines/s | wall s (incl. start) | lines/s (wall) "
                "| created->in_progress s | in_progress->completed s |",
                "| --- | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: | --: "
                "| --: | --: |",
            ]
            for run in model["runs"]:
                for name, b in (run.get("baselines") or {}).items():
                    o = b.get("output") or {}
                    lines.append(
                        _row(
                            [
                                name + (" FAILED" if b.get("failure") else ""),
                                run["round"],
                                o.get("ok"),
                                o.get("errors"),
                                o.get("missing"),
                                o.get("duplicates"),
                                o.get("wrong_token_count"),
                                b.get("engine_ready_s"),
                                b.get("generation_s"),
                                b.get("lines_per_s_generation"),
                                b.get("wall_s"),
                                b.get("lines_per_s_wall"),
                                None,
                                None,
                            ]
                        )
                    )
                for name, ours in _our_sides(run, first):
                    t = ours.get("throughput")
                    if not (t or "isolation" not in ours):
                        continue
                    t = t or {}
                    o = t.get("output") or {}
                    ts = t.get("timestamps") or {}
                    lines.append(
                        _row(
                            [
                                name + (" FAILED" if ours.get("failure") else ""),
                                run["round"],
                                o.get("ok"),
                                o.get("errors"),
                                o.get("missing"),
                                o.get("duplicates"),
                                o.get("wrong_token_count"),
                                ours.get("ready_after_s"),
                                t.get("created_to_completed_s"),
                                t.get("lines_per_s"),
                                None,
                                None,
                                ts.get("created_to_in_progress_s"),
                                ts.get("in_progress_to_completed_s"),
                            ]
                        )
                    )
            lines += [
                "",
                "Baseline `batch s` is its generation phase (engine ready -> output written); "
                "ours' is create call -> poll that saw `completed` (the server already up). "
                "`engine start s` for ours: stack start to warmed up.",
                "",
                "Ratios ours / baseline lines/s (> 1 is better for us; target >= "
                f"{THROUGHPUT_TARGET}x the generation phase):",
                "",
                "| baseline | round | vs generation | vs wall (incl. engine start) | target |",
                "| --- | --- | --: | --: | --- |",
            ]
            for base, c in model["comparison"]["throughput"].items():
                for r in c["per_round"]:
                    lines.append(_row([base, r["round"], r["vs_generation"], r["vs_wall"], ""]))
                verdict = c[f"ours >= {THROUGHPUT_TARGET}x"]
                lines.append(
                    _row(
                        [
                            base,
                            "median",
                            c["median"]["vs_generation"],
                            c["median"]["vs_wall"],
                            f"ours >= {THROUGHPUT_TARGET}x: {_fmt(verdict)}",
                        ]
                    )
                )
            variants = model["comparison"].get("variants") or {}
            if variants:
                lines += [
                    "",
                    f"Ratios lines/s / {first}'s, the same rounds (> 1: faster than {first}):",
                    "",
                    "| ours kind | round | ratio |",
                    "| --- | --- | --: |",
                ]
                for kind, c in variants.items():
                    lines += [_row([kind, r["round"], r["ratio"]]) for r in c["per_round"]]
                    lines.append(_row([kind, "median", c["median"]]))
            lines.append("")
        if model["isolation"]:
            lines += [
                f"Isolation: {report['online_concurrency']} streaming chat clients, "
                f"{report['online_s']} s, max_tokens {report['online_max_tokens']}; the batch "
                f"{report['isolation_lines']} lines.",
                "",
                "| round | phase | ok | err | TTFT p50 ms | TTFT p90 ms | tok/s "
                "| batch lines done (window) | batch active throughout |",
                "| --: | --- | --: | --: | --: | --: | --: | --- | --- |",
            ]
            for run in model["runs"]:
                iso = (run.get("ours") or {}).get("isolation") or {}
                for phase, r in iso.items():
                    window = (
                        f"{r['batch_lines_done_at_start']} -> {r['batch_lines_done_at_end']}"
                        if phase == "with_batch"
                        else None
                    )
                    lines.append(
                        _row(
                            [
                                run["round"],
                                phase,
                                r["requests_ok"],
                                r["errors"],
                                r["ttft_ms"]["p50"],
                                r["ttft_ms"]["p90"],
                                r["output_tok_s"],
                                window,
                                r.get("batch_active_throughout"),
                            ]
                        )
                    )
            c = model["comparison"]["isolation"]
            lines += [
                "",
                "Ratios with a batch / alone (TTFT: target <= "
                f"{TTFT_TARGET}x; tok/s: target >= {TOK_S_TARGET}x):",
                "",
                "| round | TTFT p50 | tok/s | targets |",
                "| --- | --: | --: | --- |",
            ]
            for r in c["per_round"]:
                lines.append(_row([r["round"], r["ttft_p50"], r["tok_s"], ""]))
            targets = ", ".join(
                f"{k}: {_fmt(v)}" for k, v in c.items() if k not in ("per_round", "median")
            )
            lines.append(_row(["median", c["median"]["ttft_p50"], c["median"]["tok_s"], targets]))
            lines.append("")
        failures = [
            f"round {run['round']} {name}: {str(side.get('failure')).splitlines()[0][:300]}"
            for run in model["runs"]
            for name, side in [
                *((run.get("baselines") or {}).items()),
                *_our_sides(run, first),
            ]
            if side.get("failure")
        ]
        if failures:
            lines += ["Failures:", "", *(f"- {f}" for f in failures), ""]
        stops = [
            f"round {run['round']} {name}: "
            + (
                "clean"
                if side["stop"]["clean"] and not side["stop"]["left_after_graceful_stop"]
                else f"left after graceful stop {len(side['stop']['left_after_graceful_stop'])}"
                f", after kill {len(side['stop']['left_after_kill'])}"
            )
            for run in model["runs"]
            for name, side in [
                *((run.get("baselines") or {}).items()),
                *_our_sides(run, first),
            ]
            if side.get("stop")
        ]
        lines += ["Stop and leak check: " + ("; ".join(stops) or "-"), ""]
    return "\n".join(lines)


def report_ok(report: dict[str, Any]) -> bool:
    """No side failed, every output checked, no process left."""
    for model in report["models"]:
        for run in model["runs"]:
            sides = [*(run.get("baselines") or {}).values()]
            sides += [side for _, side in _our_sides(run)]
            for side in sides:
                if side.get("failure") or not side.get("stop", {}).get("clean", True):
                    return False
                out = side.get("output") or (side.get("throughput") or {}).get("output")
                if out is not None and not out["valid"]:
                    return False
                if any(p.get("errors") for p in (side.get("isolation") or {}).values()):
                    return False
    return True


# ---------------------------------------------------------------------------- main


def _interrupt(*_: Any) -> None:
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--models", default="tiny,gemma", help="comma list of tiny,gemma")
    parser.add_argument("--lines", type=int, default=1000)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--prompt-words", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--only", choices=("throughput", "isolation"), default=None, help="one measurement only"
    )
    parser.add_argument(
        "--sides",
        default="baseline,ours",
        help="comma list of baseline,ours (throughput): e.g. baseline alone for a smoke run",
    )
    parser.add_argument(
        "--baselines",
        default="run-batch,run-batch-uniproc",
        help="comma list of " + ",".join(BASELINES),
    )
    parser.add_argument(
        "--isolation-models", default="gemma", help="models whose isolation is measured"
    )
    parser.add_argument("--isolation-lines", type=int, default=None, help="default: --lines")
    parser.add_argument("--isolation-settle-s", type=float, default=3.0)
    parser.add_argument("--online-s", type=float, default=60.0)
    parser.add_argument("--online-concurrency", type=int, default=4)
    parser.add_argument("--online-max-tokens", type=int, default=64)
    parser.add_argument("--poll-s", type=float, default=0.5)
    parser.add_argument(
        "--warmup-lines",
        type=int,
        default=8,
        help="a batch of this many lines through ours before the measured one (0: none)",
    )
    parser.add_argument("--batch-timeout", type=float, default=3600.0)
    parser.add_argument("--start-timeout", type=float, default=900.0)
    parser.add_argument("--threads-bind", default="auto", help="VLLM_CPU_OMP_THREADS_BIND")
    parser.add_argument(
        "--ours-ingress-args",
        type=json.loads,
        default={},
        help="JSON merged into our ingress app's args (e.g. the Batch API's settings)",
    )
    parser.add_argument(
        "--ours-kind",
        default="ours",
        help="comma list of bench/servers.py's servers for our side (ours, "
        + ", ".join(OURS_KINDS[1:])
        + "; ours-1thread: the engine on Ray's one thread instead of cpu_threads: all): "
        "the first is compared with the baselines, the others with the first, each round",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    parser.add_argument(
        "--normal-client",
        action="store_true",
        help="leave the load client at normal priority (see load.py)",
    )
    args = parser.parse_args()
    from llm_bench import MODELS, has_gpu, machine_info, resolve_model
    from load import prioritize_client

    models = [m for m in args.models.split(",") if m]
    sides = [s for s in args.sides.split(",") if s]
    baselines = [b for b in args.baselines.split(",") if b]
    kinds = [k for k in args.ours_kind.split(",") if k]
    iso_models = {m for m in args.isolation_models.split(",") if m}
    unknown = (
        [m for m in models if m not in MODELS]
        + [s for s in sides if s not in SIDES]
        + [b for b in baselines if b not in BASELINES]
        + [k for k in kinds if k not in OURS_KINDS]
    )
    if unknown or not kinds or len(set(kinds)) < len(kinds):
        parser.error(f"unknown or repeated model, side, baseline or ours kind: {unknown or kinds}")
    do_throughput = args.only in (None, "throughput")
    do_isolation = args.only in (None, "isolation") and "ours" in sides
    if "baseline" not in sides or not do_throughput:
        baselines = []
    args.isolation_lines = args.isolation_lines or args.lines
    args.gpu = has_gpu()
    signal.signal(signal.SIGTERM, _interrupt)

    started = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log_dir = Path(tempfile.gettempdir()) / "batch-bench-logs" / started
    log_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    client = "normal (--normal-client)" if args.normal_client else prioritize_client()
    report: dict[str, Any] = {
        "started": started,
        "command": " ".join([".venv/bin/python", "bench/batch_bench.py", *sys.argv[1:]]),
        "machine": machine_info(),
        "client_scheduling": client,
        "lines": args.lines,
        "max_tokens": args.max_tokens,
        "prompt_words": args.prompt_words,
        "rounds": args.rounds,
        "sides": sides,
        "baselines": baselines,
        "only": args.only,
        "poll_s": args.poll_s,
        "warmup_lines": args.warmup_lines,
        "online_s": args.online_s,
        "online_concurrency": args.online_concurrency,
        "online_max_tokens": args.online_max_tokens,
        "isolation_lines": args.isolation_lines,
        "ours_ingress_args": args.ours_ingress_args,
        "ours_kinds": kinds,
        "logs": str(log_dir),
        "models": [],
    }
    files = Path(tempfile.mkdtemp(prefix="batch-bench-"))
    try:
        for key in models:
            spec = resolve_model(key)
            print(f"== {key}: {spec.name} from {spec.path}", flush=True)
            lines = make_batch_lines(
                args.lines, spec.name, args.max_tokens, args.prompt_words, args.seed
            )
            ids = [x["custom_id"] for x in lines]
            input_path = files / f"{key}-input.jsonl"
            input_path.write_text(to_jsonl(lines))
            iso_path = None
            isolation = do_isolation and key in iso_models
            if isolation:
                iso_path = files / f"{key}-isolation.jsonl"
                iso_path.write_text(
                    to_jsonl(
                        make_batch_lines(
                            args.isolation_lines,
                            spec.name,
                            args.max_tokens,
                            args.prompt_words,
                            args.seed + 1,
                        )
                    )
                )
            ours_throughput = do_throughput and "ours" in sides
            entry: dict[str, Any] = {
                "spec": {
                    "key": key,
                    "name": spec.name,
                    "source": spec.source,
                    "path": str(spec.path),
                    "engine_kwargs": spec.engine_kwargs,
                },
                "engine_env": engine_env(spec, args.threads_bind),
                "input_bytes": input_path.stat().st_size,
                "throughput": do_throughput,
                "isolation": isolation,
                "runs": [],
            }
            report["models"].append(entry)  # so that an interrupted run reports its rounds
            for r in range(1, args.rounds + 1):
                run: dict[str, Any] = {"round": r, "baselines": {}}
                entry["runs"].append(run)
                for name in baselines:
                    run["baselines"][name] = run_baseline(
                        name, spec, input_path, ids, args, log_dir, f"{key} r{r}"
                    )
                if ours_throughput or isolation:
                    # The first kind is the one compared with the baselines; the others
                    # run in the same round, the order turning from round to round.
                    turn = (r - 1) % len(kinds)
                    for kind in kinds[turn:] + kinds[:turn]:
                        side = run_ours(
                            spec,
                            input_path,
                            iso_path if kind == kinds[0] else None,
                            ids,
                            args,
                            log_dir,
                            f"{key} r{r}" + (f" [{kind}]" if len(kinds) > 1 else ""),
                            r,
                            ours_throughput,
                            kind,
                        )
                        if kind == kinds[0]:
                            run["ours"] = side
                        else:
                            run.setdefault("ours_variants", {})[kind] = side
            entry["comparison"] = {
                "throughput": throughput_comparison(entry["runs"], baselines)
                if ours_throughput
                else {},
                "isolation": isolation_comparison(entry["runs"]) if isolation else {},
                "variants": variant_comparison(entry["runs"], kinds[1:]),
            }
    except KeyboardInterrupt:  # SIGTERM too: the side running was stopped; report the rest
        report["interrupted"] = True
        for entry in report["models"]:
            entry.setdefault("comparison", {"throughput": {}, "isolation": {}})
        print("interrupted: writing what was measured", flush=True)
    finally:
        shutil.rmtree(files, ignore_errors=True)
    report["machine"]["load_average_end"] = os.getloadavg()
    report["total_s"] = round(time.monotonic() - t0, 1)
    path = out / f"batch-{started}"
    path.with_suffix(".json").write_text(json.dumps(report, indent=2, default=str))
    md = markdown(report)
    path.with_suffix(".md").write_text(md)
    print(md)
    print(f"wrote {path}.json, .md (logs in {log_dir})")
    return 0 if report_ok(report) and not report.get("interrupted") else 1


if __name__ == "__main__":
    sys.exit(main())
