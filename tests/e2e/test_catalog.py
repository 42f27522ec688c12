"""The catalog: every addressing form, applications added and removed at run time,
scale from zero, requests that wait for starting replicas, and the wait bound."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from tests.conftest import TINY_MODEL, delete_app, tiny_llm_args
from tests.e2e.internals import assert_no_internals
from tests.waits import wait_until

pytestmark = pytest.mark.e2e

PROMPT = "Once upon a time"


def _greedy(client, model: str) -> str:
    r = client.completions.create(model=model, prompt=PROMPT, max_tokens=12, temperature=0)
    assert r.model == model  # echoes what the client asked for
    return r.choices[0].text


def _deploy_nowait(app, name: str) -> None:
    """Deploys without waiting for RUNNING (its replicas may never start)."""
    from ray import serve
    from ray.serve.api import RunTarget

    serve.run_many(
        [RunTarget(target=app, name=name, route_prefix=None)],
        wait_for_ingress_deployment_creation=False,
        wait_for_applications_running=False,
    )


def _model_ids(base: str) -> set[str]:
    return {m["id"] for m in httpx.get(f"{base}/models").json()["data"]}


V2_APP = "tiny-llama-v2"


def test_added_version_scales_from_zero_answers_by_every_form_and_goes_when_removed(
    client, openai_stack
):
    """Version 2 of the tiny model (other weights, seed 1), deployed while the ingress
    runs, with zero replicas until a request comes: listed within seconds; its first
    request waits for the replica to start, while /models says what that replica is
    doing (deployments/progress.py); every addressing form reaches the right version;
    deleted: 404 within seconds. One engine start for all of it."""
    from ray import serve

    from deployments.llm.builder import build_app

    args = tiny_llm_args(version="2", seed=1)
    args["deployment"]["autoscaling_config"] = {
        "min_replicas": 0,
        "initial_replicas": 0,
        "max_replicas": 1,
        "upscale_delay_s": 0,
        "downscale_delay_s": 600,
        "target_ongoing_requests": 4,
    }
    start = time.monotonic()
    _deploy_nowait(build_app(args), V2_APP)
    try:
        while f"deploy_id:{V2_APP}" not in _model_ids(openai_stack):
            assert time.monotonic() - start < 30
            time.sleep(0.1)
        listed_s = time.monotonic() - start
        while (listed := httpx.get(f"{openai_stack}/models/{TINY_MODEL}:2").json())[
            "status"
        ] != "RUNNING":
            assert time.monotonic() - start < 60, listed
            time.sleep(0.2)
        assert listed["running_replicas"] == 0 and listed["deploy_id"] == V2_APP
        assert listed["status_message"] == "scaled to zero: the next request starts a replica"

        start = time.monotonic()
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(_greedy, client, f"{TINY_MODEL}:2")  # waits for the replica
            seen = set()
            while not first.done():
                model = httpx.get(f"{openai_stack}/models/{TINY_MODEL}:2").json()
                seen.add(model["status_message"])
                assert time.monotonic() - start < 300, model
                time.sleep(0.2)
            v2 = first.result()
        cold = time.monotonic() - start
        print(
            f"\nnew version listed after {listed_s:.1f} s; from zero: first answer after {cold:.1f} s"
        )
        assert "starting engine (2/2)" in seen, seen
        # The catalog re-reads Serve every catalog_refresh_s: the replica that just
        # answered may still read "starting" there for a refresh or two.
        wait_until(
            lambda: (
                httpx.get(f"{openai_stack}/models/{TINY_MODEL}:2").json()["status_message"] is None
            ),
            "the catalog to show the woken version serving at full strength",
            timeout_s=15,
        )

        v1 = _greedy(client, f"{TINY_MODEL}:1")
        assert v1 != v2  # different weights answer differently
        assert _greedy(client, TINY_MODEL) == v1  # the declared default
        assert _greedy(client, f"deploy_id:{V2_APP}") == v2
        assert _greedy(client, "deploy_id:tiny-llama-v1") == v1

        serve.delete(V2_APP)
        start = time.monotonic()
        while f"deploy_id:{V2_APP}" in _model_ids(openai_stack):
            assert time.monotonic() - start < 30
            time.sleep(0.1)
        print(f"removed version gone after {time.monotonic() - start:.1f} s")
        for model in (f"{TINY_MODEL}:2", f"deploy_id:{V2_APP}"):
            with pytest.raises(openai.NotFoundError):
                client.completions.create(model=model, prompt="x", max_tokens=1)
    finally:
        delete_app(V2_APP)


def test_unknown_forms_are_404(client):
    for model in (f"{TINY_MODEL}:3", "tiny/llam", "deploy_id:nope", "deploy_id:openai"):
        with pytest.raises(openai.NotFoundError) as info:
            client.completions.create(model=model, prompt="x", max_tokens=1)
        assert info.value.body["code"] == "model_not_found" and model in info.value.body["message"]


def test_wait_bound_gives_503_with_retry_after(openai_stack):
    """An app whose replica can never be placed: /models says what it waits for, and
    the request waits its bound, then gets a shaped 503 with that reason, never a
    hang."""
    from ray import serve

    from deployments.llm.builder import build_app

    args = tiny_llm_args(model="tiny/never-ready", wait_timeout_s=2)
    args["deployment"]["ray_actor_options"]["resources"] = {"no-such-resource": 1}
    _deploy_nowait(build_app(args), "never-ready")
    # ingress/status.py: "waiting to be placed: needs ..." after its grace, then
    # "waiting for resources: needs ..., cluster has ... free" once Serve says so (30 s).
    needs = "needs CPU 1, no-such-resource 1"
    try:
        start = time.monotonic()
        while True:
            listed = httpx.get(f"{openai_stack}/models/tiny/never-ready")
            if listed.status_code == 200 and needs in (listed.json()["status_message"] or ""):
                break
            assert time.monotonic() - start < 60, listed.text
            time.sleep(0.5)
        print(
            f"\nunplaceable app shown as waiting after {time.monotonic() - start:.1f} s: "
            f"{listed.json()['status_message']}"
        )
        assert listed.json()["status"] == "DEPLOYING"
        for stream in (False, True):
            start = time.monotonic()
            r = httpx.post(
                f"{openai_stack}/completions",
                timeout=30,
                json={
                    "model": "tiny/never-ready",
                    "prompt": "x",
                    "max_tokens": 1,
                    "stream": stream,
                },
            )
            assert 2 <= time.monotonic() - start < 10
            assert r.status_code == 503 and int(r.headers["retry-after"]) > 0
            assert r.json()["error"]["code"] == "model_not_ready"
            assert "(waiting " in r.json()["error"]["message"]
            assert needs in r.json()["error"]["message"]
            assert_no_internals(r.text)
    finally:
        serve.delete("never-ready", _blocking=False)


def test_failed_app_gives_503_with_reason(openai_stack):
    from ray import serve

    from deployments.llm.builder import build_app

    args = tiny_llm_args(model="tiny/broken", model_source="/no/such/model/dir")
    args["deployment"]["max_constructor_retry_count"] = 1
    _deploy_nowait(build_app(args), "broken")
    try:
        deadline = time.monotonic() + 120
        while True:
            r = httpx.post(
                f"{openai_stack}/completions",
                timeout=60,
                json={"model": "tiny/broken", "prompt": "x", "max_tokens": 1},
            )
            if r.status_code == 503:
                break
            assert time.monotonic() < deadline, r.text
            time.sleep(0.5)
        err = r.json()["error"]
        assert err["code"] == "model_unavailable" and "deploy failed" in err["message"]
        # Serve's status text (traceback, paths, pids, IPs) stays in the log.
        assert "request id" in err["message"]
        assert_no_internals(r.text)
    finally:
        serve.delete("broken", _blocking=False)
