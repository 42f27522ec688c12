"""The two ways README starts the embedded default, as a new user starts them:

- `serve run serve_config.yaml` alone: a fresh local Ray (ray.init inside `serve run`,
  CPUs as detected, token auth on by Ray's default), every replica placed, each of
  the three models answering, /v1/openai/models showing the start's progress, and a
  Ctrl-C that leaves no Ray behind.
- `scripts/serve.sh`: prints the playground's and the API's URLs once the API is up,
  and leaves Ray's default address file alone (a later plain `serve run` must not
  chase its stopped head); stopped by Ctrl-C from a terminal, and by a plain `kill`
  when started in the background of another script (SIGINT ignored from birth).

Each runs in a temp dir of its own (Ray's temp dir, HOME), with the caches of this test
run (tests/conftest.py), on ports checked free.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import psutil
import pytest
import yaml
from servers import free_port  # bench/, on pytest's pythonpath

from tests.cluster.conftest import REPORT
from tests.cluster.listeners import (
    SERVE_REPLICA_METHOD,
    call_without_token,
    grpc_channel,
    listening,
    outward_ip,
)

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "serve_config.yaml"
START_BOUND_S = 1200  # Gemma's first conversion (~1-2 min) and three engine starts
PROGRESS = re.compile(r"\(\d+/\d+\)$")


def test_the_default_fits_two_cpus():
    """What serve_config.yaml asks of Ray's CPUs fits a 2-core laptop, ingress 0."""
    apps = yaml.safe_load(CONFIG.read_text())["applications"]
    cpus = {
        a["name"]: a["args"].get("deployment", {}).get("ray_actor_options", {}).get("num_cpus")
        for a in apps
    }
    assert cpus.pop("openai") is None  # the ingress's default: 0 (ingress/builder.py)
    assert sum(cpus.values()) <= 2, cpus


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _user_env(state: Path) -> dict[str, str]:
    """A new user's shell: scripts/test.sh's variables, no Ray settings of this test
    run (its token, an address), HOME and Ray's temp dir of the test's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    home = state / "home"
    home.mkdir(exist_ok=True)
    env.update(
        HOME=str(home),
        RAY_TMPDIR=str(state),  # Ray's temp dir is $RAY_TMPDIR/ray
        HF_HUB_OFFLINE="1",
        RAY_USAGE_STATS_ENABLED="0",
        VLLM_HOST_IP="127.0.0.1",
    )
    return env


def _config_on_free_port(state: Path) -> tuple[Path, int]:
    """serve_config.yaml itself when its port (8000) is free, else a copy on a free port
    (the only change)."""
    if _port_free(8000):
        return CONFIG, 8000
    port = free_port()
    text = CONFIG.read_text()
    assert text.count("  port: 8000\n") == 1
    copy = state / "serve_config.yaml"
    copy.write_text(text.replace("  port: 8000\n", f"  port: {port}\n"))
    return copy, port


def _descendants(proc: subprocess.Popen[bytes]) -> list[psutil.Process]:
    try:
        return psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _named(state: Path) -> list[psutil.Process]:
    """Processes whose command line names the state dir (Ray's own processes name
    their session dir there; workers rename themselves, hence `_descendants` too)."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(str(state) in part for part in p.info["cmdline"] or ()):
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _stop(
    proc: subprocess.Popen[bytes], state: Path, grace_s: float = 90, ctrl_c: bool = True
) -> float:
    """Ctrl-C as a user does (SIGINT to the process group), or with `ctrl_c=False` a
    plain `kill PID` (SIGTERM to the process alone), wait, then kill the group and
    whatever of its process tree is left. Returns how long the clean stop took.

    Raises:
        AssertionError: something had to be killed.
    """
    tree = _descendants(proc)
    start = time.monotonic()
    if ctrl_c:
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.terminate()
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        # What ran in process groups of its own (scripts/serve.sh's Ray head) too: a
        # failed test must not leave a Ray running beside the next ones.
        for p in {*tree, *_named(state)}:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                continue
        how = "Ctrl-C" if ctrl_c else "SIGTERM"
        pytest.fail(f"no clean stop within {grace_s:g} s of {how}")
    took = time.monotonic() - start
    deadline = time.monotonic() + 30
    while True:
        left = [p for p in {*tree, *_named(state)} if _alive(p)]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    names = []
    for p in left:
        try:
            names.append(p.name())
            p.kill()
        except psutil.NoSuchProcess:
            continue
    assert not names, f"left running after {'Ctrl-C' if ctrl_c else 'SIGTERM'}: {names}"
    return took


def _tail(path: Path, chars: int = 6000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


@pytest.fixture(scope="module")
def served() -> Iterator[dict]:
    """`serve run serve_config.yaml` from the repository root, as README says."""
    state = Path(tempfile.mkdtemp(prefix="osr-", dir="/tmp"))  # short: Ray's unix sockets
    config, port = _config_on_free_port(state)
    log_path = state / "serve-run.log"
    log = log_path.open("wb")
    started = time.monotonic()
    proc = subprocess.Popen(
        [str(ROOT / ".venv/bin/serve"), "run", str(config)],
        cwd=ROOT,
        env=_user_env(state),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        preexec_fn=_default_sigint,  # stopped with Ctrl-C below
    )
    info = {"proc": proc, "state": state, "log": log_path, "started": started}
    info["base"] = f"http://127.0.0.1:{port}/v1/openai"
    try:
        yield info
    finally:
        if proc.poll() is None:
            info["stop_s"] = _stop(proc, state)
        log.close()
        shutil.rmtree(state, ignore_errors=True)


def _models(base: str) -> list[dict] | None:
    try:
        r = httpx.get(f"{base}/models", timeout=5)
    except httpx.HTTPError:
        return None
    return r.json()["data"] if r.status_code == 200 else None


def test_serve_run_places_everything_and_each_model_answers(served):
    base, proc, log = served["base"], served["proc"], served["log"]
    started = served["started"]
    seen: dict[str, set[str]] = {}  # deploy_id → status messages seen while starting
    ready: dict[str, float] = {}
    api_up = peak = 0.0
    sampled = 0.0
    while True:
        assert proc.poll() is None, _tail(log)
        assert time.monotonic() - started < START_BOUND_S, (seen, _tail(log))
        models = _models(base)
        if models is not None:
            api_up = api_up or time.monotonic() - started
            failed = [m for m in models if m["status"] in ("DEPLOY_FAILED", "UNHEALTHY")]
            assert not failed, (failed[0], _tail(log))
            for m in models:
                if m["status"] == "RUNNING" and m["status_message"] is None:
                    ready.setdefault(m["deploy_id"], time.monotonic() - started)
                elif m["status_message"]:
                    seen.setdefault(m["deploy_id"], set()).add(m["status_message"])
            if models and len(ready) == len({m["deploy_id"] for m in models}):
                break
        if time.monotonic() - sampled > 5:  # reading every process's smaps costs CPU
            sampled = time.monotonic()
            peak = max(peak, sum(_pss(p) for p in [psutil.Process(proc.pid), *_descendants(proc)]))
        time.sleep(1)
    assert set(ready) == {"gemma-3-270m-q4km", "all-minilm-l6-v2", "tiny-flux-random"}
    # Nothing ever waited for CPUs: the default fits the CPUs Ray detected.
    assert not any(m.startswith("waiting") for ms in seen.values() for m in ms), seen
    # The long start showed its steps (deployments/progress.py, ingress/status.py).
    assert any(PROGRESS.search(m) for m in seen.get("gemma-3-270m-q4km", ())), seen
    # Ray's default for a new local cluster: token authentication, its token in HOME.
    assert (served["state"] / "home" / ".ray" / "auth_token").is_file()

    client = openai.OpenAI(base_url=base, api_key="unused", max_retries=0, timeout=300)
    t = time.monotonic()
    chat = client.chat.completions.create(
        model="google/gemma-3-270m",
        messages=[{"role": "user", "content": "Say hello."}],
        max_tokens=8,
        temperature=0,
    )
    assert chat.choices[0].message.content
    embedding = client.embeddings.create(
        model="sentence-transformers/all-MiniLM-L6-v2", input=["cat"]
    )
    assert len(embedding.data[0].embedding) == 384
    image = client.images.generate(prompt="a lighthouse", size="256x256")
    assert base64.b64decode(image.data[0].b64_json).startswith(b"\x89PNG")
    answers_s = time.monotonic() - t
    # The Responses API and a batch on the embedded default (its state store and files
    # in this run's HOME).
    t = time.monotonic()
    response = client.responses.create(
        model="google/gemma-3-270m", input="Say hello.", max_output_tokens=8
    )
    assert response.output_text and client.responses.retrieve(response.id).id == response.id
    lines = [
        {
            "custom_id": f"c{i}",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": "sentence-transformers/all-MiniLM-L6-v2", "input": f"text {i}"},
        }
        for i in range(3)
    ]
    upload = "".join(json.dumps(line) + "\n" for line in lines).encode()
    file = client.files.create(file=("in.jsonl", upload), purpose="batch")
    batch = client.batches.create(
        input_file_id=file.id, endpoint="/v1/embeddings", completion_window="24h"
    )
    while batch.status not in ("completed", "failed", "expired", "cancelled"):
        assert time.monotonic() - t < 300, batch
        time.sleep(1)
        batch = client.batches.retrieve(batch.id)
    assert batch.status == "completed", batch
    assert batch.output_file_id is not None
    out = [json.loads(x) for x in client.files.content(batch.output_file_id).text.splitlines()]
    assert sorted(x["custom_id"] for x in out) == ["c0", "c1", "c2"]
    stateful_s = time.monotonic() - t

    stop_s = _stop(proc, served["state"])
    REPORT.append(
        f"serve run serve_config.yaml: API up {api_up:.0f} s, models ready "
        + ", ".join(f"{d} {s:.0f} s" for d, s in sorted(ready.items(), key=lambda x: x[1]))
        + f"; three answers {answers_s:.1f} s; a stored response and a 3-line batch "
        f"{stateful_s:.1f} s; Ctrl-C to no Ray left {stop_s:.1f} s; "
        f"peak memory of its process tree {peak / 2**30:.1f} GiB (PSS, sampled every 5 s)"
    )
    REPORT.append(f"  status messages seen: {seen}")


def _pss(proc: psutil.Process) -> int:
    """Proportional set size: shared pages (torch's libraries in every process) are
    counted once across the tree, not once per process as RSS would."""
    try:
        return int(proc.memory_full_info().pss)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return 0


INGRESS_ONLY = """\
proxy_location: HeadOnly
http_options: {{host: 127.0.0.1, port: {port}}}
applications:
  - name: openai
    route_prefix: /
    import_path: ingress.builder:build_app
    args: {{auth: {{enabled: false}}}}
"""


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _default_sigint() -> None:
    """SIGINT as a terminal's foreground command has it, whatever this pytest inherited: a
    test suite started in the background of a non-interactive shell (`bash .ci/run &`) runs
    with SIGINT ignored, which its children inherit; then `serve run` (Python installs no
    KeyboardInterrupt handler for an ignored SIGINT) and scripts/serve.sh (a shell cannot
    trap a signal ignored on entry) would never see the Ctrl-C these tests send."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _assert_loopback_or_token(root_pid: int) -> list[str]:
    """Every listening TCP socket of scripts/serve.sh's processes (its Ray head and all
    Ray started, `serve run`, HAProxy) is on loopback, or refuses a peer without Ray's
    token; and those off loopback are exactly the Serve replicas' gRPC servers for calls
    between deployments, one per replica: Ray 2.60 binds them to "[::]:0" with no
    setting to change it (serve/_private/replica.py, `_on_initialized`), behind Ray's
    token. Probed at this machine's outward address, as a peer would reach them.
    Returns one line per socket for the report."""
    import grpc

    peer = outward_ip() or "127.0.0.1"
    sockets = listening(root_pid)
    lines, off = [], []
    for s in sockets:
        where = f"{s.ip}:{s.port} {s.title or s.name} (pid {s.pid})"
        if s.loopback:
            lines.append(f"{where}: loopback")
            continue
        channel = grpc_channel(peer, s.port)
        assert channel is not None, f"{where} is off loopback and no gRPC server at {peer}"
        code = call_without_token(channel, SERVE_REPLICA_METHOD)
        channel.close()
        assert code == grpc.StatusCode.UNAUTHENTICATED, f"{where} at {peer}: {code}"
        lines.append(f"{where}: off loopback, {SERVE_REPLICA_METHOD} without a token: {code.name}")
        off.append(s)
    replicas = set()
    for p in psutil.Process(root_pid).children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            if " ".join(p.cmdline()[:1]).startswith("ray::ServeReplica:"):
                replicas.add(p.pid)
    assert replicas, lines
    assert sorted(s.pid for s in off) == sorted(replicas), lines
    return lines


@pytest.mark.parametrize(
    "how",
    [
        # From a terminal, stopped with Ctrl-C; with HAProxy in front (its switch): the
        # Python proxy is what every other test here and tests/e2e run behind, so this
        # is CI's check of the opt-in path's start, its folder and its stop.
        "terminal-haproxy",
        # `scripts/serve.sh &` from another script (docs/performance.md "Idle CPU"): it inherits
        # SIGINT ignored and is stopped with a plain `kill` (SIGTERM to the script).
        "background",
    ],
)
def test_serve_sh_prints_where_things_are_and_leaves_ray_defaults_alone(how: str):
    haproxy: list[psutil.Process] = []
    behind_haproxy = how == "terminal-haproxy"
    state = Path(tempfile.mkdtemp(prefix="oss-", dir="/tmp"))
    try:
        port = free_port()
        config = state / "config.yaml"
        config.write_text(INGRESS_ONLY.format(port=port))
        env = {**os.environ, "RAY_TMPDIR": str(state), "RAY_PORT": str(free_port())}
        env["OPENAI_SERVE_RAY_TEMP_DIR"] = str(state / "head")
        env["OPENAI_SERVE_HAPROXY"] = "1" if behind_haproxy else "0"
        env["RAY_SERVE_HAPROXY_STATS_PORT"] = str(free_port())
        env["RAY_SERVE_HAPROXY_METRICS_PORT"] = str(free_port())
        # What an older serve.sh left behind: dropped, since it names our head's address.
        default_file = state / "ray" / "ray_current_cluster"
        default_file.parent.mkdir()
        default_file.write_text(f"127.0.0.1:{env['RAY_PORT']}")
        log_path = state / "serve.log"
        started = time.monotonic()
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [str(ROOT / "scripts/serve.sh"), str(config)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_default_sigint if behind_haproxy else _ignore_sigint,
            )
            try:
                while "All models are ready." not in _tail(log_path):
                    assert proc.poll() is None, _tail(log_path)
                    assert time.monotonic() - started < 300, _tail(log_path)
                    time.sleep(0.5)
                up_s = time.monotonic() - started
                # HAProxy in front, its config in the user's own folder (scripts/serve.sh).
                haproxy = [
                    p
                    for p in psutil.Process(proc.pid).children(recursive=True)
                    if p.name() == "haproxy"
                ]
                assert bool(haproxy) == behind_haproxy, _tail(log_path)
                folder = f"/tmp/oss-haproxy-{os.getuid()}/"
                for p in haproxy:
                    assert any(a.startswith(folder) for a in p.cmdline()), p.cmdline()
                answer = httpx.get(f"http://127.0.0.1:{port}/v1/openai/models", timeout=30)
                assert answer.status_code == 200, answer.text[:300]
                listeners = _assert_loopback_or_token(proc.pid)
            finally:
                stop_s = _stop(proc, state, ctrl_c=behind_haproxy)
        assert not [p for p in haproxy if _alive(p)], "HAProxy outlived scripts/serve.sh"
        out = log_path.read_text()
        assert f"playground  http://127.0.0.1:{port}/" in out
        assert f"API         http://127.0.0.1:{port}/v1/openai" in out
        assert not default_file.exists()  # and Ray wrote its address file elsewhere:
        assert (state / "head" / "ray_current_cluster").is_file()
        REPORT.append(
            f"scripts/serve.sh (ingress only, {how}): up {up_s:.0f} s, stop {stop_s:.1f} s"
        )
        REPORT.append(f"  listening ({len(listeners)}):")
        REPORT.extend(f"    {line}" for line in listeners)
    finally:
        shutil.rmtree(state, ignore_errors=True)
