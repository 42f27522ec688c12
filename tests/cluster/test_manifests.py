"""cluster/: the KubeRay manifest, the `ray up` config and the local cluster's config
are valid, generated (not hand-copied), consistent with the Serve configs, and closed:
Ray's token on every Ray container from a Secret, a NetworkPolicy that admits only the
cluster's own pods to Ray's ports, API keys from a Secret, unprivileged containers.
Pure: reads files, starts no Ray (runs in `pytest tests/cluster` and in `pytest tests`)."""

from __future__ import annotations

import ast
import copy
import json
import os
import re
import stat
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
NP_SCHEMA = json.loads(
    (CLUSTER / "crds" / "networkpolicy.networking.k8s.io_v1.schema.json").read_text()
)
RAY_UP = CLUSTER / "ray-cluster.aws.yaml"


def _load(path: Path):
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def documents() -> list[dict]:
    return list(yaml.safe_load_all((CLUSTER / "rayservice.yaml").read_text()))


@pytest.fixture(scope="module")
def manifest(documents) -> dict:
    [rayservice] = [d for d in documents if d["kind"] == "RayService"]
    return rayservice


@pytest.fixture(scope="module")
def policy(documents) -> dict:
    [np] = [d for d in documents if d["kind"] == "NetworkPolicy"]
    return np


def _groups(manifest: dict) -> list[dict]:
    cluster = manifest["spec"]["rayClusterConfig"]
    return [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]


def _containers(group: dict) -> list[dict]:
    return group["template"]["spec"]["containers"]


def _gpu_group(manifest: dict) -> dict:
    [group] = [
        g
        for g in manifest["spec"]["rayClusterConfig"]["workerGroupSpecs"]
        if g["groupName"] == "gpu"
    ]
    return group


def _env(container: dict) -> dict[str, dict]:
    names = [e["name"] for e in container["env"]]
    assert len(names) == len(set(names)), names
    return {e["name"]: e for e in container["env"]}


def _quantity(q) -> float:
    q = str(q)
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "m": 1e-3}
    for unit, factor in units.items():
        if q.endswith(unit):
            return float(q[: -len(unit)]) * factor
    return float(q)


def test_committed_manifest_is_a_fresh_generation():
    assert (CLUSTER / "rayservice.yaml").read_text() == generate.render(), (
        "cluster/rayservice.yaml is stale: run `.venv/bin/python -m cluster.generate`"
    )


def test_manifest_holds_the_network_policy_first_then_the_rayservice(documents):
    # kubectl applies in file order: the fence exists before any Ray pod does.
    assert [d["kind"] for d in documents] == ["NetworkPolicy", "RayService"]


def test_manifest_validates_against_the_rayservice_schema(manifest):
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    errors = [
        f"{list(e.absolute_path)}: {e.message}"
        for e in jsonschema.Draft202012Validator(SCHEMA).iter_errors(manifest)
    ]
    assert errors == []


def test_network_policy_validates_against_its_schema(policy):
    jsonschema.Draft202012Validator.check_schema(NP_SCHEMA)
    errors = [
        f"{list(e.absolute_path)}: {e.message}"
        for e in jsonschema.Draft202012Validator(NP_SCHEMA).iter_errors(policy)
    ]
    assert errors == []


@pytest.mark.parametrize(
    "path,key",
    [
        (["spec"], "serveConfigv2"),  # misspelt
        (["spec", "rayClusterConfig", "headGroupSpec"], "rayStartParam"),
        (["spec", "rayClusterConfig", "workerGroupSpecs", 0], "maxReplica"),
        (["spec", "rayClusterConfig", "authOptions"], "secretname"),
        (["spec", "rayClusterConfig", "headGroupSpec", "template", "spec", "securityContext"], "runAsNonroot"),
        (
            ["spec", "rayClusterConfig", "workerGroupSpecs", 0, "template", "spec", "containers", 0, "securityContext"],
            "allowPrivilegeEscalaton",
        ),
    ],
)  # fmt: skip
def test_schema_rejects_a_misspelt_field(manifest, path, key):
    bad = copy.deepcopy(manifest)
    node = bad
    for p in path:
        node = node[p]
    node[key] = "x"
    assert not jsonschema.Draft202012Validator(SCHEMA).is_valid(bad)


@pytest.mark.parametrize(
    "path,key",
    [(["spec"], "ingres"), (["spec", "ingress", 0, "from", 0], "podselector")],
)
def test_network_policy_schema_rejects_a_misspelt_field(policy, path, key):
    bad = copy.deepcopy(policy)
    node = bad
    for p in path:
        node = node[p]
    node[key] = {}
    assert not jsonschema.Draft202012Validator(NP_SCHEMA).is_valid(bad)


def test_serve_config_v2_is_serve_config_gpu(manifest):
    text = manifest["spec"]["serveConfigV2"]
    assert text == (ROOT / "serve_config.gpu.yaml").read_text()  # verbatim, comments too
    config = yaml.safe_load(text)
    ServeDeploySchema.model_validate(config)
    assert [a["name"] for a in config["applications"]] == [
        a["name"] for a in _load(ROOT / "serve_config.gpu.yaml")["applications"]
    ]


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


def _head_public_paths() -> set[str]:
    """The dashboard's paths that Ray serves without its token (a literal set in
    ray/dashboard/http_server_head.py)."""
    import ray.dashboard.http_server_head as head

    tree = ast.parse(Path(head.__file__).read_text())
    [value] = [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        and any(getattr(t, "id", None) == "public_exact_paths" for t in node.targets)
    ]
    return ast.literal_eval(value)


def test_probes_need_no_token(manifest):
    """Token auth is on, and exec probes carry no token: every Ray URL they call must
    be one the installed Ray serves without it (agent and dashboard public paths)."""
    from ray.dashboard.http_server_agent import PUBLIC_EXACT_PATHS

    public = {
        generate.AGENT_PORT: set(PUBLIC_EXACT_PATHS),
        generate.DASHBOARD_PORT: _head_public_paths(),
    }
    urls = [
        url
        for group in _groups(manifest)
        for c in _containers(group)
        for probe in ("readinessProbe", "livenessProbe")
        for url in c[probe]["exec"]["command"][3:]
    ]
    assert urls
    for url in urls:
        m = re.fullmatch(r"http://localhost:(\d+)(/\S*)", url)
        assert m, url
        port, path = int(m.group(1)), m.group(2)
        if port == generate.SERVE_PORT:
            assert path == generate.SERVE_HEALTH_PATH  # Serve's proxy: no Ray token there
        else:
            assert path in public[port], url
        assert "Authorization" not in url


def test_probe_command_fails_when_nothing_answers(manifest):
    """The probe's own command, run here against a port where nothing listens."""
    [worker] = _containers(_gpu_group(manifest))
    command = worker["livenessProbe"]["exec"]["command"]
    assert command[0] == "python"
    r = subprocess.run(
        [sys.executable, *command[1:-1], "http://127.0.0.1:9/api/healthz"],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert r.returncode != 0


# --- Ray's token ---------------------------------------------------------------------


def test_token_auth_is_on_for_every_ray_container(manifest):
    """authOptions turns it on (KubeRay then also gives the token to the containers it
    adds and sends it to the dashboard); every Ray container of the head and of each
    worker group names the same Secret itself."""
    cluster = manifest["spec"]["rayClusterConfig"]
    assert cluster["authOptions"] == {"mode": "token", "secretName": generate.RAY_TOKEN_SECRET}
    assert generate.RAY_TOKEN_SECRET_KEY == "auth_token"  # the key KubeRay reads
    containers = [c for g in _groups(manifest) for c in _containers(g)]
    assert len(containers) == 1 + len(cluster["workerGroupSpecs"]) >= 2
    for container in containers:
        env = _env(container)
        assert env["RAY_AUTH_MODE"] == {"name": "RAY_AUTH_MODE", "value": "token"}
        assert env["RAY_AUTH_TOKEN"] == {
            "name": "RAY_AUTH_TOKEN",
            "valueFrom": {
                "secretKeyRef": {
                    "name": generate.RAY_TOKEN_SECRET,
                    "key": generate.RAY_TOKEN_SECRET_KEY,
                }
            },
        }
        assert "RAY_AUTH_TOKEN_PATH" not in env


def test_no_secret_is_written_in_the_manifest(documents):
    """Tokens and keys only by reference: no Secret object, no literal value in any
    env var that names a token, key, secret or password, no token-like string."""
    assert all(d["kind"] != "Secret" for d in documents)
    rayservice = next(d for d in documents if d["kind"] == "RayService")
    cluster = rayservice["spec"]["rayClusterConfig"]
    envs = [e for g in _groups(rayservice) for c in _containers(g) for e in c["env"]]
    envs += cluster["autoscalerOptions"].get("env", [])
    sensitive = {"TOKEN", "KEY", "KEYS", "SECRET", "PASSWORD"}
    assert {"RAY_AUTH_TOKEN", generate.API_KEYS_ENV} <= {e["name"] for e in envs}
    for e in envs:
        if sensitive & set(e["name"].upper().split("_")):
            assert set(e) == {"name", "valueFrom"} and "secretKeyRef" in e["valueFrom"], e
    text = (CLUSTER / "rayservice.yaml").read_text()
    assert not re.search(r"\b[0-9a-fA-F]{32,}\b|[A-Za-z0-9+/]{40,}={0,2}", text)


# --- NetworkPolicy -------------------------------------------------------------------


def _selects(selector: dict, labels: dict[str, str]) -> bool:
    """Kubernetes LabelSelector semantics ({} selects everything)."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for e in selector.get("matchExpressions", []):
        key, op, values = e["key"], e["operator"], e.get("values", [])
        ok = {
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
            "In": labels.get(key) in values,
            "NotIn": labels.get(key) not in values,
        }[op]
        if not ok:
            return False
    return True


def _peer_admits(peer: dict, source: dict | None) -> bool:
    """Does one `from` entry admit `source` (None: an address outside the cluster's
    pods)? A podSelector alone means the policy's own namespace."""
    if "ipBlock" in peer:
        return True  # any block admits some outside address: the tests forbid it
    if source is None:
        return False
    if "namespaceSelector" in peer:
        if not _selects(peer["namespaceSelector"], source["namespace_labels"]):
            return False
    elif not source["same_namespace"]:
        return False
    return _selects(peer.get("podSelector", {}), source["labels"])


def _admitted(policy: dict, port: int, source: dict | None) -> bool:
    for rule in policy["spec"]["ingress"]:
        ports = rule.get("ports")
        if ports is not None and not any(
            p.get("protocol", "TCP") == "TCP"
            and (p["port"] == port or p["port"] <= port <= p.get("endPort", p["port"]))
            for p in ports
        ):
            continue
        peers = rule.get("from")
        if peers is None or any(_peer_admits(peer, source) for peer in peers):
            return True
    return False


def _ray_pod_labels(group: dict, node_type: str) -> dict[str, str]:
    """A pod's labels as KubeRay makes them: the template's, plus its own (the
    RayCluster of a RayService gets a generated name)."""
    return {
        **group["template"]["metadata"]["labels"],
        "ray.io/cluster": "openai-serve-x7k2p",
        "ray.io/node-type": node_type,
        "ray.io/group": group.get("groupName", "headgroup"),
        "ray.io/is-ray-node": "yes",
        "app.kubernetes.io/name": "kuberay",
        "app.kubernetes.io/created-by": "kuberay-operator",
    }


def _ray_ports(manifest: dict) -> list[int]:
    """Every port a Ray pod listens on but Serve's HTTP: the declared ones, Ray's
    defaults (GCS, client, agent, object manager, node manager, dashboard gRPC) and a
    sample of worker ports."""
    declared = {p["containerPort"] for g in _groups(manifest) for c in _containers(g) for p in c["ports"]}  # fmt: skip
    defaults = {6379, 8265, 10001, 52365, 8076, 8077, 8080, 44217, 11000, 19999}
    return sorted((declared | defaults) - {generate.SERVE_PORT})


def test_network_policy_selects_every_ray_pod_and_nothing_else(manifest, policy):
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    selector = policy["spec"]["podSelector"]
    assert {"key": "ray.io/cluster", "operator": "Exists"} in selector["matchExpressions"]
    cluster = manifest["spec"]["rayClusterConfig"]
    pods = [_ray_pod_labels(cluster["headGroupSpec"], "head")]
    pods += [_ray_pod_labels(g, "worker") for g in cluster["workerGroupSpecs"]]
    assert all(_selects(selector, labels) for labels in pods)
    # Not a pod that only copies our label without being a KubeRay pod, nor others.
    assert not _selects(selector, dict(generate.POD_LABELS))
    assert not _selects(selector, {"ray.io/cluster": "someone-else"})


def test_network_policy_admits_ray_ports_only_from_the_cluster_and_http_from_anywhere(
    manifest, policy
):
    cluster = manifest["spec"]["rayClusterConfig"]
    serve_port = yaml.safe_load(manifest["spec"]["serveConfigV2"])["http_options"]["port"]
    assert serve_port == generate.SERVE_PORT
    ours = {"same_namespace": True, "namespace_labels": {"kubernetes.io/metadata.name": "serving"}}
    cluster_pods = [
        {**ours, "labels": _ray_pod_labels(cluster["headGroupSpec"], "head")},
        *[{**ours, "labels": _ray_pod_labels(g, "worker")} for g in cluster["workerGroupSpecs"]],
    ]
    neighbour = {**ours, "labels": {"app": "web"}}  # same namespace, not a Ray pod
    other_ray = {**ours, "labels": {"ray.io/cluster": "another", "ray.io/node-type": "head"}}
    elsewhere = {
        "same_namespace": False,
        "namespace_labels": {"kubernetes.io/metadata.name": "default"},
        "labels": dict(generate.POD_LABELS) | {"ray.io/cluster": "openai-serve-x7k2p"},
    }
    operator = {
        "same_namespace": False,
        "namespace_labels": {"kubernetes.io/metadata.name": "kuberay-system"},
        "labels": dict(generate.OPERATOR_POD_LABELS) | {"app.kubernetes.io/name": "kuberay"},
    }
    prometheus = {
        "same_namespace": False,
        "namespace_labels": {"kubernetes.io/metadata.name": generate.PROMETHEUS_NAMESPACE or "-"},
        "labels": {"app.kubernetes.io/name": "prometheus"},
    }
    outside = None  # a load balancer, a node, the internet

    for source in [*cluster_pods, neighbour, other_ray, elsewhere, operator, prometheus, outside]:
        assert _admitted(policy, serve_port, source), source
    for port in _ray_ports(manifest):
        for source in cluster_pods:
            assert _admitted(policy, port, source), (port, source)
        for source in (neighbour, other_ray, elsewhere, outside):
            assert not _admitted(policy, port, source), (port, source)
        # The two named exceptions, each to its one port.
        assert _admitted(policy, port, operator) == (port == generate.DASHBOARD_PORT), port
        scraped = generate.PROMETHEUS_NAMESPACE is not None and port == generate.METRICS_PORT
        assert _admitted(policy, port, prometheus) == scraped, port
    assert generate.METRICS_PORT in _ray_ports(manifest)
    # No rule opens anything to an address block.
    assert all("ipBlock" not in p for r in policy["spec"]["ingress"] for p in r.get("from", []))


# --- API keys, ingress auth ----------------------------------------------------------


def test_every_node_gets_the_ingress_api_keys(manifest):
    """serve_config.gpu.yaml turns auth on: the ingress (on any node) must find its keys."""
    from ingress.config import IngressConfig

    config = yaml.safe_load(manifest["spec"]["serveConfigV2"])
    ingress = IngressConfig.model_validate(
        next(a for a in config["applications"] if a["name"] == "openai")["args"]
    )
    assert ingress.auth.enabled and ingress.auth.api_keys_env == generate.API_KEYS_ENV
    for group in _groups(manifest):
        for container in _containers(group):
            env = _env(container)[generate.API_KEYS_ENV]
            assert env == {
                "name": generate.API_KEYS_ENV,
                "valueFrom": {
                    "secretKeyRef": {
                        "name": generate.API_KEYS_SECRET,
                        "key": generate.API_KEYS_SECRET_KEY,
                    }
                },
            }
    ray_up = _load(RAY_UP)
    for commands in (ray_up["head_start_ray_commands"], ray_up["worker_start_ray_commands"]):
        assert f"export {generate.API_KEYS_ENV}=" in " ".join(commands)


# --- securityContext, image user -----------------------------------------------------


def _dockerfile_user() -> tuple[int, int]:
    text = (CLUSTER / "Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and gid.isdigit(), "USER must be numeric for runAsNonRoot"
    assert f"--uid {uid}" in text and f"--gid {gid}" in text
    return int(uid), int(gid)


def test_every_pod_and_container_runs_unprivileged(manifest):
    uid, gid = _dockerfile_user()
    assert uid != 0 and gid != 0
    container_contexts = [manifest["spec"]["rayClusterConfig"]["autoscalerOptions"]]
    for group in _groups(manifest):
        pod = group["template"]["spec"]["securityContext"]
        assert pod["runAsNonRoot"] is True
        assert (pod["runAsUser"], pod["runAsGroup"]) == (uid, gid)
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
        # No init container of ours; KubeRay's (wait-gcs-ready) copies the Ray container's.
        assert "initContainers" not in group["template"]["spec"]
        container_contexts += _containers(group)
    assert len(container_contexts) >= 3  # autoscaler, head, each worker group
    for c in container_contexts:
        sc = c["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] == uid, c.get("name")
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
        assert not sc.get("privileged")


def test_pods_carry_prometheus_scrape_annotations(manifest):
    for group in _groups(manifest):
        annotations = group["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == str(generate.METRICS_PORT)
        ports = {p["name"]: p["containerPort"] for c in _containers(group) for p in c["ports"]}
        assert ports["metrics"] == generate.METRICS_PORT


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


# --- ray up --------------------------------------------------------------------------


def test_ray_up_config_validates_and_matches_the_kuberay_groups(manifest):
    config = _load(RAY_UP)
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)
    types = config["available_node_types"]
    assert set(types) == {"head", "gpu"} and config["head_node_type"] == "head"
    gpu = _gpu_group(manifest)
    assert (types["gpu"]["min_workers"], types["gpu"]["max_workers"]) == (
        gpu["minReplicas"],
        gpu["maxReplicas"],
    )
    assert config["max_workers"] >= types["gpu"]["max_workers"]
    assert config["docker"]["image"] == generate.IMAGE
    assert "--num-gpus=0" in " ".join(config["head_start_ray_commands"])


def test_ray_up_starts_every_node_with_the_shipped_token():
    config = _load(RAY_UP)
    mounts = config["file_mounts"]
    token_remote = next(r for r, local in mounts.items() if local == "./openai-serve-ray-token")
    assert token_remote.startswith("~/")
    token_path = "$HOME/" + token_remote[2:]
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        [start] = [c for c in config[key] if "ray start" in c]
        assert "export RAY_AUTH_MODE=token" in start
        assert f'RAY_AUTH_TOKEN_PATH="{token_path}"' in start
        # The exports come before `ray start`, in the same shell.
        assert start.index("RAY_AUTH_TOKEN_PATH") < start.index("ray start")
    assert "--dashboard-host=127.0.0.1" in " ".join(config["head_start_ray_commands"])


def test_ray_up_secrets_are_made_and_kept_mode_0600(tmp_path):
    """The header's own commands make the two files 0600 (run here as written); on the
    nodes, setup_commands makes the copies 0600 again."""
    config = _load(RAY_UP)
    text = RAY_UP.read_text()
    made = [
        line.lstrip("# ").strip()
        for line in text.splitlines()
        if re.match(r"#\s+\(umask 077 ", line)
    ]
    assert len(made) == 2, made
    subprocess.run(["bash", "-euc", "\n".join(made)], cwd=tmp_path, check=True, timeout=30)
    locals_ = sorted(config["file_mounts"].values())
    assert locals_ == ["./openai-serve-api-keys", "./openai-serve-ray-token"]
    for local in locals_:
        path = tmp_path / local
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, local
    assert len((tmp_path / "openai-serve-ray-token").read_text()) >= 32
    chmod = [c for c in config["setup_commands"] if c.startswith("chmod 600")]
    assert chmod and set(chmod[0].split()[2:]) == set(config["file_mounts"])
    # Neither file may end up in git.
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    assert all(f"/{Path(local).name}" in ignored for local in locals_)


# --- local cluster -------------------------------------------------------------------


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
