"""cluster/: the KubeRay manifest, the `ray up` config and the local cluster's config
are valid, generated (not hand-copied) and consistent with the Serve configs."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from ray.serve.schema import ServeDeploySchema

from cluster import generate

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"
SCHEMA = json.loads((CLUSTER / "crds" / "rayservice.ray.io_v1.schema.json").read_text())


def _load(path: Path):
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def manifest() -> dict:
    return _load(CLUSTER / "rayservice.yaml")


def _containers(group: dict) -> list[dict]:
    return group["template"]["spec"]["containers"]


def _gpu_group(manifest: dict) -> dict:
    [group] = [g for g in manifest["spec"]["rayClusterConfig"]["workerGroupSpecs"]
               if g["groupName"] == "gpu"]
    return group


def _quantity(q) -> float:
    q = str(q)
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "m": 1e-3}
    for unit, factor in units.items():
        if q.endswith(unit):
            return float(q[: -len(unit)]) * factor
    return float(q)


def test_committed_manifest_is_a_fresh_generation():
    assert (CLUSTER / "rayservice.yaml").read_text() == generate.render(), (
        "cluster/rayservice.yaml is stale: run `.venv/bin/python -m cluster.generate`")


def test_manifest_validates_against_the_rayservice_schema(manifest):
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    errors = [f"{list(e.absolute_path)}: {e.message}"
              for e in jsonschema.Draft202012Validator(SCHEMA).iter_errors(manifest)]
    assert errors == []


@pytest.mark.parametrize("path,key", [
    (["spec"], "serveConfigv2"),                                   # misspelt
    (["spec", "rayClusterConfig", "headGroupSpec"], "rayStartParam"),
    (["spec", "rayClusterConfig", "workerGroupSpecs", 0], "maxReplica"),
])
def test_schema_rejects_a_misspelt_field(manifest, path, key):
    bad = copy.deepcopy(manifest)
    node = bad
    for p in path:
        node = node[p]
    node[key] = "x"
    assert not jsonschema.Draft202012Validator(SCHEMA).is_valid(bad)


def test_serve_config_v2_is_serve_config_gpu(manifest):
    text = manifest["spec"]["serveConfigV2"]
    assert text == (ROOT / "serve_config.gpu.yaml").read_text()  # verbatim, comments too
    config = yaml.safe_load(text)
    ServeDeploySchema.model_validate(config)
    assert [a["name"] for a in config["applications"]] == [
        a["name"] for a in _load(ROOT / "serve_config.gpu.yaml")["applications"]]


def test_head_is_cpu_only_and_gpu_workers_carry_gpus(manifest):
    cluster = manifest["spec"]["rayClusterConfig"]
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["num-gpus"] == "0"
    assert all("nvidia.com/gpu" not in c["resources"].get("limits", {}) for c in _containers(head))
    gpu = _gpu_group(manifest)
    [worker] = _containers(gpu)
    limits = worker["resources"]["limits"]
    assert int(limits["nvidia.com/gpu"]) >= 1
    assert gpu["rayStartParams"]["num-gpus"] == str(limits["nvidia.com/gpu"])
    assert worker["resources"]["requests"]["nvidia.com/gpu"] == limits["nvidia.com/gpu"]
    assert cluster["rayVersion"] == ray.__version__ == generate.ray_version()
    images = {c["image"] for g in [head, *cluster["workerGroupSpecs"]] for c in _containers(g)}
    assert images == {generate.IMAGE}


def test_every_gpu_application_fits_the_gpu_worker_group(manifest):
    """Each model replica fits one GPU pod, and the group can grow to every
    application's max_replicas (one replica per GPU)."""
    gpu = _gpu_group(manifest)
    [worker] = _containers(gpu)
    pod_gpus = int(worker["resources"]["limits"]["nvidia.com/gpu"])
    pod_cpus = _quantity(worker["resources"]["limits"]["cpu"])
    config = yaml.safe_load(manifest["spec"]["serveConfigV2"])
    min_total = max_total = 0
    for app in config["applications"]:
        deployment = app["args"].get("deployment", {})
        actor = deployment.get("ray_actor_options", {})
        if not actor.get("num_gpus"):
            continue
        assert actor["num_gpus"] <= pod_gpus and actor.get("num_cpus", 1) <= pod_cpus, app["name"]
        scaling = deployment.get("autoscaling_config", {})
        min_total += scaling.get("min_replicas", deployment.get("num_replicas", 1))
        max_total += scaling.get("max_replicas", deployment.get("num_replicas", 1))
    assert min_total >= 1
    assert gpu["minReplicas"] * pod_gpus >= min_total
    assert gpu["maxReplicas"] * pod_gpus >= max_total


def test_probes_go_through_ray_and_serve_health(manifest):
    config = yaml.safe_load(manifest["spec"]["serveConfigV2"])
    serve_port = config["http_options"]["port"]
    [worker] = _containers(_gpu_group(manifest))
    assert {"name": "serve", "containerPort": serve_port} in worker["ports"]
    readiness = " ".join(worker["readinessProbe"]["exec"]["command"])
    assert f"http://localhost:{serve_port}{generate.SERVE_HEALTH_PATH}" in readiness
    assert "/api/local_raylet_healthz" in " ".join(worker["livenessProbe"]["exec"]["command"])
    [head] = _containers(manifest["spec"]["rayClusterConfig"]["headGroupSpec"])
    for probe in ("readinessProbe", "livenessProbe"):
        command = " ".join(head[probe]["exec"]["command"])
        assert all(path in command for _, path in generate.HEAD_HEALTH_PATHS)


def test_probe_command_fails_when_nothing_answers(manifest):
    """The probe's own command, run here against a port where nothing listens."""
    [worker] = _containers(_gpu_group(manifest))
    command = worker["livenessProbe"]["exec"]["command"]
    assert command[0] == "python"
    r = subprocess.run([sys.executable, *command[1:-1], "http://127.0.0.1:9/api/healthz"],
                       capture_output=True, timeout=30, check=False)
    assert r.returncode != 0


def test_every_node_gets_the_ingress_api_keys(manifest):
    """serve_config.gpu.yaml turns auth on: the ingress (on any node) must find its keys."""
    from ingress.config import IngressConfig

    config = yaml.safe_load(manifest["spec"]["serveConfigV2"])
    ingress = IngressConfig.model_validate(
        next(a for a in config["applications"] if a["name"] == "openai")["args"])
    assert ingress.auth.enabled and ingress.auth.api_keys_env == generate.API_KEYS_ENV
    cluster = manifest["spec"]["rayClusterConfig"]
    for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
        for container in _containers(group):
            [env] = [e for e in container["env"] if e["name"] == generate.API_KEYS_ENV]
            assert env["valueFrom"]["secretKeyRef"] == {
                "name": generate.API_KEYS_SECRET, "key": generate.API_KEYS_SECRET_KEY}
    ray_up = _load(CLUSTER / "ray-cluster.aws.yaml")
    for commands in (ray_up["head_start_ray_commands"], ray_up["worker_start_ray_commands"]):
        assert f"export {generate.API_KEYS_ENV}=" in " ".join(commands)


def test_upgrade_strategy_is_declared(manifest):
    assert manifest["spec"]["upgradeStrategy"] == {"type": "NewCluster"}
    header = (CLUSTER / "rayservice.yaml").read_text().split("apiVersion:")[0]
    assert "serveConfigV2 only" in header and "NewCluster" in header


def test_dockerfile_installs_the_gpu_extra():
    text = (CLUSTER / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11", text, re.MULTILINE)  # within requires-python
    assert 'pip install ".[gpu]"' in text
    assert "COPY serve_config.yaml serve_config.gpu.yaml" in text
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"vllm==' in pyproject.split("gpu = [", 1)[1].split("]", 1)[0]


def test_ray_up_config_validates_and_matches_the_kuberay_groups(manifest):
    config = _load(CLUSTER / "ray-cluster.aws.yaml")
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)
    types = config["available_node_types"]
    assert set(types) == {"head", "gpu"} and config["head_node_type"] == "head"
    gpu = _gpu_group(manifest)
    assert (types["gpu"]["min_workers"], types["gpu"]["max_workers"]) == (
        gpu["minReplicas"], gpu["maxReplicas"])
    assert config["max_workers"] >= types["gpu"]["max_workers"]
    assert config["docker"]["image"] == generate.IMAGE
    assert "--num-gpus=0" in " ".join(config["head_start_ray_commands"])


def test_local_config_places_by_the_local_cluster_labels():
    from deployments.llm.config import LLMAppConfig
    from ingress.config import IngressConfig

    config = _load(CLUSTER / "local_config.yaml")
    ServeDeploySchema.model_validate(config)
    assert config["proxy_location"] == "HeadOnly"  # one machine, one proxy port
    apps = {a["name"]: a for a in config["applications"]}
    ingress = apps.pop("openai")
    IngressConfig.model_validate(ingress["args"])
    assert ingress["args"]["deployment"]["ray_actor_options"]["resources"] == {"node_head": 0.01}
    script = (CLUSTER / "local_cluster.sh").read_text()
    for app in apps.values():
        LLMAppConfig.model_validate(app["args"])
        for label in app["args"]["deployment"]["ray_actor_options"]["resources"]:
            assert label in script
    subprocess.run(["bash", "-n", str(CLUSTER / "local_cluster.sh")], check=True)
