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
