"""Multi-node behaviour on a real Ray cluster: a head and two worker nodes on this
machine (cluster/local_cluster.sh, each node its own `ray start`), the config
deployed with `serve deploy`, traffic through the head's HTTP proxy with the
official openai SDK.

Run on its own (scripts/test.sh does): `.venv/bin/python -m pytest tests/cluster`.
The tests share one cluster and run in file order; the last one kills a node.
"""

from __future__ import annotations

import copy
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
import yaml
from servers import free_port  # bench/, on pytest's pythonpath

from cluster import generate
from cluster.generate import SERVE_HEALTH_PATH
from tests.cluster.conftest import REPORT

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "cluster" / "local_cluster.sh"
LOCAL_CONFIG = ROOT / "cluster" / "local_config.yaml"
API_KEY = "local-cluster-key"  # the ingress's key in cluster/local_config.yaml
APP = "tiny-llama-v1"
MODEL = "tiny/llama"
WORKERS = 2
HANG_S = 60.0  # the SDK's timeout: a request this slow counts as hung


@dataclass
class Outcome:
    started: float  # time.monotonic()
    seconds: float
    error: str | None


class Traffic:
    """Paced requests from a few threads until the block ends; every outcome kept."""

    def __init__(
        self, client: openai.OpenAI, model: str, threads: int = 2, pause_s: float = 0.5
    ) -> None:
        # ~3 requests/s: steady traffic that leaves the 2 cores room to start engines.
        self.client, self.model, self.pause_s = client, model, pause_s
        self.results: list[Outcome] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        while not self._stop.is_set():
            t0 = time.monotonic()
            error = None
            try:
                r = self.client.completions.create(
                    model=self.model, prompt="The cluster says", max_tokens=8, temperature=0
                )
                assert r.usage.completion_tokens == 8
            except Exception as exc:
                error = f"{type(exc).__name__}: {getattr(exc, 'status_code', '')} {exc}"[:300]
            self.results.append(Outcome(t0, time.monotonic() - t0, error))
            self._stop.wait(self.pause_s)

    def __enter__(self) -> Traffic:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(HANG_S + 10)

    @property
    def failures(self) -> list[Outcome]:
        return [r for r in self.results if r.error]

    def ok_between(self, start: float, end: float) -> int:
        return sum(1 for r in self.results if not r.error and start <= r.started < end)


class LocalCluster:
    def __init__(self, state: Path, env: dict[str, str], config: dict) -> None:
        self.state, self.env, self.config = state, env, config  # config: what was deployed
        self.http_port = config["http_options"]["port"]
        self.dashboard = f"http://127.0.0.1:{env['DASHBOARD_PORT']}"
        self.base_url = f"http://127.0.0.1:{self.http_port}"

    def sh(self, *args: str, timeout: float = 600) -> str:
        p = subprocess.run(
            [str(SCRIPT), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if p.returncode != 0:
            logs = "".join(
                f"\n--- {f.name} (tail)\n" + f.read_text()[-1500:]
                for f in sorted(self.state.glob("*.log"))
            )
            raise AssertionError(
                f"local_cluster.sh {' '.join(args)} failed ({p.returncode}):\n"
                f"{p.stdout[-3000:]}\n{p.stderr[-3000:]}{logs}"
            )
        return p.stdout

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"{self.base_url}/v1/openai", api_key=API_KEY, max_retries=0, timeout=HANG_S
        )

    def details(self) -> dict:
        # The dashboard wants Ray's token (the one tests/conftest.py points Ray at).
        token = Path(self.env["RAY_AUTH_TOKEN_PATH"]).read_text().strip()
        return httpx.get(
            f"{self.dashboard}/api/serve/applications/",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        ).json()

    def replicas(self, app: str, deployment: str | None = None) -> list[dict]:
        deployments = self.details()["applications"][app]["deployments"]
        return [
            r
            for name, d in deployments.items()
            if deployment in (None, name)
            for r in d["replicas"]
        ]

    def app_status(self, app: str) -> str:
        return self.details()["applications"].get(app, {}).get("status", "NOT_STARTED")

    def nodes(self) -> dict[str, dict]:
        """node_id -> {"label": node_head | node_worker_I, "ip", "alive"}."""
        from ray.util.state import list_nodes

        out = {}
        for n in list_nodes(address=self.dashboard, limit=1000, raise_on_missing_output=False):
            label = next((k for k in n.resources_total if k.startswith("node_")), "")
            out[n.node_id] = {"label": label, "ip": n.node_ip, "alive": n.state == "ALIVE"}
        return out

    def node_of_label(self, label: str) -> str:
        return next(i for i, n in self.nodes().items() if n["label"] == label and n["alive"])

    def request_counts(self, app: str) -> dict[str, float]:
        """Requests each replica of `app` has handled: Serve's own counter, read from
        every node's metrics endpoint."""
        counts: dict[str, float] = {}
        line_re = re.compile(r"^ray_serve_deployment_request_counter_total\{(.*)\} ([0-9.e+]+)$")
        for port_file in self.state.glob("*.metrics_port"):
            try:
                text = httpx.get(
                    f"http://127.0.0.1:{port_file.read_text().strip()}/metrics", timeout=10
                ).text
            except httpx.HTTPError:
                continue  # a node that is down
            for line in text.splitlines():
                m = line_re.match(line)
                if m and f'application="{app}"' in m.group(1):
                    replica = re.search(r'replica="([^"]+)"', m.group(1)).group(1)
                    counts[replica] = counts.get(replica, 0.0) + float(m.group(2))
        return counts

    def spread_since(self, app: str, before: dict[str, float], n: int) -> list[tuple[dict, int]]:
        """Waits until Serve's counters of `app`'s replicas have grown by `n` since
        `before`; returns (node, requests) per replica, by node label. Replicas push their
        counters to the node's metrics agent every few seconds."""
        replica_node = {r["replica_id"]: r["node_id"] for r in self.replicas(app)}

        def served() -> dict[str, float] | None:
            after = self.request_counts(app)
            delta = {k: v - before.get(k, 0.0) for k, v in after.items() if k in replica_node}
            return delta if sum(delta.values()) >= n else None

        delta = self.wait_for("Serve's request counters", served, timeout=60, every=2)
        nodes = self.nodes()
        return sorted(
            ((nodes[replica_node[k]], int(v)) for k, v in delta.items()),
            key=lambda nv: nv[0]["label"],
        )

    def wait_for(self, what: str, check, timeout: float, every: float = 1.0):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            try:
                last = check()
            except (httpx.HTTPError, KeyError) as exc:
                last = exc
            else:
                if last:
                    return last
            time.sleep(every)
        raise AssertionError(f"timed out after {timeout:g} s waiting for {what}: {last!r}")


def _write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def cluster():
    # Ray's temp dir holds unix sockets (path limit ~107 bytes): keep it short.
    state = Path(tempfile.mkdtemp(prefix="osc-", dir="/tmp"))
    env = {
        **os.environ,
        "CLUSTER_DIR": str(state),
        "RAY_PORT": str(free_port()),
        "DASHBOARD_PORT": str(free_port()),
        "NODE_CPUS": "2",
    }
    config = yaml.safe_load(LOCAL_CONFIG.read_text())
    config["http_options"]["port"] = free_port()
    c = LocalCluster(state, env, config)
    t0 = time.monotonic()
    try:
        c.sh("up", str(WORKERS), timeout=300)
        t_up = time.monotonic()
        c.sh("deploy", str(_write_config(state / "config.yaml", config)), timeout=900)
        REPORT.append(
            f"cluster up (head + {WORKERS} workers): {t_up - t0:.0f} s; "
            f"serve deploy to RUNNING: {time.monotonic() - t_up:.0f} s"
        )
        yield c
    finally:
        t_down = time.monotonic()
        subprocess.run(
            [str(SCRIPT), "down"], env=env, capture_output=True, timeout=300, check=False
        )
        REPORT.append(f"cluster down: {time.monotonic() - t_down:.0f} s")
        shutil.rmtree(state, ignore_errors=True)


def test_ingress_on_head_model_replicas_on_workers(cluster):
    nodes = cluster.nodes()
    label = {i: n["label"] for i, n in nodes.items()}
    assert sorted(label.values()) == ["node_head", "node_worker_1", "node_worker_2"]
    # Placement by the resources in the config: the ingress asks for node_head, each
    # model replica for one model_slot (one per worker).
    [ingress] = cluster.replicas("openai", "OpenAIIngress")
    # Beside it, the batch supervisor (no CPU, no placement resource: any node).
    assert len(cluster.replicas("openai", "BatchSupervisor")) == 1
    assert label[ingress["node_id"]] == "node_head"
    model_replicas = cluster.replicas(APP)
    assert sorted(label[r["node_id"]] for r in model_replicas) == ["node_worker_1", "node_worker_2"]
    # The one HTTP proxy is the head's.
    assert [label[p["node_id"]] for p in cluster.details()["proxies"].values()] == ["node_head"]
    status = cluster.sh("status")
    assert "RUNNING: 2" in status and "DEAD" not in status

    client = cluster.client()
    assert MODEL in [m.id for m in client.models.list().data]
    r = client.chat.completions.create(
        model=MODEL, max_tokens=8, temperature=0, messages=[{"role": "user", "content": "Hello"}]
    )
    assert r.model == MODEL and r.choices[0].message.content
    assert r.usage.completion_tokens == 8
    REPORT.append(
        "placement: ingress + proxy on "
        + nodes[ingress["node_id"]]["ip"]
        + " (node_head); tiny-llama-v1 replicas on "
        + ", ".join(f"{nodes[r['node_id']]['ip']} ({label[r['node_id']]})" for r in model_replicas)
    )


def test_kuberay_probe_commands_pass_on_real_nodes(cluster):
    """cluster/rayservice.yaml's probe commands, run against this cluster's nodes
    (its ports in place of the pod's): Ray's and Serve's health answer them."""
    [spec] = [
        d["spec"]
        for d in yaml.safe_load_all((ROOT / "cluster" / "rayservice.yaml").read_text())
        if d["kind"] == "RayService"
    ]
    [head] = spec["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"]
    [gpu] = [g for g in spec["rayClusterConfig"]["workerGroupSpecs"] if g["groupName"] == "gpu"]
    [worker] = gpu["template"]["spec"]["containers"]

    def run(command: list[str], node: str) -> None:
        agent_port = (cluster.state / f"{node}.agent_port").read_text().strip()
        local = [
            a.replace(f"localhost:{generate.AGENT_PORT}", f"127.0.0.1:{agent_port}")
            .replace(
                f"localhost:{generate.DASHBOARD_PORT}", f"127.0.0.1:{cluster.env['DASHBOARD_PORT']}"
            )
            .replace(f"localhost:{generate.SERVE_PORT}", f"127.0.0.1:{cluster.http_port}")
            for a in command
        ]
        assert local[0] == "python" and "localhost" not in " ".join(local)
        p = subprocess.run(
            [sys.executable, *local[1:]], capture_output=True, text=True, timeout=30, check=False
        )
        assert p.returncode == 0, (node, local, p.stderr[-2000:])

    for probe in ("readinessProbe", "livenessProbe"):
        run(head[probe]["exec"]["command"], "head")
        run(worker[probe]["exec"]["command"], "worker-1")
    assert httpx.get(f"{cluster.base_url}{SERVE_HEALTH_PATH}", timeout=10).text == "success"


def test_two_replicas_on_two_nodes_both_serve_traffic(cluster):
    client = cluster.client()
    before = cluster.request_counts(APP)
    n = 16
    with ThreadPoolExecutor(4) as pool:
        results = list(
            pool.map(
                lambda i: client.completions.create(
                    model=MODEL, prompt=f"Request {i}", max_tokens=4, temperature=0
                ),
                range(n),
            )
        )
    assert all(r.usage.completion_tokens == 4 for r in results)
    spread = cluster.spread_since(APP, before, n)
    assert len(spread) == WORKERS and all(v > 0 for _, v in spread), spread
    REPORT.append(
        f"spread: {n} requests sent; Serve's request counters grew by "
        + ", ".join(f"{v} on {node['ip']} ({node['label']})" for node, v in spread)
    )


def test_a_batch_runs_across_the_nodes(cluster):
    """The Batch API's round trip on the cluster: the file lands in the head's blob
    store (every node of this cluster shares the machine's disk), the supervisor
    runs the pipeline, and its lines reach the model replicas on both workers."""
    client = cluster.client()
    n = 200
    lines = [
        {
            "custom_id": f"line-{i:04d}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": MODEL,
                "messages": [{"role": "user", "content": f"Count to {i}."}],
                "max_tokens": 4,
                "temperature": 0,
            },
        }
        for i in range(n)
    ]
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    before = cluster.request_counts(APP)
    file = client.files.create(file=("input.jsonl", io.BytesIO(data)), purpose="batch")
    batch = client.batches.create(
        input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    t0 = time.monotonic()

    def ended():
        b = client.batches.retrieve(batch.id)
        return b if b.status in ("completed", "failed", "expired", "cancelled") else None

    batch = cluster.wait_for("the batch to end", ended, timeout=300, every=1)
    took = time.monotonic() - t0
    assert batch.status == "completed", batch
    assert batch.request_counts.completed == n and batch.request_counts.failed == 0
    out = [json.loads(x) for x in client.files.content(batch.output_file_id).text.splitlines()]
    assert sorted(x["custom_id"] for x in out) == [x["custom_id"] for x in lines]
    assert all(x["response"]["status_code"] == 200 for x in out)
    assert all(x["response"]["body"]["usage"]["completion_tokens"] == 4 for x in out)

    spread = cluster.spread_since(APP, before, n)
    assert len(spread) == WORKERS and all(v > 0 for _, v in spread), spread
    REPORT.append(
        f"batch of {n} lines: completed in {took:.1f} s; its lines on "
        + ", ".join(f"{v} on {node['label']}" for node, v in spread)
    )


def test_deploy_one_more_version_under_traffic(cluster):
    config = copy.deepcopy(cluster.config)
    v1 = next(a for a in config["applications"] if a["name"] == APP)
    v2 = copy.deepcopy(v1)
    v2["name"] = "tiny-llama-v2"
    v2["args"].update(version="2", default=False, model_source="fixture:tiny-llama?seed=1")
    v2["args"]["deployment"]["num_replicas"] = 1
    v2["args"]["deployment"]["ray_actor_options"]["resources"] = {"node_worker_1": 0.01}
    config["applications"].append(v2)
    path = _write_config(cluster.state / "config-v2.yaml", config)
    v1_replicas = {r["replica_id"] for r in cluster.replicas(APP)}

    t0 = time.monotonic()
    with Traffic(cluster.client(), MODEL) as traffic:
        cluster.sh("deploy", str(path), timeout=600)
        deployed_s = time.monotonic() - t0
        time.sleep(2)
    sent, failed = len(traffic.results), traffic.failures
    REPORT.append(
        f"deploy of one more version under traffic: v2 RUNNING after {deployed_s:.0f} s; "
        f"{sent} requests to {MODEL} (v1) sent, {len(failed)} failed, slowest "
        f"{max(r.seconds for r in traffic.results):.1f} s"
    )
    assert sent >= 10
    assert failed == [], failed[:5]
    # The other application was left alone: the same replicas, not restarted.
    assert {r["replica_id"] for r in cluster.replicas(APP)} == v1_replicas

    client = cluster.client()
    r = client.completions.create(model=f"{MODEL}:2", prompt="Hi", max_tokens=4)
    assert r.model == f"{MODEL}:2" and r.usage.completion_tokens == 4
    [v2_replica] = cluster.replicas("tiny-llama-v2")
    assert cluster.nodes()[v2_replica["node_id"]]["label"] == "node_worker_1"
    ids = {m.id for m in client.models.list().data}
    assert {MODEL, f"{MODEL}:1", f"{MODEL}:2"} <= ids


def test_worker_node_lost_under_traffic(cluster):
    lost = cluster.node_of_label("node_worker_2")

    def running_on_workers() -> set[str] | None:
        labels = {i: n["label"] for i, n in cluster.nodes().items() if n["alive"]}
        on = {
            labels.get(r.get("node_id")) for r in cluster.replicas(APP) if r["state"] == "RUNNING"
        }
        return (
            on
            if cluster.app_status(APP) == "RUNNING" and on == {"node_worker_1", "node_worker_2"}
            else None
        )

    with Traffic(cluster.client(), MODEL, threads=2) as traffic:
        time.sleep(2)
        t_kill = time.monotonic()
        cluster.sh("stop-node", "2", timeout=60)
        # Serve notices: the replica on the lost node leaves RUNNING.
        cluster.wait_for(
            "the lost replica to leave RUNNING",
            lambda: (
                not any(
                    r.get("node_id") == lost and r["state"] == "RUNNING"
                    for r in cluster.replicas(APP)
                )
            ),
            timeout=90,
        )
        t_noticed = time.monotonic()
        time.sleep(3)  # traffic on one worker only
        t_restart = time.monotonic()
        cluster.sh("start-node", "2", timeout=600)
        t_node_back = time.monotonic()
        cluster.wait_for(
            f"{APP} RUNNING on both workers again", running_on_workers, timeout=420, every=2
        )
        t_recovered = time.monotonic()
        time.sleep(2)

    results, failed = traffic.results, traffic.failures
    slowest = max(r.seconds for r in results)
    REPORT.append(
        f"worker node killed under traffic: replica loss noticed after {t_noticed - t_kill:.1f} s; "
        f"node restarted in {t_node_back - t_restart:.0f} s; {APP} RUNNING on both workers "
        f"{t_recovered - t_node_back:.0f} s later ({t_recovered - t_kill:.0f} s after the kill); "
        f"{len(results)} requests sent, {len(failed)} failed, slowest {slowest:.1f} s"
    )
    assert slowest < HANG_S, "a request hung"
    # Requests kept being answered while one worker was gone and while it came back.
    assert traffic.ok_between(t_noticed, t_recovered) >= 5
    assert traffic.ok_between(t_recovered, time.monotonic()) >= 1
    # At most the requests that were on the lost replica when it died may fail, and
    # only then: none after Serve noticed.
    assert len(failed) <= len(traffic._threads), failed
    assert all(r.started < t_noticed for r in failed), failed
