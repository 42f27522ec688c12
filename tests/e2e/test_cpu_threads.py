"""`engine.cpu_threads` through real Serve: an LLM application on the tiny model whose
engine computes with 2 OpenMP threads, beside the shared tiny application, which keeps
the one thread Ray's `num_cpus: 1` gives its replica. Read from each engine process's
own environment (vLLM spawns the engine core from the replica, which set the count just
before) and checked to answer through the ingress."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import TINY_APP, delete_app, tiny_llm_args

pytestmark = pytest.mark.e2e

THREADS_APP, THREADS_MODEL = "tiny-threads", "tiny/threads"


def _omp_threads_of_engines(app: str) -> list[str]:
    """OMP_NUM_THREADS of every vLLM engine core process started by a replica of `app`
    (its process title is `ray::ServeReplica:<app>:...`)."""
    by_pid: dict[int, tuple[int, str, dict[str, str]]] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            title = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            raw = (proc / "environ").read_bytes()
        except (OSError, ValueError):
            continue
        env = dict(kv.split("=", 1) for kv in raw.decode(errors="replace").split("\0") if "=" in kv)
        by_pid[int(proc.name)] = (ppid, title, env)
    replicas = {pid for pid, (_, title, _) in by_pid.items() if f"ServeReplica:{app}:" in title}
    return [
        env.get("OMP_NUM_THREADS", "")
        for ppid, title, env in by_pid.values()
        if ppid in replicas and "EngineCore" in title
    ]


@pytest.fixture(scope="module")
def threads_app(openai_stack):
    from ray import serve

    from deployments.llm.builder import build_app

    args = tiny_llm_args(model=THREADS_MODEL)
    args["engine"] = {**args["engine"], "cpu_threads": 2}
    serve.run(build_app(args), name=THREADS_APP, route_prefix=None)
    yield
    delete_app(THREADS_APP)


def test_the_engine_computes_with_the_threads_its_config_asks_for(threads_app, client):
    r = client.chat.completions.create(
        model=THREADS_MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=4
    )
    assert r.choices[0].message.content is not None
    assert r.usage is not None and r.usage.completion_tokens > 0
    assert _omp_threads_of_engines(THREADS_APP) == ["2"]
    # The shared tiny app sets none: its engine keeps Ray's one thread (num_cpus: 1).
    assert _omp_threads_of_engines(TINY_APP) == ["1"]
