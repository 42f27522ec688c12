"""Serve deployment options: task defaults merged with what the config says.

One helper for every builder, so the merge rule is the same everywhere: nested dicts
(ray_actor_options, runtime_env, env_vars, autoscaling_config) merge key by key, and
anything else in the config replaces the default.
"""

from __future__ import annotations

import copy
import re
from typing import Any


def merge_options(defaults: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(defaults)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_options(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    # A fixed replica count and an autoscaling config exclude each other in Serve.
    if "autoscaling_config" in overrides and "num_replicas" not in overrides:
        merged.pop("num_replicas", None)
    return merged


def deployment_name(prefix: str, model: str, version: str) -> str:
    """A readable deployment name from the model name and version (Serve accepts
    letters, digits and a few separators; model names carry '/')."""
    return f"{prefix}:" + re.sub(r"[^A-Za-z0-9._-]+", "-", f"{model}-{version}")


# What every model replica gets unless its config says otherwise.
MODEL_DEPLOYMENT_BASE: dict[str, Any] = {
    "num_replicas": 1,
    "health_check_period_s": 10,
    "health_check_timeout_s": 60,
    "graceful_shutdown_timeout_s": 20,
    "ray_actor_options": {
        "num_cpus": 1,
        "runtime_env": {"env_vars": {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}},
    },
}


def bind_model_app(server_cls: type, config: Any, defaults: dict[str, Any], prefix: str) -> Any:
    """The one way a model application is bound: task defaults over the shared base,
    the config's `deployment:` over those, a name from model and version, and the model
    card in `user_config` (how the ingress learns the catalog, ingress/catalog.py)."""
    from ray import serve

    from deployments.contract import MODEL_CARD_KEY

    options = merge_options(merge_options(MODEL_DEPLOYMENT_BASE, defaults), config.deployment)
    options["name"] = deployment_name(prefix, config.model, config.version)
    options["user_config"] = {MODEL_CARD_KEY: config.card().model_dump(mode="json")}
    return serve.deployment(server_cls).options(**options).bind(config.model_dump(mode="json"))
