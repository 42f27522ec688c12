"""Why a model does not serve yet, in client words: Serve's "cannot be scheduled" message
read for its numbers only, a replica without a worker, published startup progress,
and the statuses that need no replica detail."""

from __future__ import annotations

import pytest

from deployments.contract import StartupProgress
from ingress.status import PLACEMENT_GRACE_S, needs_text, pending_resources, status_message
from tests.e2e.internals import assert_no_internals

NOW = 1_000_000.0


def serve_scheduling_message(required: str, available: str) -> str:
    """What Serve 2.60 writes into a deployment's message (deployment_state.py)."""
    return (
        "Deployment 'LLM:tiny-llama-1' in application 'never-ready' has 1 replicas that "
        "have taken more than 30s to be scheduled. This may be due to waiting for the "
        "cluster to auto-scale or for a runtime environment to be installed. "
        f"Resources required for each replica: {required}, "
        f"total resources available: {available}. Use `ray status` for more details."
    )


@pytest.mark.parametrize(
    "required, available, expected",
    [
        ('{"CPU": 1.0}', '{"CPU": 0.0}', "waiting for resources: needs CPU 1, cluster has 0 free"),
        # A resource no node has is missing from "available" altogether.
        (
            '{"CPU": 0.5, "no_such_resource": 1.0}',
            '{"CPU": 1.5}',
            "waiting for resources: needs CPU 0.5, no_such_resource 1; "
            "cluster has CPU 1.5, no_such_resource 0 free",
        ),
        (
            '{"memory": 4294967296.0}',
            '{"memory": 1073741824.0}',
            "waiting for resources: needs memory 4 GiB, cluster has 1 GiB free",
        ),
        # Placement group bundles: summed; Serve gives no free counts for them.
        (
            '[{"CPU": 1.0, "GPU": 1.0}, {"GPU": 1.0}]',
            "{}",
            "waiting for resources: needs CPU 1, GPU 2 in 2 bundles",
        ),
        # Host-naming and internal resources are not shown.
        (
            '{"CPU": 1.0, "node:10.0.0.7": 0.001, "CPU_group_0_8f3a": 1.0}',
            '{"CPU": 0.0}',
            "waiting for resources: needs CPU 1, cluster has 0 free",
        ),
        ("{not json}", "{}", "waiting for resources"),
    ],
)
def test_serve_scheduling_message_becomes_needs_and_free(required, available, expected):
    text = pending_resources(serve_scheduling_message(required, available))
    assert text == expected
    assert_no_internals(text)


def test_other_serve_messages_are_not_about_resources():
    for message in (
        "",
        "Deployment 'X' in application 'Y' has 1 replicas that have taken more than 30s "
        "to initialize.\nThis may be caused by a slow __init__ or reconfigure method.",
        'Traceback (most recent call last):\n  File "/work/x.py"',
    ):
        assert pending_resources(message) is None


def _message(**overrides):
    kwargs = {
        "status": "DEPLOYING",
        "running": 0,
        "target": 1,
        "serve_message": "",
        "required": {"CPU": 1.0},
        "replicas": [],
        "progress": None,
        "now": NOW,
    }
    kwargs.update(overrides)
    return status_message(**kwargs)


def _replica(pid=None, age_s=60.0, state="STARTING"):
    return {"state": state, "pid": pid, "start_time_s": NOW - age_s, "replica_id": "r1"}


def test_a_serving_application_needs_no_message():
    assert _message(status="RUNNING", running=1, target=1) is None
    assert _message(status="UNHEALTHY", running=2, target=2) is None


@pytest.mark.parametrize(
    "status, running, target, start",
    [
        ("DEPLOY_FAILED", 0, 1, "deploy failed"),
        ("UNHEALTHY", 0, 1, "unhealthy"),
        ("DELETING", 0, 0, "being deleted"),
        ("RUNNING", 0, 0, "scaled to zero"),
    ],
)
def test_statuses_that_say_it_all(status, running, target, start):
    serve_text = 'Traceback: File "/work/x.py", pid=42, ip 10.1.2.3'
    text = _message(status=status, running=running, target=target, serve_message=serve_text)
    assert text is not None and text.startswith(start)
    assert_no_internals(text)


def test_published_progress_is_shown_while_a_replica_starts():
    progress = StartupProgress(doing="preparing model: converting weights", step=3, total=5)
    text = _message(replicas=[_replica(pid=7)], progress=progress)
    assert text == "preparing model: converting weights (3/5)"


def test_a_replica_without_a_worker_is_waiting_to_be_placed_after_the_grace():
    young = _replica(age_s=PLACEMENT_GRACE_S / 2)
    assert _message(replicas=[young]) == "starting"
    old = _replica(age_s=PLACEMENT_GRACE_S + 1)
    assert _message(replicas=[old], required={"CPU": 0, "gpu_slot": 1.0}) == (
        "waiting to be placed: needs gpu_slot 1"
    )


def test_serves_numbers_win_while_the_replica_has_no_worker():
    serve_text = serve_scheduling_message('{"CPU": 1.0}', '{"CPU": 0.0}')
    assert _message(replicas=[_replica()], serve_message=serve_text) == (
        "waiting for resources: needs CPU 1, cluster has 0 free"
    )
    # Placed since (it has a process): Serve's message is stale until the deployment
    # changes status, so it no longer counts.
    assert _message(replicas=[_replica(pid=7)], serve_message=serve_text) == "starting"


def test_needs_text_without_free_counts():
    assert needs_text({"CPU": 2, "GPU": 1}, None) == "needs CPU 2, GPU 1"
    assert needs_text({"CPU": 0}, {}) == ""
