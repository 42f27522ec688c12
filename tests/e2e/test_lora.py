"""Versions as LoRA adapters, through real Serve and the real vLLM engine on CPU: each
adapter reaches its own weights, Serve keeps an adapter on the replica that loaded it,
LRU eviction reloads without failing a request, a `serve deploy` that changes only the
adapters reaches the running replicas in place, and a corrupt adapter fails alone.

The application is deployed the way `serve deploy serve_config.yaml` does it (a
declarative config), since only that path applies a user_config change in place."""

from __future__ import annotations

import collections
import time
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import delete_app, driver_handle, tiny_llm_args

pytestmark = pytest.mark.e2e

APP = "tiny-lora"
MODEL = "tiny/lora"
BASE = "base"
DEPLOYMENT = "LLM:tiny-lora-base"  # deployments/options.py deployment_name
PROMPT = "Once upon a time"
# Five good adapters over two replicas that keep two each (max_cpu_loras): cycling
# through them must evict and reload.
GOOD = {f"a{seed}": f"fixture:tiny-lora?seed={seed}&base_seed=0" for seed in range(1, 6)}


def _adapters(corrupt_dir: Path, **changes: str | None) -> list[dict]:
    sources = {**GOOD, "broken": str(corrupt_dir), **changes}
    return [{"version": v, "source": s} for v, s in sources.items() if s is not None]


def _config(adapters: list[dict]) -> dict:
    args = tiny_llm_args(model=MODEL, version=BASE)
    args["engine"]["engine_kwargs"].update(
        enable_lora=True, max_loras=1, max_cpu_loras=2, max_lora_rank=8
    )
    args["deployment"]["num_replicas"] = 2
    return {
        "applications": [
            {
                "name": APP,
                "route_prefix": None,
                "import_path": "deployments.llm.builder:build_app",
                "args": args,
                # Where an in-place adapter change goes (docs/api.md "Versions as adapters").
                "deployments": [{"name": DEPLOYMENT, "user_config": {"adapters": adapters}}],
            }
        ]
    }


def _deploy(config: dict) -> None:
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    _get_global_client().deploy_apps(ServeDeploySchema.model_validate(config))


def _wait_running(timeout_s: float = 240) -> None:
    from ray import serve

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        app = serve.status().applications.get(APP)
        if app is not None and app.status == "RUNNING":
            return
        assert app is None or app.status != "DEPLOY_FAILED", app.message
        time.sleep(1)
    raise AssertionError(f"{APP} not RUNNING after {timeout_s} s")


def _stats() -> dict[str, dict]:
    """Each replica's stats (by replica id): calls land on either replica at random."""

    handle = driver_handle(APP)
    seen: dict[str, dict] = {}
    for _ in range(40):
        s = handle.stats.remote().result()
        seen[s["replica"]] = s
        if len(seen) == 2 and _ > 10:
            break
    assert len(seen) == 2, seen.keys()
    return seen


def _loads() -> collections.Counter:
    total: collections.Counter = collections.Counter()
    for s in _stats().values():
        total.update(s["adapter_loads"])
    return total


def _greedy(client, model: str) -> str:
    r = client.completions.create(model=model, prompt=PROMPT, max_tokens=12, temperature=0)
    return r.choices[0].text


@pytest.fixture(scope="module")
def lora_app(openai_stack, tmp_path_factory):

    corrupt = tmp_path_factory.mktemp("corrupt-adapter")
    (corrupt / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 8')  # cut short
    (corrupt / "adapter_model.safetensors").write_bytes(b"\x00garbage" * 100)
    _deploy(_config(_adapters(corrupt)))
    _wait_running()
    deadline = time.monotonic() + 30  # the ingress's catalog refresh
    while _status(openai_stack, f"{MODEL}:a1") != "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.2)
    yield corrupt
    delete_app(APP)


def _status(base: str, model: str) -> str | None:
    """The model's status in /models (listed as soon as deployed, RUNNING later)."""
    found = httpx.get(f"{base}/models/{model}")
    return found.json().get("status") if found.status_code == 200 else None


def _model_ids(base: str) -> set[str]:
    return {m["id"] for m in httpx.get(f"{base}/models").json()["data"]}


def test_each_adapter_reaches_its_own_weights(client, openai_stack, lora_app):
    listed = {m["id"]: m for m in httpx.get(f"{openai_stack}/models").json()["data"]}
    a1 = listed[f"{MODEL}:a1"]
    assert (a1["version"], a1["base_version"], a1["task"]) == ("a1", BASE, "chat")
    assert a1["status"] == "RUNNING" and a1["deploy_id"] == APP
    assert f"deploy_id:{APP}/a1" in listed
    assert listed[MODEL]["version"] == BASE  # no adapter is the default here
    assert listed[f"{MODEL}:{BASE}"]["base_version"] is None

    base = _greedy(client, f"{MODEL}:{BASE}")
    first = _greedy(client, f"{MODEL}:a1")
    second = _greedy(client, f"{MODEL}:a2")
    print(f"\nbase {base!r}\na1   {first!r}\na2   {second!r}")
    assert len({base, first, second}) == 3  # three sets of weights, three answers
    assert _greedy(client, f"{MODEL}:{BASE}") == base  # greedy: the same on repeat
    assert _greedy(client, f"{MODEL}:a1") == first
    assert _greedy(client, f"{MODEL}:a2") == second
    assert _greedy(client, f"deploy_id:{APP}/a1") == first
    assert _greedy(client, MODEL) == base


def test_adapter_versions_serve_chat_and_completions_streamed_and_not(client, lora_app):
    model = f"{MODEL}:a2"
    messages = [{"role": "user", "content": "Hello!"}]
    whole = client.chat.completions.create(
        model=model, messages=messages, max_tokens=10, temperature=0
    )
    assert whole.model == model and whole.choices[0].message.content
    streamed = client.chat.completions.create(
        model=model, messages=messages, max_tokens=10, temperature=0, stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    assert text == whole.choices[0].message.content
    base = client.chat.completions.create(
        model=f"{MODEL}:{BASE}", messages=messages, max_tokens=10, temperature=0
    )
    assert base.choices[0].message.content != text
    pieces = client.completions.create(
        model=model, prompt=PROMPT, max_tokens=12, temperature=0, stream=True
    )
    assert "".join(c.choices[0].text for c in pieces) == _greedy(client, model)


def test_an_adapter_sticks_to_the_replica_that_loaded_it(client, lora_app):
    _greedy(client, f"{MODEL}:a3")
    time.sleep(2)  # the replica reports its loaded adapters to the routers
    before = _stats()
    for _ in range(12):
        _greedy(client, f"{MODEL}:a3")
    after = _stats()
    holders = {r for r, s in after.items() if s["adapter_loads"].get("a3")}
    print(f"\nloads of a3 by replica: { {r[-6:]: s['adapter_loads'] for r, s in after.items()} }")
    assert len(holders) == 1  # one replica loaded it, the other never did
    assert sum(s["adapter_loads"].get("a3", 0) for s in after.values()) == sum(
        s["adapter_loads"].get("a3", 0) for s in before.values()
    )  # twelve more requests, no new load


def test_more_adapters_than_fit_evict_and_reload_without_failing(client, lora_app):
    expected = {v: _greedy(client, f"{MODEL}:{v}") for v in GOOD}
    before = sum(_loads().values())
    for _ in range(3):
        for version, text in expected.items():
            assert _greedy(client, f"{MODEL}:{version}") == text
    reloads = sum(_loads().values()) - before
    print(f"\n15 requests over 5 adapters, 2 replicas x 2 slots: {reloads} reloads")
    assert reloads > 0  # 5 adapters do not fit in 4 slots: the LRU evicted some


def test_a_corrupt_adapter_fails_alone(client, lora_app):
    with pytest.raises(openai.InternalServerError) as info:
        _greedy(client, f"{MODEL}:broken")
    assert info.value.status_code == 503
    body = info.value.body if isinstance(info.value.body, dict) else {}
    assert "cannot be loaded" in str(body.get("message")), body
    assert str(lora_app) not in str(body)  # no path in the body
    assert _greedy(client, f"{MODEL}:{BASE}") and _greedy(client, f"{MODEL}:a1")


def test_a_config_change_reaches_the_running_replicas_in_place(client, openai_stack, lora_app):
    replicas = {r: s["engine"] for r, s in _stats().items()}
    kept = _greedy(client, f"{MODEL}:a1")
    added = "fixture:tiny-lora?seed=7&base_seed=0"
    _deploy(_config(_adapters(lora_app, a5=None, a7=added)))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ids = _model_ids(openai_stack)
        if f"{MODEL}:a7" in ids and f"{MODEL}:a5" not in ids:
            break
        time.sleep(0.2)
    print(f"\ncatalog updated {30 - (deadline - time.monotonic()):.1f} s after the deploy")
    assert f"{MODEL}:a7" in _model_ids(openai_stack)
    assert _greedy(client, f"{MODEL}:a7") not in ("", kept)
    assert _greedy(client, f"{MODEL}:a1") == kept
    with pytest.raises(openai.NotFoundError):
        _greedy(client, f"{MODEL}:a5")
    _wait_running()
    # The same two replica actors, each with the engine it started with.
    assert {r: s["engine"] for r, s in _stats().items()} == replicas
