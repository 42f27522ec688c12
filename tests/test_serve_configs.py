"""Every application of both serve configs builds the way `serve run` / `serve deploy`
build it: the import path resolves, Serve accepts the builder (exactly one parameter,
a dict; it refuses any other signature) and the builder accepts the args. Inspected,
not run: no Ray is started."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ray._common.utils import import_attr
from ray.serve import Application
from ray.serve._private.api import call_user_app_builder_with_args_if_necessary
from ray.serve.schema import ServeDeploySchema

ROOT = Path(__file__).resolve().parents[1]
APPS = [
    pytest.param(app, id=f"{config}:{app['name']}")
    for config in ("serve_config.yaml", "serve_config.gpu.yaml")
    for app in yaml.safe_load((ROOT / config).read_text())["applications"]
]


@pytest.mark.parametrize("config", ["serve_config.yaml", "serve_config.gpu.yaml"])
def test_the_config_is_serve_deploy_schema(config):
    ServeDeploySchema.model_validate(yaml.safe_load((ROOT / config).read_text()))


@pytest.mark.parametrize("app", APPS)
def test_serve_can_build_the_application(app):
    builder = import_attr(app["import_path"])
    built = call_user_app_builder_with_args_if_necessary(builder, app.get("args") or {})
    assert isinstance(built, Application)


def test_the_readme_adapter_example_deploys_as_written():
    """docs/api.md "Versions as adapters": the YAML is a valid application, it builds, and its
    `deployments:` override names the deployment the builder makes (else `serve deploy`
    fails with "Deployment ... does not exist")."""
    readme = (ROOT / "docs" / "api.md").read_text()
    section = readme[readme.index("## Versions as adapters") :]
    block = section[section.index("```yaml") + len("```yaml") : section.index("```\n", 10)]
    app = yaml.safe_load(block)[0]
    ServeDeploySchema.model_validate({"applications": [app]})
    built = call_user_app_builder_with_args_if_necessary(
        import_attr(app["import_path"]), app["args"]
    )
    assert [d["name"] for d in app["deployments"]] == [built._bound_deployment.name]
    assert app["deployments"][0]["user_config"]["adapters"]


def test_the_benchmark_runs_the_cpu_engine_layout_the_default_ships():
    """serve_config.yaml's chat and embedding models run vLLM's engine as one process on
    CPU (docs/performance.md "One engine process"); bench/servers.py's `ours` must measure that layout, `ours-mp` the
    other one, and the GPU config keeps vLLM's default."""
    import servers  # bench/, on pytest's pythonpath

    def env_of(config: str, name: str) -> dict[str, str]:
        apps = yaml.safe_load((ROOT / config).read_text())["applications"]
        app = next(a for a in apps if a["name"] == name)
        actor = app["args"]["deployment"]["ray_actor_options"]
        return actor.get("runtime_env", {}).get("env_vars", {})

    for name in ("gemma-3-270m-q4km", "all-minilm-l6-v2"):  # every vLLM engine there
        env = env_of("serve_config.yaml", name)
        for key, value in servers.OURS_CPU_ENGINE_ENV.items():
            assert env[key] == value, name
    spec = servers.ModelSpec("tiny", "m", "src", ROOT, {}, 1)
    assert servers.Server("ours", spec).model_env()["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
    assert servers.Server("ours-mp", spec).model_env()["VLLM_ENABLE_V1_MULTIPROCESSING"] == "1"
    assert "VLLM_ENABLE_V1_MULTIPROCESSING" not in servers.Server("vllm", spec).model_env()
    gpu = servers.Server("ours", spec, gpu=True).model_env()
    assert "VLLM_ENABLE_V1_MULTIPROCESSING" not in gpu
    gpu_apps = yaml.safe_load((ROOT / "serve_config.gpu.yaml").read_text())["applications"]
    assert "VLLM_ENABLE_V1_MULTIPROCESSING" not in str(gpu_apps)


def test_the_cpu_default_engines_compute_on_every_core_and_the_benchmark_measures_that():
    """serve_config.yaml's chat engine runs on every core (`engine.cpu_threads: all`,
    docs/performance.md "Every core to the engine"), bench's `ours` as shipped, its
    `ours-1thread` variant on Ray's one thread; the GPU config leaves it unset."""
    import servers  # bench/, on pytest's pythonpath

    apps = yaml.safe_load((ROOT / "serve_config.yaml").read_text())["applications"]
    engines = {a["name"]: a["args"].get("engine", {}) for a in apps}
    assert engines["gemma-3-270m-q4km"]["cpu_threads"] == "all"
    # MiniLM's engine runs beside Gemma's on the same cores: Ray's one thread.
    assert "cpu_threads" not in engines["all-minilm-l6-v2"]
    gpu_apps = yaml.safe_load((ROOT / "serve_config.gpu.yaml").read_text())["applications"]
    assert "cpu_threads" not in str(gpu_apps)
    spec = servers.ModelSpec("tiny", "m", "src", ROOT, {}, 1)

    def engine_of(kind: str, gpu: bool = False) -> dict:
        server = servers.Server(kind, spec, gpu=gpu)
        config = servers._ours_config(spec, 1, {}, gpu, server.app_args)
        return config["applications"][1]["args"]["engine"]

    assert engine_of("ours")["cpu_threads"] == "all"
    assert engine_of("ours-1thread")["cpu_threads"] is None
    assert "cpu_threads" not in engine_of("ours", gpu=True)
